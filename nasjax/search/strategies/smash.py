"""SMASH: one-shot architecture search through a hypernetwork (Brock et al., 2017).

The search (§3): a hypernetwork learns to generate the 1x1 conv weights of any network of
the memory-bank space (:mod:`nasjax.models.smash`) from its encoding. Each training step
samples an architecture uniformly, generates its weights and trains the hypernetwork and
the shared weights end to end on the step's batch. Then ``num_samples`` random
architectures are scored by their validation accuracy with generated weights; the best
ones are trained on their own.

In the strategy protocol (:mod:`nasjax.search.strategies.oneshot`): the first ask trains the
hypernetwork (``phases > 1`` splits the training over several asks and re-ranks after
each), scores the samples and proposes the best-scored architecture; later asks propose
the next-best, without repeats; the runner's evaluator trains each proposal from scratch
(the stand-alone network of :meth:`SmashSpace.build`). ``tell`` only counts.

Training uses optax: SGD with momentum (or Adam) after clipping the gradient's global
norm, with weight decay on kernels (L2 for SGD, decoupled for Adam) and a cosine learning
rate from ``learning_rate`` to ``min_learning_rate``; the step is one jitted function of
``(params, optimizer state, encoding, batch, learning rate)``, compiled once per space.
SGD with momentum at 0.05 is the default; results in ``docs/results/smash.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.models import smash as smash_lib
from nasjax.search.strategies import oneshot
from nasjax.search.base import register_strategy
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


# ------------------------------------------------------------------------ optimisation
@dataclasses.dataclass(frozen=True)
class Optimizer:
  """The update direction of the one-shot weights (the step applies ``-lr * d``).

  Attributes:
    kind: ``"sgd"`` (with momentum) or ``"adam"``.
    momentum: SGD momentum.
    weight_decay: on kernels only; L2 for SGD, decoupled (AdamW) for Adam.
    grad_clip: global-norm clipping of the gradient, or None.
  """

  kind: str = "sgd"
  momentum: float = 0.9
  weight_decay: float = 5e-4
  grad_clip: float | None = 5.0

  def __post_init__(self):
    if self.kind not in ("adam", "sgd"):
      raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.kind!r}")
    if not 0 <= self.momentum < 1:
      raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")
    if not self.weight_decay >= 0:
      raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
    if self.grad_clip is not None and not self.grad_clip > 0:
      raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip!r}")

  def transform(self) -> optax.GradientTransformation:
    decay = optax.add_decayed_weights(self.weight_decay, kernel_mask)
    parts = [] if self.grad_clip is None else [optax.clip_by_global_norm(self.grad_clip)]
    if self.kind == "adam":
      parts += [optax.scale_by_adam(), decay]
    else:
      parts += [decay, optax.trace(decay=self.momentum)]
    return optax.chain(*parts)


def kernel_mask(params) -> Any:
  """True for the arrays named ``kernel`` (the ones weight decay applies to)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def loss_fn(space: smash_lib.MemoryBankSpace, params, enc, x, y):
  """Mean cross-entropy of the architecture ``enc`` with generated weights.

  Returns:
    ``(loss, accuracy)``.
  """
  logits = smash_lib.apply(space, params, enc, x)
  loss = jnp.mean(oneshot.cross_entropy(logits, y))
  return loss, jnp.mean(jnp.argmax(logits, -1) == y)


def one_shot_step(space: smash_lib.MemoryBankSpace, opt: Optimizer, params, opt_state, enc,
                  x, y, lr):
  """One end-to-end update of hypernetwork and shared weights on a sampled architecture.

  A step whose loss or new parameters are not finite leaves everything unchanged.

  Args:
    space: the space (static).
    opt: the optimiser (static).
    params: one-shot parameters.
    opt_state: ``opt.transform()``'s state.
    enc: the sampled architecture's :class:`~nasjax.models.smash.Encoding`.
    x: ``(B, H, W, C)`` images.
    y: ``(B,)`` int labels.
    lr: ``()`` learning rate.

  Returns:
    ``(params, opt_state, loss, accuracy)``.
  """
  (loss, acc), grads = jax.value_and_grad(
      functools.partial(loss_fn, space), has_aux=True)(params, enc, x, y)
  updates, new_opt = opt.transform().update(grads, opt_state, params)
  new_params = jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates)
  finite = [jnp.all(jnp.isfinite(v)) for v in jax.tree_util.tree_leaves(new_params)]
  ok = jnp.isfinite(loss) & jnp.all(jnp.stack(finite))
  keep = functools.partial(jax.tree_util.tree_map, lambda a, b: jnp.where(ok, a, b))
  return keep(new_params, params), keep(new_opt, opt_state), loss, acc


@functools.lru_cache(maxsize=16)
def step_fn(space: smash_lib.MemoryBankSpace, opt: Optimizer):
  """The jitted :func:`one_shot_step` of ``space`` and ``opt`` (parameters and optimiser
  state donated). Every architecture of the space runs through its one compilation."""
  return jax.jit(functools.partial(one_shot_step, space, opt), donate_argnums=(0, 1))


@functools.lru_cache(maxsize=16)
def eval_fn(space: smash_lib.MemoryBankSpace):
  """Jitted ``(params, enc, x, y) -> correct predictions`` with generated weights."""

  def correct(params, enc, x, y):
    logits = smash_lib.apply(space, params, enc, x)
    return jnp.sum(jnp.argmax(logits, -1) == y)

  return jax.jit(correct)


def score(space: smash_lib.MemoryBankSpace, params, codes, x, y, batch_size: int = 500
          ) -> np.ndarray:
  """Validation accuracy of each code with generated weights (SMASH's ranking score).

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
  fn = eval_fn(space)
  out = []
  for code in np.asarray(codes):
    enc = smash_lib.encode(space, space.decode(code))
    hits = [fn(params, enc, x[i:i + batch_size], y[i:i + batch_size])
            for i in range(0, n, batch_size)]
    out.append(sum(int(h) for h in hits) / n)
  return np.asarray(out, np.float64)


# ------------------------------------------------------------------------------ strategy
@flax.struct.dataclass
class SmashLog:
  """Per-phase records: weight ``step`` at its end, mean ``train_loss`` and
  ``train_accuracy`` of its steps, best and mean score of its ranking, seconds spent."""

  step: jax.Array
  train_loss: jax.Array
  train_accuracy: jax.Array
  best_score: jax.Array
  mean_score: jax.Array
  seconds: jax.Array

  @classmethod
  def empty(cls, n: int) -> "SmashLog":
    nan = jnp.full((n,), jnp.nan, jnp.float32)
    return cls(jnp.zeros((n,), jnp.int32), nan, nan, nan, nan, nan)


@flax.struct.dataclass
class SmashState:
  """Attributes:
    params: one-shot parameters (``{"hyper": ..., "shared": ...}``).
    opt_state: the optimiser's state.
    data_key: ``(2,)`` uint32 key of the batch order and the sampled architectures.
    step: ``()`` int32 training steps done.
    phase: ``()`` int32 phases done.
    log: :class:`SmashLog`, one row per phase.
    proposals: the ranking proposed from.
    count: ``()`` int32 candidates told.
  """

  params: Any
  opt_state: Any
  data_key: jax.Array
  step: jax.Array
  phase: jax.Array
  log: SmashLog
  proposals: oneshot.Proposals
  count: jax.Array


_COMMON = ("dataset", "data_limit", "data_seed", "data_dir", "val_fraction", "epochs",
           "phases", "batch_size", "momentum", "grad_clip", "max_steps")
DEFAULT_CONFIG = {**{k: oneshot.COMMON_CONFIG[k] for k in _COMMON},
                  "optimizer": "sgd", "learning_rate": 0.05, "min_learning_rate": 0.0,
                  "weight_decay": 5e-4, "num_samples": 100, "eval_examples": 1000,
                  "eval_batch_size": 500, "proposals": 100, "hyper_hidden": 32,
                  "hyper_layers": 2, "hyper_kernel": 3}


@dataclasses.dataclass(eq=False)
class Smash:
  """SMASH as a strategy (see the module docstring).

  Attributes:
    space: a :class:`SmashSpace`.
    options: :data:`DEFAULT_CONFIG` keys (:meth:`config` returns them all).
    data: the data set; loaded as ``options`` name it when None.
  """

  space: SearchSpace
  options: dict
  data: Any = None
  name = "smash"

  def __post_init__(self):
    if not isinstance(self.space, smash_lib.MemoryBankSpace):
      raise ValueError(f"smash searches the memory-bank space 'smash', got space "
                       f"{getattr(self.space, 'name', self.space)!r}")
    self.options = cfg = oneshot.merge_options(
        self.name, self.options, DEFAULT_CONFIG,
        ("num_samples", "eval_examples", "eval_batch_size", "proposals", "hyper_hidden",
         "hyper_layers", "hyper_kernel"))
    self.opt = Optimizer(cfg["optimizer"], float(cfg["momentum"]), float(cfg["weight_decay"]),
                         None if cfg["grad_clip"] is None else float(cfg["grad_clip"]))
    if self.data is None:
      self.data = oneshot.load_data(cfg)
    if len(self.data.y_val) == 0:
      raise ValueError("smash scores architectures on the validation split; the data set "
                       f"{self.data.name!r} has none (val_fraction must be positive)")
    self.total = oneshot.total_steps(cfg, len(self.data.y_train))

  def config(self) -> dict:
    """Every option, as the run directory records them (a resumed run rebuilds from it)."""
    return dict(self.options)

  def init(self, key) -> SmashState:
    k_net, k_data = jax.random.split(key)
    cfg = self.options
    params = jax.device_put(smash_lib.init_params(
        self.space, k_net, self.data.input_shape, self.data.num_classes,
        hyper_hidden=cfg["hyper_hidden"], hyper_layers=cfg["hyper_layers"],
        hyper_kernel=cfg["hyper_kernel"]))
    z = jnp.zeros((), jnp.int32)
    return SmashState(params, self.opt.transform().init(params),
                      jax.random.key_data(k_data).astype(jnp.uint32), z, z,
                      SmashLog.empty(cfg["phases"]),
                      oneshot.Proposals.empty(cfg["proposals"], self.space.length), z)

  def _key(self, state: SmashState, tag: int):
    return jax.random.fold_in(jax.random.wrap_key_data(state.data_key), tag)

  def train(self, state: SmashState, until: int) -> tuple[SmashState, float, float]:
    """Training steps up to step ``until``, each on a freshly sampled architecture.

    Returns:
      ``(state, mean loss, mean accuracy)`` of these steps.
    """
    cfg = self.options
    step0 = int(state.step)
    batches = oneshot.BatchStream(self.data.x_train, self.data.y_train, cfg["batch_size"],
                                  self._key(state, 0), start=step0)
    k_arch = self._key(state, 1)
    sample = jax.jit(self.space.sample_code)
    step = step_fn(self.space, self.opt)
    params, opt_state = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True),
                                               (state.params, state.opt_state))
    losses, accs = [], []
    for t in range(step0, until):
      x, y = next(batches)
      code = np.asarray(sample(jax.random.fold_in(k_arch, t)))
      enc = smash_lib.encode(self.space, self.space.decode(code))
      lr = np.float32(oneshot.cosine_lr(t, self.total, cfg["learning_rate"],
                                        cfg["min_learning_rate"]))
      params, opt_state, loss, acc = step(params, opt_state, enc, x, y, lr)
      losses.append(loss)
      accs.append(acc)
    mean = lambda v: float(np.mean(np.asarray(v))) if v else float("nan")
    return (state.replace(params=params, opt_state=opt_state,
                          step=jnp.asarray(until, jnp.int32)), mean(losses), mean(accs))

  def rank(self, state: SmashState) -> tuple[np.ndarray, np.ndarray]:
    """``num_samples`` uniform codes of phase ``state.phase`` and their scores."""
    cfg = self.options
    key = jax.random.fold_in(self._key(state, 2), int(state.phase))
    codes = np.asarray(jax.vmap(self.space.sample)(jax.random.split(key, cfg["num_samples"])))
    n = min(cfg["eval_examples"], len(self.data.y_val))
    scores = score(self.space, state.params, codes, self.data.x_val[:n], self.data.y_val[:n],
                   cfg["eval_batch_size"])
    return codes, scores

  def ask(self, key, state: SmashState):
    """Run the next phase (train, then rank fresh samples) if any; propose the
    best-ranked architecture not proposed yet.

    Returns:
      ``(codes (1, L) int32, state)``.
    """
    del key  # the search is deterministic given init's key
    phase = int(state.phase)
    if phase < self.options["phases"]:
      start = time.perf_counter()
      state, loss, acc = self.train(state, oneshot.phase_end(phase, self.options["phases"],
                                                             self.total))
      codes, scores = self.rank(state)
      log = state.log
      log = log.replace(step=log.step.at[phase].set(state.step),
                        train_loss=log.train_loss.at[phase].set(loss),
                        train_accuracy=log.train_accuracy.at[phase].set(acc),
                        best_score=log.best_score.at[phase].set(float(np.max(scores))),
                        mean_score=log.mean_score.at[phase].set(float(np.mean(scores))),
                        seconds=log.seconds.at[phase].set(time.perf_counter() - start))
      state = state.replace(phase=state.phase + 1, log=log,
                            proposals=oneshot.Proposals.from_scores(
                                codes, scores, self.options["proposals"]))
    return oneshot.propose(state, self.options["phases"])

  def tell(self, key, state: SmashState, candidates, fitness) -> SmashState:
    del key, fitness
    return oneshot.count_told(state, candidates)


def _make(space: SearchSpace, config: dict) -> Smash:
  return Smash(space, dict(config))


SMOKE_SPACE = {"num_blocks": 2, "max_banks": 2, "bank_widths": [4, 8], "max_ops": 2,
               "max_convs": 1, "kernels": [3], "dilations": [1, 2], "groups": [1, 2],
               "width_factors": [1], "stem_stride": 2, "unit": 4}

register_strategy(
    "smash", _make, spaces=("smash",), multi_objective=False, jittable=False,
    default_config=DEFAULT_CONFIG,
    smoke={"space": "smash", "space_config": SMOKE_SPACE,
           "config": {"epochs": 1.0, "max_steps": 6, "data_limit": 256, "batch_size": 16,
                      "num_samples": 4, "eval_examples": 64, "eval_batch_size": 64,
                      "proposals": 4, "hyper_hidden": 8},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="SMASH: hypernetwork-generated weights for sampled memory-bank networks, "
                "best validation accuracy with generated weights trained alone")
