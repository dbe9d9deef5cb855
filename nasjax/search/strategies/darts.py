"""DARTS: differentiable architecture search (Liu, Simonyan & Yang, ICLR 2019).

Every edge of the supernet mixes its ops with weights ``softmax(alpha[t, e])``; the
architecture parameters ``alpha`` (``(T, E, K)``) and the shared weights ``w`` are
updated in turn, ``alpha`` on a validation batch and ``w`` on a training batch:

1. architecture step: ``alpha <- Adam(grad_alpha L_val)``, where the gradient is
   - first order: ``grad_alpha L_val(w, alpha)``;
   - second order: the gradient through one virtual weight step
     ``w' = w - xi * (grad_w L_train(w, alpha) + c)`` (``c``: the weight decay and
     momentum terms of the real optimiser's next step, constant in ``alpha``)::

         grad_alpha L_val(w', alpha) - xi * H v,   v = grad_w' L_val(w', alpha),
         H v = grad^2_{alpha, w} L_train(w, alpha) v
             ~ (grad_alpha L_train(w + eps v, alpha) - grad_alpha L_train(w - eps v, alpha))
               / (2 eps),   eps = 0.01 / |v|   (DARTS Eq. 7-8).

     The mixed second derivative belongs to the training loss at ``w``, the point the
     virtual step starts from, so the finite difference is centred on ``w``, not on the
     stepped weights ``w'``: centring it on ``w'`` changes the result by a term of order
     ``xi`` and no longer approximates Eq. 7. ``hessian="exact"`` differentiates through
     the virtual step with autodiff instead (the quantity the finite difference
     approximates; a test checks that the two agree).
2. weight step: SGD on ``L_train(w, alpha)`` (see :mod:`nasjax.search.strategies.oneshot`).

The cell is derived from ``alpha``: in the NB201 space the op of largest weight on each
edge (``none`` included, as NB201's search code does); in the DARTS space, per node the
two inputs whose strongest non-``none`` op is largest, each with that op. A known
failure of DARTS is the collapse onto parameter-free skip connections; the share of
skip connections in the derived cell (and their mean softmax weight) is logged over the
search as a diagnostic.

Defaults follow DARTS / NB201: weights SGD 0.025 -> 0.001 cosine, momentum 0.9, weight
decay 3e-4, gradient clipping 5; architecture Adam 3e-4 with betas (0.5, 0.999) and
weight decay 1e-3; ``alpha`` starts at ``1e-3 * N(0, 1)``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from nasjax.models import supernet as sn_lib
from nasjax.search.strategies import oneshot
from nasjax.search.base import register_strategy
from nasjax.search.spaces import SearchSpace

ORDERS = ("first", "second")
HESSIANS = ("finite_difference", "exact")


# ------------------------------------------------------------------------- hypergradient
def first_order(loss: Callable, w, alpha, val_batch):
  """``grad_alpha L_val(w, alpha)``; ``loss(w, alpha, batch) -> scalar``."""
  return jax.grad(loss, argnums=1)(w, alpha, val_batch)


def virtual_step(loss: Callable, w, alpha, train_batch, xi, c):
  """``w' = w - xi * (grad_w L_train(w, alpha) + c)`` for raveled weights ``w (P,)``."""
  return w - xi * (jax.grad(loss)(w, alpha, train_batch) + c)


def second_order(loss: Callable, w, alpha, train_batch, val_batch, xi, c, *,
                 hessian: str = "finite_difference", r: float = 0.01):
  """DARTS's second-order architecture gradient (see the module docstring).

  Args:
    loss: ``loss(w, alpha, batch) -> scalar`` with ``w`` a ``(P,)`` vector.
    w: ``(P,)`` current weights.
    alpha: architecture parameters (any shape).
    train_batch, val_batch: passed to ``loss``.
    xi: step size of the virtual step (DARTS: the weights' learning rate).
    c: ``(P,)`` the constant part of the virtual step (weight decay, momentum).
    hessian: ``"finite_difference"`` (DARTS) or ``"exact"`` (autodiff through ``w'``).
    r: the finite difference uses ``eps = r / |v|``.

  Returns:
    The gradient, shaped like ``alpha``.
  """
  if hessian == "exact":
    return jax.grad(lambda a: loss(virtual_step(loss, w, a, train_batch, xi, c), a,
                                   val_batch))(alpha)
  if hessian != "finite_difference":
    raise ValueError(f"hessian must be one of {HESSIANS}, got {hessian!r}")
  w2 = virtual_step(loss, w, alpha, train_batch, xi, c)
  g_w2, g_alpha = jax.grad(loss, argnums=(0, 1))(w2, alpha, val_batch)
  eps = r / jnp.maximum(jnp.linalg.norm(g_w2), 1e-12)
  grad_a = jax.grad(loss, argnums=1)
  # Centred on w, where the mixed derivative of the virtual step is taken.
  hv = (grad_a(w + eps * g_w2, alpha, train_batch) -
        grad_a(w - eps * g_w2, alpha, train_batch)) / (2 * eps)
  return g_alpha - xi * hv


# ------------------------------------------------------------------------------ steps
def _flat_loss(sn: sn_lib.Supernet, unravel):
  def loss(w, alpha, batch):
    x, y = batch
    weights = jax.nn.softmax(alpha, axis=-1)
    value, _ = oneshot.supernet_loss(unravel(w), sn, x, y, weights, by_path=False,
                                     impl="onehot")
    return value
  return loss


def arch_optimizer(learning_rate: float, weight_decay: float, b1: float = 0.5,
                   b2: float = 0.999) -> optax.GradientTransformation:
  """Adam with L2 weight decay added to the gradient (DARTS's architecture optimiser)."""
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.adam(learning_rate, b1=b1, b2=b2))


@functools.lru_cache(maxsize=16)
def arch_step_fn(order: str, hessian: str, opt: oneshot.SGD, arch_lr: float,
                 arch_wd: float):
  """The jitted architecture step ``(sn, momentum, alpha, arch_opt, train_batch, val_batch,
  xi) -> (alpha, arch_opt, val_loss)``."""
  tx = arch_optimizer(arch_lr, arch_wd)

  def step(sn, momentum, alpha, arch_opt, xt, yt, xv, yv, xi):
    w, unravel = ravel_pytree(sn.params)
    loss = _flat_loss(sn, unravel)
    if order == "first":
      val_loss, grad = jax.value_and_grad(loss, argnums=1)(w, alpha, (xv, yv))
    else:
      _, decay = oneshot.param_layout(sn.spec)
      # The real step adds weight decay to kernels and momentum * m to the gradient.
      c = jnp.where(jnp.asarray(decay), opt.weight_decay * w, 0.0) + opt.momentum * momentum
      grad = second_order(loss, w, alpha, (xt, yt), (xv, yv), xi, c, hessian=hessian)
      val_loss = loss(w, alpha, (xv, yv))
    updates, arch_opt = tx.update(grad, arch_opt, alpha)
    return optax.apply_updates(alpha, updates), arch_opt, val_loss

  return jax.jit(step)


# ------------------------------------------------------------------------------ derive
def skip_share(spec: sn_lib.SupernetSpec, alphas) -> tuple[float, float]:
  """``(share of skip connections in the derived normal cell, mean softmax weight of
  skip_connect over the normal cell's edges)``."""
  a = np.asarray(alphas, np.float64).reshape(spec.weights_shape)
  skip = spec.ops.index("skip_connect")
  w = np.exp(a[0] - a[0].max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  code = spec.derive(a)
  if isinstance(spec, sn_lib.NB201Supernet):
    share = float(np.mean(code == skip))
  else:
    ops = code.reshape(2, -1, 2)[0, :, 1] + 1  # the space's op index skips 'none'
    share = float(np.mean(ops == skip))
  return share, float(w[:, skip].mean())


def rank_by_alpha(spec: sn_lib.SupernetSpec, alphas, capacity: int) -> oneshot.Proposals:
  """The derived cell first; in the NB201 space then every other cell by the sum of its
  edges' log-softmax weights."""
  derived = spec.derive(alphas)
  if not isinstance(spec, sn_lib.NB201Supernet):
    return oneshot.Proposals.from_scores(derived[None], np.zeros(1), capacity)
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(alphas).reshape(6, -1), axis=-1))
  grid = np.stack(np.meshgrid(*[np.arange(len(spec.ops))] * 6, indexing="ij"), -1)
  codes = grid.reshape(-1, 6)
  scores = logp[np.arange(6), codes].sum(-1)
  order = np.argsort(-scores, kind="stable")[:capacity]
  codes, scores = codes[order], scores[order]
  codes = np.concatenate([derived[None], codes])
  scores = np.concatenate([[np.inf], scores])
  return oneshot.Proposals.from_scores(codes, scores, capacity)


# ------------------------------------------------------------------------------ strategy
@flax.struct.dataclass
class DartsLog:
  """Per-log-point records (rows past ``count`` unused): weight ``step``,
  ``skip_share``, ``skip_weight``, mean ``train_loss`` / ``train_accuracy`` and
  ``val_loss`` since the previous point."""

  step: jax.Array
  skip_share: jax.Array
  skip_weight: jax.Array
  train_loss: jax.Array
  train_accuracy: jax.Array
  val_loss: jax.Array
  count: jax.Array

  @classmethod
  def empty(cls, n: int) -> "DartsLog":
    nan = jnp.full((n,), jnp.nan, jnp.float32)
    return cls(jnp.zeros((n,), jnp.int32), nan, nan, nan, nan, nan, jnp.zeros((), jnp.int32))

  def add(self, **values) -> "DartsLog":
    i = int(self.count)
    return self.replace(**{k: getattr(self, k).at[i].set(v) for k, v in values.items()},
                        count=self.count + 1)

  def rows(self) -> list[dict]:
    n = int(self.count)
    fields = ("step", "skip_share", "skip_weight", "train_loss", "train_accuracy", "val_loss")
    return [{f: float(np.asarray(getattr(self, f))[i]) for f in fields} for i in range(n)]


@flax.struct.dataclass
class DartsState:
  """Attributes:
    supernet: shared weights and batch-norm statistics.
    momentum: ``(P,)`` SGD momentum of the weights.
    alphas: ``(T, E, K)`` architecture parameters.
    arch_opt: Adam's state for ``alphas``.
    data_key: ``(2,)`` uint32, the key of the batch order.
    step: ``()`` int32 weight steps done.
    phase: ``()`` int32 search phases done.
    log: the :class:`DartsLog`.
    proposals: the ranking proposed from (see :class:`~nasjax.search.strategies.oneshot.Proposals`).
    count: ``()`` int32 candidates told.
  """

  supernet: sn_lib.Supernet
  momentum: jax.Array
  alphas: jax.Array
  arch_opt: Any
  data_key: jax.Array
  step: jax.Array
  phase: jax.Array
  log: DartsLog
  proposals: oneshot.Proposals
  count: jax.Array


DEFAULT_CONFIG = {**oneshot.COMMON_CONFIG, "order": "first", "hessian": "finite_difference",
                  "arch_learning_rate": 3e-4, "arch_weight_decay": 1e-3, "log_every": 50,
                  "proposals": 64}


@dataclasses.dataclass(eq=False)
class Darts:
  """DARTS as a strategy (see :mod:`nasjax.search.strategies.oneshot` for how ask/tell work).

  Attributes:
    space: an ``nb201`` or ``darts`` search space.
    options: :data:`DEFAULT_CONFIG` keys (missing ones take the defaults).
    data: the data set; loaded from ``options`` when None.
  """

  space: SearchSpace
  options: dict
  data: Any = None
  name = "darts"

  def __post_init__(self):
    self.options = cfg = oneshot.merge_options(self.name, self.options, DEFAULT_CONFIG)
    if cfg["order"] not in ORDERS:
      raise ValueError(f"order must be one of {ORDERS}, got {cfg['order']!r}")
    if cfg["hessian"] not in HESSIANS:
      raise ValueError(f"hessian must be one of {HESSIANS}, got {cfg['hessian']!r}")
    if not isinstance(cfg["log_every"], int) or cfg["log_every"] < 1:
      raise ValueError(f"log_every must be a positive int, got {cfg['log_every']!r}")
    if self.data is None:
      self.data = oneshot.load_data(cfg)
    self.spec = sn_lib.supernet_for_space(self.space, self.data.input_shape,
                                          self.data.num_classes, affine=cfg["affine"],
                                          remat=cfg["remat"])
    self.opt = oneshot.sgd_from_config(cfg)
    self.total = oneshot.total_steps(cfg, len(self.data.y_train))

  def config(self) -> dict:
    """The options, as the run directory records them."""
    return dict(self.options)

  def init(self, key) -> DartsState:
    k_net, k_alpha, k_data = jax.random.split(key, 3)
    sn = self.spec.init(k_net)
    alphas = 1e-3 * jax.random.normal(k_alpha, self.spec.weights_shape, jnp.float32)
    tx = arch_optimizer(self.options["arch_learning_rate"], self.options["arch_weight_decay"])
    n_logs = self.total // self.options["log_every"] + self.options["phases"] + 1
    return DartsState(sn, self.opt.init(sn.params), alphas, tx.init(alphas),
                      jax.random.key_data(k_data).astype(jnp.uint32), jnp.zeros((), jnp.int32),
                      jnp.zeros((), jnp.int32), DartsLog.empty(n_logs),
                      oneshot.Proposals.empty(self.options["proposals"], self.space.length),
                      jnp.zeros((), jnp.int32))

  def train(self, state: DartsState, until: int) -> DartsState:
    """Alternate architecture and weight steps up to weight step ``until``."""
    cfg = self.options
    data = self.data
    key = jax.random.wrap_key_data(state.data_key)
    step0 = int(state.step)
    train = oneshot.BatchStream(data.x_train, data.y_train, cfg["batch_size"],
                                jax.random.fold_in(key, 0), start=step0, augment=cfg["augment"])
    val = oneshot.BatchStream(data.x_val, data.y_val, min(cfg["batch_size"], len(data.y_val)),
                              jax.random.fold_in(key, 1), start=step0)
    w_step = oneshot.weight_step_fn(self.opt, False)
    a_step = arch_step_fn(cfg["order"], cfg["hessian"], self.opt,
                          float(cfg["arch_learning_rate"]), float(cfg["arch_weight_decay"]))
    sn, mom, alphas, a_opt, log = (state.supernet, state.momentum, state.alphas,
                                   state.arch_opt, state.log)
    sn, mom = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), (sn, mom))
    losses, accs, vlosses = [], [], []
    for step in range(step0, until):
      (xt, yt), (xv, yv) = next(train), next(val)
      lr = np.float32(oneshot.cosine_lr(step, self.total, cfg["learning_rate"],
                                        cfg["min_learning_rate"]))
      alphas, a_opt, vloss = a_step(sn, mom, alphas, a_opt, xt, yt, xv, yv, lr)
      sn, mom, loss, acc = w_step(sn, mom, xt, yt, jax.nn.softmax(alphas, -1), lr)
      losses.append(loss)
      accs.append(acc)
      vlosses.append(vloss)
      if (step + 1) % cfg["log_every"] == 0 or step + 1 == until:
        share, weight = skip_share(self.spec, alphas)
        log = log.add(step=step + 1, skip_share=share, skip_weight=weight,
                      train_loss=float(np.mean(losses)), train_accuracy=float(np.mean(accs)),
                      val_loss=float(np.mean(vlosses)))
        losses, accs, vlosses = [], [], []
    return state.replace(supernet=sn, momentum=mom, alphas=alphas, arch_opt=a_opt,
                         step=jnp.asarray(until, jnp.int32), log=log)

  def ask(self, key, state: DartsState):
    """Run the next phase (if any), then propose the derived (or next-ranked) cell.

    Returns:
      ``(codes (1, L) int32, state)``.
    """
    del key  # the search itself is deterministic given init's key
    phase = int(state.phase)
    if phase < self.options["phases"]:
      state = self.train(state, oneshot.phase_end(phase, self.options["phases"], self.total))
      state = state.replace(phase=state.phase + 1,
                            proposals=rank_by_alpha(self.spec, state.alphas,
                                                    self.options["proposals"]))
      if int(state.phase) < self.options["phases"]:
        return jnp.asarray(self.spec.derive(state.alphas))[None], state
    code, proposals = state.proposals.pop()
    return jnp.asarray(code, jnp.int32)[None], state.replace(proposals=proposals)

  def tell(self, key, state: DartsState, candidates, fitness) -> DartsState:
    del key, fitness
    return oneshot.count_told(state, candidates)

  def derived(self, state: DartsState) -> np.ndarray:
    """The cell ``alpha`` currently derives (a code of the space)."""
    return self.spec.derive(state.alphas)


def _make(space: SearchSpace, config: dict) -> Darts:
  return Darts(space, dict(config))


register_strategy(
    "darts", _make, spaces=("nb201", "darts"), multi_objective=False, jittable=False,
    default_config=DEFAULT_CONFIG,
    smoke={"space": "nb201", "space_config": {"C": 2, "N": 1},
           "config": {"epochs": 1.0, "max_steps": 3, "data_limit": 256, "batch_size": 16,
                      "log_every": 1, "phases": 1},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="DARTS: softmax-relaxed supernet, alternating weight and architecture "
                "steps (first or second order), cell derived by argmax")
