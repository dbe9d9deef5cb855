"""Hardware-aware rewards: MnasNet's accuracy-latency trade-off as one scalar.

MnasNet (Tan et al., "MnasNet: Platform-Aware Neural Architecture Search for Mobile",
CVPR 2019, §3) folds a measured cost into the reward of a single-objective search::

    reward(m) = ACC(m) * (LAT(m) / T) ** w,   w = alpha if LAT(m) <= T else beta

with ``T`` the target cost. The *soft* constraint uses ``alpha = beta = -0.07`` (a model
twice as slow as the target must be about 5% more accurate to be worth as much); the
*hard* constraint uses ``alpha = 0, beta = -1`` (no reward for being faster than the
target, a steep penalty above it). ``LAT`` is any cost: latency measured on the current
device (:func:`measure_cost`, or the training evaluator's ``latency`` objective),
parameters or FLOPs.

A search here minimises fitness vectors whose components are objectives such as
``val_error`` (100 minus the validation accuracy in %) and ``latency``. A *scalarizer*
turns a fitness ``(B, M)`` into the minimised scalar ``(B,)``; :class:`MnasReward` is the
MnasNet scalarizer (its fitness is the negated reward). :func:`make_scalarizer` builds
one from a JSON config, and :class:`Scalarized` lets any single-objective strategy search
with it: it passes ``ask`` through and scalarizes the fitness before ``tell``.

An evaluator can also compute the reward itself: :class:`MnasObjective` (built by
:func:`make_objective` from the evaluator's ``reward`` config) gives the objective
``neg_reward`` (the negated reward) from a candidate's accuracy and cost, so that every
strategy, single- or multi-objective, searches it without knowing about it
(``nasjax search --reward mnas --target-latency T``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping

import jax
import jax.numpy as jnp

SOFT = (-0.07, -0.07)  # (alpha, beta) of MnasNet's soft constraint
HARD = (0.0, -1.0)  # (alpha, beta) of its hard constraint
MODES = {"soft": SOFT, "hard": HARD}
COST_METRICS = ("latency", "params", "flops")
REWARD_OBJECTIVE = "neg_reward"  # the objective an evaluator with a reward config reports


def mnas_reward(accuracy, cost, target: float, alpha: float = SOFT[0],
                beta: float = SOFT[1]) -> jax.Array:
  """MnasNet's reward ``accuracy * (cost / target) ** w``.

  Args:
    accuracy: ``(...)`` accuracies (any scale; MnasNet uses fractions in [0, 1]).
    cost: ``(...)`` positive costs, e.g. seconds of latency, parameters or FLOPs.
    target: the target cost ``T`` (> 0).
    alpha: exponent where ``cost <= target``.
    beta: exponent where ``cost > target``.

  Returns:
    ``(...)`` float32 rewards; NaN where the accuracy or the cost is NaN.

  Raises:
    ValueError: for a target that is not positive.
  """
  if not target > 0:
    raise ValueError(f"the target cost must be positive, got {target!r}")
  accuracy = jnp.asarray(accuracy, jnp.float32)
  ratio = jnp.asarray(cost, jnp.float32) / jnp.float32(target)
  w = jnp.where(ratio <= 1.0, jnp.float32(alpha), jnp.float32(beta))
  return accuracy * ratio ** w


@dataclasses.dataclass(frozen=True)
class MnasReward:
  """The MnasNet reward as a scalarizer of fitness vectors.

  Attributes:
    target: the target cost ``T``, in the unit of the cost objective.
    cost_objective: index of the cost in the fitness vector.
    error_objective: index of the error; the accuracy is ``1 - error / error_scale``.
    mode: ``"soft"`` or ``"hard"``; ignored where ``alpha`` and ``beta`` are given.
    alpha, beta: explicit exponents (both or neither).
    error_scale: 100 for errors in percent (``val_error``), 1 for fractions.
  """

  target: float
  cost_objective: int = 1
  error_objective: int = 0
  mode: str = "soft"
  alpha: float | None = None
  beta: float | None = None
  error_scale: float = 100.0
  kind = "mnas"

  def __post_init__(self):
    if not (isinstance(self.target, numbers.Real) and self.target > 0):
      raise ValueError(f"target must be a positive cost, got {self.target!r}")
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {sorted(MODES)}, got {self.mode!r}")
    if (self.alpha is None) != (self.beta is None):
      raise ValueError(f"give both alpha and beta or neither, got alpha={self.alpha!r}, "
                       f"beta={self.beta!r}")
    for what in ("cost_objective", "error_objective"):
      v = getattr(self, what)
      if not isinstance(v, int) or v < 0:
        raise ValueError(f"{what} must be a non-negative int, got {v!r}")
    if self.cost_objective == self.error_objective:
      raise ValueError(f"the cost and the error are both objective {self.cost_objective}")
    if not self.error_scale > 0:
      raise ValueError(f"error_scale must be positive, got {self.error_scale!r}")

  @property
  def exponents(self) -> tuple[float, float]:
    """``(alpha, beta)``."""
    if self.alpha is not None:
      return float(self.alpha), float(self.beta)
    return MODES[self.mode]

  @property
  def num_objectives(self) -> int:
    """The least fitness length this scalarizer can read."""
    return max(self.cost_objective, self.error_objective) + 1

  def config(self) -> dict:
    return {"kind": self.kind, "target": self.target, "cost_objective": self.cost_objective,
            "error_objective": self.error_objective, "mode": self.mode, "alpha": self.alpha,
            "beta": self.beta, "error_scale": self.error_scale}

  def reward(self, fitness: jax.Array) -> jax.Array:
    """``(B,)`` rewards of fitness ``(B, M)``."""
    f = jnp.asarray(fitness, jnp.float32)
    if f.ndim != 2 or f.shape[1] < self.num_objectives:
      raise ValueError(f"expected fitness of shape (B, M >= {self.num_objectives}), got "
                       f"{tuple(f.shape)}")
    accuracy = 1.0 - f[:, self.error_objective] / jnp.float32(self.error_scale)
    alpha, beta = self.exponents
    return mnas_reward(accuracy, f[:, self.cost_objective], self.target, alpha, beta)

  def __call__(self, fitness: jax.Array) -> jax.Array:
    """``(B,)`` minimised scalar fitness: the negated reward."""
    return -self.reward(fitness)


def _reward_options(config, cls, example: str) -> dict:
  """The options of reward ``config`` (a dict such as ``example``) for the dataclass
  ``cls``, without its ``kind``.

  Raises:
    ValueError: ``config`` is not a dict, or has another kind or an unknown option.
  """
  if not isinstance(config, Mapping):
    raise ValueError(f"a reward config is a dict such as {example}, got {config!r}")
  config = dict(config)
  kind = config.pop("kind", cls.kind)
  if kind != cls.kind:
    raise ValueError(f"unknown reward kind {kind!r}; known: ['{cls.kind}']")
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = set(config) - fields
  if unknown:
    raise ValueError(f"unknown reward option(s) {sorted(unknown)}; it takes {sorted(fields)}")
  return config


def make_scalarizer(config: Mapping[str, Any] | None, num_objectives: int):
  """A scalarizer from its config dict, checked against the fitness length.

  Args:
    config: ``{"kind": "mnas", "target": ..., ...}`` (the fields of
      :class:`MnasReward`), or None for "objective 0 as it is".
    num_objectives: M, the length of the fitness vectors it will read.

  Returns:
    A callable ``fitness (B, M) -> (B,)``, or None for a None config.

  Raises:
    ValueError: for an unknown kind or field, or an objective index ``>= M``.
  """
  if config is None:
    return None
  scalarizer = MnasReward(**_reward_options(config, MnasReward, "{'kind': 'mnas', "
                                            "'target': 0.01}"))
  if scalarizer.num_objectives > num_objectives:
    raise ValueError(f"the reward reads objective {scalarizer.num_objectives - 1} but the "
                     f"fitness has {num_objectives} objective(s)")
  return scalarizer


@dataclasses.dataclass(frozen=True)
class Scalarized:
  """A single-objective strategy searching the scalarized fitness of a multi-objective
  evaluator.

  ``ask`` and ``init`` are the inner strategy's; ``tell`` scalarizes the fitness first.
  Array-only strategies stay jittable.

  Attributes:
    strategy: the inner strategy (built for one objective).
    scalarizer: ``fitness (B, M) -> (B,)``, e.g. :class:`MnasReward`.
  """

  strategy: Any
  scalarizer: Any

  @property
  def name(self) -> str:
    return self.strategy.name

  def config(self) -> dict:
    from nasjax.search.base import strategy_config

    return strategy_config(self.strategy)

  def init(self, key):
    return self.strategy.init(key)

  def ask(self, key, state):
    return self.strategy.ask(key, state)

  def tell(self, key, state, candidates, fitness):
    f = jnp.asarray(fitness, jnp.float32)
    return self.strategy.tell(key, state, candidates, self.scalarizer(f.reshape(f.shape[0], -1)))


@dataclasses.dataclass(frozen=True)
class MnasObjective:
  """The MnasNet reward as an evaluator's objective ``neg_reward``.

  The objective of a candidate of accuracy ``ACC`` (a fraction) and cost ``COST`` is
  ``-mnas_reward(ACC, COST, target, alpha, beta)``: minimising it maximises the reward.

  Attributes:
    target: the target cost ``T``, in the unit of ``cost``.
    cost: which cost: ``latency`` (seconds), ``params`` or ``flops``.
    mode: ``"soft"`` or ``"hard"``; ignored where ``alpha`` and ``beta`` are given.
    alpha, beta: explicit exponents (both or neither).
  """

  target: float
  cost: str = "latency"
  mode: str = "soft"
  alpha: float | None = None
  beta: float | None = None
  kind = "mnas"

  def __post_init__(self):
    if isinstance(self.target, numbers.Real) and not math.isfinite(self.target):
      raise ValueError(f"target must be a finite positive cost, got {self.target!r}")
    if self.cost not in COST_METRICS:
      raise ValueError(f"the reward's cost must be one of {list(COST_METRICS)}, got "
                       f"{self.cost!r}")
    # MnasReward holds the checks of the shared fields and the exponents of each mode.
    object.__setattr__(self, "_reward", MnasReward(self.target, mode=self.mode,
                                                   alpha=self.alpha, beta=self.beta))

  def config(self) -> dict:
    return {"kind": self.kind, "target": self.target, "cost": self.cost, "mode": self.mode,
            "alpha": self.alpha, "beta": self.beta}

  def reward(self, accuracy, cost) -> jax.Array:
    """``(...)`` float32 rewards of accuracies (fractions) and costs of the same shape."""
    alpha, beta = self._reward.exponents
    return mnas_reward(accuracy, cost, self.target, alpha, beta)

  def __call__(self, accuracy, cost) -> jax.Array:
    """``(...)`` float32 objective values: the negated rewards."""
    return -self.reward(accuracy, cost)


def make_objective(config: Mapping[str, Any] | None) -> MnasObjective | None:
  """The reward objective of an evaluator from its config dict.

  Args:
    config: ``{"kind": "mnas", "target": ..., "cost": ...}`` (the fields of
      :class:`MnasObjective`; ``kind`` defaults to ``mnas``), or None for no reward.

  Returns:
    A :class:`MnasObjective`, or None for a None config.

  Raises:
    ValueError: for an unknown kind or field, or a bad value.
  """
  if config is None:
    return None
  config = _reward_options(config, MnasObjective, "{'kind': 'mnas', 'target': 0.01, "
                           "'cost': 'latency'}")
  if "target" not in config:
    raise ValueError("a reward config needs a target cost, e.g. {'target': 0.01}")
  return MnasObjective(**config)


def measure_cost(arch, metric: str = "latency", key: jax.Array | None = None,
                 batch_size: int = 1, repeats: int = 20) -> float:
  """The cost of an architecture: ``latency`` (median seconds of one jitted inference of
  a freshly initialised network on the current device), ``params`` or ``flops``.

  Raises:
    ValueError: for an unknown metric.
  """
  import nasjax

  if metric == "params":
    return float(nasjax.count_params(arch))
  if metric == "flops":
    return float(nasjax.flops(arch))
  if metric == "latency":
    net = nasjax.init(arch, jax.random.key(0) if key is None else key)
    return float(nasjax.latency(net, batch_size=batch_size, repeats=repeats))
  raise ValueError(f"unknown cost metric {metric!r}; choose from {list(COST_METRICS)}")
