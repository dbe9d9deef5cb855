"""ENAS: efficient NAS via parameter sharing (Pham et al., ICML 2018).

An LSTM controller emits a path one decision at a time (each code position of the
space: an NB201 edge's op, or a DARTS node's input and op), feeding each choice back as
the next input. Training alternates two phases over the shared weights of a supernet:

1. child phase: ``child_steps`` SGD steps on training batches, each on one path sampled
   from the controller;
2. controller phase: ``controller_steps`` REINFORCE updates; each samples
   ``controller_batch`` paths and rewards each with its accuracy on a validation batch
   with the shared weights (batch norm on the batch's statistics, no recalibration).
   The loss is ``-(R - b) * log p(path) - entropy_weight * H(policy)``, with the
   baseline ``b`` a moving average of rewards (updated before the advantage is taken;
   it starts at the first rewards' mean), minimised with Adam.

The controller's logits are ``tanh_constant * tanh(logits / temperature)`` (ENAS's
sampling regularisers). To derive the result, ``derive_samples`` paths are sampled
from the trained controller and ranked by shared-weight accuracy on the validation
split.

Both phases are training steps of the shared-weight pytree (supernet and controller,
:func:`enas_steps`), which the evaluator runs in chunks of
:class:`~nasjax.search.work.TrainShared` on its own batches: child chunks on training
batches, controller chunks on validation batches of ``val_batch_size``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.models import supernet as sn_lib
from nasjax.search import work
from nasjax.search.base import register_strategy
from nasjax.search.options import integer, number, one_of, option
from nasjax.search.spaces import SearchSpace
from nasjax.search.strategies import oneshot


class Controller(nn.Module):
  """An LSTM policy over the codes of a space.

  Attributes:
    num_choices: choices of each code position (``space.num_choices``).
    hidden: LSTM width.
    tanh_constant: logits are squashed to ``(-tanh_constant, tanh_constant)``
      (None: no squashing).
    temperature: logits are divided by it before the squashing.
  """

  num_choices: Sequence[int]
  hidden: int = 64
  tanh_constant: float | None = 1.5
  temperature: float = 5.0

  def setup(self):
    L, K = len(self.num_choices), max(self.num_choices)
    # Token pos * K + choice is the choice made at position pos; L * K starts.
    self.embed = nn.Embed(L * K + 1, self.hidden)
    self.lstm = nn.LSTMCell(self.hidden)
    self.heads = [nn.Dense(K) for _ in range(L)]

  def _logits(self, pos: int, h: jax.Array) -> jax.Array:
    K = max(self.num_choices)
    logits = self.heads[pos](h) / self.temperature
    if self.tanh_constant is not None:
      logits = self.tanh_constant * jnp.tanh(logits)
    return jnp.where(jnp.arange(K) < self.num_choices[pos], logits, -jnp.inf)

  def _run(self, n: int, choose):
    L, K = len(self.num_choices), max(self.num_choices)
    carry = (jnp.zeros((n, self.hidden)), jnp.zeros((n, self.hidden)))
    token = jnp.full((n,), L * K, jnp.int32)
    codes, logp, ent = [], jnp.zeros((n,)), jnp.zeros((n,))
    for pos in range(L):
      carry, h = self.lstm(carry, self.embed(token))
      lp = jax.nn.log_softmax(self._logits(pos, h), axis=-1)
      c = choose(pos, lp)
      p = jnp.exp(lp)
      logp = logp + jnp.take_along_axis(lp, c[:, None], axis=-1)[:, 0]
      ent = ent - jnp.sum(jnp.where(p > 0, p * lp, 0.0), axis=-1)
      codes.append(c)
      token = pos * K + c
    return jnp.stack(codes, axis=1), logp, ent

  def __call__(self, codes: jax.Array):
    """``(log p (n,), entropy (n,))`` of given codes ``(n, L)`` (teacher forcing)."""
    _, logp, ent = self._run(codes.shape[0], lambda pos, lp: codes[:, pos])
    return logp, ent

  def sample(self, key: jax.Array, n: int):
    """``(codes (n, L) int32, log p (n,), entropy (n,))`` sampled from the policy."""
    keys = jax.random.split(key, len(self.num_choices))
    return self._run(n, lambda pos, lp: jax.random.categorical(keys[pos], lp).astype(
        jnp.int32))


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnasConfig(oneshot.OneShotConfig):
  """ENAS's options: those of :class:`~nasjax.search.strategies.oneshot.OneShotConfig`
  and

  Attributes:
    impl: how a path runs (:data:`nasjax.models.supernet.IMPLS`).
    child_steps: weight steps of a round's child phase.
    controller_steps: REINFORCE updates of a round's controller phase.
    controller_batch: paths sampled (and rewarded) per update.
    controller_lr: the controller's Adam learning rate.
    entropy_weight: weight of the policy's entropy bonus.
    baseline_decay: of the rewards' moving average, in [0, 1).
    hidden, tanh_constant, temperature: the :class:`Controller`.
    derive_samples: controller samples scored at the end of a phase.
    derive_bn: batch norm when scoring them (:data:`nasjax.models.supernet.BN_MODES`).
    eval_examples: score on the first this many validation examples (None: all).
    val_batch_size: validation images per controller update (None: ``batch_size``).
  """

  strategy = "enas"
  weight_decay: float = option(5e-4, number(0))
  impl: str = option("switch", one_of(*sn_lib.IMPLS))
  child_steps: int = option(100, integer(1))
  controller_steps: int = option(10, integer(1))
  controller_batch: int = option(10, integer(1))
  controller_lr: float = option(3.5e-3, number(0, open_min=True))
  entropy_weight: float = option(1e-4, number(0))
  baseline_decay: float = option(0.99, number(0))
  hidden: int = option(64, integer(1))
  tanh_constant: float | None = option(1.5, number(0, open_min=True, none=True))
  temperature: float = option(5.0, number(0, open_min=True))
  derive_samples: int = option(64, integer(1))
  derive_bn: str = option("batch", one_of(*sn_lib.BN_MODES))
  eval_examples: int | None = option(None, integer(1, none=True))
  val_batch_size: int | None = option(None, integer(1, none=True))

  def check(self) -> None:
    super().check()
    if not self.baseline_decay < 1:
      raise ValueError(f"enas: option baseline_decay must lie in [0, 1), got "
                       f"{self.baseline_decay!r}")


def reinforce_update(controller: Controller, tx: optax.GradientTransformation,
                     entropy_weight: float, baseline_decay: float, params, opt_state, baseline,
                     started, codes, rewards):
  """One REINFORCE update of the controller (pure, jittable).

  The baseline moves towards the rewards' mean first (it starts at the first mean),
  then ``-(R - b) * log p(code) - entropy_weight * H`` is minimised by one step of ``tx``.

  Returns:
    ``(params, opt_state, baseline, loss, mean entropy)``.
  """
  mean_r = jnp.mean(rewards)
  baseline = jnp.where(started, baseline_decay * baseline + (1 - baseline_decay) * mean_r,
                       mean_r)
  adv = rewards - baseline

  def loss_fn(p):
    logp, ent = controller.apply(p, codes)
    return -jnp.mean(adv * logp) - entropy_weight * jnp.mean(ent), jnp.mean(ent)

  (loss, ent), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, baseline, loss, ent


def path_accuracy(sn: sn_lib.Supernet, code, x, y, impl: str) -> jax.Array:
  """``()`` accuracy of the path ``code`` on one batch, batch norm on the batch's own
  statistics (ENAS's reward)."""
  logits, _ = sn_lib.forward(sn, x, path=code, impl=impl, train=True)
  return jnp.mean(jnp.argmax(logits, -1) == y)


@flax.struct.dataclass
class EnasWeights:
  """What ENAS trains: the supernet and its optimiser's state, the controller's flax
  parameters and Adam's state, the reward baseline ``()`` float32 and ``started`` ``()``
  bool (whether the baseline holds a mean yet)."""

  supernet: sn_lib.Supernet
  opt_state: Any
  controller: Any
  controller_opt: Any
  baseline: jax.Array
  started: jax.Array


@functools.cache
def controller_of(space: SearchSpace, config: EnasConfig) -> Controller:
  return Controller(tuple(space.num_choices), hidden=config.hidden,
                    tanh_constant=config.tanh_constant, temperature=float(config.temperature))


@functools.cache
def enas_steps(space: SearchSpace, config: EnasConfig):
  """ENAS's two training steps ``(weights, batch, key, step) -> (weights, metrics)`` (one
  pair per space and options):

  - the child step: one weight step on the training batch, on a path sampled from the
    controller with the step's key;
  - the controller step: one REINFORCE update on ``controller_batch`` paths sampled with
    the step's key, rewarded by their accuracy on the validation batch (the training
    batch it also gets is not used).
  """
  controller = controller_of(space, config)
  tx, ctrl_tx = oneshot.optimizer(config), optax.adam(config.controller_lr)

  def child_step(weights: EnasWeights, batch, key, step):
    del step  # the schedule counts in the optimiser's state
    x, y = batch
    codes, _, _ = controller.apply(weights.controller, key, 1, method=Controller.sample)
    sn, opt_state, loss, acc = oneshot.train_step(
        tx, weights.supernet, weights.opt_state, x, y, codes[0], by_path=True,
        impl=config.impl)
    return weights.replace(supernet=sn, opt_state=opt_state), {"loss": loss, "accuracy": acc}

  def controller_step(weights: EnasWeights, batch, key, step):
    del step
    _, (xv, yv) = batch
    codes, _, _ = controller.apply(weights.controller, key, config.controller_batch,
                                   method=Controller.sample)
    rewards = jax.lax.map(lambda c: path_accuracy(weights.supernet, c, xv, yv, config.impl),
                          codes)
    params, opt_state, baseline, _, ent = reinforce_update(
        controller, ctrl_tx, config.entropy_weight, config.baseline_decay,
        weights.controller, weights.controller_opt, weights.baseline, weights.started, codes,
        rewards)
    weights = weights.replace(controller=params, controller_opt=opt_state, baseline=baseline,
                              started=jnp.ones((), bool))
    return weights, {"reward": jnp.mean(rewards), "entropy": ent, "baseline": baseline}

  return child_step, controller_step


@functools.cache
def _sampler(controller: Controller, n: int):
  return jax.jit(lambda params, key: controller.apply(params, key, n,
                                                      method=Controller.sample)[0])


@dataclasses.dataclass(frozen=True, eq=False)
class Enas(oneshot.OneShot):
  """ENAS as a strategy (see :mod:`nasjax.search.strategies.oneshot` for how ask and tell
  work).

  Rounds of ``child_steps`` weight steps alternate with ``controller_steps`` controller
  updates, each part asked for in chunks of at most ``chunk_steps`` steps; a round cut
  by the end of a phase is finished in the next phase, the last one at the end of the
  search. A phase's search scores ``derive_samples`` controller samples with the shared
  weights (one :class:`~nasjax.search.work.ScoreShared`). The state's ``search`` is the
  ``()`` int32 count of controller updates done.

  Attributes:
    space: an ``nb201`` or ``darts`` search space.
    config: an :class:`EnasConfig`.
    problem: the task (input shape and classes).
  """

  config: EnasConfig
  name = "enas"
  log_names = ("loss", "accuracy", "reward", "entropy", "baseline", "seconds")

  @property
  def controller(self) -> Controller:
    return controller_of(self.space, self.config)

  def rounds(self, step: int) -> int:
    """Rounds whose child part is done after weight step ``step``."""
    cs, total = self.config.child_steps, self.config.steps
    return step // cs if step < total else -(-total // cs)

  def log_rows(self) -> int:
    cfg = self.config
    rounds = self.rounds(cfg.steps)
    return (super().log_rows() + rounds +
            rounds * -(-cfg.controller_steps // cfg.chunk))

  def init_weights(self, sn: sn_lib.Supernet, key) -> EnasWeights:
    ctrl = self.controller.init(key, jnp.zeros((1, self.space.length), jnp.int32))
    return EnasWeights(sn, oneshot.optimizer(self.config).init(sn.params), ctrl,
                       optax.adam(self.config.controller_lr).init(ctrl),
                       jnp.zeros((), jnp.float32), jnp.zeros((), bool))

  def step_function(self):
    return enas_steps(self.space, self.config)[0]

  def train_request(self, state):
    """The controller updates a finished child phase is owed, else the next child
    chunk (ending at a round's end)."""
    cfg = self.config
    done, due = int(state.search), self.rounds(int(state.step)) * cfg.controller_steps
    if done < due:
      return work.TrainShared(state.weights, enas_steps(self.space, cfg)[1], done,
                              min(due, done + cfg.chunk), 1, self.data_key(state, 1),
                              val_batch_size=cfg.val_batch_size or cfg.batch_size)
    step = int(state.step)
    end = min(self.phase_end(int(state.phase)), (step // cfg.child_steps + 1) * cfg.child_steps)
    if step >= end:
      return None
    return work.TrainShared(state.weights, self.step_function(), step,
                            min(end, step + cfg.chunk), cfg.batch_size, self.data_key(state, 0),
                            augment=cfg.augment)

  def trained(self, state, request, result):
    if request.step is self.step_function():
      return super().trained(state, request, result)
    log = state.log.add(int(state.step), **result.metrics, seconds=result.seconds)
    return state.replace(weights=result.weights, search=jnp.asarray(request.stop, jnp.int32),
                         log=log)

  def sample(self, params, key, n: int) -> np.ndarray:
    """``(n, L)`` canonical codes sampled from the controller."""
    codes = _sampler(self.controller, n)(params, key)
    return np.asarray(jax.vmap(self.space.canonical)(codes))

  def score_function(self):
    """The requests' ``score(weights, codes, data)``: accuracy with the shared weights
    (batch norm as ``derive_bn`` says)."""
    cfg = self.config
    return functools.partial(oneshot.score_codes, bn=cfg.derive_bn,
                             calib_batch_size=cfg.batch_size, max_examples=cfg.eval_examples,
                             impl=cfg.impl)

  def search_ask(self, key, state):
    """``derive_samples`` controller samples, to score with the shared weights."""
    codes = self.sample(state.weights.controller, key, self.config.derive_samples)
    return work.ScoreShared(state.weights, codes, self.score_function()), state

  def scored(self, key, state, request, result):
    scores = np.asarray(result.scores, np.float64)
    return self.finish_phase(state, request.codes, scores, best_score=float(np.nanmax(scores)))


register_strategy(
    "enas", Enas, options=EnasConfig, spaces=("nb201", "darts"), multi_objective=False,
    jittable=False, needs_problem=True,
    smoke={"space": "nb201", "space_config": {"C": 2, "N": 1},
           "config": {"steps": 4, "chunk_steps": 2, "batch_size": 16, "child_steps": 2,
                      "controller_steps": 2, "controller_batch": 2, "hidden": 8,
                      "derive_samples": 4, "eval_examples": 64},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="ENAS: LSTM controller trained with REINFORCE on shared-weight accuracy, "
                "alternating with shared-weight training")
