"""What the one-shot strategies (SPOS, DARTS, ENAS) share: supernet weight training and
their place in the strategy protocol.

Weight training. The shared weights are trained with SGD (momentum, L2 weight decay on
conv and dense kernels, gradient clipping by global norm, cosine learning rate from
``learning_rate`` to ``min_learning_rate``), the recipe of NB201's and DARTS's supernet
searches. A step takes the architecture as data, either a path (SPOS and ENAS: one
sampled architecture per step) or mixing weights (DARTS), so one compiled step serves
the whole search. An op that a path leaves out has zero gradient; its weights *and its
momentum* are left exactly as they are (an SGD step would otherwise decay and move
them), so a sampled step trains the sampled sub-network only.

Place in the protocol. A one-shot method spends its compute on the supernet, not on
candidates, so its search runs inside ``ask``: ask number ``t`` (``t < phases``) trains
the next ``epochs / phases`` epochs of the method (shared weights, and architecture
parameters or controller), then derives the method's current best architecture and
proposes it. The runner's evaluator (training from scratch, or a table lookup for
NB201) measures it, so a run records how the derived architecture improves along the
search, as NB201 reports one-shot methods. After the last phase, further asks propose
the next-best architectures of the method's final ranking, best first, without
repeats. ``tell`` only counts: the true accuracy never feeds back into a one-shot search.
The data the supernet trains on is named in the strategy's config (``dataset``,
``data_limit``, ...), loaded once by the strategy object.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from nasjax.models import supernet as sn_lib

KERNEL_PARAMS = ("kernel", "depthwise", "pointwise")

# Config keys every one-shot strategy takes, with their defaults.
COMMON_CONFIG = {
    "dataset": "fashion_mnist_small",
    "data_limit": None,
    "data_seed": 0,
    "data_dir": None,
    "val_fraction": 0.1,
    "epochs": 10.0,
    "phases": 1,
    "batch_size": 64,
    "learning_rate": 0.025,
    "min_learning_rate": 0.001,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,
    "affine": False,
    "remat": False,
    "max_steps": None,
    "augment": False,
}


@dataclasses.dataclass(frozen=True)
class SGD:
  """The shared-weight optimiser (see the module docstring).

  It works on the parameters raveled into one vector (``jax.flatten_util``): a handful of
  vector ops instead of a few per array, which keeps the compiled step small.
  """

  momentum: float = 0.9
  weight_decay: float = 3e-4
  grad_clip: float | None = 5.0
  nesterov: bool = False

  def __post_init__(self):
    if not 0 <= self.momentum < 1:
      raise ValueError(f"momentum must lie in [0, 1), got {self.momentum!r}")
    if not self.weight_decay >= 0:
      raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
    if self.grad_clip is not None and not self.grad_clip > 0:
      raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip!r}")

  def init(self, params) -> jax.Array:
    """The momentum buffer: zeros, one per scalar parameter, ``(P,)``."""
    return jnp.zeros(ravel_pytree(params)[0].shape, jnp.float32)

  def direction(self, w: jax.Array, momentum: jax.Array, g: jax.Array, decay: jax.Array):
    """``(d, new_momentum)`` for raveled weights ``w``, momentum and gradient ``g`` (all
    ``(P,)``); the step is ``w - lr * d``.

    ``g`` is clipped by global norm, ``weight_decay * w`` is added where ``decay`` (the
    kernels), then ``m <- momentum * m + g`` and ``d = m`` (``g + momentum * m`` with
    Nesterov).
    """
    if self.grad_clip is not None:
      norm = jnp.sqrt(jnp.sum(jnp.square(g)))
      g = g * jnp.minimum(1.0, self.grad_clip / jnp.maximum(norm, 1e-12))
    g = g + jnp.where(decay, self.weight_decay * w, 0.0)
    new_m = self.momentum * momentum + g
    d = g + self.momentum * new_m if self.nesterov else new_m
    return d, new_m


def cosine_lr(step: int, total: int, lr: float, min_lr: float) -> float:
  """Cosine schedule from ``lr`` (step 0) to ``min_lr`` (step ``total``)."""
  if total <= 0:
    return float(lr)
  return float(min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(step, total) / total)))


def cross_entropy(logits, labels) -> jax.Array:
  """``(B,)`` softmax cross-entropy of ``(B, K)`` logits and ``(B,)`` int labels."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


@functools.lru_cache(maxsize=32)
def param_layout(spec: sn_lib.SupernetSpec) -> tuple[np.ndarray, np.ndarray]:
  """Static facts about the raveled parameter vector of a supernet of ``spec``.

  Returns:
    ``(op_index (P,) int32, decay (P,) bool)``: for each scalar, the flat index into
    ``concat(weights.ravel(), [1])`` of the op it belongs to (shared weights point at
    the trailing 1, so they are always in use), and whether weight decay applies.
  """
  shapes = _param_shapes(spec)
  T, E, K = spec.weights_shape
  owner = {}
  for c in spec.plan.cells():
    for e in c.edges:
      for k, eop in enumerate(e.ops):
        for n in eop.nodes:
          owner[n.name] = (c.kind * E + e.index) * K + k
  always = T * E * K
  index, decay = [], []
  leaves, _ = jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))
  for path, shape in leaves:
    node, name = path[0].key, path[1].key
    size = int(np.prod(shape))
    index.append(np.full(size, owner.get(node, always), np.int32))
    decay.append(np.full(size, name in KERNEL_PARAMS, bool))
  return np.concatenate(index), np.concatenate(decay)


def _param_shapes(spec: sn_lib.SupernetSpec) -> dict:
  """``{node: {name: shape}}`` of a supernet of ``spec`` (without initialising it)."""
  out = {}
  cell_bn = {n.name for c in spec.plan.cells() for n in c.nodes if n.op == "batchnorm"}
  from nasjax import layers

  for node in sn_lib._all_nodes(spec.plan):
    if node.name in cell_bn and not spec.affine:
      continue
    p = layers.OPS[node.op].params(node.attr_dict, spec.plan.shapes[node.name])
    if p:
      out[node.name] = {k: tuple(v) for k, v in p.items()}
  return out


def supernet_loss(params, sn: sn_lib.Supernet, x, y, arch, *, by_path: bool, impl: str,
                  dtype: str = "float32"):
  """Mean training-mode cross-entropy of the supernet under ``arch`` (a path or weights).

  Returns:
    ``(loss, (new_state, accuracy))``.
  """
  net = sn.replace(params=params)
  if by_path:
    logits, st = sn_lib.forward(net, x, path=arch, impl=impl, train=True, dtype=dtype)
  else:
    logits, st = sn_lib.forward(net, x, arch, train=True, dtype=dtype)
  loss = jnp.mean(cross_entropy(logits, y))
  acc = jnp.mean(jnp.argmax(logits, -1) == y)
  return loss, (st, acc)


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def sgd_update(opt: SGD, sn: sn_lib.Supernet, momentum, grads, weights, lr):
  """One masked SGD step: ``(new_params, new_momentum)``; ops whose weight in
  ``weights (T, E, K)`` is zero keep their parameters and momentum."""
  op_index, decay = param_layout(sn.spec)
  w, unravel = ravel_pytree(sn.params)
  g, _ = ravel_pytree(grads)
  if op_index.shape != w.shape:
    raise ValueError(f"the supernet's parameters ({w.shape[0]} scalars) do not match its "
                     f"description ({op_index.shape[0]})")
  d, new_m = opt.direction(w, momentum, g, jnp.asarray(decay))
  table = jnp.concatenate([jnp.ravel(weights), jnp.ones((1,), jnp.float32)])
  used = table[jnp.asarray(op_index)] != 0
  new_w = jnp.where(used, w - lr * d, w)
  return unravel(new_w), jnp.where(used, new_m, momentum)


@functools.lru_cache(maxsize=32)
def weight_step_fn(opt: SGD, by_path: bool, impl: str = "switch", dtype: str = "float32"):
  """The jitted shared-weight step ``(sn, momentum, x, y, arch, lr) -> (sn, momentum, loss,
  accuracy)``.

  ``arch`` is a path (``by_path``) or ``(T, E, K)`` weights. Ops with zero weight keep
  their weights, momentum and batch-norm statistics. A step whose loss or weights are
  not finite is discarded. The supernet and momentum buffer are donated.
  """

  def step(sn, momentum, x, y, arch, lr):
    (loss, (st, acc)), grads = jax.value_and_grad(supernet_loss, has_aux=True)(
        sn.params, sn, x, y, arch, by_path=by_path, impl=impl, dtype=dtype)
    weights = sn.spec.path_weights(arch) if by_path else arch
    new_p, new_m = sgd_update(opt, sn, momentum, grads, weights, lr)
    ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(new_m))
    keep = functools.partial(jax.tree_util.tree_map, lambda a, b: jnp.where(ok, a, b))
    return (sn.replace(params=keep(new_p, sn.params), state=keep(st, sn.state)),
            keep(new_m, momentum), loss, acc)

  return jax.jit(step, donate_argnums=(0, 1))


def step_memory(sn: sn_lib.Supernet, opt: SGD, batch_size: int, *, by_path: bool,
                impl: str = "switch") -> dict[str, int]:
  """Bytes XLA plans for one compiled weight step (``memory_analysis`` of the program).

  Returns:
    ``{"temp", "argument", "output", "alias", "peak"}`` in bytes; ``peak`` is
    ``temp + argument + output - alias`` (buffers live at once at most).
  """
  spec = sn.spec
  x = jax.ShapeDtypeStruct((batch_size,) + spec.input_shape, jnp.float32)
  y = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
  arch = (jax.ShapeDtypeStruct((len(spec.space.num_choices),), jnp.int32) if by_path else
          jax.ShapeDtypeStruct(spec.weights_shape, jnp.float32))
  lr = jax.ShapeDtypeStruct((), jnp.float32)
  fn = weight_step_fn(opt, by_path, impl)
  compiled = fn.lower(sn, opt.init(sn.params), x, y, arch, lr).compile()
  m = compiled.memory_analysis()
  out = {"temp": int(m.temp_size_in_bytes), "argument": int(m.argument_size_in_bytes),
         "output": int(m.output_size_in_bytes), "alias": int(m.alias_size_in_bytes)}
  out["peak"] = out["temp"] + out["argument"] + out["output"] - out["alias"]
  return out


# ------------------------------------------------------------------------------ data
def load_data(config: Mapping[str, Any]):
  """The data set named by a one-shot config (``dataset``, ``data_limit``, ...)."""
  from nasjax import data as data_lib

  return data_lib.load(config["dataset"], val_fraction=config["val_fraction"],
                       seed=config["data_seed"], data_dir=config["data_dir"],
                       limit=config["data_limit"])


class BatchStream:
  """Endless shuffled full batches of ``(x, y)``.

  Epoch ``e`` is shuffled (and augmented, with ``augment``: random crops of the 4-pixel
  zero-padded image and horizontal flips, :func:`nasjax.data.random_crop_flip`) by a
  generator seeded with ``fold_in(key, e)``; ``start`` skips that many batches, so a
  stream rebuilt at any step continues exactly where the previous one stopped.
  """

  def __init__(self, x, y, batch_size: int, key, start: int = 0, augment: bool = False):
    if batch_size > len(x):
      raise ValueError(f"batch_size {batch_size} exceeds the {len(x)} examples")
    self.x, self.y, self.batch_size, self.key, self.augment = x, y, batch_size, key, augment
    self.per_epoch = len(x) // batch_size
    self.epoch, self.index = divmod(int(start), self.per_epoch)
    self._epoch_loaded = None

  def __iter__(self):
    return self

  def _load(self):
    from nasjax.network import key_seed

    self._rng = np.random.default_rng(key_seed(jax.random.fold_in(self.key, self.epoch)))
    self._order = self._rng.permutation(len(self.x))
    # Augmentation draws follow the permutation, batch by batch, so skipping ahead must
    # draw (and discard) the skipped batches' crops too.
    if self.augment:
      for i in range(self.index):
        self._crop(i)
    self._epoch_loaded = self.epoch

  def _crop(self, i):
    from nasjax.data import random_crop_flip

    idx = self._order[i * self.batch_size:(i + 1) * self.batch_size]
    return random_crop_flip(self.x[idx], self._rng)

  def __next__(self):
    if self.index >= self.per_epoch:
      self.epoch, self.index = self.epoch + 1, 0
    if self._epoch_loaded != self.epoch:
      self._load()
    idx = self._order[self.index * self.batch_size:(self.index + 1) * self.batch_size]
    x = self._crop(self.index) if self.augment else self.x[idx]
    self.index += 1
    return x, self.y[idx]


# ------------------------------------------------------------------------------ protocol
@flax.struct.dataclass
class Proposals:
  """The ranking a one-shot strategy proposes from, and what it proposed.

  Attributes:
    ranked: ``(R, L)`` int32 codes, best first (rows past ``size`` unused).
    scores: ``(R,)`` float32 shared-weight scores of ``ranked`` (higher is better).
    size: ``()`` int32 valid rows.
    next: ``()`` int32 the next row to propose once the search is over.
  """

  ranked: jax.Array
  scores: jax.Array
  size: jax.Array
  next: jax.Array

  @classmethod
  def empty(cls, capacity: int, length: int) -> "Proposals":
    return cls(jnp.zeros((capacity, length), jnp.int32), jnp.full((capacity,), -jnp.inf),
               jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  @classmethod
  def from_scores(cls, codes, scores, capacity: int) -> "Proposals":
    """Distinct ``codes`` ranked by ``scores`` (descending; first seen wins a tie)."""
    codes = np.asarray(codes, np.int32)
    scores = np.asarray(scores, np.float64)
    seen, rows, vals = set(), [], []
    for i in np.argsort(-scores, kind="stable"):
      key = codes[i].tobytes()
      if key in seen:
        continue
      seen.add(key)
      rows.append(codes[i])
      vals.append(scores[i])
      if len(rows) == capacity:
        break
    out = cls.empty(capacity, codes.shape[1])
    if rows:
      out = out.replace(ranked=out.ranked.at[:len(rows)].set(np.stack(rows)),
                        scores=out.scores.at[:len(rows)].set(np.asarray(vals, np.float32)),
                        size=jnp.asarray(len(rows), jnp.int32))
    return out

  def pop(self) -> tuple[np.ndarray, "Proposals"]:
    """The next code to propose (cycling when the ranking is exhausted)."""
    size = max(int(self.size), 1)
    i = int(self.next) % size
    return np.asarray(self.ranked[i]), self.replace(next=self.next + 1)


def propose(state, phases: int):
  """The next proposal of a one-shot strategy's ``state`` (which has ``phase`` and
  ``proposals``): ``(codes (1, L) int32, state)``. While phases remain, the pointer into
  the ranking starts where the previous phase's ranking had got to."""
  code, proposals = state.proposals.pop()
  if int(state.phase) < phases:
    proposals = proposals.replace(next=state.proposals.next)  # re-ranked next phase
  return jnp.asarray(code, jnp.int32)[None], state.replace(proposals=proposals)


def count_told(state, candidates):
  """A one-shot ``tell``: the measured accuracy does not steer the search, so ``state``
  only counts the candidates told."""
  return state.replace(count=state.count + np.shape(candidates)[0])


def merge_options(name: str, options: Mapping[str, Any], defaults: Mapping[str, Any],
                  positive_ints: tuple[str, ...] = ()) -> dict:
  """A one-shot strategy's options: ``defaults`` updated with ``options`` and checked.

  Raises:
    ValueError: naming an unknown option, a bad common option (:func:`check_common`) or
      one of ``positive_ints`` that is not a positive int.
  """
  unknown = set(options) - set(defaults) - {"num_objectives"}
  if unknown:
    raise ValueError(f"unknown option(s) {sorted(unknown)} for {name!r}; it takes "
                     f"{sorted(defaults)}")
  cfg = {**defaults, **{k: v for k, v in options.items() if k != "num_objectives"}}
  check_common(cfg)
  for what in positive_ints:
    if not isinstance(cfg[what], int) or cfg[what] < 1:
      raise ValueError(f"{what} must be a positive int, got {cfg[what]!r}")
  return cfg


def check_common(config: Mapping[str, Any]) -> None:
  """``ValueError`` naming the first bad common option."""
  if not config["epochs"] > 0:
    raise ValueError(f"epochs must be positive, got {config['epochs']!r}")
  if not isinstance(config["phases"], int) or config["phases"] < 1:
    raise ValueError(f"phases must be a positive int, got {config['phases']!r}")
  if not isinstance(config["batch_size"], int) or config["batch_size"] < 1:
    raise ValueError(f"batch_size must be a positive int, got {config['batch_size']!r}")
  if not config["learning_rate"] > 0 or not config["min_learning_rate"] >= 0:
    raise ValueError("learning_rate must be positive and min_learning_rate >= 0, got "
                     f"{config['learning_rate']!r} and {config['min_learning_rate']!r}")
  if config["max_steps"] is not None and (not isinstance(config["max_steps"], int) or
                                          config["max_steps"] < 1):
    raise ValueError(f"max_steps must be a positive int or None, got {config['max_steps']!r}")


def sgd_from_config(config: Mapping[str, Any]) -> SGD:
  return SGD(momentum=float(config["momentum"]), weight_decay=float(config["weight_decay"]),
             grad_clip=None if config["grad_clip"] is None else float(config["grad_clip"]))


def total_steps(config: Mapping[str, Any], num_train: int) -> int:
  """Weight steps of the whole search: ``epochs`` over ``num_train`` examples."""
  per_epoch = max(num_train // config["batch_size"], 1)
  total = max(int(math.ceil(config["epochs"] * per_epoch)), 1)
  if config["max_steps"] is not None:
    total = min(total, config["max_steps"])
  return total


def phase_end(phase: int, phases: int, total: int) -> int:
  """The weight step at which phase ``phase`` (0-based) ends."""
  return int(round(total * (phase + 1) / phases))


__all__ = ["SGD", "COMMON_CONFIG", "weight_step_fn", "supernet_loss", "sgd_update",
           "param_layout", "step_memory", "cosine_lr", "cross_entropy", "BatchStream",
           "Proposals", "load_data", "check_common", "sgd_from_config", "total_steps",
           "phase_end"]
