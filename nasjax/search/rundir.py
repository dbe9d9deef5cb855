"""The run directory: its files, atomic writes, checkpoints, the lock, resuming.

A search (:func:`nasjax.search.run`) writes::

    WORKDIR/config.json      strategy, its config, the evaluator's config, budget, seed
                             (and the ``backend``'s options, for a run on Ray)
    WORKDIR/history.jsonl    one JSON object per evaluation, in the order the strategy
                             was told them (with a ``lineage``: uid, parent, ops,
                             depth, where the strategy tracks parents, as LEMONADE
                             does; on Ray workers a ``worker``: its ``id``, ``node``,
                             ``pid``, ``start`` and ``end`` unix times, ``compile``
                             seconds, ``attempts`` and the driver's ``session``;
                             asynchronous runs also the ``position`` of the
                             candidate in its generation, the ask)
    WORKDIR/checkpoint.npz   the complete search state after the last full generation
                             (asynchronous runs: after a batch of results told, at
                             most once a second, with ``inflight``, the candidates
                             asked for and not yet told, which a resumed run
                             evaluates first)
    WORKDIR/checkpoint.prev.npz  the one before (what a damaged checkpoint falls back to)
    WORKDIR/best.json        the best architecture (and the Pareto front if several
                             objectives), with the benchmark's own result where known
    WORKDIR/best_net.npz     the best trained network (training evaluators)
    WORKDIR/lock             held (``flock``) by the process running the search

The run directory is data: a checkpoint is an ``.npz`` archive of the state's arrays
with a JSON description of the tree (:mod:`nasjax.search.checkpoint`), which NumPy and
a JSON parser read without nasjax, and which loads without running code from the file.
Run directories of earlier versions hold pickles, ``checkpoint.pkl`` and
``checkpoint.prev.pkl``: without a ``checkpoint.npz`` they are read (by
:class:`~nasjax.search.checkpoint.SafeUnpickler`, which calls nothing but the
constructors of the data nasjax wrote), and the run continues in the new format.
Completed evaluations are never discarded unasked: without a checkpoint to continue
from, or without ``config.json``, a run directory holding evaluations is refused, not
started again. One process at a time runs a search in a run directory (the others are
refused); the kernel releases its lock when it ends, however it ends.

"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from nasjax.search import checkpoint as _checkpoint
from nasjax.search.evaluators import Record
from nasjax.search.pareto import dominates

FORMAT = "nasjax.search.run/1"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.jsonl"
CHECKPOINT_FILE = "checkpoint.npz"
PREV_CHECKPOINT_FILE = "checkpoint.prev.npz"
# The pickles of earlier versions, read when a run directory has no checkpoint.npz.
LEGACY_CHECKPOINT_FILE = "checkpoint.pkl"
LEGACY_PREV_CHECKPOINT_FILE = "checkpoint.prev.pkl"
LOCK_FILE = "lock"
# What config.json and every checkpoint and history entry hold, at least.
CONFIG_KEYS = ("format", "strategy", "strategy_config", "evaluator", "objectives", "budget",
               "seed")
CHECKPOINT_KEYS = ("format", "generation", "evals", "elapsed", "wall", "finished", "key",
                   "state", "cache")
ENTRY_KEYS = ("eval", "objectives", "status", "elapsed", "wall")
# jax.random.key takes a seed that fits an int64.
SEED_RANGE = (-2**63, 2**63 - 1)
BEST_FILE = "best.json"
BEST_NET_FILE = "best_net.npz"


def _os_error(e: OSError, path: str) -> OSError:
  """``e`` as one line that names ``path`` (a failed write or fsync names no file)."""
  if e.errno is None:
    return OSError(f"cannot write {path}: {e}")
  return OSError(e.errno, f"cannot write {path}: {e.strerror or e}")


def _keep_previous(path: str, keep: str) -> None:
  """Make ``keep`` a copy of ``path`` (a hard link, so ``path`` never goes missing)."""
  tmp = f"{keep}.tmp{os.getpid()}"
  try:
    os.link(path, tmp)
  except OSError:
    # No hard links here: move it; until the replace, only the previous one is left,
    # which is what a resume then continues from.
    os.replace(path, keep)
    return
  try:
    os.replace(tmp, keep)
  except OSError:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def atomic_write(path: str | os.PathLike, data: bytes, fsync: bool = True,
                 keep: str | os.PathLike | None = None) -> None:
  """Replace ``path`` by ``data`` so that readers see the old or the new file, whole.

  Args:
    path: the file to write.
    data: its new contents.
    fsync: make the file and its directory entry durable before returning.
    keep: if given, where the file being replaced is kept.

  Raises:
    OSError: naming ``path``, if it cannot be written (a full disk, a read-only
      directory); ``path`` is left as it was and no temporary file remains.
  """
  path = os.fspath(path)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    try:
      with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
          os.fsync(f.fileno())
      if keep is not None and os.path.exists(path):
        _keep_previous(path, os.fspath(keep))
      os.replace(tmp, path)
    except BaseException:
      with contextlib.suppress(OSError):
        os.remove(tmp)
      raise
    if fsync:
      fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
      try:
        os.fsync(fd)
      finally:
        os.close(fd)
  except OSError as e:
    raise _os_error(e, path) from e


def _json_safe(x):
  """NaN and infinities become None (strict JSON); NumPy scalars become Python."""
  if isinstance(x, dict):
    return {str(k): _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (float, np.floating)):
    x = float(x)
    return x if math.isfinite(x) else None
  return x


def _objective_values(entry: Mapping, names) -> list[float]:
  return [math.nan if entry["objectives"].get(n) is None else float(entry["objectives"][n])
          for n in names]


class _Damaged(ValueError):
  """A checkpoint file that cannot be read back (as opposed to one that is refused)."""


def _read_checkpoint(path: Path) -> dict:
  """The checkpoint in ``path`` (an ``.npz`` file, or a pickle of an earlier version).

  Raises:
    _Damaged: the file is empty, cut short or not a checkpoint.
    RefusedGlobal: the file names code or classes that nasjax never writes.
    OtherFields: the file holds a state class with other fields (another version).
  """
  data = path.read_bytes()
  if not data:
    raise _Damaged(f"{path} is empty")
  try:
    if path.suffix == ".npz":
      ckpt = _checkpoint.loads(data, str(path))
    else:
      ckpt = _checkpoint.loads_pickle(data, str(path))
  except (_checkpoint.RefusedGlobal, _checkpoint.OtherFields):
    raise
  except _checkpoint.DamagedData as e:
    raise _Damaged(str(e)) from None
  except Exception as e:  # damaged bytes make the unpickler raise nearly anything
    raise _Damaged(f"{path} is damaged ({type(e).__name__}: {e})") from None
  if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
    raise _Damaged(f"{path} is not a checkpoint of format {FORMAT!r}")
  missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
  if missing:
    raise _Damaged(f"{path} is damaged (it lacks {missing})")
  return ckpt


def _checkpoint_files(workdir: Path) -> tuple[str, ...]:
  """The checkpoint files of ``workdir`` to read, the current one first.

  A run directory of an earlier version (no ``checkpoint.npz`` nor
  ``checkpoint.prev.npz``) has its pickles; once it holds ``.npz`` checkpoints, its
  pickles are older than them, the last resort.
  """
  legacy = (LEGACY_CHECKPOINT_FILE, LEGACY_PREV_CHECKPOINT_FILE)
  if not any((workdir / n).exists() for n in (CHECKPOINT_FILE, PREV_CHECKPOINT_FILE)):
    if any((workdir / n).exists() for n in legacy):
      return legacy
  return (CHECKPOINT_FILE, PREV_CHECKPOINT_FILE) + legacy


def _latest_checkpoint(workdir: Path) -> tuple[dict | None, Path | None, list[str]]:
  """``(checkpoint, its file, what is wrong with the damaged files)`` of a run directory.

  The checkpoint is the current one, else the previous one (see
  :func:`_checkpoint_files`); ``(None, None, damaged)`` if none can be read.
  """
  damaged = []
  for name in _checkpoint_files(workdir):
    path = workdir / name
    if path.exists():
      try:
        return _read_checkpoint(path), path, damaged
      except _Damaged as e:
        damaged.append(str(e))
  return None, None, damaged


def load_checkpoint(workdir: str | os.PathLike) -> dict | None:
  """The checkpoint of a run directory, or None if there is none yet.

  A damaged or missing ``checkpoint.npz`` falls back, with a warning, to
  ``checkpoint.prev.npz`` (one generation earlier). A run directory of an earlier
  version is read from its ``checkpoint.pkl`` (or ``checkpoint.prev.pkl``).

  Raises:
    ValueError: naming the files, if they are damaged, or if one names code or classes
      (:class:`~nasjax.search.checkpoint.RefusedGlobal`; nothing from it is run).
  """
  workdir = Path(workdir)
  ckpt, path, damaged = _latest_checkpoint(workdir)
  if ckpt is None and damaged:
    raise ValueError("; ".join(damaged) + ": no checkpoint to read")
  current = workdir / _checkpoint_files(workdir)[0]
  if path is not None and path != current:
    reason = damaged[0] if damaged else f"{current} is missing"
    warnings.warn(f"{reason}; reading {path} instead ({_earlier(path)})", stacklevel=2)
  return ckpt


def _earlier(path: Path) -> str:
  """How much older than the current checkpoint the checkpoint ``path`` is."""
  if path.name in (PREV_CHECKPOINT_FILE, LEGACY_PREV_CHECKPOINT_FILE):
    return "one generation earlier"
  return "written before the run directory's first .npz checkpoint"


def _read_json(path: Path):
  """The JSON value in ``path``; ``ValueError`` naming the file and where it is invalid."""
  try:
    return json.loads(path.read_bytes())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column "
                     f"{e.colno}") from None
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None


def read_history(workdir: str | os.PathLike, limit: int | None = None) -> list[dict]:
  """The history entries of a run directory (the first ``limit``, if given).

  A last line cut short (by a kill in the middle of a write) is left out.

  Raises:
    ValueError: naming the file and line, for a line that is not a history entry.
  """
  path = Path(workdir) / HISTORY_FILE
  if not path.exists():
    return []
  out = []
  with open(path, "rb") as f:
    for number, line in enumerate(f, 1):
      if limit is not None and len(out) >= limit:
        break
      if not line.endswith(b"\n"):
        break  # a line cut short by a kill
      where = f"{path}, line {number}"
      try:
        entry = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where} is not valid JSON: {e.msg} at column {e.colno}") from None
      except UnicodeDecodeError as e:
        raise ValueError(f"{where} is not valid JSON: {e}") from None
      if not isinstance(entry, dict) or any(k not in entry for k in ENTRY_KEYS):
        raise ValueError(f"{where} is not a history entry (a JSON object with the keys "
                         f"{list(ENTRY_KEYS)})")
      if entry["eval"] != len(out):
        raise ValueError(f"{where} holds evaluation {entry['eval']!r}, expected {len(out)}")
      out.append(entry)
  return out


def _complete_lines(path: Path) -> int:
  """The number of complete lines of ``path`` (0 if there is no such file)."""
  if not path.exists():
    return 0
  with open(path, "rb") as f:
    return f.read().count(b"\n")


def _truncate_history(path: Path, lines: int) -> None:
  """Keep the first ``lines`` complete lines of the history file."""
  if not path.exists():
    if lines:
      raise ValueError(f"{path} is missing but the checkpoint covers {lines} evaluations")
    path.touch()
    return
  with open(path, "rb") as f:
    data = f.read()
  end, count = 0, 0
  while count < lines:
    nl = data.find(b"\n", end)
    if nl < 0:
      raise ValueError(f"{path} has {count} complete lines but the checkpoint covers {lines} "
                       "evaluations; the run directory is inconsistent")
    end, count = nl + 1, count + 1
  if end != len(data):
    with open(path, "r+b") as f:
      f.truncate(end)
      f.flush()
      os.fsync(f.fileno())


def read_config(workdir: str | os.PathLike) -> dict:
  """The ``config.json`` of a run directory.

  Raises:
    FileNotFoundError: if it is not a run directory.
    ValueError: naming the file, if it is not valid JSON or lacks keys.
  """
  path = Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"no search run in {workdir} (missing {CONFIG_FILE})")
  cfg = _read_json(path)
  if not isinstance(cfg, dict):
    raise ValueError(f"{path} is not a JSON object")
  missing = [k for k in CONFIG_KEYS if k not in cfg]
  if missing:
    raise ValueError(f"{path} lacks the key(s) {missing}")
  return cfg


def read_best(workdir: str | os.PathLike) -> dict:
  """The ``best.json`` of a run directory (``{}`` if there is none yet).

  Raises:
    ValueError: naming the file, if it is not a valid JSON object.
  """
  path = Path(workdir) / BEST_FILE
  if not path.exists():
    return {}
  best = _read_json(path)
  if not isinstance(best, dict):
    raise ValueError(f"{path} is not a JSON object")
  return best


def _lock(workdir: Path):
  """The run directory's lock file, locked; the lock lasts until the file is closed.

  ``flock`` locks belong to the open file: the kernel releases them when the process
  ends, however it ends, so a killed search never leaves its run directory locked.

  Raises:
    ValueError: if another process holds the lock.
  """
  path = workdir / LOCK_FILE
  f = open(path, "a+")
  try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip()
    f.close()
    by = f" (pid {holder})" if holder.isdigit() else ""
    raise ValueError(f"{workdir} is in use by another nasjax process{by}, which holds "
                     f"{path}; wait for it to end, or stop it") from None
  except OSError as e:  # e.g. a file system without locks
    f.close()
    raise OSError(e.errno, f"cannot lock {path}: {e.strerror or e}") from e
  except BaseException:
    f.close()
    raise
  f.truncate(0)
  f.write(f"{os.getpid()}\n")
  f.flush()
  return f


def _remove_stale_temporaries(workdir: Path) -> None:
  """Remove the temporary files of writes cut short (only while holding the lock)."""
  names = (CONFIG_FILE, CHECKPOINT_FILE, PREV_CHECKPOINT_FILE, LEGACY_CHECKPOINT_FILE,
           LEGACY_PREV_CHECKPOINT_FILE, BEST_FILE)
  pattern = re.compile("(" + "|".join(map(re.escape, names)) + r")\.tmp[0-9]+")
  for path in workdir.iterdir():
    if pattern.fullmatch(path.name):
      with contextlib.suppress(FileNotFoundError):
        path.unlink()


class _Best:
  """The best entry on objective 0 and the Pareto front of the entries seen so far."""

  def __init__(self, names):
    self.names = list(names)
    self.best: dict | None = None
    self.front: list[tuple[np.ndarray, dict]] = []

  def add(self, entry: dict) -> bool:
    """Returns whether ``entry`` is the new best on objective 0."""
    if entry["status"] != "ok":
      return False
    f = np.array(_objective_values(entry, self.names))
    if not np.all(np.isfinite(f)):
      return False
    if len(f) > 1:
      # An entry equal to a member adds nothing: the first one found stays.
      if not any(dominates(g, f) or np.array_equal(g, f) for g, _ in self.front):
        self.front = [(g, e) for g, e in self.front if not dominates(f, g)]
        self.front.append((f, entry))
    if self.best is None or f[0] < _objective_values(self.best, self.names)[0]:
      self.best = entry
      return True
    return False

  @property
  def pareto(self) -> list[dict]:
    if len(self.names) == 1:
      return [self.best] if self.best is not None else []
    return [e for _, e in sorted(self.front, key=lambda t: tuple(t[0]))]


def _nonempty(path: Path) -> bool:
  return path.exists() and path.stat().st_size > 0


def _resume_checkpoint(workdir: Path) -> dict | None:
  """The checkpoint a resumed run continues from (None: start from the beginning).

  A damaged or missing ``checkpoint.npz`` falls back to the previous checkpoint, with
  a warning; the damaged file is set aside (as ``checkpoint.damaged.npz``), so that the
  next checkpoint does not keep it as the previous one. A run directory of an earlier
  version continues from its ``checkpoint.pkl`` (or ``checkpoint.prev.pkl``) and
  writes ``.npz`` checkpoints from then on.

  Raises:
    ValueError: naming the files, if there is no checkpoint to continue from but
      evaluations to lose, or if a checkpoint references code.
  """
  history_path = workdir / HISTORY_FILE
  current = workdir / _checkpoint_files(workdir)[0]
  ckpt, path, damaged = _latest_checkpoint(workdir)
  if ckpt is None:
    evals = _complete_lines(history_path)
    if damaged:
      lost = f" the {evals} evaluations of {history_path}" if evals else ""
      raise ValueError("; ".join(damaged) + f": no checkpoint to continue{lost} from")
    if evals:
      raise ValueError(f"{current} is missing but {history_path} holds {evals} evaluations, "
                       "which a search cannot continue without it; restore it, or search "
                       "again in another run directory")
    return None
  if path != current:
    if current.exists():
      aside = current.with_name("checkpoint.damaged" + current.suffix)
      os.replace(current, aside)
      damaged[0] += f" (set aside as {aside.name})"
    reason = damaged[0] if damaged else f"{current} is missing"
    warnings.warn(f"{reason}; continuing from {path} ({ckpt['evals']} evaluations; those "
                  "after them are evaluated again)", stacklevel=2)
  return ckpt


def _prepare(workdir: Path, config_bytes: bytes, name: str, resume: bool,
             held: contextlib.ExitStack) -> tuple[dict | None, list[dict]]:
  """Lock the run directory (into ``held``) and set it up; the lead process only.

  A new run writes ``config.json``; a resumed one reads its checkpoint. Either way
  the history is cut back to the checkpoint.

  Returns:
    ``(checkpoint or None, the history entries it covers)``.
  """
  config_path, history_path = workdir / CONFIG_FILE, workdir / HISTORY_FILE
  if resume:
    cfg = read_config(workdir)
    held.enter_context(_lock(workdir))
    if cfg["strategy"] != name:
      raise ValueError(f"{workdir} holds a run of strategy {cfg['strategy']!r}, not {name!r}")
  else:
    workdir.mkdir(parents=True, exist_ok=True)
    held.enter_context(_lock(workdir))
    if config_path.exists():
      raise ValueError(f"{workdir} already holds a search run; continue it with "
                       f"`nasjax resume {workdir}` or choose another --workdir")
    found = [n for n in (HISTORY_FILE, CHECKPOINT_FILE, PREV_CHECKPOINT_FILE,
                         LEGACY_CHECKPOINT_FILE, LEGACY_PREV_CHECKPOINT_FILE)
             if _nonempty(workdir / n)]
    if found:
      raise ValueError(f"{workdir} holds {', '.join(found)} of a search run but no "
                       f"{CONFIG_FILE}; a new search there would discard them (restore "
                       f"{CONFIG_FILE} to resume it, or choose another --workdir)")
  _remove_stale_temporaries(workdir)
  if resume:
    ckpt = _resume_checkpoint(workdir)
  else:
    ckpt = None
    atomic_write(config_path, config_bytes)
  evals = 0 if ckpt is None else ckpt["evals"]
  _truncate_history(history_path, evals)
  return ckpt, read_history(workdir, evals)


class _RunDir:
  """What a search writes into its run directory: history lines, checkpoints, best.json and
  the best network. Only the lead process writes (``lead``); the others keep the same
  history and tracker in memory."""

  def __init__(self, workdir: Path, names: list[str], history: list[dict], lead: bool):
    self.workdir, self.names, self.history, self.lead = workdir, names, history, lead
    self.tracker = _Best(names)
    for e in history:
      self.tracker.add(e)

  def append(self, entries: list[dict], records: list[Record], sync: bool = True) -> None:
    """Record ``entries`` (fsynced before the checkpoint that covers them: here, or with
    ``sync=False`` by :meth:`sync_history` before that checkpoint); a record that becomes
    the best with a trained network is saved as ``best_net.npz``."""
    for entry, rec in zip(entries, records):
      self.history.append(entry)
      if self.tracker.add(entry) and rec.network is not None and self.lead:
        import nasjax

        nasjax.save(rec.network, self.workdir / BEST_NET_FILE, metadata=entry)
    if not self.lead:
      return
    path = self.workdir / HISTORY_FILE
    try:
      with open(path, "a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in entries))
        f.flush()
        if sync:
          os.fsync(f.fileno())
    except OSError as e:
      # A line cut short here is dropped on resume, with the rest of the generation.
      raise _os_error(e, os.fspath(path)) from e

  def sync_history(self) -> None:
    """Make the history lines appended so far durable."""
    if not self.lead:
      return
    path = self.workdir / HISTORY_FILE
    try:
      with open(path, "a") as f:
        os.fsync(f.fileno())
    except OSError as e:
      raise _os_error(e, os.fspath(path)) from e

  def checkpoint(self, counters: dict, key, state, cache: dict) -> None:
    if self.lead:
      atomic_write(self.workdir / CHECKPOINT_FILE, _checkpoint.dumps({
          "format": FORMAT, **counters, "key": key, "state": state, "cache": cache}),
          keep=self.workdir / PREV_CHECKPOINT_FILE)

  def export(self, counters: dict, summary: dict | None = None) -> None:
    if self.lead:
      atomic_write(self.workdir / BEST_FILE, json.dumps(_json_safe({
          "objectives": self.names, "evals": counters["evals"],
          "elapsed": counters["elapsed"], "finished": counters["finished"],
          "best": self.tracker.best, "pareto": self.tracker.pareto,
          "summary": summary or {}}), indent=1).encode(), fsync=False)

  def best_value(self) -> float | None:
    best = self.tracker.best
    return _objective_values(best, self.names)[0] if best else None
