"""Evaluations on Ray: one long-lived worker per device, on one machine or a cluster.

``nasjax search ... --backend ray`` (:func:`nasjax.search.run` with
``backend=RayBackend(...)``) keeps the strategy, the run directory and the history in the
driver, the process that runs the search loop (:mod:`nasjax.search.runner`), and
evaluates each candidate as a task of `Ray core <https://docs.ray.io>`_ on a worker
actor. A worker is started once per device (one GPU each where the cluster has GPUs,
else one CPU slot each) and lives as long as the pool: it builds the evaluator once from
its config (so a data set or a benchmark table is loaded once per worker, by name, not
sent with every task) and keeps its compiled programs between candidates, so a candidate
of an architecture the worker has trained before does not compile again. Candidates and
results travel in the checkpoints' format (:mod:`nasjax.search.checkpoint`: arrays and a
JSON description), so trained networks cross machines as arrays, and what the driver
reads back runs no code.

Two modes:

- **batch**: a generation's candidates are spread over the workers and told in ask
  order, so the history equals a run without Ray with the same seed (apart from the
  clocks and the ``worker`` record); any strategy runs this way.
- **asynchronous**: whenever a worker frees up the driver asks for a new candidate, and
  it tells each result as it arrives, with at most ``in_flight`` evaluations under way,
  as Real et al. ran regularized evolution. Only the strategies registered with
  ``asynchronous=True`` (:attr:`~nasjax.search.base.StrategyEntry.asynchronous`: their
  ``tell`` takes results one at a time, in any order, with asks in between;
  :func:`asynchronous_strategies`) run this way; they do by default.

Lost workers: an evaluation whose worker process or node dies is run again on another
worker, up to ``retries`` more times, and a replacement worker is started where the
cluster has room; a candidate lost on every attempt becomes a failed evaluation (NaN
fitness, ``status`` ``"error: worker lost ..."``), not a crashed search. An evaluation
that raises is a failed evaluation at once (running it again would raise again).

Shared-weight work (:class:`~nasjax.search.work.TrainShared`,
:class:`~nasjax.search.work.ScoreShared`) stays on the driver's own evaluator; its
candidates go to the workers.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from typing import Any, Iterator

import numpy as np

from nasjax.search import checkpoint as _checkpoint
from nasjax.search.base import load_strategies, strategy_entry
from nasjax.search.options import boolean, integer, number, option

# A worker per device: on a machine without accelerators, a few (they share its cores).
LOCAL_CPU_WORKERS = 4
_ADDRESS = re.compile(r"(ray://)?[^\s:/]+:[0-9]{1,5}")


def _address(v) -> str | None:
  if v is None or v == "auto" or (isinstance(v, str) and _ADDRESS.fullmatch(v)):
    return None
  return "must be None (start Ray here), 'auto' or HOST:PORT"


def _asynchronous(v) -> str | None:
  return None if v is None else boolean()(v)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RayBackend:
  """How a search uses Ray (``nasjax search --backend ray``).

  Attributes:
    address: the cluster to join: ``"auto"`` (the one ``ray start`` runs on this
      machine), ``"HOST:PORT"`` of its head node (``ray://HOST:PORT`` for Ray Client), or
      None to start a local Ray instance for the search and stop it afterwards. A program
      that called ``ray.init`` itself keeps its connection (``address`` must then be None
      or that cluster's).
    workers: worker actors, one per device. Default: one per GPU of the cluster, or
      without GPUs one per CPU of the cluster (a local instance: up to
      :data:`LOCAL_CPU_WORKERS`). A local instance declares at least as many CPUs as
      workers, so that more workers than cores start (they share the cores).
    in_flight: evaluations under way at once (default: ``workers``); more than
      ``workers`` queues them on the workers.
    asynchronous: tell results as they arrive (True) or per generation in ask order
      (False); None: asynchronously for the strategies registered as asynchronous
      (:func:`asynchronous_strategies`).
    retries: how many more times an evaluation whose worker was lost is run.
    object_store_mb: the object store of a local instance, MiB.
    start_timeout: seconds to wait for a worker to start when none is running.
  """

  address: str | None = option(None, _address)
  workers: int | None = option(None, integer(1, none=True))
  in_flight: int | None = option(None, integer(1, none=True))
  asynchronous: bool | None = option(None, _asynchronous)
  retries: int = option(2, integer(0))
  object_store_mb: int = option(512, integer(64))
  start_timeout: float = option(300.0, number(0.0, open_min=True))

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      problem = f.metadata["check"](value)
      if problem:
        raise ValueError(f"ray backend: {f.name} {problem}, got {value!r}")

  def to_dict(self) -> dict:
    """The options as JSON data (what ``config.json`` records as ``backend``)."""
    return {"kind": "ray", **dataclasses.asdict(self)}

  @classmethod
  def from_dict(cls, config: dict, **overrides) -> "RayBackend":
    """The options recorded in a ``config.json`` with ``overrides`` (None: recorded).

    Raises:
      ValueError: naming unknown keys or bad values.
    """
    config = {k: v for k, v in dict(config).items() if k != "kind"}
    config.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - names)
    if unknown:
      raise ValueError(f"unknown ray backend option(s) {unknown}; it takes {sorted(names)}")
    return cls(**config)

  def mode(self, strategy: str) -> bool:
    """Whether strategy ``strategy`` runs asynchronously with these options.

    Raises:
      ValueError: if asynchronous evaluation is asked of a strategy that needs its
        whole generation.
    """
    able = strategy_entry(strategy).asynchronous
    if self.asynchronous and not able:
      raise ValueError(f"strategy {strategy!r} is told whole generations and cannot run "
                       f"asynchronously; those that can: {asynchronous_strategies()}")
    return able if self.asynchronous is None else self.asynchronous


def asynchronous_strategies() -> list[str]:
  """The registered strategies that can run asynchronously (registered with
  ``asynchronous=True``, :attr:`~nasjax.search.base.StrategyEntry.asynchronous`)."""
  return sorted(name for name, entry in load_strategies().items() if entry.asynchronous)


def coerce(backend) -> "RayBackend | WorkerPool | None":
  """A backend from what :func:`nasjax.search.run` takes: None or ``"local"`` (no Ray),
  ``"ray"`` (Ray with the default options), a :class:`RayBackend` or a started
  :class:`WorkerPool`."""
  if backend is None or backend == "local":
    return None
  if backend == "ray":
    return RayBackend()
  if isinstance(backend, (RayBackend, WorkerPool)):
    return backend
  raise ValueError(f"backend must be 'local', 'ray', a RayBackend or a WorkerPool, got "
                   f"{backend!r}")


def _ray():
  try:
    import ray
  except ImportError:
    raise ValueError("the ray backend needs Ray: python3 -m pip install 'nasjax[ray]' "
                     "(or 'ray>=2.9')") from None
  return ray


# ------------------------------------------------------------------------- the workers
def evaluator_spec(evaluator) -> tuple[str, Any]:
  """What a worker builds its evaluator from: ``("config", evaluator.config())`` for a
  kind of :data:`~nasjax.search.evaluators.EVALUATORS` (a training evaluator's devices
  become the worker's own), else ``("object", evaluator)``, sent once per worker."""
  from nasjax.search.evaluators import EVALUATORS

  config = evaluator.config() if callable(getattr(evaluator, "config", None)) else None
  if isinstance(config, dict) and config.get("kind") in EVALUATORS:
    config = dict(config)
    if config["kind"] == "train":
      config["devices"] = None  # the devices Ray gave this worker: one GPU, or the CPU
      if config.get("parallel") == "devices":
        config["parallel"] = "auto"
    return "config", config
  return "object", evaluator


class Worker:
  """A worker actor (its methods run in the worker's process): it builds the evaluator
  once and evaluates one candidate per task."""

  def __init__(self, spec: tuple[str, Any]):
    from nasjax.search.evaluators import make_evaluator

    kind, value = spec
    self.evaluator = make_evaluator(value) if kind == "config" else value

  def ready(self) -> dict:
    """Where the worker runs: ``{"node" (IP), "node_id" (Ray's), "pid", "devices"}``."""
    import jax
    import ray

    return {"node": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "devices": [str(d) for d in jax.local_devices()]}

  def evaluate(self, payload: bytes) -> bytes:
    """Evaluate the candidate in ``payload`` (``dumps((candidate, key))``) with its key;
    returns ``dumps((record, (start, end, compiled)))``: the unix times it ran between
    and the seconds this process spent compiling meanwhile
    (:func:`nasjax.runtime.compile_seconds`; 0 for programs it had compiled before)."""
    from nasjax import runtime

    cand, key = _checkpoint.loads(payload, "a candidate from the driver")
    batch = np.asarray(cand)[None] if isinstance(cand, np.ndarray) else [cand]
    compiled, start = runtime.compile_seconds(), time.time()
    record = self.evaluator.evaluate(batch, key, keys=[key])[0]
    end, compiled = time.time(), runtime.compile_seconds() - compiled
    runtime.release_compiled_code()
    return _checkpoint.dumps((record, (start, end, compiled)))


@dataclasses.dataclass
class _Slot:
  """A worker as the driver sees it."""

  index: int
  actor: Any
  node: str = ""
  node_id: str = ""
  pid: int = 0
  ready: bool = False
  running: int = 0
  used: int = -1  # when it was last given an evaluation (the pool's count)


@dataclasses.dataclass
class _Task:
  """An evaluation given to the pool: ``ticket`` is the caller's, returned with it."""

  ticket: Any
  cand: Any
  payload: bytes
  attempt: int = 1
  order: int = -1  # when it was given to its worker (the pool's count)


def _local_workers(ray) -> int:
  gpus = int(ray.cluster_resources().get("GPU", 0))
  return gpus or min(LOCAL_CPU_WORKERS, os.cpu_count() or 1)


class WorkerPool:
  """Ray workers that evaluate candidates for the search loop.

  Use it as a context manager, or call :meth:`close`. A pool can serve several searches
  of the same evaluator (pass it as their ``backend``): its workers keep their compiled
  programs. Its ``options`` apply to each search it serves (their ``asynchronous``,
  ``in_flight`` and ``retries`` may be replaced between searches).

  Args:
    evaluator: the evaluator (the driver's; workers build their own from
      :func:`evaluator_spec`).
    options: a :class:`RayBackend`.

  Raises:
    ValueError: for a cluster that cannot hold the workers, or workers that fail to
      start (naming why).
  """

  def __init__(self, evaluator, options: RayBackend | None = None):
    self.options = options = options or RayBackend()
    self.evaluator = evaluator
    self.spec = evaluator_spec(evaluator)
    self._ray = ray = _ray()
    self._temp_dir = self._connect()
    try:
      self._actor_options = self._resources()
      self.workers = options.workers or self._default_workers()
      self._check_capacity()
      self._spec_ref = ray.put(self.spec)
      self._slots: dict[int, _Slot] = {}
      self._starting: dict[Any, _Slot] = {}  # ready() call -> worker being started
      self._running: dict[Any, tuple[_Task, _Slot]] = {}
      self._queue: collections.deque[_Task] = collections.deque()
      self._next = 0
      self._given = 0
      self._start_errors: list = []
      self.lost = 0
      for _ in range(self.workers):
        self._spawn()
      self._await_start()
    except BaseException:
      self.close()
      raise

  # ----------------------------------------------------------------- starting
  def _connect(self) -> str | None:
    """Join or start Ray; the temporary directory of an instance started here."""
    ray, address = self._ray, self.options.address
    self._owns_connection = False
    if ray.is_initialized():
      current = ray.get_runtime_context().gcs_address
      if address not in (None, "auto") and address.removeprefix("ray://") != current:
        raise ValueError(f"this program is connected to the Ray cluster at {current}, not "
                         f"{address}; leave out address, or call ray.shutdown() first")
      return None
    quiet = {"include_dashboard": False, "log_to_driver": False,
             "logging_level": logging.ERROR}
    with warnings.catch_warnings():
      # Ray starts its processes with fork + exec, which JAX's warning about forking a
      # multithreaded process does not concern.
      warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
      if address is not None:
        _check_reachable(address)
        try:
          ray.init(address=address, **quiet)
        except ConnectionError as e:
          raise ValueError(f"cannot reach the Ray cluster at {address}: {e}") from None
        self._owns_connection = True
        return None
      temp = tempfile.mkdtemp(prefix="nasjax-ray-")
      cpus = max(self.options.workers or 0, os.cpu_count() or 1)
      ray.init(num_cpus=cpus, object_store_memory=self.options.object_store_mb << 20,
               _temp_dir=temp, **quiet)
    self._owns_connection = True
    return temp

  def _resources(self) -> dict:
    """Each worker's share of a node: a GPU where the cluster has GPUs, else a CPU."""
    if self._ray.cluster_resources().get("GPU", 0) >= 1:
      return {"num_gpus": 1, "num_cpus": 0}
    return {"num_cpus": 1}

  def _default_workers(self) -> int:
    if self._temp_dir is not None:
      return _local_workers(self._ray)
    resources = self._ray.cluster_resources()
    return max(1, int(resources.get("GPU", 0)) or int(resources.get("CPU", 0)))

  def _check_capacity(self) -> None:
    unit = "GPU" if self._actor_options.get("num_gpus") else "CPU"
    have = int(self._ray.cluster_resources().get(unit, 0))
    if self.workers > have:
      raise ValueError(f"{self.workers} Ray workers need {self.workers} {unit}s (one each) "
                       f"but the cluster has {have}; give --workers {max(have, 1)} or add "
                       "nodes")

  def _spawn(self) -> None:
    ray = self._ray
    actor = ray.remote(Worker).options(
        scheduling_strategy="SPREAD", max_restarts=0, max_task_retries=0,
        **self._actor_options).remote(self._spec_ref)
    slot = _Slot(self._next, actor)
    self._next += 1
    self._slots[slot.index] = slot
    self._starting[actor.ready.remote()] = slot

  def _started(self, ref, warn: bool = True) -> None:
    """Note that a worker started, or failed to (then forget it)."""
    slot = self._starting.pop(ref)
    try:
      where = self._ray.get(ref)
    except self._ray.exceptions.RayError as e:
      del self._slots[slot.index]
      self._start_errors.append(e)
      if warn:
        warnings.warn(f"Ray worker {slot.index} did not start: {_first_line(e)}",
                      stacklevel=3)
      return
    slot.node, slot.node_id, slot.pid = where["node"], where["node_id"], where["pid"]
    slot.ready = True

  def _await_start(self) -> None:
    """Wait until every worker has started (or failed to); at least one must."""
    deadline = time.monotonic() + self.options.start_timeout
    while self._starting:
      left = deadline - time.monotonic()
      ready, _ = self._ray.wait(list(self._starting), num_returns=1, timeout=max(left, 0))
      if not ready:
        break
      self._started(ready[0], warn=False)
    errors = self._start_errors
    if not any(s.ready for s in self._slots.values()):
      raise ValueError("no Ray worker started" + (
          f": {_first_line(errors[0])}" if errors else f" within "
          f"{self.options.start_timeout:g} s; the cluster may lack room for them") +
          " (nasjax must be installed, with its data, on every node)")
    if errors:
      warnings.warn(f"{len(errors)} of {self.workers} Ray workers did not start: "
                    f"{_first_line(errors[0])}", stacklevel=3)

  # ----------------------------------------------------------------- evaluating
  @property
  def in_flight(self) -> int:
    """Evaluations under way at once: ``options.in_flight``, else one per worker."""
    return self.options.in_flight or self.workers

  @property
  def running(self) -> int:
    """Evaluations given to the pool and not returned by :meth:`wait` yet."""
    return len(self._running) + len(self._queue)

  def submit(self, ticket, cand, key) -> None:
    """Start evaluating ``cand`` with ``key``; :meth:`wait` returns it with ``ticket``."""
    self._queue.append(_Task(ticket, cand, _checkpoint.dumps((cand, key))))
    self._dispatch()

  def _dispatch(self) -> None:
    """Give queued evaluations to the started workers with the fewest running, the one
    given an evaluation longest ago first."""
    while self._queue:
      ready = [s for s in self._slots.values() if s.ready]
      if not ready:
        return
      slot = min(ready, key=lambda s: (s.running, s.used))
      task = self._queue.popleft()
      self._running[slot.actor.evaluate.remote(task.payload)] = (task, slot)
      slot.running += 1
      slot.used = task.order = self._given
      self._given += 1

  def wait(self) -> list[tuple[Any, Any, dict]]:
    """The evaluations that have finished, at least one (blocking until then):
    ``[(ticket, record, worker), ...]``, where ``worker`` says where and when it ran
    (``id``, ``node``, ``pid``, ``start`` and ``end`` unix times, ``compile``: the
    worker's seconds of compiling, ``attempts``).

    Raises:
      RuntimeError: if evaluations are waiting but no worker is left, nor starts within
        ``start_timeout`` seconds.
    """
    ray = self._ray
    while True:
      self._dispatch()
      refs = list(self._running) + list(self._starting)
      if not refs:
        if self._queue:
          raise RuntimeError(f"no Ray worker is left ({self.lost} lost) to run "
                             f"{len(self._queue)} evaluations; resume the run once the "
                             "cluster has room")
        return []
      timeout = None if self._running else self.options.start_timeout
      ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
      if not ready:
        raise RuntimeError(f"no Ray worker started within {self.options.start_timeout:g} s "
                           f"to run {len(self._queue)} evaluations ({self.lost} lost); "
                           "resume the run once the cluster has room")
      if rest:  # everything else that is done too, without waiting
        ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
      out = []
      for ref in ready:
        if ref in self._starting:
          self._started(ref)
        elif ref in self._running:  # (not handed on by _lose meanwhile)
          out += self._collect(ref)
      if out:
        return out

  def _collect(self, ref) -> list[tuple[Any, Any, dict]]:
    ray = self._ray
    task, slot = self._running.pop(ref)
    slot.running -= 1
    info = {"id": slot.index, "node": slot.node, "pid": slot.pid, "attempts": task.attempt}
    try:
      data = ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the evaluation raised: it would again
      return [(task.ticket, self._failed(task.cand, f"error: {_first_line(e)}"), info)]
    except ray.exceptions.RayError as e:  # the worker, or its node, is gone
      return self._lose(slot, task, e)
    record, (start, end, compiled) = _checkpoint.loads(
        data, f"the result of Ray worker {slot.index}")
    return [(task.ticket, record, {**info, "start": start, "end": end, "compile": compiled})]

  def _failed(self, cand, status: str):
    from nasjax.search.evaluators import Record
    from nasjax.search.runner import _describe

    arch, code = _describe(self.evaluator.space, cand)
    return Record(arch, [math.nan] * len(self.evaluator.objectives), status[:500], 0.0, {},
                  code)

  def _lose(self, slot: _Slot, task: _Task, error) -> list[tuple[Any, Any, dict]]:
    """Forget a lost worker (``task`` failed with it), start another where the cluster
    has room, and run its evaluations without a result again elsewhere: the first it was
    given (the one it was running; Ray runs an actor's tasks in order) as its next
    attempt, or after the last attempt as a failed evaluation (returned); the others,
    queued on it and never run, as the same attempt. Results it returned before it was
    lost are collected as usual."""
    if self._slots.pop(slot.index, None) is not None:
      self.lost += 1
      warnings.warn(f"Ray worker {slot.index} on {slot.node} was lost ({_first_line(error)});"
                    " its evaluations run again on the other workers", stacklevel=4)
      with contextlib.suppress(Exception):
        self._ray.kill(slot.actor, no_restart=True)
      self._spawn()
    tasks = [task] + [self._running.pop(ref)[0] for ref in [
        ref for ref, (_, s) in self._running.items() if s is slot and not self._returned(ref)]]
    first, *queued = sorted(tasks, key=lambda t: t.order)
    self._queue.extendleft(reversed(queued))
    if first.attempt <= self.options.retries:
      self._queue.appendleft(dataclasses.replace(first, attempt=first.attempt + 1))
      return []
    info = {"id": slot.index, "node": slot.node, "pid": slot.pid, "attempts": first.attempt,
            "lost": True}
    return [(first.ticket, self._failed(
        first.cand, f"error: worker lost on each of {first.attempt} attempts "
        f"({_first_line(error)})"), info)]

  def _returned(self, ref) -> bool:
    """Whether the evaluation of ``ref`` has finished with a result (not an error)."""
    if not self._ray.wait([ref], timeout=0)[0]:
      return False
    try:
      self._ray.get(ref, timeout=0)
    except self._ray.exceptions.RayTaskError:
      return True  # it raised: a failed evaluation, collected as such
    except self._ray.exceptions.RayError:
      return False
    return True

  def drop(self) -> None:
    """Forget the evaluations under way or queued: their results are never returned
    (those not started are cancelled)."""
    for ref in self._running:
      with contextlib.suppress(Exception):
        self._ray.cancel(ref)
    self._running.clear()
    self._queue.clear()
    for slot in self._slots.values():
      slot.running = 0

  def evaluate(self, cands: list, keys: list) -> list[tuple[Any, dict]]:
    """Evaluate ``cands`` (candidate ``j`` with ``keys[j]``), at most ``in_flight`` at
    once; ``[(record, worker), ...]`` in their order."""
    out: list = [None] * len(cands)
    todo = collections.deque(range(len(cands)))
    while todo or self.running:
      while todo and self.running < self.in_flight:
        j = todo.popleft()
        self.submit(j, cands[j], keys[j])
      for j, record, worker in self.wait():
        out[j] = (record, worker)
    return out

  def close(self) -> None:
    """Stop the workers, and the Ray instance if this pool started it."""
    ray = self._ray
    for slot in list(getattr(self, "_slots", {}).values()):
      with contextlib.suppress(Exception):
        ray.kill(slot.actor, no_restart=True)
    self._slots = {}
    if self._owns_connection and ray.is_initialized():
      ray.shutdown()
    if self._temp_dir is not None:
      shutil.rmtree(self._temp_dir, ignore_errors=True)
      self._temp_dir = None

  def __enter__(self) -> "WorkerPool":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _check_reachable(address: str, timeout: float = 10.0) -> None:
  """Raise unless something listens at ``address`` (``HOST:PORT``; ``auto`` passes): Ray
  itself keeps trying to reach an address for minutes."""
  if address == "auto":
    return
  host, _, port = address.removeprefix("ray://").rpartition(":")
  try:
    socket.create_connection((host, int(port)), timeout=timeout).close()
  except OSError as e:
    raise ValueError(f"cannot reach the Ray cluster at {address}: {e}") from None


def _first_line(error) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return (lines[-1] if lines else type(error).__name__)[:300]


@contextlib.contextmanager
def open_pool(backend, evaluator) -> Iterator[WorkerPool]:
  """The pool of ``backend``: a :class:`WorkerPool` as it is (left open), or a new one
  for a :class:`RayBackend`, closed afterwards.

  Raises:
    ValueError: if a given pool serves another evaluator.
  """
  if isinstance(backend, WorkerPool):
    if backend.spec != evaluator_spec(evaluator):
      raise ValueError("the worker pool was started for another evaluator "
                       f"({backend.spec[1]!r}); start one for this search's")
    yield backend
    return
  with WorkerPool(evaluator, backend) as pool:
    yield pool


# ------------------------------------------------------------------------- simulated time
@dataclasses.dataclass(frozen=True, eq=False)
class SimulatedTime:
  """An evaluator that takes ``seconds_per_cost`` wall seconds per second it charges
  (and ``seconds`` more per candidate).

  A tabular benchmark charges the training time its table records but answers at once;
  wrapped in this, each evaluation also lasts that time, scaled (on the worker that runs
  it), so that results arrive in the order and at the pace they would on real machines
  and an asynchronous search meets what it would meet there. With ``seconds_per_cost=0``
  every evaluation lasts ``seconds`` (what measures the driver's overhead). Records are
  the wrapped evaluator's. It is registered in
  :data:`~nasjax.search.evaluators.EVALUATORS` as ``"simulated"``, so its runs resume.

  Attributes:
    evaluator: the evaluator whose costs are simulated (e.g. an
      :class:`~nasjax.search.evaluators.NB201Evaluator`); it must accept ``keys=``.
    seconds_per_cost: wall seconds per charged second (e.g. ``0.001``: NB201's 12-epoch
      training of about 150 s lasts 0.15 s).
    seconds: wall seconds per candidate, on top.
  """

  evaluator: Any
  seconds_per_cost: float
  seconds: float = 0.0
  kind = "simulated"

  def __post_init__(self):
    for name in ("seconds_per_cost", "seconds"):
      problem = number(0.0)(getattr(self, name))
      if problem:
        raise ValueError(f"SimulatedTime: {name} {problem}, got {getattr(self, name)!r}")

  def __getattr__(self, name):  # space, objectives, cacheable, summarize, ...
    if name.startswith("__") or name == "evaluator":
      raise AttributeError(name)
    return getattr(self.evaluator, name)

  def config(self) -> dict:
    return {"kind": self.kind, "evaluator": self.evaluator.config(),
            "seconds_per_cost": self.seconds_per_cost, "seconds": self.seconds}

  def evaluate(self, candidates, key=None, *, keys=None) -> list:
    records = self.evaluator.evaluate(candidates, key, keys=keys)
    time.sleep(sum(r.cost for r in records) * self.seconds_per_cost +
               len(records) * self.seconds)
    return records


def _simulated_from_config(config: dict) -> SimulatedTime:
  from nasjax.search.evaluators import make_evaluator

  return SimulatedTime(make_evaluator(config["evaluator"]), config["seconds_per_cost"],
                       config.get("seconds", 0.0))


def _register_simulated() -> None:
  from nasjax.search.evaluators import EVALUATORS

  EVALUATORS.register(SimulatedTime.kind, _simulated_from_config)


_register_simulated()


def options_of(backend) -> RayBackend:
  """The :class:`RayBackend` options of a backend (a pool's or the backend itself)."""
  return backend.options if isinstance(backend, WorkerPool) else backend
