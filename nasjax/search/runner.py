"""Searches in a run directory: history, atomic checkpoints, exact resume, best export.

:func:`run` drives a strategy against an evaluator under a budget and writes::

    WORKDIR/config.json      strategy, its config, the evaluator's config, budget, seed
    WORKDIR/history.jsonl    one JSON object per evaluation, in order
                             (with a ``lineage``: uid, parent, ops, depth, where the
                             strategy tracks parents, as LEMONADE does)
    WORKDIR/checkpoint.npz   the complete search state after the last full generation
    WORKDIR/checkpoint.prev.npz  the one before (what a damaged checkpoint falls back to)
    WORKDIR/best.json        the best architecture (and the Pareto front if several
                             objectives), with the benchmark's own result where known
    WORKDIR/best_net.npz     the best trained network (training evaluators)
    WORKDIR/lock             held (``flock``) by the process running the search

A generation is: split the key (:func:`~nasjax.search.base.generation_keys`), ask,
evaluate, append the records to the history (flushed and fsynced), tell, then replace
the checkpoint atomically (temporary file, fsync, ``os.replace``), keeping the one it
replaces as ``checkpoint.prev.npz``. The checkpoint stores the strategy state, the PRNG
key, the counters, the evaluation cache and the number of history lines it covers;
:func:`resume` truncates the history to that number and re-runs the interrupted
generation from the same key. A run killed at any moment (``kill -9``) therefore
resumes to exactly the history an uninterrupted run writes (apart from the ``wall`` and
``compile`` clocks: seconds of wall time and of this process's compiling,
:func:`nasjax.runtime.compile_seconds`, both summed over sessions). A damaged checkpoint
(cut short by a crash of the machine, overwritten) is set aside as
``checkpoint.damaged.npz`` with a warning, and the run continues from the previous
one, evaluating its last generation again.

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

Budgets count evaluations (``max_evals``) and/or charged seconds (``time_budget``:
simulated for tabular benchmarks, wall time for training). Evaluations are charged in
order; one that would start with the budget already spent is not recorded, and the
strategy is told it as a failure (NaN fitness), the recorded ones of that last generation
as usual, so that its final state holds every recorded evaluation.

Multi-host: with ``jax.distributed`` initialised (``jax.process_count() > 1``), every
process runs the same loop with the same seed; candidate ``j`` of a batch's uncached
candidates is evaluated by process ``j % process_count``, and the records (trained
networks included) are exchanged in the checkpoints' format, so every process tells the
strategy the same results and ends with the same history as a single-process run (apart
from the ``wall`` and ``compile`` clocks and the ``device`` metric). The evaluator must
accept ``keys=`` (one key per candidate; nasjax's evaluators do). Only process 0 reads
and writes the run directory; what a resume needs from it is sent to the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import numbers
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from nasjax import runtime
from nasjax.search import checkpoint as _checkpoint
from nasjax.search import work
from nasjax.search.base import (STRATEGIES, generation_keys, init_keys, make_strategy,
                                strategy_entry)
from nasjax.search.evaluators import Record, make_evaluator
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


@dataclasses.dataclass(frozen=True)
class Budget:
  """When a search stops: after ``max_evals`` evaluations and/or ``time_budget`` charged
  seconds, whichever comes first."""

  max_evals: int | None = None
  time_budget: float | None = None

  def __post_init__(self):
    if self.max_evals is None and self.time_budget is None:
      raise ValueError("a budget needs max_evals or time_budget")
    if self.max_evals is not None and (not isinstance(self.max_evals, int) or
                                       self.max_evals < 1):
      raise ValueError(f"max_evals must be a positive int, got {self.max_evals!r}")
    if self.time_budget is not None and not self.time_budget > 0:
      raise ValueError(f"time_budget must be positive seconds, got {self.time_budget!r}")

  @classmethod
  def coerce(cls, budget) -> "Budget":
    """A Budget from a Budget, an int (evaluations) or a dict of the fields."""
    if isinstance(budget, Budget):
      return budget
    if isinstance(budget, int) and not isinstance(budget, bool):
      return cls(max_evals=budget)
    if isinstance(budget, Mapping):
      return cls(**budget)
    raise ValueError(f"a budget is an int, a dict or a Budget, got {budget!r}")

  def done(self, evals: int, elapsed: float) -> bool:
    return ((self.max_evals is not None and evals >= self.max_evals) or
            (self.time_budget is not None and elapsed >= self.time_budget))

  def fraction(self, evals: int, elapsed: float) -> float:
    """How much of the budget is used, in [0, 1]."""
    parts = []
    if self.max_evals is not None:
      parts.append(evals / self.max_evals)
    if self.time_budget is not None:
      parts.append(elapsed / self.time_budget)
    return min(1.0, max(parts))


@dataclasses.dataclass
class RunResult:
  """What :func:`run` returns.

  Attributes:
    workdir: the run directory.
    history: the history entries (dicts, as in ``history.jsonl``).
    best: the best entry on the first objective (None if every evaluation failed).
    pareto: the non-dominated entries (all objectives).
    summary: the evaluator's own result (NB201: test accuracy of the best by validation).
    evals: number of evaluations.
    elapsed: charged seconds.
  """

  workdir: Path
  history: list[dict]
  best: dict | None
  pareto: list[dict]
  summary: dict
  evals: int
  elapsed: float


# ------------------------------------------------------------------------- files
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


# ------------------------------------------------------------------------- processes
def _allgather_bytes(data: bytes) -> list[bytes]:
  """Every process's ``data``, in process order; every process must call it."""
  from jax.experimental import multihost_utils

  sizes = np.asarray(multihost_utils.process_allgather(
      np.array([len(data)], np.int32))).reshape(-1)
  # Padded to a power of two, so that few buffer shapes (each a compiled gather) occur.
  buf = np.zeros(1 << max(6, int(sizes.max() - 1).bit_length()), np.uint8)
  buf[:len(data)] = np.frombuffer(data, np.uint8)
  bufs = np.asarray(multihost_utils.process_allgather(buf))
  return [bufs[p, :sizes[p]].tobytes() for p in range(len(sizes))]


def _from_lead(fn, processes: tuple[int, int]):
  """``fn()`` run by process 0 only and its result (or error) sent to every process.

  Results and errors (``ValueError``, ``OSError``) travel in the checkpoint's format
  (:mod:`nasjax.search.checkpoint`): no process runs code from another's data.
  """
  count, index = processes
  if count == 1:
    return fn()
  payload = b""
  if index == 0:
    try:
      payload = _checkpoint.dumps(("ok", fn()))
    except (ValueError, OSError) as e:
      payload = _checkpoint.dumps(("error", e))
  status, value = _checkpoint.loads(_allgather_bytes(payload)[0], "the data of process 0")
  if status == "error":
    raise value
  return value


# ------------------------------------------------------------------------- best / front
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


# ------------------------------------------------------------------------- progress
def _hms(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "--:--"
  s = int(seconds)
  return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
  """A one-line progress bar on stderr: evaluations, best so far, elapsed time, ETA."""

  def __init__(self, budget: Budget, quiet: bool = False, stream=None, interval: float = 0.1):
    self.budget, self.quiet = budget, quiet
    self.stream = sys.stderr if stream is None else stream
    self.tty = getattr(self.stream, "isatty", lambda: False)()
    self.interval = interval if self.tty else 5.0
    self.start = time.perf_counter()
    self.last = -math.inf
    self.start_fraction: float | None = None
    self.shown = False

  def update(self, evals: int, elapsed: float, best: float | None, force: bool = False):
    if self.quiet:
      return
    now = time.perf_counter()
    if not force and now - self.last < self.interval:
      return
    self.last = now
    frac = self.budget.fraction(evals, elapsed)
    if self.start_fraction is None:
      self.start_fraction = frac
    wall = now - self.start
    done = frac - self.start_fraction
    eta = wall * (1 - frac) / done if done > 0 else math.inf
    width = 20
    bar = "#" * int(round(width * frac)) + "-" * (width - int(round(width * frac)))
    total = f"/{self.budget.max_evals}" if self.budget.max_evals else ""
    charged = (f" | charged {elapsed:,.0f}/{self.budget.time_budget:,.0f}s"
               if self.budget.time_budget else "")
    best_s = f"{best:.4g}" if best is not None else "-"
    line = (f"[{bar}] {evals}{total} evals{charged} | best {best_s} | "
            f"{_hms(wall)} elapsed, ETA {_hms(eta)}")
    if self.tty:
      self.stream.write("\r" + line + "\x1b[K")
    else:
      self.stream.write(line + "\n")
    self.stream.flush()
    self.shown = True

  def close(self):
    if self.shown and self.tty and not self.quiet:
      self.stream.write("\n")
      self.stream.flush()


# ------------------------------------------------------------------------- the loop
def _strategy_name_config(strategy) -> tuple[str, dict]:
  name = getattr(strategy, "name", None)
  if not isinstance(name, str) or name not in STRATEGIES:
    raise ValueError(f"strategy object {strategy!r} has no registered name; register it "
                     "with register_strategy so that the run can be resumed")
  from nasjax.search.options import Options

  config = getattr(strategy, "config", None)
  if isinstance(config, Options):
    config = config.to_dict()
    config.pop("num_objectives")
  else:
    config = config() if callable(config) else {}
  return name, dict(config)


def _entry(rec: Record, index: int, generation: int, elapsed: float, wall: float,
           names, compiled: float, lineage: dict | None = None) -> dict:
  entry = {
      "eval": index, "generation": generation, "arch": rec.arch, "code": rec.code,
      "objectives": dict(zip(names, rec.objectives)), "status": rec.status,
      "cost": rec.cost, "elapsed": elapsed, "wall": wall, "compile": compiled,
      "metrics": rec.metrics}
  if lineage is not None:
    entry["lineage"] = lineage
  return _json_safe(entry)


def _cache_key(space, cand) -> str:
  from nasjax.arch import Arch
  from nasjax.network import Network

  if isinstance(cand, (Network, work.Child)):
    return ""  # a network with its own weights: never the same evaluation
  if isinstance(cand, Arch):
    return "arch:" + cand.to_json()
  return f"code:{space.hash(cand)}"


def _describe(space, cand) -> tuple[Any, list[int] | None]:
  from nasjax.arch import Arch
  from nasjax.network import Network

  if isinstance(cand, (Network, work.Child)):
    return cand.arch.to_dict(), None
  if isinstance(cand, Arch):
    return cand.to_dict(), None
  return space.describe(cand), [int(v) for v in cand]


def _evaluate(evaluator, items: list, key, cache: dict,
              processes: tuple[int, int] = (1, 0)) -> list[Record]:
  """Evaluate ``items``, reusing cached results of repeated architectures.

  Candidate ``j`` is evaluated with key ``fold_in(key, j)`` whether or not others were
  cached, so caching never changes a result. With ``processes = (count, index)``,
  ``count > 1``, this process evaluates every ``count``-th candidate still to evaluate,
  starting at ``index``, and the records of all processes are gathered.
  """
  count, index = processes
  batch = np.stack(items) if items and all(isinstance(c, np.ndarray) for c in items) else items
  if not evaluator.cacheable and count == 1:
    return evaluator.evaluate(batch, key)
  names = [_cache_key(evaluator.space, c) if evaluator.cacheable else "" for c in items]
  todo = [j for j, k in enumerate(names) if not k or k not in cache]
  fresh = {}

  def evaluate(js):
    if not js:
      return []
    sub = batch[js] if isinstance(batch, np.ndarray) else [items[j] for j in js]
    return evaluator.evaluate(sub, key, keys=[jax.random.fold_in(key, j) for j in js])

  if count == 1:
    fresh = dict(zip(todo, evaluate(todo)))
  else:
    gathered = _allgather_bytes(_checkpoint.dumps(evaluate(todo[index::count])))
    for p, data in enumerate(gathered):
      fresh.update(zip(todo[p::count], _checkpoint.loads(data, f"the records of process {p}")))
  out = []
  for j, k in enumerate(names):
    if j in fresh:
      rec = fresh[j]
      if k and rec.ok and k not in cache:
        cache[k] = {"objectives": list(rec.objectives), "metrics": _json_safe(rec.metrics)}
    else:
      c = cache[k]
      arch, code = _describe(evaluator.space, items[j])
      rec = Record(arch, [math.nan if v is None else v for v in c["objectives"]], "ok", 0.0,
                   {**c["metrics"], "cached": True}, code)
    out.append(rec)
  return out


def _run_shared(evaluator, request, name: str) -> work.SharedResult:
  if not callable(getattr(evaluator, "run_shared", None)):
    raise ValueError(f"strategy {name!r} trains shared weights, which the "
                     f"{getattr(evaluator, 'kind', type(evaluator).__name__)!r} evaluator "
                     "cannot do; use the training evaluator")
  return evaluator.run_shared(request)


def _check_seed(seed) -> int:
  """``seed`` as an int, if it is one that :func:`~nasjax.search.base.init_keys` takes."""
  if (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or
      not SEED_RANGE[0] <= int(seed) <= SEED_RANGE[1]):
    raise ValueError(f"the seed must be an integer from -2**63 to 2**63 - 1, got {seed!r}")
  return int(seed)


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


def run(strategy, evaluator, budget, workdir: str | os.PathLike, seed: int = 0,
        config: Mapping[str, Any] | None = None, *, quiet: bool = False,
        metadata: Mapping[str, Any] | None = None, resume: bool = False) -> RunResult:
  """Run a search in ``workdir`` (see the module docstring for the files).

  Args:
    strategy: a registered strategy name, or a strategy object whose ``name`` is
      registered (and whose ``config()`` returns its options).
    evaluator: an evaluator (tabular or training); its ``space`` is searched.
    budget: a :class:`Budget`, an int (evaluations) or a dict of Budget fields.
    workdir: the run directory; created if needed. It must not hold a run already,
      unless ``resume``.
    seed: the integer seed, from ``-2**63`` to ``2**63 - 1``; the same seed gives the
      same search.
    config: options of a named strategy (overriding its defaults).
    quiet: no progress bar.
    metadata: JSON-serialisable extras stored in ``config.json``.
    resume: continue the run in ``workdir`` (see :func:`resume`).

  Returns:
    A :class:`RunResult`.

  Raises:
    ValueError: for bad arguments (before anything is written), a run directory that
      holds a run already (or evaluations without ``config.json``), one that another
      process is running, or damaged files that leave nothing to continue from (each
      named).
    OSError: naming the file, if the run directory cannot be written.
  """
  workdir = Path(workdir)
  seed = _check_seed(seed)
  budget = Budget.coerce(budget)
  names = list(evaluator.objectives)
  if isinstance(strategy, str):
    strategy = make_strategy(strategy, evaluator.space, config, num_objectives=len(names),
                             evaluator=evaluator)
  name, strategy_config = _strategy_name_config(strategy)
  run_config = _json_safe({
      "format": FORMAT, "strategy": name, "strategy_config": strategy_config,
      "evaluator": evaluator.config(), "objectives": names,
      "budget": dataclasses.asdict(budget), "seed": seed,
      "metadata": dict(metadata or {})})
  try:
    config_bytes = json.dumps(run_config, indent=1).encode()
  except TypeError as e:
    raise ValueError(f"the run's options are not JSON data ({e})") from None
  processes = (jax.process_count(), jax.process_index())
  with contextlib.ExitStack() as held:  # the run directory's lock, for the whole run
    ckpt, history = _from_lead(lambda: _prepare(workdir, config_bytes, name, resume, held),
                               processes)
    return _search(strategy, name, evaluator, budget, workdir, seed, ckpt, history,
                   quiet=quiet, processes=processes)


class _RunDir:
  """What a search writes into its run directory: history lines, checkpoints, best.json and
  the best network. Only the lead process writes (``lead``); the others keep the same
  history and tracker in memory."""

  def __init__(self, workdir: Path, names: list[str], history: list[dict], lead: bool):
    self.workdir, self.names, self.history, self.lead = workdir, names, history, lead
    self.tracker = _Best(names)
    for e in history:
      self.tracker.add(e)

  def append(self, entries: list[dict], records: list[Record]) -> None:
    """Record ``entries`` (fsynced before the checkpoint that covers them); a record that
    becomes the best with a trained network is saved as ``best_net.npz``."""
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
        os.fsync(f.fileno())
    except OSError as e:
      # A line cut short here is dropped on resume, with the rest of the generation.
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


def _start(strategy, seed: int, ckpt: dict | None) -> tuple[Any, Any, dict, dict]:
  """``(state, key, cache, counters)`` of a new search, or of the checkpoint ``ckpt``."""
  if ckpt is None:
    key, k_init = init_keys(seed)
    counters = {"generation": 0, "evals": 0, "elapsed": 0.0, "wall": 0.0, "compile": 0.0,
                "finished": False}
    return strategy.init(k_init), key, {}, counters
  counters = {k: ckpt[k] for k in ("generation", "evals", "elapsed", "wall", "finished")}
  counters["compile"] = ckpt.get("compile", 0.0)
  return ckpt["state"], ckpt["key"], ckpt["cache"], counters


def _charge(records: list[Record], budget: Budget, counters: dict, lineage: list,
            clocks: tuple[float, float], names: list[str]) -> tuple[list[dict], float]:
  """History entries of the ``records`` charged in order until the time budget is spent
  (an evaluation that would start with it spent is not recorded), and the charged seconds
  after them."""
  wall, compiled = clocks
  entries, elapsed = [], counters["elapsed"]
  for i, rec in enumerate(records):
    if budget.time_budget is not None and elapsed >= budget.time_budget:
      break
    elapsed += rec.cost
    entries.append(_entry(rec, counters["evals"] + i, counters["generation"], elapsed, wall,
                          names, compiled, lineage[i] if i < len(lineage) else None))
  return entries, elapsed


def _told(cands, records: list[Record], num_objectives: int) -> tuple[Any, np.ndarray]:
  """What ``tell`` gets: the candidates (trained networks in place of the networks asked
  for) and the fitness, NaN for the candidates the budget left unrecorded, so that the
  strategy's final state (a LEMONADE front, an evolution's population) holds every
  recorded evaluation and nothing else."""
  from nasjax.network import Network

  fitness = np.full((len(cands), num_objectives), np.nan)
  fitness[:len(records)] = [r.objectives for r in records]
  fitness = fitness[:, 0] if num_objectives == 1 else fitness
  if isinstance(cands, (jax.Array, np.ndarray)):
    return cands, fitness
  told = [r.network if isinstance(c, (Network, work.Child)) and r.network is not None else c
          for c, r in zip(cands, records)] + list(cands[len(records):])
  return told, fitness


def _search(strategy, name: str, evaluator, budget: Budget, workdir: Path, seed: int,
            ckpt: dict | None, history: list[dict], *, quiet: bool,
            processes: tuple[int, int]) -> RunResult:
  """The search loop of :func:`run`, from ``ckpt`` (None: from the beginning): keys, ask
  (sample and morph or generate), evaluate (train or look up), record, tell (update),
  checkpoint."""
  names = list(evaluator.objectives)
  jittable = strategy_entry(name).jittable
  ask = jax.jit(strategy.ask) if jittable else strategy.ask
  tell = jax.jit(strategy.tell) if jittable else strategy.tell
  lineage = getattr(strategy, "lineage", None)  # where each candidate came from (LEMONADE)
  rundir = _RunDir(workdir, names, history, lead=processes[1] == 0)
  state, key, cache, counters = _start(strategy, seed, ckpt)
  if ckpt is None:
    rundir.checkpoint(counters, key, state, cache)
  progress = Progress(budget, quiet or not rundir.lead)
  start, wall0 = time.perf_counter(), counters["wall"]
  compile_start, compile0 = runtime.compile_seconds(), counters["compile"]

  def clocks() -> tuple[float, float]:  # wall and compile seconds over all sessions
    return (wall0 + time.perf_counter() - start,
            compile0 + runtime.compile_seconds() - compile_start)

  while not counters["finished"]:
    if budget.done(counters["evals"], counters["elapsed"]):
      counters["finished"] = True
      rundir.checkpoint(counters, key, state, cache)
      break
    key_next, k_ask, k_eval, k_tell = generation_keys(key)
    cands, asked = ask(k_ask, state)
    if work.is_shared(cands):  # work on shared weights: no candidate, no history entry
      result = _run_shared(evaluator, cands, name)
      counters["elapsed"] += result.seconds
      state, key = tell(k_tell, asked, cands, result), key_next
      counters["wall"], counters["compile"] = clocks()
      rundir.checkpoint(counters, key, state, cache)
      progress.update(counters["evals"], counters["elapsed"], rundir.best_value())
      continue
    items = list(np.asarray(cands)) if isinstance(cands, (jax.Array, np.ndarray)) else list(cands)
    if not items:
      raise ValueError(f"strategy {name!r} asked for no candidates")
    if budget.max_evals is not None:
      items = items[:budget.max_evals - counters["evals"]]
    records = _evaluate(evaluator, items, k_eval, cache, processes)
    entries, counters["elapsed"] = _charge(
        records, budget, counters, lineage(asked) if callable(lineage) else [], clocks(), names)
    records = records[:len(entries)]
    rundir.append(entries, records)
    counters["evals"] += len(entries)
    counters["wall"], counters["compile"] = clocks()
    counters["finished"] = len(entries) < len(cands)
    state = tell(k_tell, asked, *_told(cands, records, len(names)))
    key = key_next
    counters["generation"] += 1
    runtime.release_compiled_code()
    rundir.checkpoint(counters, key, state, cache)
    rundir.export(counters)
    progress.update(counters["evals"], counters["elapsed"], rundir.best_value())
  # The evaluator's summary reads the whole history: only at the end of a session.
  summary = evaluator.summarize(history) if hasattr(evaluator, "summarize") else {}
  rundir.export(counters, summary)
  progress.update(counters["evals"], counters["elapsed"], rundir.best_value(), force=True)
  progress.close()
  return RunResult(workdir, history, rundir.tracker.best, rundir.tracker.pareto, summary,
                   counters["evals"], counters["elapsed"])


def resume(workdir: str | os.PathLike, *, quiet: bool = False) -> RunResult:
  """Continue the run in ``workdir`` from its checkpoint (a finished run just returns).

  The evaluator and strategy are rebuilt from ``config.json``; the history is cut back
  to the checkpoint, so the result equals an uninterrupted run with the same seed.
  """
  def config():
    cfg = read_config(workdir)
    if cfg.get("format") != FORMAT:
      raise ValueError(f"{workdir}/{CONFIG_FILE} has format {cfg.get('format')!r}, "
                       f"expected {FORMAT!r}")
    return cfg

  cfg = _from_lead(config, (jax.process_count(), jax.process_index()))
  evaluator = make_evaluator(cfg["evaluator"])
  return run(cfg["strategy"], evaluator, cfg["budget"], workdir, cfg["seed"],
             cfg["strategy_config"], quiet=quiet, metadata=cfg.get("metadata"), resume=True)
