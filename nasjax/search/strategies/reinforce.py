"""REINFORCE over independent categorical choices (NAS-Bench-201's ``REINFORCE``).

The policy is a logit table: one categorical distribution per code position (for NB201,
6 edges x 5 ops). Each generation samples codes from it; the reward of a candidate is
its negated fitness (for NB201, validation accuracy minus 100, the same advantages as
the accuracy itself). The policy-gradient loss of Williams (1992),
``-log p(code) * (reward - baseline)``, is minimised with Adam, where the baseline is a
bias-corrected exponential moving average of the rewards, updated with each reward
before its advantage is taken (as NAS-Bench-201's baseline does).

Defaults: Adam with learning rate 0.01 and moving-average momentum 0.9, the settings
NATS-Bench documents for its REINFORCE baseline; logits start at zero (the uniform
policy). Failed candidates (NaN fitness) are skipped. Positions that a code leaves
inactive contribute nothing to its log-probability.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.search.base import register_strategy, select_objective
from nasjax.search.options import Options, integer, number, option
from nasjax.search.spaces import SearchSpace


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReinforceConfig(Options):
  """Attributes:
    learning_rate: Adam's step size.
    baseline_momentum: momentum of the reward moving average.
    batch_size: codes sampled per ``ask``; their gradients are averaged.
    objective: which objective of a fitness vector is the (negated) reward.
  """

  strategy = "reinforce"
  learning_rate: float = option(0.01, number(0, open_min=True))
  baseline_momentum: float = option(0.9, number(0.0, 1.0, open_max=True))
  batch_size: int = option(1, integer(1))
  objective: int = option(0, integer(0))

  def check(self) -> None:
    if self.objective >= self.num_objectives:
      raise ValueError(f"{self.strategy}: objective {self.objective} is outside the "
                       f"{self.num_objectives} objectives")


@flax.struct.dataclass
class ReinforceState:
  """The state of REINFORCE.

  Attributes:
    logits: ``(L, K)`` float32, K the most choices of any position.
    opt_state: Adam's state for ``logits``.
    baseline_num, baseline_den: ``()`` float32, the moving average's numerator and
      normaliser (its value is their ratio).
    count: ``()`` int32, candidates told.
  """

  logits: jax.Array
  opt_state: Any
  baseline_num: jax.Array
  baseline_den: jax.Array
  count: jax.Array


@dataclasses.dataclass(frozen=True)
class Reinforce:
  """Policy-gradient search with a moving-average baseline.

  Attributes:
    space: the search space.
    config: a :class:`ReinforceConfig`.
  """

  space: SearchSpace
  config: ReinforceConfig = ReinforceConfig()
  name = "reinforce"
  # NB201's REINFORCE script records a query before it checks the budget, so the query
  # that passes it still counts (nasjax.search.bench.charged_prefix).
  budget_crossing = "keep"

  @property
  def _optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.config.learning_rate)

  @property
  def _valid(self) -> np.ndarray:
    n = np.asarray(self.space.num_choices)
    return np.arange(n.max())[None, :] < n[:, None]

  def init(self, key: jax.Array) -> ReinforceState:
    del key  # the uniform policy
    logits = jnp.zeros(self._valid.shape, jnp.float32)
    zero = jnp.zeros((), jnp.float32)
    return ReinforceState(logits, self._optimizer.init(logits), zero, zero,
                          jnp.zeros((), jnp.int32))

  def _log_probs(self, logits: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(jnp.where(self._valid, logits, -jnp.inf), axis=-1)

  def ask(self, key: jax.Array, state: ReinforceState) -> tuple[jax.Array, ReinforceState]:
    """Returns ``(codes (batch_size, L) int32, state)`` sampled from the policy."""
    logp = self._log_probs(state.logits)
    codes = jax.random.categorical(key, logp, axis=-1,
                                   shape=(self.config.batch_size, logp.shape[0]))
    codes = jax.vmap(self.space.canonical)(codes.astype(jnp.int32))
    return codes, state

  def tell(self, key, state: ReinforceState, candidates, fitness) -> ReinforceState:
    """One Adam step on the policy-gradient loss of the told candidates."""
    del key
    codes = jnp.asarray(candidates, jnp.int32)
    reward = -select_objective(fitness, self.config.objective)
    ok = jnp.isfinite(reward)
    m = jnp.float32(self.config.baseline_momentum)

    def update_baseline(carry, item):
      num, den = carry
      r, good = item
      num2, den2 = m * num + (1 - m) * r, m * den + (1 - m)
      num, den = jnp.where(good, num2, num), jnp.where(good, den2, den)
      adv = jnp.where(good, r - num / jnp.where(den > 0, den, 1.0), 0.0)
      return (num, den), adv

    (num, den), adv = jax.lax.scan(update_baseline, (state.baseline_num, state.baseline_den),
                                   (jnp.where(ok, reward, 0.0), ok))

    def loss(logits):
      logp = self._log_probs(logits)
      picked = jnp.take_along_axis(logp[None], codes[:, :, None], axis=-1)[..., 0]
      active = jax.vmap(self.space.active)(codes)
      per_code = jnp.sum(jnp.where(active, picked, 0.0), axis=-1)
      return -jnp.sum(per_code * adv) / jnp.maximum(jnp.sum(ok), 1)

    grads = jax.grad(loss)(state.logits)
    grads = jnp.where(self._valid, grads, 0.0)
    updates, opt_state = self._optimizer.update(grads, state.opt_state, state.logits)
    return state.replace(logits=optax.apply_updates(state.logits, updates),
                         opt_state=opt_state, baseline_num=num, baseline_den=den,
                         count=state.count + codes.shape[0])


register_strategy(
    "reinforce", Reinforce, options=ReinforceConfig, spaces=("*",), multi_objective=False,
    jittable=True, smoke={"config": {"batch_size": 2}, "max_evals": 4},
    description="REINFORCE on a per-position logit table with a moving-average baseline")
