"""SMASH: one-shot architecture search through a hypernetwork (Brock et al., 2017).

The search (§3): a hypernetwork learns to generate the 1x1 conv weights of any network of
the memory-bank space (:mod:`nasjax.models.smash`) from its encoding. Each training step
samples an architecture uniformly, generates its weights and trains the hypernetwork and
the shared weights end to end on the step's batch. Then ``num_samples`` random
architectures are scored by their validation accuracy with generated weights; the best
ones are trained on their own.

In the strategy protocol the one-shot parameters and their optimiser state live in the
strategy state, and the evaluator does the work on them with its own data:

1. While training steps remain, ``ask`` returns a :class:`~nasjax.search.work.TrainShared`
   of up to ``chunk_steps`` steps of :func:`train_step` (one pure step function per space
   and options: it draws the step's architecture from the step's key, generates its
   weights and applies one optimiser update); ``tell`` keeps the trained weights.
2. Then ``ask`` returns a :class:`~nasjax.search.work.ScoreShared` of ``num_samples``
   uniform codes, scored by :func:`score_codes`; ``tell`` ranks them.
3. Every later ``ask`` proposes the next code of the ranking, best first, without
   repeats; the runner's evaluator trains each proposal from scratch (the stand-alone
   network of :meth:`SmashSpace.build`), and ``tell`` only counts.

``phases > 1`` splits the training into shares, each followed by a ranking of fresh
samples whose best is proposed before the training goes on. The run directory
checkpoints after every chunk, so a search killed while the hypernetwork trains resumes
from its last chunk.

Training uses optax: SGD with momentum (or Adam) after clipping the gradient's global
norm, with weight decay on kernels (L2 for SGD, decoupled for Adam) and optax's cosine
schedule from ``learning_rate`` to ``min_learning_rate`` over ``steps`` updates. SGD with
momentum at 0.05 is the default; results in ``docs/results/smash.md``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.models import smash as smash_lib
from nasjax.search import work
from nasjax.search.strategies import oneshot
from nasjax.search.base import register_strategy
from nasjax.search.options import Options, integer, number, one_of, option
from nasjax.search.spaces import SearchSpace, register_space


@dataclasses.dataclass(frozen=True)
class SmashSpace(smash_lib.MemoryBankSpace, SearchSpace):
  """The memory-bank space as a search space: codes, ``decode`` to a
  :class:`~nasjax.models.smash.BankNet`, ``build`` to its stand-alone network.

  The fields are those of :class:`~nasjax.models.smash.MemoryBankSpace`.
  """

  name: ClassVar[str] = "smash"
  has_inactive: ClassVar[bool] = True


# Other strategies search this space too (its codes are ordinary codes), and a run
# directory names its space, so the space joins the registry that make_space reads.
register_space(SmashSpace)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmashConfig(Options):
  """SMASH's options.

  Attributes:
    steps: training steps of the hypernetwork and the shared weights in all (the
      default is 10 epochs of the 112 full batches of 64 of ``fashion_mnist_small``'s
      7,200 training images).
    chunk_steps: steps per :class:`~nasjax.search.work.TrainShared` request (the run
      directory checkpoints after each).
    phases: shares of the training, each followed by a ranking of fresh samples.
    batch_size: training images per step.
    optimizer: ``"sgd"`` (with momentum) or ``"adam"``.
    learning_rate, min_learning_rate: the cosine schedule's first and last step size.
    momentum: SGD momentum, below 1.
    weight_decay: on kernels only; L2 for SGD, decoupled (AdamW) for Adam.
    grad_clip: global-norm clipping of the gradient, or None.
    num_samples: uniform architectures ranked per phase.
    eval_examples: validation images each architecture is scored on (at most the split).
    eval_batch_size: images per scoring batch (batch norm uses each batch's statistics,
      so only full batches count).
    proposals: most architectures kept in the ranking.
    hyper_hidden, hyper_layers, hyper_kernel: size of the hypernetwork
      (:func:`nasjax.models.smash.init_params`).
  """

  strategy = "smash"
  steps: int = option(1120, integer(1))
  chunk_steps: int = option(100, integer(1))
  phases: int = option(1, integer(1))
  batch_size: int = option(64, integer(1))
  optimizer: str = option("sgd", one_of("sgd", "adam"))
  learning_rate: float = option(0.05, number(0, open_min=True))
  min_learning_rate: float = option(0.0, number(0))
  momentum: float = option(0.9, number(0, 1, open_max=True))
  weight_decay: float = option(5e-4, number(0))
  grad_clip: float | None = option(5.0, number(0, open_min=True, none=True))
  num_samples: int = option(100, integer(1))
  eval_examples: int = option(1000, integer(1))
  eval_batch_size: int = option(500, integer(1))
  proposals: int = option(100, integer(1))
  hyper_hidden: int = option(32, integer(1))
  hyper_layers: int = option(2, integer(1))
  hyper_kernel: int = option(3, integer(1))

  def check(self) -> None:
    if self.min_learning_rate > self.learning_rate:
      raise ValueError(f"smash: min_learning_rate {self.min_learning_rate!r} exceeds "
                       f"learning_rate {self.learning_rate!r}")
    if self.phases > self.steps:
      raise ValueError(f"smash: {self.phases} phases need at least as many steps, got "
                       f"steps={self.steps}")


# ------------------------------------------------------------------------ optimisation
def kernel_mask(params) -> Any:
  """True for the arrays named ``kernel`` (the ones weight decay applies to)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def optimizer(config: SmashConfig) -> optax.GradientTransformation:
  """The update of the one-shot parameters: gradient clipping, then SGD with momentum and
  L2 weight decay on kernels, or Adam with decoupled weight decay, scaled by the cosine
  schedule (which counts the applied updates)."""
  schedule = optax.cosine_decay_schedule(
      config.learning_rate, config.steps,
      alpha=config.min_learning_rate / config.learning_rate)
  decay = optax.add_decayed_weights(config.weight_decay, kernel_mask)
  parts = [] if config.grad_clip is None else [optax.clip_by_global_norm(config.grad_clip)]
  if config.optimizer == "adam":
    parts += [optax.scale_by_adam(), decay]
  else:
    parts += [decay, optax.trace(decay=config.momentum)]
  return optax.chain(*parts, optax.scale_by_learning_rate(schedule))


def loss_fn(space: smash_lib.MemoryBankSpace, params, enc, x, y):
  """Mean cross-entropy of the architecture ``enc`` with generated weights.

  Returns:
    ``(loss, accuracy)``.
  """
  logits = smash_lib.apply(space, params, enc, x)
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
  return loss, jnp.mean(jnp.argmax(logits, -1) == y)


def _finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)]))


@functools.cache
def train_step(space: smash_lib.MemoryBankSpace, config: SmashConfig):
  """SMASH's training step for ``space`` and ``config``: the same function object for
  equal arguments, so the evaluator compiles it once for every chunk.

  ``step(weights, batch, key, step) -> (weights, metrics)`` with ``weights`` the dict
  ``{"params": one-shot parameters, "opt_state": optimiser state}``: it draws an
  architecture uniformly from ``key``, encodes it in the program
  (:func:`~nasjax.models.smash.encode_code`), generates its weights and applies one
  :func:`optimizer` update of hypernetwork and shared weights end to end on
  ``batch = (x, y)``. A step whose loss or new parameters are not finite leaves the
  weights unchanged. ``metrics``: the step's ``loss`` and ``accuracy``.
  """
  tx = optimizer(config)
  grad = jax.value_and_grad(functools.partial(loss_fn, space), has_aux=True)

  def step(weights, batch, key, step):
    del step  # the schedule counts the updates in the optimiser state
    x, y = batch
    enc = smash_lib.encode_code(space, space.sample(key))
    (loss, acc), grads = grad(weights["params"], enc, x, y)
    updates, opt_state = tx.update(grads, weights["opt_state"], weights["params"])
    new = {"params": optax.apply_updates(weights["params"], updates), "opt_state": opt_state}
    ok = jnp.isfinite(loss) & _finite(new["params"])
    return (jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, weights),
            {"loss": loss, "accuracy": acc})

  return step


# ------------------------------------------------------------------------------ scoring
@functools.lru_cache(maxsize=16)
def _correct_fn(space: smash_lib.MemoryBankSpace):
  """Jitted ``(params, code, x, y) -> correct predictions`` with generated weights."""

  def correct(params, code, x, y):
    logits = smash_lib.apply(space, params, smash_lib.encode_code(space, code), x)
    return jnp.sum(jnp.argmax(logits, -1) == y)

  return jax.jit(correct)


def score(space: smash_lib.MemoryBankSpace, params, codes, x, y, batch_size: int = 500
          ) -> np.ndarray:
  """Accuracy of each code on ``(x, y)`` with generated weights (SMASH's ranking score).

  Batch norm uses each batch's statistics, so only full batches are used: the first
  ``len(x) // batch_size * batch_size`` examples.

  Args:
    space: the space.
    params: one-shot parameters.
    codes: ``(N, L)`` codes.
    x: ``(M, H, W, C)`` validation images.
    y: ``(M,)`` labels.
    batch_size: examples per batch (at most ``M``).

  Returns:
    ``(N,)`` float64 accuracies.
  """
  batch_size = min(int(batch_size), len(x))
  if batch_size < 1:
    raise ValueError("scoring needs at least one validation example")
  n = len(x) // batch_size * batch_size
  fn = _correct_fn(space)
  out = []
  for code in np.asarray(codes, np.int32):
    hits = [fn(params, code, x[i:i + batch_size], y[i:i + batch_size])
            for i in range(0, n, batch_size)]
    out.append(sum(int(h) for h in hits) / n)
  return np.asarray(out, np.float64)


def score_codes(space: smash_lib.MemoryBankSpace, examples: int, batch_size: int, params,
                codes, data) -> np.ndarray:
  """The score of a :class:`~nasjax.search.work.ScoreShared` (with the first three
  arguments bound): :func:`score` on the first ``examples`` validation images of
  ``data`` (a :class:`nasjax.data.Dataset`)."""
  if len(data.y_val) == 0:
    raise ValueError("smash scores architectures on the validation split; the data set "
                     f"{data.name!r} has none (val_fraction must be positive)")
  n = min(int(examples), len(data.y_val))
  return score(space, params, codes, data.x_val[:n], data.y_val[:n], batch_size)


def ranking(codes, scores, capacity: int) -> tuple[np.ndarray, np.ndarray, int]:
  """The distinct ``codes`` ranked by ``scores`` (descending, NaN last, the first seen
  first among ties), at most ``capacity`` of them.

  Returns:
    ``(codes (capacity, L) int32, scores (capacity,) float32, size)``; rows from
    ``size`` on are zeros and ``-inf``.
  """
  codes = np.asarray(codes, np.int32)
  scores = np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)
  ranked = np.zeros((capacity, codes.shape[1]), np.int32)
  values = np.full(capacity, -np.inf, np.float32)
  seen, size = set(), 0
  for i in np.argsort(-scores, kind="stable"):
    if size == capacity:
      break
    if codes[i].tobytes() not in seen:
      seen.add(codes[i].tobytes())
      ranked[size], values[size], size = codes[i], scores[i], size + 1
  return ranked, values, size


# ------------------------------------------------------------------------------ strategy
@flax.struct.dataclass
class SmashState:
  """Attributes:
    weights: ``{"params": one-shot parameters, "opt_state": the optimiser's state}``.
    key: ``(2,)`` uint32 key data of the batch order, the steps' architectures and the
      ranked samples.
    step: ``()`` int32 training steps done.
    phase: ``()`` int32 phases ranked.
    proposed: ``()`` int32 phases whose best was proposed.
    log: :class:`~nasjax.search.strategies.oneshot.PhaseLog`, one row per phase.
    ranked: ``(proposals, L)`` int32 the last ranking, best first.
    scores: ``(proposals,)`` float32 their scores.
    size: ``()`` int32 rows of the ranking in use.
    next: ``()`` int32 the row proposed next once every phase is ranked.
    count: ``()`` int32 candidates told.
  """

  weights: Any
  key: jax.Array
  step: jax.Array
  phase: jax.Array
  proposed: jax.Array
  log: oneshot.PhaseLog
  ranked: jax.Array
  scores: jax.Array
  size: jax.Array
  next: jax.Array
  count: jax.Array


@dataclasses.dataclass(frozen=True)
class Smash:
  """SMASH as a strategy (see the module docstring).

  Attributes:
    space: a :class:`SmashSpace`.
    problem: the task (input shape and classes of the networks).
    config: a :class:`SmashConfig`.
  """

  space: SearchSpace
  problem: work.Problem
  config: SmashConfig = SmashConfig()
  name = "smash"

  def __post_init__(self):
    work.require_problem(self.problem, self.name, "trains a hypernetwork for the task")
    if not isinstance(self.space, smash_lib.MemoryBankSpace):
      raise ValueError(f"smash searches the memory-bank space 'smash', got space "
                       f"{getattr(self.space, 'name', self.space)!r}")

  def init(self, key) -> SmashState:
    k_net, k_data = jax.random.split(key)
    cfg = self.config
    params = jax.device_put(smash_lib.init_params(
        self.space, k_net, self.problem.input_shape, self.problem.num_classes,
        hyper_hidden=cfg.hyper_hidden, hyper_layers=cfg.hyper_layers,
        hyper_kernel=cfg.hyper_kernel))
    ranked, scores, _ = ranking(np.zeros((0, self.space.length)), [], cfg.proposals)
    z = np.zeros((), np.int32)
    return SmashState({"params": params, "opt_state": optimizer(cfg).init(params)},
                      np.asarray(jax.random.key_data(k_data), np.uint32), z, z, z,
                      oneshot.PhaseLog.empty(cfg.phases), ranked, scores, z, z, z)

  def _key(self, state: SmashState, tag: int):
    return jax.random.fold_in(jax.random.wrap_key_data(jnp.asarray(state.key)), tag)

  def phase_end(self, phase: int) -> int:
    """The training step at which phase ``phase`` (0-based; -1: none) ends."""
    return int(round(self.config.steps * (phase + 1) / self.config.phases))

  def samples(self, state: SmashState) -> np.ndarray:
    """``(num_samples, L)`` uniform codes ranked after phase ``state.phase``."""
    key = jax.random.fold_in(self._key(state, 2), int(state.phase))
    return np.asarray(jax.vmap(self.space.sample)(
        jax.random.split(key, self.config.num_samples)))

  def ask(self, key, state: SmashState):
    """Training or scoring work while the phase has some; then a proposal.

    Returns:
      ``(request, state)``: a :class:`~nasjax.search.work.TrainShared`, a
      :class:`~nasjax.search.work.ScoreShared`, or codes ``(1, L)`` int32.
    """
    del key  # the search is deterministic given init's key
    cfg, phase = self.config, int(state.phase)
    if phase < cfg.phases and int(state.proposed) == phase:
      start, end = int(state.step), self.phase_end(phase)
      if start < end:
        return work.TrainShared(state.weights, train_step(self.space, cfg), start,
                                min(start + cfg.chunk_steps, end), cfg.batch_size,
                                self._key(state, 0)), state
      return work.ScoreShared(state.weights["params"], self.samples(state), functools.partial(
          score_codes, self.space, cfg.eval_examples, cfg.eval_batch_size)), state
    ranked = np.asarray(state.ranked)
    if phase < cfg.phases:  # the best of an intermediate ranking
      return ranked[:1], state.replace(proposed=state.phase)
    i = int(state.next) % max(int(state.size), 1)
    return ranked[i:i + 1], state.replace(next=state.next + 1)

  def tell(self, key, state: SmashState, candidates, fitness) -> SmashState:
    """Keep trained weights, rank scored samples, or count the candidates told."""
    del key
    if isinstance(candidates, work.TrainShared):
      return self._trained(state, candidates, fitness)
    if isinstance(candidates, work.ScoreShared):
      return self._ranked(state, candidates, fitness)
    return state.replace(count=state.count + np.shape(candidates)[0])

  def _trained(self, state: SmashState, request: work.TrainShared,
               result: work.SharedResult) -> SmashState:
    phase = int(state.phase)
    before = int(request.start) - self.phase_end(phase - 1)  # steps of the phase before
    steps = int(request.stop) - int(request.start)
    log = jax.tree_util.tree_map(lambda a: np.array(a, copy=True), state.log)
    for row, name in ((log.train_loss, "loss"), (log.train_accuracy, "accuracy")):
      value = result.metrics.get(name, np.nan)  # the phase's running mean over its steps
      row[phase] = value if before == 0 else (
          (row[phase] * before + value * steps) / (before + steps))
    log.step[phase] = int(request.stop)
    log.seconds[phase] += result.seconds
    return state.replace(weights=result.weights, step=np.int32(request.stop), log=log)

  def _ranked(self, state: SmashState, request: work.ScoreShared,
              result: work.SharedResult) -> SmashState:
    phase = int(state.phase)
    scores = np.asarray(result.scores, np.float64)
    ranked, values, size = ranking(request.codes, scores, self.config.proposals)
    finite = scores[np.isfinite(scores)]
    log = jax.tree_util.tree_map(lambda a: np.array(a, copy=True), state.log)
    log.best_score[phase] = finite.max() if len(finite) else np.nan
    log.mean_score[phase] = finite.mean() if len(finite) else np.nan
    log.seconds[phase] += result.seconds
    return state.replace(phase=np.int32(phase + 1), log=log, ranked=ranked, scores=values,
                         size=np.int32(size), next=np.int32(0))


def _make(space: SearchSpace, config: SmashConfig, *, problem: work.Problem) -> Smash:
  return Smash(space, problem, config)


SMOKE_SPACE = {"num_blocks": 2, "max_banks": 2, "bank_widths": [4, 8], "max_ops": 2,
               "max_convs": 1, "kernels": [3], "dilations": [1, 2], "groups": [1, 2],
               "width_factors": [1], "stem_stride": 2, "unit": 4}

register_strategy(
    "smash", _make, spaces=("smash",), multi_objective=False, jittable=False,
    options=SmashConfig, needs_problem=True,
    smoke={"space": "smash", "space_config": SMOKE_SPACE,
           "config": {"steps": 6, "chunk_steps": 3, "batch_size": 16, "num_samples": 4,
                      "eval_examples": 64, "eval_batch_size": 64, "proposals": 4,
                      "hyper_hidden": 8},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="SMASH: hypernetwork-generated weights for sampled memory-bank networks, "
                "best validation accuracy with generated weights trained alone")
