"""Evaluators: what a candidate architecture is worth.

An evaluator turns a batch of candidates into :class:`Record` s::

    records = evaluator.evaluate(candidates, key)

and describes itself with ``kind``, ``space``, ``objectives`` (names of the minimised
fitness components), ``cacheable`` (whether a repeated architecture may reuse its first
result) and ``config()`` (a JSON dict from which :func:`make_evaluator` rebuilds it, so
that a run directory can be resumed). A cacheable evaluator also accepts
``evaluate(candidates, key, keys=[...])``, one key per candidate, so that a batch with
cached members can be evaluated with the keys its members would have had; the tabular
evaluators accept (and ignore) ``keys`` too, so that any evaluator can evaluate a share
of a batch (the runner splits batches between the processes of a multi-host run). A
failed evaluation — divergence, NaN, an
exception, running out of memory — is a record with ``status != "ok"`` and NaN
objectives; it never stops the search.

- :class:`NB201Evaluator`: NAS-Bench-201's protocol (see :mod:`nasjax.search.tabular`).
- :class:`MacroEvaluator`: NAS-Bench-Macro accuracy, parameters and FLOPs.
- :class:`TrainingEvaluator`: builds, initialises (or distils, for a
  :class:`~nasjax.search.work.Child` with a teacher) and trains each candidate with
  :func:`nasjax.train.fit`, several candidates at once on several local devices; it also
  runs the work weight-sharing strategies ask for on their shared weights
  (:meth:`TrainingEvaluator.run_shared`) and tells strategies the task
  (:meth:`TrainingEvaluator.problem`).

The macro and training evaluators take a ``reward`` config
(:func:`nasjax.search.hardware.make_objective`): the objective ``neg_reward``, MnasNet's
accuracy-cost reward negated, then is what every strategy minimises, and the accuracy,
the cost and the ``reward`` are recorded in the metrics.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from nasjax import runtime
from nasjax.search import hardware, tabular, work
from nasjax.search.base import Registry
from nasjax.search.spaces import MacroSpace, NB201Space, SearchSpace, make_space


@dataclasses.dataclass
class Record:
  """The outcome of evaluating one candidate.

  Attributes:
    arch: the architecture as recorded in the history: the benchmark's string or key
      for tabular spaces, ``space.describe(code)`` for other codes, the Arch's dict for
      architectures given directly.
    objectives: one float per objective, NaN when the evaluation failed.
    status: ``"ok"``, ``"diverged"`` or ``"error: <reason>"``.
    cost: seconds charged against a time budget (simulated for tables, wall for
      training).
    metrics: further numbers (test accuracy, params, FLOPs, compile and train seconds).
    code: the search-space code, or None for architectures given directly.
    network: the trained network (training evaluators); not written to the history.
  """

  arch: Any
  objectives: list[float]
  status: str = "ok"
  cost: float = 0.0
  metrics: dict = dataclasses.field(default_factory=dict)
  code: list[int] | None = None
  network: Any = None

  @property
  def ok(self) -> bool:
    return self.status == "ok" and all(math.isfinite(v) for v in self.objectives)


def _codes(candidates, space: SearchSpace) -> np.ndarray:
  """``(B, L)`` codes from codes or from anything ``space.encode`` accepts."""
  if not isinstance(candidates, (np.ndarray, jax.Array)):
    candidates = [c if isinstance(c, (np.ndarray, jax.Array)) else space.encode(c)
                  for c in candidates]
  codes = np.asarray(candidates)
  if codes.ndim != 2 or codes.shape[1] != space.length:
    raise ValueError(f"expected codes of shape (B, {space.length}) for space "
                     f"{space.name!r}, got shape {codes.shape}")
  return codes


# ------------------------------------------------------------------------------- tables
@dataclasses.dataclass(frozen=True, eq=False)
class NB201Evaluator:
  """NAS-Bench-201's query protocol on ``dataset``.

  Objective ``val_error``: 100 minus the 12-epoch validation accuracy (%). Cost: the
  simulated time of the query. Metrics: ``val_accuracy``, ``test_accuracy`` (200 epochs)
  and the official ``index``. Every query is charged, repeated ones included.
  """

  dataset: str = "cifar10"
  data_dir: str | None = None
  kind = "nb201"
  objectives = ("val_error",)
  cacheable = False

  def __post_init__(self):
    object.__setattr__(self, "dataset", tabular.nb201_dataset(self.dataset))
    object.__setattr__(self, "table", tabular.load_nb201(self.data_dir))
    object.__setattr__(self, "space", NB201Space())

  def config(self) -> dict:
    return {"kind": self.kind, "dataset": self.dataset, "data_dir": self.data_dir}

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """``(fitness (15625, 1) float64, cost (15625,) float64)`` indexed by code rank."""
    return (100.0 - self.table.val(self.dataset))[:, None], self.table.cost

  def evaluate(self, candidates, key=None, *, keys=None) -> list[Record]:
    del key, keys  # a table lookup is deterministic
    codes = _codes(candidates, self.space)
    val, test, cost = self.table.val(self.dataset), self.table.test(self.dataset), self.table.cost
    out = []
    for code in codes:
      r = self.space.hash(code)
      out.append(Record(self.table.arch_str[r], [100.0 - float(val[r])], "ok", float(cost[r]),
                        {"val_accuracy": float(val[r]), "test_accuracy": float(test[r]),
                         "index": int(self.table.official_index[r])},
                        [int(v) for v in code]))
    return out

  def summarize(self, history: Sequence[Mapping]) -> dict:
    """The protocol's result: the test accuracy of the best-by-validation architecture."""
    best = None
    for h in history:
      v = h.get("metrics", {}).get("val_accuracy")
      if v is not None and (best is None or v > best["metrics"]["val_accuracy"]):
        best = h
    if best is None:
      return {}
    return {"best_by_validation": best["arch"],
            "val_accuracy": best["metrics"]["val_accuracy"],
            "test_accuracy": best["metrics"]["test_accuracy"]}


MACRO_OBJECTIVES = ("error", "params", "flops")


def _objectives(given, known: Sequence[str], default: tuple[str, ...], reward, what: str
                ) -> tuple[str, ...]:
  """The checked objectives of an evaluator: ``given``, or the default (``neg_reward``
  alone where there is a reward)."""
  name = hardware.REWARD_OBJECTIVE
  objectives = tuple(given) if given is not None else (name,) if reward else default
  if not objectives:
    raise ValueError("at least one objective is needed")
  for n in objectives:
    if n == name and reward is None:
      raise ValueError(f"objective {name!r} needs a reward config, e.g. "
                       "reward={'kind': 'mnas', 'target': 0.01, 'cost': 'latency'}")
    if n != name and n not in known:
      raise ValueError(f"unknown {what} objective {n!r}; choose from {list(known)}")
  if reward is not None and name not in objectives:
    raise ValueError(f"a reward is set but its objective {name!r} is not among the "
                     f"objectives {list(objectives)}")
  return objectives


@dataclasses.dataclass(frozen=True, eq=False)
class MacroEvaluator:
  """NAS-Bench-Macro lookups.

  Objectives (any of ``error`` = 100 - mean test accuracy (%), ``params``, ``flops``,
  and ``neg_reward`` with a ``reward``), default ``("error", "params")``, or
  ``("neg_reward",)`` with a ``reward``. Cost 0: budgets are numbers of evaluations.

  Attributes:
    objectives: the minimised objectives, in order (None for the default).
    data_dir: the folder of the table.
    reward: a MnasNet reward config whose cost is ``params`` or ``flops`` (the table
      has no latency); its accuracy is the mean test accuracy as a fraction.
  """

  objectives: tuple[str, ...] | None = None
  data_dir: str | None = None
  reward: Mapping[str, Any] | None = None
  kind = "macro"
  cacheable = False

  def __post_init__(self):
    reward = hardware.make_objective(self.reward)
    if reward is not None and reward.cost not in ("params", "flops"):
      raise ValueError(f"NAS-Bench-Macro has no {reward.cost}; give the reward the cost "
                       "params or flops")
    object.__setattr__(self, "reward_objective", reward)
    object.__setattr__(self, "objectives", _objectives(
        self.objectives, MACRO_OBJECTIVES, ("error", "params"), reward, "NAS-Bench-Macro"))
    object.__setattr__(self, "table", tabular.load_macro(self.data_dir))
    object.__setattr__(self, "space", MacroSpace())
    # ``(6561,)`` float64 rewards of every network, None without a reward.
    object.__setattr__(self, "rewards", None if reward is None else np.asarray(
        reward.reward(self.table.mean_acc / 100.0, self.table.objective(reward.cost)),
        np.float64))

  def config(self) -> dict:
    reward = self.reward_objective
    return {"kind": self.kind, "objectives": list(self.objectives), "data_dir": self.data_dir,
            "reward": None if reward is None else reward.config()}

  def _column(self, name: str) -> np.ndarray:
    """``(6561,)`` float64 values of objective ``name``."""
    if name == hardware.REWARD_OBJECTIVE:
      return -self.rewards
    return self.table.objective(name)

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """``(fitness (6561, M) float64, cost (6561,) zeros)`` indexed by code rank."""
    F = np.stack([self._column(n) for n in self.objectives], axis=1)
    return F, np.zeros(len(self.table.keys))

  def evaluate(self, candidates, key=None, *, keys=None) -> list[Record]:
    del key, keys
    codes = _codes(candidates, self.space)
    cols = [self._column(n) for n in self.objectives]
    out = []
    for code in codes:
      r = self.space.hash(code)
      metrics = {"mean_acc": float(self.table.mean_acc[r]),
                 "params": int(self.table.params[r]), "flops": int(self.table.flops[r])}
      if self.rewards is not None:
        metrics["reward"] = float(self.rewards[r])
      out.append(Record(self.table.keys[r], [float(c[r]) for c in cols], "ok", 0.0,
                        metrics, [int(v) for v in code]))
    return out


# ----------------------------------------------------------------------------- training
TRAIN_OBJECTIVES = ("val_error", "params", "flops", "latency")


PARALLEL_MODES = ("auto", "devices", "sequential")


def _device_list(devices) -> list:
  if devices is None:
    return list(jax.local_devices())
  if isinstance(devices, int):
    local = jax.local_devices()
    if not 1 <= devices <= len(local):
      raise ValueError(f"devices={devices} but there are {len(local)} local devices")
    return local[:devices]
  devices = list(devices)
  if not devices:
    raise ValueError("devices is empty")
  return devices


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingEvaluator:
  """Train each candidate and score it.

  A candidate is a code of ``space`` (built with ``space.build``), an
  :class:`~nasjax.Arch` (initialised from the candidate's key) or a
  :class:`~nasjax.Network` (trained further from its weights). Candidate ``j`` of a
  batch uses key ``fold_in(key, j)``.

  Population-parallel evaluation: with several devices and several candidates, candidate
  ``j`` is trained on device ``devices[j % n]`` alone (its :func:`nasjax.train.fit` runs
  on that one device) and each device trains its candidates one after another in its
  own thread, so up to ``n`` candidates train at once (compiled JAX code and XLA's
  compiler release the GIL). A candidate's result does not depend on the device it ran
  on, so the records equal a sequential evaluation's, in the same order, apart from the
  ``device`` metric and the measured seconds. Candidates of identical structure are not
  stacked into one ``jax.vmap``-ed program: on CPU, vmapping a convolution's weights
  turns it into a grouped convolution, which XLA ran about 7x slower than the separate
  convolutions. CPU devices (``--xla_force_host_platform_device_count``,
  ``$NASJAX_CPU_DEVICES``) share the machine's cores, and one of them already keeps the
  cores busy in a training step: on 2 cores, 8 candidates on 8 CPU devices took 1.5x
  as long as one after another (1.15x without compilation; ``benchmarks/README.md``),
  so ``"auto"`` with the default ``devices=None`` evaluates one candidate after another
  on the CPU backend, each data parallel over the CPU devices
  (:func:`nasjax.train.data_parallel_devices`).

  Objectives, any of: ``val_error`` (100 - validation accuracy %, after training),
  ``params``, ``flops`` (:func:`nasjax.flops`), ``latency`` (median seconds of one
  inference at batch 1, :func:`nasjax.latency`) and, with a ``reward``, ``neg_reward``
  (the negated MnasNet reward of the validation accuracy and the reward's cost); all are
  also recorded as metrics (``val_accuracy`` for ``val_error``, ``reward`` for
  ``neg_reward``; latency only where an objective needs it), with ``compile_seconds``
  (compilation of the train and eval steps, 0 when they were compiled already),
  ``train_seconds``, ``steps`` and ``device``.

  Attributes:
    space: the search space of code candidates.
    dataset: a :func:`nasjax.data.load` name.
    train: :class:`nasjax.train.TrainConfig` fields.
    objectives: the minimised objectives, in order; None for ``("val_error",)``, or
      ``("neg_reward",)`` with a ``reward``.
    devices: the devices candidates are spread over: a count (the first ``n`` local
      devices), a list of devices, or None for all local devices.
    parallel: ``"auto"`` (concurrently over the devices when a batch has several
      candidates and there are several devices, given explicitly or, with
      ``devices=None``, local devices other than CPU devices; else one after another),
      ``"devices"`` (always concurrently over the devices, one candidate per device)
      or ``"sequential"`` (one candidate after another, each data parallel over the
      devices).
    data_limit, data_seed, data_dir, val_fraction: passed to :func:`nasjax.data.load`;
      the data set is loaded on first use, but its name, ``data_limit`` (a positive int
      or None) and ``val_fraction`` are checked here, so that a bad one fails before a
      search starts rather than failing every evaluation.
    reward: a MnasNet reward config (:func:`nasjax.search.hardware.make_objective`),
      e.g. ``{"kind": "mnas", "target": 0.002, "cost": "latency"}``, for the objective
      ``neg_reward``.
  """

  space: SearchSpace
  dataset: str = "fashion_mnist_small"
  train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  objectives: tuple[str, ...] | None = None
  devices: Any = None
  parallel: str = "auto"
  data_limit: int | None = None
  data_seed: int = 0
  data_dir: str | None = None
  val_fraction: float = 0.1
  reward: Mapping[str, Any] | None = None
  kind = "train"
  cacheable = True

  def __post_init__(self):
    from nasjax import data as data_lib
    from nasjax import train as train_lib

    data_lib.check_options(self.dataset, val_fraction=self.val_fraction, limit=self.data_limit)
    reward = hardware.make_objective(self.reward)
    object.__setattr__(self, "reward_objective", reward)
    object.__setattr__(self, "objectives", _objectives(
        self.objectives, TRAIN_OBJECTIVES, ("val_error",), reward, "training"))
    if self.parallel not in PARALLEL_MODES:
      raise ValueError(f"parallel must be one of {list(PARALLEL_MODES)}, got "
                       f"{self.parallel!r}")
    fields = {f.name for f in dataclasses.fields(train_lib.TrainConfig)}
    unknown = set(self.train) - fields
    if unknown:
      raise ValueError(f"unknown training option(s) {sorted(unknown)}; TrainConfig takes "
                       f"{sorted(fields)}")
    object.__setattr__(self, "train_config", train_lib.TrainConfig(**dict(self.train)))
    object.__setattr__(self, "device_list", _device_list(self.devices))

  def config(self) -> dict:
    devices = self.devices if isinstance(self.devices, int) or self.devices is None else len(
        self.device_list)
    return {"kind": self.kind, "space": self.space.name, "space_config": self.space.config(),
            "dataset": self.dataset, "train": dict(self.train),
            "objectives": list(self.objectives), "devices": devices,
            "parallel": self.parallel, "data_limit": self.data_limit,
            "data_seed": self.data_seed, "data_dir": self.data_dir,
            "val_fraction": self.val_fraction,
            "reward": None if self.reward_objective is None else self.reward_objective.config()}

  @property
  def data(self):
    """The data set, loaded on first use."""
    if "_data" not in self.__dict__:
      from nasjax import data as data_lib

      object.__setattr__(self, "_data", data_lib.load(
          self.dataset, val_fraction=self.val_fraction, seed=self.data_seed,
          data_dir=self.data_dir, limit=self.data_limit))
    return self.__dict__["_data"]

  def describe(self, cand) -> tuple[Any, list[int] | None]:
    """``(history description, code or None)`` of a candidate."""
    import nasjax

    if isinstance(cand, (nasjax.Network, work.Child)):
      return cand.arch.to_dict(), None
    if isinstance(cand, nasjax.Arch):
      return cand.to_dict(), None
    code = self.space.check(cand)
    return self.space.describe(code), [int(v) for v in code]

  def evaluate_one(self, cand, key, device, fit_devices: Sequence[Any] | None = None
                   ) -> Record:
    """Train one candidate on ``device`` (data parallel over ``fit_devices`` when given,
    ``device`` first among them); never raises for a failing candidate."""
    import nasjax
    from nasjax import train as train_lib

    arch_desc, code = self.describe(cand)
    start = time.perf_counter()
    metrics: dict = {"device": str(device)}
    try:
      data = self.data
      with jax.default_device(device):
        k_init, k_fit = jax.random.split(key)
        if isinstance(cand, work.Child):
          net = self._start_child(cand, k_init, device, fit_devices, metrics)
        elif isinstance(cand, nasjax.Network):
          net = jax.device_put(cand, device)
        else:
          arch = cand if isinstance(cand, nasjax.Arch) else self.space.build(
              code, data.input_shape, data.num_classes)
          net = jax.device_put(nasjax.init(arch, k_init), device)
        metrics["params"] = nasjax.count_params(net.arch)
        metrics["flops"] = nasjax.flops(net.arch)
        net, hist = train_lib.fit(net, data, self.train_config, k_fit,
                                  devices=fit_devices or [device])
        metrics.update(compile_seconds=hist.compile_seconds,
                       train_seconds=hist.seconds - hist.compile_seconds, steps=hist.steps)
        if hist.val_accuracy:
          val_acc = float(hist.val_accuracy[-1])
        else:
          val_acc = train_lib.evaluate(net, data.x_val, data.y_val)["accuracy"]
        metrics["val_accuracy"] = val_acc
        status = hist.status
        finite = math.isfinite(val_acc) and all(math.isfinite(v) for v in hist.train_loss)
        if status == "ok" and not finite:
          status = "diverged"
        if status == "ok" and "latency" in (*self.objectives, self._reward_cost):
          metrics["latency"] = nasjax.latency(net)
        if status == "ok" and self.reward_objective is not None:
          metrics["reward"] = float(self.reward_objective.reward(
              val_acc, metrics[self.reward_objective.cost]))
    except Exception as e:  # any failure is the candidate's, not the search's
      status, net = f"error: {type(e).__name__}: {e}"[:500], None
    cost = time.perf_counter() - start
    if status == "ok":
      objectives = [100.0 * (1.0 - metrics["val_accuracy"]) if n == "val_error"
                    else -metrics["reward"] if n == hardware.REWARD_OBJECTIVE
                    else float(metrics[n]) for n in self.objectives]
    else:
      objectives = [math.nan] * len(self.objectives)
    return Record(arch_desc, objectives, status, cost, metrics, code,
                  net if status == "ok" else None)

  def _start_child(self, child: work.Child, key, device, fit_devices, metrics: dict):
    """The network a :class:`~nasjax.search.work.Child` starts training from: its
    network, distilled from its teacher first when it asks for it."""
    from nasjax import train as train_lib

    net = jax.device_put(child.network, device)
    if child.distill_steps:
      net, hist, losses = train_lib.distill(
          net, jax.device_put(child.teacher, device), self.data, self.train_config,
          steps=int(child.distill_steps), key=key, temperature=child.temperature,
          learning_rate=child.learning_rate, devices=fit_devices or [device])
      metrics.update(distill_seconds=hist.seconds, distill_steps=len(losses),
                     distill_loss=losses[-1] if losses else math.nan)
      if hist.status != "ok":
        raise FloatingPointError(f"distillation {hist.status}")
    return net

  def problem(self) -> work.Problem:
    """The task, as strategies that build networks take it (input shape, classes and
    the first :data:`nasjax.ops.MORPH_BATCH` training inputs)."""
    return work.Problem.of(self.data)

  def run_shared(self, request) -> work.SharedResult:
    """Run a weight-sharing strategy's request on this evaluator's data.

    A :class:`~nasjax.search.work.TrainShared` runs its jitted step over the steps of its
    chunk on batches of :func:`nasjax.data.stream`; a
    :class:`~nasjax.search.work.ScoreShared` calls its score function with the data set.
    The work runs on the first device.
    """
    return run_shared(request, self.data, self.device_list[0])

  @property
  def _reward_cost(self) -> str | None:
    return None if self.reward_objective is None else self.reward_objective.cost

  def lanes(self, batch_size: int) -> int:
    """How many candidates of a batch of ``batch_size`` train at once."""
    if self.parallel == "sequential":
      return 1
    if self.parallel == "auto" and (batch_size < 2 or (
        self.devices is None and self.device_list[0].platform == "cpu")):
      return 1  # CPU devices share the cores: measured slower than one at a time
    return max(1, min(len(self.device_list), batch_size))

  def evaluate(self, candidates, key, *, keys: Sequence[jax.Array] | None = None
               ) -> list[Record]:
    """Train a batch; candidate ``j`` uses ``keys[j]`` (default ``fold_in(key, j)``) and,
    when the batch is spread over ``n`` devices, device ``devices[j % n]``."""
    if isinstance(candidates, (np.ndarray, jax.Array)):
      cands = list(np.asarray(candidates))
    else:
      cands = list(candidates)
    if keys is None:
      keys = [jax.random.fold_in(key, j) for j in range(len(cands))]
    elif len(keys) != len(cands):
      raise ValueError(f"{len(keys)} keys for {len(cands)} candidates")
    devices = self.device_list
    lanes = self.lanes(len(cands))
    if lanes == 1 and self.parallel != "devices":
      # One candidate at a time, each data parallel over the devices (on CPU devices,
      # slices of the batch train faster than the whole batch on one device).
      from nasjax import train as train_lib

      fit_devices = train_lib.data_parallel_devices(self.train_config.batch_size, devices)
      return [self.evaluate_one(c, k, devices[0], fit_devices) for c, k in zip(cands, keys)]
    _ = self.data  # load once, before the threads start
    out: list[Record | None] = [None] * len(cands)

    def worker(d: int):
      for j in range(d, len(cands), lanes):
        out[j] = self.evaluate_one(cands[j], keys[j], devices[d])

    with concurrent.futures.ThreadPoolExecutor(max_workers=lanes) as pool:
      for f in [pool.submit(worker, d) for d in range(lanes)]:
        f.result()
    return out


# ------------------------------------------------------------------------ shared weights
_STEPS: dict = {}  # step function -> its jitted program (kept: one compile per function)


def _jitted_step(step: Callable):
  if step not in _STEPS:
    _STEPS[step] = runtime.jit(step, donate_argnums=0)
  return _STEPS[step]


def run_shared(request, data, device=None) -> work.SharedResult:
  """Run a :class:`~nasjax.search.work.TrainShared` or
  :class:`~nasjax.search.work.ScoreShared` on ``data`` (a :class:`nasjax.data.Dataset`),
  on ``device`` (default: the first local device)."""
  from nasjax import data as data_lib

  start = time.perf_counter()
  device = device or jax.local_devices()[0]
  if isinstance(request, work.ScoreShared):
    with jax.default_device(device):
      scores = np.asarray(request.score(request.weights, np.asarray(request.codes), data),
                          np.float64)
    return work.SharedResult(request.weights, {}, scores, time.perf_counter() - start)
  if not isinstance(request, work.TrainShared):
    raise ValueError(f"not work on shared weights: {type(request).__name__}")
  r = request
  train = data_lib.stream(data.x_train, data.y_train, int(r.batch_size),
                          jax.random.fold_in(r.key, 0), start=int(r.start), augment=r.augment)
  val = (data_lib.stream(data.x_val, data.y_val, int(r.val_batch_size),
                         jax.random.fold_in(r.key, 1), start=int(r.start))
         if r.val_batch_size else None)
  k_steps = jax.random.fold_in(r.key, 2)
  step = _jitted_step(r.step)
  sums: dict = {}
  with jax.default_device(device):
    weights = jax.tree_util.tree_map(lambda a: jax.numpy.array(a, copy=True), r.weights)
    for i in range(int(r.start), int(r.stop)):
      batch = next(train) if val is None else (next(train), next(val))
      weights, metrics = step(weights, batch, jax.random.fold_in(k_steps, i),
                              np.int32(i))
      for name, value in metrics.items():
        sums.setdefault(name, []).append(value)
    jax.block_until_ready(weights)
  means = {k: float(np.mean(np.asarray(v, np.float64))) for k, v in sums.items()}
  return work.SharedResult(weights, means, None, time.perf_counter() - start)


# ----------------------------------------------------------------------------- registry
def _training_from_config(cfg: Mapping) -> TrainingEvaluator:
  cfg = dict(cfg)
  space = make_space(cfg.pop("space"), **cfg.pop("space_config", {}))
  if cfg.get("objectives") is not None:
    cfg["objectives"] = tuple(cfg["objectives"])
  return TrainingEvaluator(space, **cfg)


def _macro_from_config(cfg: Mapping) -> MacroEvaluator:
  cfg = dict(cfg)
  if cfg.get("objectives") is not None:
    cfg["objectives"] = tuple(cfg["objectives"])
  return MacroEvaluator(**cfg)


# Evaluator kinds -> the function that rebuilds one from its ``config()``. A module that
# defines another kind registers it when imported (``EVALUATORS.register``); a lookup of
# a kind not registered yet imports every module of nasjax.search first, so a run
# directory of any kind resumes in a fresh process.
EVALUATORS: Registry = Registry("evaluator", {
    "nb201": lambda cfg: NB201Evaluator(**cfg),
    "macro": _macro_from_config,
    "train": _training_from_config,
})


def make_evaluator(config: Mapping) -> Any:
  """Rebuild an evaluator from its ``config()`` dict (``{"kind": ..., ...}``)."""
  config = dict(config)
  kind = config.pop("kind", None)
  if kind not in EVALUATORS:
    raise ValueError(f"unknown evaluator kind {kind!r}; known: {sorted(EVALUATORS)}")
  return EVALUATORS[kind](config)
