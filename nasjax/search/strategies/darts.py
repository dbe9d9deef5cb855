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
skip connections in the derived cell (and their mean softmax weight) is logged after
every training chunk as a diagnostic.

Both steps make one training step (:func:`darts_step`), which the evaluator runs in
chunks of :class:`~nasjax.search.work.TrainShared` on its own batches (the validation
batch has ``val_batch_size`` images); see :mod:`nasjax.search.strategies.oneshot`.

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
from nasjax.search.base import register_strategy
from nasjax.search.options import integer, number, one_of, option
from nasjax.search.strategies import oneshot

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


# ------------------------------------------------------------------------------ options
@dataclasses.dataclass(frozen=True, kw_only=True)
class DartsConfig(oneshot.OneShotConfig):
  """DARTS's options: those of :class:`~nasjax.search.strategies.oneshot.OneShotConfig`
  and

  Attributes:
    order: ``"first"`` or ``"second"`` order architecture gradient.
    hessian: how the second order's Hessian-vector product is taken (:data:`HESSIANS`).
    arch_learning_rate, arch_weight_decay: the architecture parameters' Adam.
    val_batch_size: validation images per architecture step (None: ``batch_size``).
  """

  strategy = "darts"
  order: str = option("first", one_of(*ORDERS))
  hessian: str = option("finite_difference", one_of(*HESSIANS))
  arch_learning_rate: float = option(3e-4, number(0, open_min=True))
  arch_weight_decay: float = option(1e-3, number(0))
  val_batch_size: int | None = option(None, integer(1, none=True))


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


@flax.struct.dataclass
class DartsWeights:
  """What DARTS trains: the supernet, its optimiser's state, the architecture parameters
  ``alphas (T, E, K)`` and their Adam's state."""

  supernet: sn_lib.Supernet
  opt_state: Any
  alphas: jax.Array
  arch_opt: Any


def arch_gradient(config: DartsConfig, weights: DartsWeights, train_batch, val_batch, xi):
  """``(validation loss, gradient of alphas)`` of the architecture step, first or second
  order (the virtual step's constant part: the real step's weight decay on kernels and
  momentum)."""
  sn, alphas = weights.supernet, weights.alphas
  w, unravel = ravel_pytree(sn.params)
  loss = _flat_loss(sn, unravel)
  if config.order == "first":
    return jax.value_and_grad(loss, argnums=1)(w, alphas, val_batch)
  decay = ravel_pytree(jax.tree_util.tree_map(
      lambda on, a: jnp.full(a.shape, on, jnp.float32), oneshot.kernel_mask(sn.params),
      sn.params))[0]
  m = ravel_pytree(oneshot.momentum(weights.opt_state))[0]
  c = config.weight_decay * decay * w + config.momentum * m
  grad = second_order(loss, w, alphas, train_batch, val_batch, xi, c, hessian=config.hessian)
  return loss(w, alphas, val_batch), grad


@functools.cache
def darts_step(config: DartsConfig):
  """DARTS's training step ``(weights, ((x, y), (x_val, y_val)), key, step) -> (weights,
  metrics)``: the architecture step on the validation batch, then the weight step on the
  training batch under ``softmax(alphas)`` (one function per options)."""
  tx = oneshot.optimizer(config)
  lr = oneshot.schedule(config)
  arch_tx = arch_optimizer(config.arch_learning_rate, config.arch_weight_decay)

  def step(weights: DartsWeights, batch, key, step):
    del key  # nothing is sampled
    train, val = batch
    val_loss, grad = arch_gradient(config, weights, train, val, lr(step))
    updates, arch_opt = arch_tx.update(grad, weights.arch_opt, weights.alphas)
    alphas = optax.apply_updates(weights.alphas, updates)
    sn, opt_state, loss, acc = oneshot.train_step(
        tx, weights.supernet, weights.opt_state, *train, jax.nn.softmax(alphas, -1),
        by_path=False)
    return (DartsWeights(sn, opt_state, alphas, arch_opt),
            {"loss": loss, "accuracy": acc, "val_loss": val_loss})

  return step


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
@dataclasses.dataclass(frozen=True, eq=False)
class Darts(oneshot.OneShot):
  """DARTS as a strategy (see :mod:`nasjax.search.strategies.oneshot` for how ask and tell
  work). Each training chunk logs its mean losses and the skip-connection diagnostic
  of the architecture parameters it ends with; a phase's search derives the cell from
  the parameters (no scoring request).

  Attributes:
    space: an ``nb201`` or ``darts`` search space.
    config: a :class:`DartsConfig`.
    problem: the task (input shape and classes).
  """

  config: DartsConfig
  name = "darts"
  log_names = ("loss", "accuracy", "val_loss", "skip_share", "skip_weight", "seconds")
  phase_names = ("skip_share", "skip_weight")

  def init_weights(self, sn: sn_lib.Supernet, key) -> DartsWeights:
    cfg = self.config
    alphas = 1e-3 * jax.random.normal(key, self.spec.weights_shape, jnp.float32)
    return DartsWeights(sn, oneshot.optimizer(cfg).init(sn.params), alphas,
                        arch_optimizer(cfg.arch_learning_rate, cfg.arch_weight_decay
                                       ).init(alphas))

  def step_function(self):
    return darts_step(self.config)

  def val_batch_size(self) -> int:
    return self.config.val_batch_size or self.config.batch_size

  def chunk_values(self, weights: DartsWeights) -> dict:
    share, weight = skip_share(self.spec, weights.alphas)
    return {"skip_share": share, "skip_weight": weight}

  def search_ask(self, key, state):
    """The cell the architecture parameters derive (proposed now), then the ranking."""
    del key
    alphas = state.weights.alphas
    share, weight = skip_share(self.spec, alphas)
    state = state.replace(phase=state.phase + 1,
                          proposals=rank_by_alpha(self.spec, alphas, self.config.proposals),
                          phase_log=state.phase_log.add(int(state.step), skip_share=share,
                                                        skip_weight=weight))
    return oneshot.propose(state, self.config.phases)

  def derived(self, state) -> np.ndarray:
    """The cell the architecture parameters currently derive (a code of the space)."""
    return self.spec.derive(state.weights.alphas)


register_strategy(
    "darts", Darts, options=DartsConfig, spaces=("nb201", "darts"), multi_objective=False,
    jittable=False, needs_problem=True,
    smoke={"space": "nb201", "space_config": {"C": 2, "N": 1},
           "config": {"steps": 3, "chunk_steps": 2, "batch_size": 16},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="DARTS: softmax-relaxed supernet, alternating weight and architecture "
                "steps (first or second order), cell derived by argmax")
