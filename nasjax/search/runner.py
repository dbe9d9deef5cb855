"""The search loop: one function drives every strategy in a run directory.

:func:`run` drives a strategy against an evaluator under a budget in a run
directory (its files: :mod:`nasjax.search.rundir`).

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

A weight-sharing strategy's ``ask`` may return work on its shared weights instead of
candidates (:class:`~nasjax.search.work.TrainShared`,
:class:`~nasjax.search.work.ScoreShared`): the evaluator runs it on its data, the
strategy is told the :class:`~nasjax.search.work.SharedResult`, nothing is added to the
history, its seconds are charged, and the state is checkpointed, so such a search killed
while its shared weights train resumes from its last chunk. (Under ``jax.distributed``
every process runs that work itself, with the same result.)

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

On Ray (``backend=``, :mod:`nasjax.search.ray_backend`), this process is the driver:
it runs the loop and Ray workers evaluate the candidates. In batch mode the loop is the
one above, a generation spread over the workers, so the history equals a run without
Ray. In asynchronous mode (:func:`_asynchronous`) a generation is asked for whenever a
worker frees up and the previous one is given out, each result is told as it arrives
and recorded in that order, and the checkpoint is replaced after a batch of results at
most once a second (:data:`CHECKPOINT_SECONDS`), with the candidates asked for and not
yet told; a resumed run keeps the results that checkpoint covers and evaluates those
candidates first, with their keys.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import numbers
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from nasjax import runtime
from nasjax.search import checkpoint as _checkpoint
from nasjax.search import work
from nasjax.search.base import (STRATEGIES, generation_keys, init_keys, make_strategy,
                                strategy_config, strategy_entry)
from nasjax.search.evaluators import Record, make_evaluator
from nasjax.search.rundir import (CONFIG_FILE, FORMAT, SEED_RANGE, _json_safe, _prepare,
                                  _RunDir, read_config)
# What a run directory holds, read by these functions (:mod:`nasjax.search.rundir`).
from nasjax.search.rundir import (atomic_write, load_checkpoint, read_best,  # noqa: F401
                                  read_history)



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
  return name, strategy_config(strategy)


def _entry(rec: Record, index: int, generation: int, elapsed: float, wall: float,
           names, compiled: float, lineage: dict | None = None,
           worker: dict | None = None) -> dict:
  entry = {
      "eval": index, "generation": generation, "arch": rec.arch, "code": rec.code,
      "objectives": dict(zip(names, rec.objectives)), "status": rec.status,
      "cost": rec.cost, "elapsed": elapsed, "wall": wall, "compile": compiled,
      "metrics": rec.metrics}
  if lineage is not None:
    entry["lineage"] = lineage
  if worker is not None:  # where and when a Ray worker ran it (nasjax.search.ray_backend)
    entry["worker"] = worker
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


def _from_cache(space, cand, cached: dict) -> Record:
  """The record of a candidate whose architecture was evaluated before (``cached``)."""
  arch, code = _describe(space, cand)
  return Record(arch, [math.nan if v is None else v for v in cached["objectives"]], "ok", 0.0,
                {**cached["metrics"], "cached": True}, code)


def _remember(cache: dict, name: str, rec: Record) -> None:
  """Cache a successful evaluation under ``name`` (``""``: never cached)."""
  if name and rec.ok and name not in cache:
    cache[name] = {"objectives": list(rec.objectives), "metrics": _json_safe(rec.metrics)}


def _evaluate(evaluator, items: list, key, cache: dict,
              processes: tuple[int, int] = (1, 0)) -> list[Record]:
  """Evaluate ``items``, reusing cached results of repeated architectures.

  Candidate ``j`` is evaluated with key ``fold_in(key, j)`` whether or not others were
  cached, so caching never changes a result. With ``processes = (count, index)``,
  ``count > 1``, this process evaluates every ``count``-th candidate still to evaluate,
  starting at ``index``, and the records of all processes are gathered.
  """
  return _evaluate_on(evaluator, items, key, cache, processes)[0]


def _evaluate_on(evaluator, items: list, key, cache: dict,
                 processes: tuple[int, int] = (1, 0), pool=None
                 ) -> tuple[list[Record], list[dict | None]]:
  """:func:`_evaluate`, by the workers of ``pool`` (a
  :class:`~nasjax.search.ray_backend.WorkerPool`) if given.

  Returns:
    ``(records, workers)``: per candidate, where a Ray worker ran it (None otherwise).
  """
  count, index = processes
  batch = np.stack(items) if items and all(isinstance(c, np.ndarray) for c in items) else items
  if not evaluator.cacheable and count == 1 and pool is None:
    return evaluator.evaluate(batch, key), [None] * len(items)
  names = [_cache_key(evaluator.space, c) if evaluator.cacheable else "" for c in items]
  todo = [j for j, k in enumerate(names) if not k or k not in cache]
  fresh, workers = {}, {}

  def evaluate(js):
    if not js:
      return []
    sub = batch[js] if isinstance(batch, np.ndarray) else [items[j] for j in js]
    return evaluator.evaluate(sub, key, keys=[jax.random.fold_in(key, j) for j in js])

  if pool is not None:
    done = pool.evaluate([items[j] for j in todo], [jax.random.fold_in(key, j) for j in todo])
    fresh = {j: rec for j, (rec, _) in zip(todo, done)}
    workers = {j: worker for j, (_, worker) in zip(todo, done)}
  elif count == 1:
    fresh = dict(zip(todo, evaluate(todo)))
  else:
    gathered = _allgather_bytes(_checkpoint.dumps(evaluate(todo[index::count])))
    for p, data in enumerate(gathered):
      fresh.update(zip(todo[p::count], _checkpoint.loads(data, f"the records of process {p}")))
  out = []
  for j, k in enumerate(names):
    if j in fresh:
      rec = fresh[j]
      _remember(cache, k, rec)
    else:
      rec = _from_cache(evaluator.space, items[j], cache[k])
    out.append(rec)
  return out, [workers.get(j) for j in range(len(items))]


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




def run(strategy, evaluator, budget, workdir: str | os.PathLike, seed: int = 0,
        config: Mapping[str, Any] | None = None, *, quiet: bool = False,
        metadata: Mapping[str, Any] | None = None, resume: bool = False,
        backend=None) -> RunResult:
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
    backend: where candidates are evaluated: None or ``"local"`` (this process), or on
      Ray workers: ``"ray"``, a :class:`~nasjax.search.ray_backend.RayBackend` or a
      started :class:`~nasjax.search.ray_backend.WorkerPool`
      (:mod:`nasjax.search.ray_backend`).

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
  processes = (jax.process_count(), jax.process_index())
  backend, asynchronous = _backend(backend, name, processes)
  run_config = _json_safe({
      "format": FORMAT, "strategy": name, "strategy_config": strategy_config,
      "evaluator": evaluator.config(), "objectives": names,
      "budget": dataclasses.asdict(budget), "seed": seed,
      "metadata": dict(metadata or {})})
  if backend is not None:
    from nasjax.search.ray_backend import options_of

    run_config["backend"] = {**options_of(backend).to_dict(), "asynchronous": asynchronous}
  try:
    config_bytes = json.dumps(run_config, indent=1).encode()
  except TypeError as e:
    raise ValueError(f"the run's options are not JSON data ({e})") from None
  with contextlib.ExitStack() as held:  # the run directory's lock, for the whole run
    ckpt, history = _from_lead(lambda: _prepare(workdir, config_bytes, name, resume, held),
                               processes)
    asynchronous = _check_mode(ckpt, backend, asynchronous, workdir)
    pool = None
    if backend is not None and not (ckpt is not None and ckpt["finished"]):
      from nasjax.search.ray_backend import open_pool

      pool = held.enter_context(open_pool(backend, evaluator))
    return _search(strategy, name, evaluator, budget, workdir, seed, ckpt, history,
                   quiet=quiet, processes=processes, pool=pool, asynchronous=asynchronous)


def _backend(backend, name: str, processes: tuple[int, int]) -> tuple[Any, bool]:
  """``(backend or None, whether it runs asynchronously)`` of :func:`run`'s argument."""
  if backend is None or backend == "local":
    return None, False
  from nasjax.search import ray_backend

  backend = ray_backend.coerce(backend)
  if processes[0] > 1:
    raise ValueError("the ray backend and jax.distributed are alternatives: with Ray, run "
                     "one driver process (each Ray worker trains its own candidates)")
  return backend, ray_backend.options_of(backend).mode(name)


def _check_mode(ckpt: dict | None, backend, asynchronous: bool, workdir: Path) -> bool:
  """Whether a run continued from ``ckpt`` runs asynchronously: as it did before, unless
  the backend says otherwise, which is refused (an asynchronous run does not continue
  in batch mode, nor the other way round)."""
  if ckpt is None or ckpt["finished"]:
    return asynchronous
  was = bool(ckpt.get("asynchronous"))
  if backend is not None:
    from nasjax.search.ray_backend import options_of

    if options_of(backend).asynchronous is None and (not was or asynchronous):
      return was  # the backend's default: the mode the run started in
  if was == asynchronous:
    return was
  raise ValueError(f"{workdir} holds a search that evaluated "
                   f"{'asynchronously' if was else 'in batch mode'}; continue it that way "
                   f"(the ray backend with asynchronous={was})")


def _start(strategy, seed: int, ckpt: dict | None, asynchronous: bool = False
           ) -> tuple[Any, Any, dict, dict]:
  """``(state, key, cache, counters)`` of a new search, or of the checkpoint ``ckpt``.

  The counters hold the session (0 for a new search, one more for each resume) and, in
  asynchronous mode, the candidates asked for and not yet told (``inflight``).
  """
  if ckpt is None:
    key, k_init = init_keys(seed)
    counters = {"generation": 0, "evals": 0, "elapsed": 0.0, "wall": 0.0, "compile": 0.0,
                "finished": False, "session": 0, "asynchronous": asynchronous}
    if asynchronous:
      counters["inflight"] = []
    return strategy.init(k_init), key, {}, counters
  counters = {k: ckpt[k] for k in ("generation", "evals", "elapsed", "wall", "finished")}
  counters["compile"] = ckpt.get("compile", 0.0)
  counters["session"] = ckpt.get("session", 0) + 1
  counters["asynchronous"] = asynchronous
  if asynchronous:
    counters["inflight"] = list(ckpt.get("inflight") or [])
  return ckpt["state"], ckpt["key"], ckpt["cache"], counters


def _charge(records: list[Record], budget: Budget, counters: dict, lineage: list,
            clocks: tuple[float, float], names: list[str],
            workers: list | None = None) -> tuple[list[dict], float]:
  """History entries of the ``records`` charged in order until the time budget is spent
  (an evaluation that would start with it spent is not recorded), and the charged seconds
  after them."""
  wall, compiled = clocks
  entries, elapsed = [], counters["elapsed"]
  for i, rec in enumerate(records):
    if budget.time_budget is not None and elapsed >= budget.time_budget:
      break
    elapsed += rec.cost
    worker = workers[i] if workers and workers[i] is not None else None
    entries.append(_entry(rec, counters["evals"] + i, counters["generation"], elapsed, wall,
                          names, compiled, lineage[i] if i < len(lineage) else None,
                          None if worker is None else {**worker,
                                                       "session": counters["session"]}))
  return entries, elapsed


def _told(cands, records: list[Record], num_objectives: int) -> tuple[Any, np.ndarray]:
  """What ``tell`` gets: the candidates (the trained networks in place of the
  architectures, networks and children asked for) and the fitness, NaN for the candidates
  the budget left unrecorded, so that the strategy's final state (a LEMONADE front, an
  evolution's population) holds every recorded evaluation and nothing else."""
  from nasjax.arch import Arch
  from nasjax.network import Network

  fitness = np.full((len(cands), num_objectives), np.nan)
  fitness[:len(records)] = [r.objectives for r in records]
  fitness = fitness[:, 0] if num_objectives == 1 else fitness
  if isinstance(cands, (jax.Array, np.ndarray)):
    return cands, fitness
  told = [r.network if isinstance(c, (Arch, Network, work.Child)) and r.network is not None
          else c
          for c, r in zip(cands, records)] + list(cands[len(records):])
  return told, fitness


@dataclasses.dataclass
class _Session:
  """What the loops of one session share: the strategy's (jitted) functions, the run
  directory, the counters, the progress bar and the clocks."""

  ask: Any
  tell: Any
  rundir: _RunDir
  counters: dict
  progress: Progress
  names: list
  start: float = dataclasses.field(default_factory=time.perf_counter)
  compile_start: float = dataclasses.field(default_factory=runtime.compile_seconds)

  def __post_init__(self):
    self.wall0, self.compile0 = self.counters["wall"], self.counters["compile"]

  def clocks(self) -> tuple[float, float]:
    """Wall and compile seconds over all sessions."""
    return (self.wall0 + time.perf_counter() - self.start,
            self.compile0 + runtime.compile_seconds() - self.compile_start)

  def tick(self) -> None:
    """Set the clocks in the counters."""
    self.counters["wall"], self.counters["compile"] = self.clocks()

  def show(self) -> None:
    self.progress.update(self.counters["evals"], self.counters["elapsed"],
                         self.rundir.best_value())


def _search(strategy, name: str, evaluator, budget: Budget, workdir: Path, seed: int,
            ckpt: dict | None, history: list[dict], *, quiet: bool,
            processes: tuple[int, int], pool=None, asynchronous: bool = False) -> RunResult:
  """The search loop of :func:`run`, from ``ckpt`` (None: from the beginning), by
  generations (:func:`_generations`) or, asynchronously on Ray workers, candidate by
  candidate (:func:`_asynchronous`)."""
  names = list(evaluator.objectives)
  jittable = strategy_entry(name).jittable
  ask = jax.jit(strategy.ask) if jittable else strategy.ask
  tell = jax.jit(strategy.tell) if jittable else strategy.tell
  rundir = _RunDir(workdir, names, history, lead=processes[1] == 0)
  state, key, cache, counters = _start(strategy, seed, ckpt, asynchronous)
  if ckpt is None:
    rundir.checkpoint(counters, key, state, cache)
  session = _Session(ask, tell, rundir, counters, Progress(budget, quiet or not rundir.lead),
                     names)
  if asynchronous:
    _asynchronous(session, evaluator, budget, state, key, cache, pool)
  else:
    lineage = getattr(strategy, "lineage", None)  # where each candidate came from (LEMONADE)
    _generations(session, name, evaluator, budget, state, key, cache, processes, pool,
                 lineage if callable(lineage) else None)
  # The evaluator's summary reads the whole history: only at the end of a session.
  summary = evaluator.summarize(history) if hasattr(evaluator, "summarize") else {}
  rundir.export(counters, summary)
  session.progress.update(counters["evals"], counters["elapsed"], rundir.best_value(),
                          force=True)
  session.progress.close()
  return RunResult(workdir, history, rundir.tracker.best, rundir.tracker.pareto, summary,
                   counters["evals"], counters["elapsed"])


def _generations(s: _Session, name: str, evaluator, budget: Budget, state, key, cache: dict,
                 processes: tuple[int, int], pool, lineage) -> None:
  """Generation after generation: keys, ask (sample and morph or generate), evaluate
  (train or look up), record, tell (update), checkpoint."""
  counters, rundir = s.counters, s.rundir
  while not counters["finished"]:
    if budget.done(counters["evals"], counters["elapsed"]):
      counters["finished"] = True
      rundir.checkpoint(counters, key, state, cache)
      break
    key_next, k_ask, k_eval, k_tell = generation_keys(key)
    cands, asked = s.ask(k_ask, state)
    if work.is_shared(cands):  # work on shared weights: no candidate, no history entry
      result = _run_shared(evaluator, cands, name)
      counters["elapsed"] += result.seconds
      state, key = s.tell(k_tell, asked, cands, result), key_next
      s.tick()
      rundir.checkpoint(counters, key, state, cache)
      s.show()
      continue
    items = list(np.asarray(cands)) if isinstance(cands, (jax.Array, np.ndarray)) else list(cands)
    if not items:
      raise ValueError(f"strategy {name!r} asked for no candidates")
    if budget.max_evals is not None:
      items = items[:budget.max_evals - counters["evals"]]
    records, workers = _evaluate_on(evaluator, items, k_eval, cache, processes, pool)
    entries, counters["elapsed"] = _charge(
        records, budget, counters, lineage(asked) if lineage else [], s.clocks(), s.names,
        workers)
    records = records[:len(entries)]
    rundir.append(entries, records)
    counters["evals"] += len(entries)
    s.tick()
    counters["finished"] = len(entries) < len(cands)
    state = s.tell(k_tell, asked, *_told(cands, records, len(s.names)))
    key = key_next
    counters["generation"] += 1
    runtime.release_compiled_code()
    rundir.checkpoint(counters, key, state, cache)
    rundir.export(counters)
    s.show()


# ------------------------------------------------------------------------- asynchronous
# The keys of a generation and of one of its candidates, each in one compiled call (the
# same keys as generation_keys and fold_in give, at a fraction of their dispatch time).
_generation_keys = jax.jit(generation_keys)
_candidate_keys = jax.jit(lambda k_eval, k_tell, j: (jax.random.fold_in(k_eval, j),
                                                     jax.random.fold_in(k_tell, j)))
# An asynchronous run replaces its checkpoint after a batch of results at most this often
# (seconds; and when it ends): a resumed run evaluates again what it told since.
CHECKPOINT_SECONDS = 1.0


def _ask_tickets(s: _Session, key, state) -> tuple[Any, Any, list[dict]]:
  """Ask for a generation: ``(next key, state, tickets)``, a ticket per candidate with
  its evaluation and tell keys, its generation and its position in it (what the
  checkpoint keeps of a candidate asked for and not yet told)."""
  key_next, k_ask, k_eval, k_tell = _generation_keys(key)
  cands, state = s.ask(k_ask, state)
  if work.is_shared(cands):
    raise ValueError("a strategy that trains shared weights cannot run asynchronously")
  items = list(np.asarray(cands)) if isinstance(cands, (jax.Array, np.ndarray)) else list(cands)
  if not items:
    raise ValueError("the strategy asked for no candidates")
  g = s.counters["generation"]
  s.counters["generation"] += 1
  tickets = []
  for j, c in enumerate(items):
    k, t = _candidate_keys(k_eval, k_tell, np.int32(j))
    tickets.append({"cand": c, "key": k, "tell_key": t, "generation": g, "position": j})
  return key_next, state, tickets


def _room(budget: Budget, counters: dict, outstanding: int) -> bool:
  """Whether the budget leaves room for one more evaluation beside ``outstanding``."""
  if budget.max_evals is not None and counters["evals"] + outstanding >= budget.max_evals:
    return False
  return budget.time_budget is None or counters["elapsed"] < budget.time_budget


def _tell_one(s: _Session, evaluator, state, cache: dict, ticket: dict, rec: Record,
              worker: dict | None) -> tuple[Any, dict]:
  """Tell one result (the budget has room for it): the new state and its history entry."""
  counters, cand = s.counters, ticket["cand"]
  _remember(cache, _cache_key(evaluator.space, cand) if evaluator.cacheable else "", rec)
  counters["elapsed"] += rec.cost
  wall, compiled = s.clocks()
  entry = _entry(rec, counters["evals"], ticket["generation"], counters["elapsed"], wall,
                 s.names, compiled, None,
                 None if worker is None else {**worker, "session": counters["session"]})
  entry["position"] = ticket["position"]
  counters["evals"] += 1
  cands = np.asarray(cand)[None] if isinstance(cand, np.ndarray) else [cand]
  return s.tell(ticket["tell_key"], state, *_told(cands, [rec], len(s.names))), entry


def _asynchronous(s: _Session, evaluator, budget: Budget, state, key, cache: dict,
                  pool) -> None:
  """Candidate by candidate on the Ray workers of ``pool``: whenever fewer than
  ``pool.in_flight`` evaluations are under way, ask (a generation, given out one
  candidate at a time) and submit; tell each result as it arrives, in that order, and
  refill its worker at once. After each batch of results (and the asks that refilled
  the workers, so that no worker waits on the disk), record the results, and at most
  every :data:`CHECKPOINT_SECONDS` replace the checkpoint, with the candidates asked for
  and not yet told, which a resumed run evaluates first."""
  counters, rundir = s.counters, s.rundir
  if counters["finished"]:
    return
  asked = {(t["generation"], t["position"]): t for t in counters["inflight"]}
  queue = collections.deque(asked.values())  # asked for, not submitted
  done: list = []  # results known without a worker: cached architectures

  def refill(state, key):
    while pool.running + len(done) < pool.in_flight and _room(
        budget, counters, pool.running + len(done)):
      if not queue:
        key, state, tickets = _ask_tickets(s, key, state)
        asked.update(((t["generation"], t["position"]), t) for t in tickets)
        queue.extend(tickets)
      ticket = queue.popleft()
      name = _cache_key(evaluator.space, ticket["cand"]) if evaluator.cacheable else ""
      if name in cache:
        done.append((ticket, _from_cache(evaluator.space, ticket["cand"], cache[name]), None))
      else:
        pool.submit(ticket, ticket["cand"], ticket["key"])
    return state, key

  state, key = refill(state, key)
  saved = time.monotonic()
  while not counters["finished"]:
    results = list(done) or pool.wait()
    done.clear()
    entries, records = [], []
    for ticket, rec, worker in results:
      if budget.done(counters["evals"], counters["elapsed"]):
        break
      del asked[(ticket["generation"], ticket["position"])]
      state, entry = _tell_one(s, evaluator, state, cache, ticket, rec, worker)
      entries.append(entry)
      records.append(rec)
      state, key = refill(state, key)  # the worker that freed up, at once
    counters["finished"] = budget.done(counters["evals"], counters["elapsed"])
    rundir.append(entries, records, sync=False)
    if counters["finished"] or time.monotonic() >= saved + CHECKPOINT_SECONDS:
      counters["inflight"] = [] if counters["finished"] else list(asked.values())
      s.tick()
      runtime.release_compiled_code()
      rundir.sync_history()  # what the checkpoint covers is on disk first
      rundir.checkpoint(counters, key, state, cache)
      rundir.export(counters)
      saved = time.monotonic()
    s.show()
  pool.drop()  # evaluations under way when the budget ran out are not recorded


def resume(workdir: str | os.PathLike, *, quiet: bool = False, backend=None) -> RunResult:
  """Continue the run in ``workdir`` from its checkpoint (a finished run just returns).

  The evaluator and strategy are rebuilt from ``config.json``; the history is cut back
  to the checkpoint, so the result equals an uninterrupted run with the same seed. An
  asynchronous run continues from the results it told, and first evaluates again the
  candidates it had asked for and not told.

  Args:
    workdir: the run directory.
    quiet: no progress bar.
    backend: as for :func:`run`; None: the backend ``config.json`` records (the ray
      backend's options of the run), else local evaluation.
  """
  def config():
    cfg = read_config(workdir)
    if cfg.get("format") != FORMAT:
      raise ValueError(f"{workdir}/{CONFIG_FILE} has format {cfg.get('format')!r}, "
                       f"expected {FORMAT!r}")
    return cfg

  cfg = _from_lead(config, (jax.process_count(), jax.process_index()))
  if backend is None and cfg.get("backend"):
    from nasjax.search.ray_backend import RayBackend

    backend = RayBackend.from_dict(cfg["backend"])
  evaluator = make_evaluator(cfg["evaluator"])
  return run(cfg["strategy"], evaluator, cfg["budget"], workdir, cfg["seed"],
             cfg["strategy_config"], quiet=quiet, metadata=cfg.get("metadata"), resume=True,
             backend=backend)

