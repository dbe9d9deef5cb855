"""Training and evaluation of a :class:`~nasjax.network.Network` on a :class:`Dataset`.

:func:`fit` runs mini-batch training with jit-compiled steps:

- Optimisers: SGD with momentum (optionally Nesterov) or Adam, with a cosine (to zero
  at the last step) or constant learning rate. The rate is computed on the host and
  passed to the step as an argument, so one compiled step serves every schedule.
- Weight decay applies to convolution and dense kernels only (never to biases or batch
  norm scales). For SGD it is an L2 penalty: ``weight_decay * w`` is added to the
  gradient before momentum (the classic CIFAR recipe). For Adam it is decoupled
  (AdamW): ``learning_rate * weight_decay * w`` is subtracted after Adam's scaling.
- Data parallel over several devices with ``jax.shard_map``: each device gets a slice
  of the batch, batch-norm statistics and the loss are averaged over the device axis
  and the averaged loss is differentiated, so training on N devices computes the same
  update as on one device with the whole batch. On one device the step is a plain
  ``jax.jit``.
- A step whose loss or new parameters are not finite is discarded inside the compiled
  step and training stops with ``status="diverged"``; the network returned is the last
  finite one.
- Buffers of the network and optimiser state are donated to each step; the network
  passed in is copied first and stays valid.
- The train and eval steps are compiled ahead of time, and the time spent is reported
  separately (:attr:`History.compile_seconds`). Compiled steps are cached per
  architecture and optimiser settings, so retraining an architecture does not
  recompile.
- Deterministic: the same network, data, config and key give bitwise the same result
  on one device.
- The step trains on target probabilities at a temperature: one-hot labels at 1 in
  :func:`fit`, a teacher's softened outputs in :func:`distill` (knowledge
  distillation), so that distilling a network and then training it with the same
  settings runs one compiled program.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from nasjax import data as data_lib
from nasjax import runtime
from nasjax.network import Network, forward, key_seed

# Parameter names that weight decay applies to.
KERNEL_PARAMS = ("kernel", "depthwise", "pointwise")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
DTYPES = ("float32", "bfloat16", "float16")
_AXIS = "batch"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Hyperparameters of :func:`fit`.

  Attributes:
    epochs: passes over the training split; fractions run part of the last epoch.
    batch_size: global batch size (split across devices; must divide by their number).
    optimizer: ``"sgd"`` (momentum) or ``"adam"``.
    learning_rate: peak learning rate.
    momentum: SGD momentum (Adam uses its default betas).
    weight_decay: see the module docstring (L2 for SGD, decoupled for Adam).
    schedule: ``"cosine"`` (from ``learning_rate`` to 0 over all steps) or
      ``"constant"``.
    augment: random crop (4-pixel padding) and horizontal flip of training images.
    dtype: compute dtype of convolutions and dense layers; parameters stay float32.
    max_steps: stop after this many steps, whatever ``epochs`` says.
    eval_batch_size: batch size of the per-epoch validation pass.
    nesterov: Nesterov momentum for SGD.
  """

  epochs: float = 1.0
  batch_size: int = 128
  optimizer: str = "sgd"
  learning_rate: float = 0.05
  momentum: float = 0.9
  weight_decay: float = 5e-4
  schedule: str = "cosine"
  augment: bool = False
  dtype: str = "float32"
  max_steps: int | None = None
  eval_batch_size: int = 512
  nesterov: bool = False

  def __post_init__(self):
    if self.optimizer not in OPTIMIZERS:
      raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
    if self.schedule not in SCHEDULES:
      raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
    if not self.epochs >= 0:
      raise ValueError(f"epochs must be >= 0, got {self.epochs}")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {self.batch_size}")
    if self.eval_batch_size < 1:
      raise ValueError(f"eval_batch_size must be positive, got {self.eval_batch_size}")
    if self.max_steps is not None and self.max_steps < 0:
      raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
    if not self.learning_rate >= 0:
      raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}")
    if not 0 <= self.momentum < 1:
      raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
    if not self.weight_decay >= 0:
      raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


@dataclasses.dataclass
class History:
  """What happened during :func:`fit`.

  Attributes:
    status: ``"ok"``, or ``"diverged"`` if a step produced a non-finite loss or
      parameters (training stopped there).
    steps: optimisation steps applied (a discarded non-finite step is not counted).
    train_loss: mean training loss of each (possibly partial) epoch.
    val_accuracy: validation accuracy after each epoch (NaN without a validation split).
    seconds: wall time of the whole call, compilation included.
    compile_seconds: time spent compiling the train and eval steps (0 when cached).
  """

  status: str = "ok"
  steps: int = 0
  train_loss: list[float] = dataclasses.field(default_factory=list)
  val_accuracy: list[float] = dataclasses.field(default_factory=list)
  seconds: float = 0.0
  compile_seconds: float = 0.0


# ------------------------------------------------------------------------ optimiser
def kernel_mask(params) -> dict:
  """``{node: {name: bool}}``: True for the arrays that weight decay applies to."""
  return {node: {name: name in KERNEL_PARAMS for name in arrays}
          for node, arrays in params.items()}


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """The update direction of ``config`` without the learning rate (the step applies
  ``params - lr * direction``)."""
  if config.optimizer == "sgd":
    parts = [optax.trace(decay=config.momentum, nesterov=config.nesterov)]
    if config.weight_decay:
      parts.insert(0, optax.add_decayed_weights(config.weight_decay, kernel_mask))
  else:
    parts = [optax.scale_by_adam()]
    if config.weight_decay:
      parts.append(optax.add_decayed_weights(config.weight_decay, kernel_mask))
  return optax.chain(*parts)


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
  """The learning rate of step ``step`` (0-based) of ``total_steps``."""
  if config.schedule == "constant" or total_steps <= 0:
    return float(config.learning_rate)
  return float(config.learning_rate) * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


# ------------------------------------------------------------------------ steps
def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``(N,)`` softmax cross-entropy of ``(N, K)`` float32 logits and ``(N,)`` labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def soft_cross_entropy(logits: jax.Array, targets: jax.Array,
                       temperature: jax.Array | float = 1.0) -> jax.Array:
  """``(N,)`` cross-entropy of ``softmax(logits / T)`` against ``(N, K)`` target
  probabilities, times ``T^2`` (so that gradients keep their size across temperatures;
  Hinton et al., 2015). One-hot targets at ``T = 1`` give :func:`cross_entropy`."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature)
  return -jnp.sum(targets * logp, axis=-1) * temperature ** 2


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _step_body(net: Network, opt_state, x, y, lr, temperature, *, tx, dtype, axis_name):
  """One update on target probabilities ``y`` ``(B, K)`` at ``temperature``: one-hot
  labels at 1 (training), a teacher's softened outputs (distillation). Under shard_map
  ``x``/``y`` are this device's slice of the batch."""

  def loss_fn(params):
    logits, new_state = forward(net.replace(params=params), x, train=True,
                                axis_name=axis_name, dtype=dtype)
    loss = jnp.mean(soft_cross_entropy(logits, y, temperature))
    if axis_name is not None:
      # Differentiating the device mean gives the gradient of the global batch mean:
      # replicated parameters already sum their cotangents over devices.
      loss = jax.lax.pmean(loss, axis_name)
    return loss, new_state

  (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
  updates, new_opt = tx.update(grads, opt_state, net.params)
  new_params = jax.tree_util.tree_map(lambda p, u: p - lr * u, net.params, updates)
  ok = jnp.isfinite(loss) & _all_finite(new_params) & _all_finite(new_state)
  keep = functools.partial(jax.tree_util.tree_map, lambda new, old: jnp.where(ok, new, old))
  new_net = net.replace(params=keep(new_params, net.params), state=keep(new_state, net.state))
  return new_net, keep(new_opt, opt_state), loss, ok


@functools.lru_cache(maxsize=16)
def _train_step_fn(config: TrainConfig, mesh: jax.sharding.Mesh | None):
  """The jitted train step for ``config``'s optimiser, on one device or over ``mesh``.

  Only the fields that shape the compiled program matter, and jit's own cache keys the
  compiled code by architecture and shapes; the cache here keeps the jitted function's
  identity (and with it jit's cache) alive across :func:`fit` calls.
  """
  body = functools.partial(_step_body, tx=optimizer(config), dtype=config.dtype,
                           axis_name=None if mesh is None else _AXIS)
  if mesh is not None:
    body = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(), P(_AXIS), P(_AXIS), P(), P()),
                         out_specs=(P(), P(), P(), P()))
  return jax.jit(body, donate_argnums=(0, 1), compiler_options=runtime.compiler_options())


def _placement(devices: Sequence[Any]):
  """``(mesh or None, replicated sharding, batch sharding)`` of training on ``devices``."""
  if len(devices) == 1:
    return None, devices[0], devices[0]
  mesh = jax.sharding.Mesh(np.asarray(devices), (_AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))
  return mesh, NamedSharding(mesh, P()), NamedSharding(mesh, P(_AXIS))


def _prepare(net: Network, config: TrainConfig, replicated):
  """A private copy of ``net`` and a fresh optimiser state, placed for training.

  A copy, because the step donates (deletes) its input buffers; it goes through host
  memory, as does the optimiser state: JAX would compile a small copy or fill program
  for every new parameter shape, per architecture. (device_put's may_alias=False does
  not stop a replicated sharding from reusing the source buffer on its own device.)
  """
  net = jax.device_put(jax.tree_util.tree_map(np.array, net), replicated)
  return net, jax.device_put(_initial_opt_state(config, net.params), replicated)


def _initial_opt_state(config: TrainConfig, params):
  """``optimizer(config).init(params)`` built on the host: the states of
  :func:`optimizer`'s transforms (momentum, Adam's moments and step count) all start at
  zero."""
  specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
  leaves, treedef = jax.tree_util.tree_flatten(specs)
  shapes = _opt_state_shapes(_step_key(config), treedef, tuple(leaves))
  return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


@functools.lru_cache(maxsize=64)
def _opt_state_shapes(config: TrainConfig, treedef, leaves):
  return jax.eval_shape(optimizer(config).init,
                        jax.tree_util.tree_unflatten(treedef, list(leaves)))


def _compiled_step(config: TrainConfig, mesh, net, opt_state, input_shape, num_classes,
                   batch_sharding):
  """The train step compiled for these shapes and placement.

  The last few are kept by architecture, optimiser and placement, so that a network
  distilled (:func:`distill`) and then trained (:func:`fit`) compiles once: an
  ahead-of-time compiled step is not in jit's own cache, and lowering it again would cost
  a trace and a persistent-cache read.
  """
  # batch_sharding is the device itself without a mesh: steps are compiled per device.
  key = (_step_key(config), mesh, net.arch, config.batch_size, tuple(input_shape),
         int(num_classes), batch_sharding)
  compiled = _STEP_CACHE.get(key)
  if compiled is None:
    step_fn = _train_step_fn(key[0], mesh)
    sharding = batch_sharding if mesh else None
    x_spec = jax.ShapeDtypeStruct((config.batch_size,) + tuple(input_shape), jnp.float32,
                                  sharding=sharding)
    y_spec = jax.ShapeDtypeStruct((config.batch_size, num_classes), jnp.float32,
                                  sharding=sharding)
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    compiled = step_fn.lower(net, opt_state, x_spec, y_spec, scalar, scalar).compile()
    _STEP_CACHE[key] = compiled
    while len(_STEP_CACHE) > _STEP_CACHE_SIZE:
      _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
  else:
    _STEP_CACHE[key] = _STEP_CACHE.pop(key)  # most recently used last
  return compiled


_STEP_CACHE: dict = {}
_STEP_CACHE_SIZE = 4
runtime.on_release(_STEP_CACHE.clear)


def one_hot(labels, num_classes: int) -> np.ndarray:
  """``(N, K)`` float32 one-hot targets of int ``labels`` (on the host)."""
  return np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]


def _step_key(config: TrainConfig) -> TrainConfig:
  """``config`` with the fields that do not enter the compiled step set to defaults."""
  return TrainConfig(optimizer=config.optimizer, momentum=config.momentum,
                     weight_decay=config.weight_decay, dtype=config.dtype,
                     nesterov=config.nesterov)


@runtime.jit(static_argnames=("dtype",))
def _eval_step(net: Network, x, targets, mask, dtype):
  """Correct predictions and summed loss against ``(B, K)`` target probabilities (one-hot
  labels, or a teacher's outputs), and the logits: one program per architecture serves
  validation, agreement with a teacher and a teacher's outputs for distillation."""
  logits = forward(net, x, dtype=dtype).astype(jnp.float32)
  correct = (jnp.argmax(logits, -1) == jnp.argmax(targets, -1)) & mask
  loss = jnp.where(mask, soft_cross_entropy(logits, targets), 0.0)
  return jnp.sum(correct), jnp.sum(loss), logits


def _eval_batch_size(n: int, batch_size: int) -> int:
  # A power of two at most batch_size: few distinct shapes (so few compilations), and a
  # small split is not padded up to a large batch.
  return max(1, min(batch_size, 1 << max(n - 1, 0).bit_length()))


def evaluate(net: Network, x, y, batch_size: int = 512, *, dtype: str = "float32",
             ) -> dict[str, float]:
  """Accuracy and mean loss of ``net`` (inference mode) on every example of ``x``.

  The last partial batch is zero-padded and masked, so the batch shape stays fixed (one
  compilation) and no example is dropped.

  Args:
    net: the network.
    x: ``(N, H, W, C)`` images.
    y: ``(N,)`` int labels, or ``(N, K)`` target probabilities (e.g. a teacher's
      softmax: the accuracy is then the share of equal top-1 predictions and the loss
      the cross-entropy against them).
    batch_size: examples per jitted call (rounded down to a power of two when N is
      small).
    dtype: compute dtype.

  Returns:
    ``{"accuracy": float, "loss": float}``; NaN for both if ``N == 0``.
  """
  x = np.asarray(x, np.float32)
  num_classes = int(net.arch.output_shape[-1])
  if np.ndim(y) == 1:
    y = one_hot(np.asarray(y, np.int32), num_classes)
  y = np.asarray(y, np.float32)
  if y.ndim != 2 or y.shape[1] != num_classes:
    raise ValueError(f"y must be (N,) labels or (N, {num_classes}) probabilities, got shape "
                     f"{y.shape}")
  if len(x) != len(y):
    raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  n = len(x)
  if n == 0:
    return {"accuracy": float("nan"), "loss": float("nan")}
  bs = _eval_batch_size(n, batch_size)
  sums = []  # fetched after the loop, so the device runs ahead of the host
  for xb, yb, mask in data_lib.padded_batches(x, y, bs):
    sums.append(_eval_step(net, xb, yb, mask, dtype)[:2])
  correct = sum(int(c) for c, _ in sums)
  loss = sum(float(s) for _, s in sums)
  return {"accuracy": correct / n, "loss": loss / n}


def logits(net: Network, x, batch_size: int = 512, *, dtype: str = "float32") -> np.ndarray:
  """``(N, K)`` float32 inference-mode outputs of ``net`` on ``x``, by :func:`evaluate`'s
  program (same batch size, same compiled code: a network validated by :func:`fit`
  compiles nothing more here, when called on the same device and default device)."""
  x = np.asarray(x, np.float32)
  k = int(net.arch.output_shape[-1])
  if len(x) == 0:
    return np.zeros((0, k), np.float32)
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  bs = _eval_batch_size(len(x), batch_size)
  out = [_eval_step(net, xb, yb, mask, dtype)[2] for xb, yb, mask in
         data_lib.padded_batches(x, np.zeros((len(x), k), np.float32), bs)]
  return np.concatenate([np.asarray(o) for o in out])[:len(x)]


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
  """Row-wise ``softmax(logits / T)`` on the host, float32."""
  z = np.asarray(logits, np.float64) / temperature
  z = np.exp(z - z.max(-1, keepdims=True))
  return (z / z.sum(-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------ fit
def _check(net: Network, data: data_lib.Dataset, config: TrainConfig, n_dev: int):
  if tuple(net.arch.input_shape) != tuple(data.input_shape):
    raise ValueError(f"the network takes inputs of shape {net.arch.input_shape} but the "
                     f"data set {data.name!r} has images of shape {data.input_shape}")
  if tuple(net.arch.output_shape) != (data.num_classes,):
    raise ValueError(f"the network outputs shape {net.arch.output_shape} but the data set "
                     f"{data.name!r} has {data.num_classes} classes")
  if config.batch_size > len(data.y_train):
    raise ValueError(f"batch_size {config.batch_size} exceeds the {len(data.y_train)} "
                     f"training examples of {data.name!r}")
  if config.batch_size % n_dev:
    raise ValueError(f"batch_size {config.batch_size} does not divide among {n_dev} "
                     "devices")


def data_parallel_devices(batch_size: int, devices: Sequence[Any] | None = None) -> list:
  """The devices :func:`fit` splits a batch of ``batch_size`` over by default.

  The longest prefix of ``devices`` (default: all local devices) whose length divides
  ``batch_size``, so that any batch size trains (on fewer devices where it must).
  """
  devices = list(jax.local_devices() if devices is None else devices)
  n = len(devices)
  while n > 1 and batch_size % n:
    n -= 1
  return devices[:max(n, 1)]


def _validate(net: Network, data: data_lib.Dataset, config: TrainConfig, device) -> float:
  """Validation accuracy of ``net`` on ``device`` (NaN without a validation split)."""
  if len(data.y_val) == 0:
    return float("nan")
  with validation_placement(net, device) as local:
    return evaluate(local, data.x_val, data.y_val, config.eval_batch_size,
                    dtype=config.dtype)["accuracy"]


def _compile_programs(net: Network, opt_state, data: data_lib.Dataset, config: TrainConfig,
                      mesh, batch_sharding, eval_device, hist: History):
  """The compiled train step; the eval step is compiled too (both timed into
  ``hist.compile_seconds``), so that compile_seconds holds all compilation."""
  t = time.perf_counter()
  step = _compiled_step(config, mesh, net, opt_state, data.input_shape, data.num_classes,
                        batch_sharding)
  hist.compile_seconds += time.perf_counter() - t
  if len(data.y_val):
    bs = _eval_batch_size(len(data.y_val), config.eval_batch_size)
    t = time.perf_counter()
    # A real call (on zeros) rather than lower().compile(): it also fills jit's dispatch
    # cache, which evaluate() goes through.
    with validation_placement(net, eval_device) as local:
      jax.block_until_ready(_eval_step(local, np.zeros((bs,) + data.input_shape, np.float32),
                                       np.zeros((bs, data.num_classes), np.float32),
                                       np.zeros(bs, bool), config.dtype))
    hist.compile_seconds += time.perf_counter() - t
  return step


def _train_epoch(step, net: Network, opt_state, batches, config: TrainConfig, total: int,
                 num_classes: int, batch_sharding, hist: History):
  """The steps of one epoch (until ``total`` steps in all, or a step that is not
  finite: ``hist.status`` becomes ``"diverged"``); returns the losses of its steps."""
  losses = []
  nxt = next(batches, None)
  while nxt is not None and hist.steps < total:
    xb, yb = jax.device_put((nxt[0], one_hot(nxt[1], num_classes)), batch_sharding)
    lr = np.float32(learning_rate(config, hist.steps, total))
    # The step donates its inputs and returns them unchanged where it was not finite.
    net, opt_state, loss, ok = step(net, opt_state, xb, yb, lr, np.float32(1.0))
    # Prepare the next batch while the device works, then wait for this step: the
    # divergence check needs its result, and collectives on host devices must not
    # overlap steps.
    nxt = next(batches, None)
    if not bool(ok):
      hist.status = "diverged"
      break
    losses.append(float(loss))
    hist.steps += 1
  return net, opt_state, losses


def fit(net: Network, data: data_lib.Dataset, config: TrainConfig, key, *,
        devices: Sequence[Any] | None = None) -> tuple[Network, History]:
  """Train ``net`` on ``data.x_train`` and validate after each epoch.

  Args:
    net: the initial network (not modified; its arrays stay valid).
    data: the data set; its image shape and class count must match the network.
    config: hyperparameters.
    key: ``jax.random`` key for the batch order and augmentation
      (``fold_in(key, epoch)`` per epoch).
    devices: devices to train on, data parallel (``config.batch_size`` must divide
      among them); default :func:`data_parallel_devices`: as many local devices as
      divide the batch.

  Returns:
    ``(trained network, History)``. With several devices the network is returned on
    the first one. If training diverged, the network is the last one whose loss and
    parameters were finite.
  """
  start = time.perf_counter()
  devices = (data_parallel_devices(config.batch_size) if devices is None
             else list(devices))
  if not devices:
    raise ValueError("devices is empty")
  n_dev = len(devices)
  _check(net, data, config, n_dev)
  steps_per_epoch = len(data.y_train) // config.batch_size
  total = math.ceil(config.epochs * steps_per_epoch)
  if config.max_steps is not None:
    total = min(total, config.max_steps)
  hist = History()
  mesh, replicated, batch_sharding = _placement(devices)
  net, opt_state = _prepare(net, config, replicated)
  eval_device = devices[0]
  step = _compile_programs(net, opt_state, data, config, mesh, batch_sharding, eval_device,
                           hist) if total > 0 else None
  epoch = 0
  while hist.steps < total and hist.status == "ok":
    batches = data_lib.batches(data.x_train, data.y_train, config.batch_size,
                               jax.random.fold_in(key, epoch), augment=config.augment)
    net, opt_state, losses = _train_epoch(step, net, opt_state, batches, config, total,
                                          data.num_classes, batch_sharding, hist)
    if losses:
      hist.train_loss.append(float(np.mean(losses)))
      hist.val_accuracy.append(_validate(net, data, config, eval_device))
    epoch += 1

  if mesh is not None:
    net = jax.device_put(net, eval_device)
  jax.block_until_ready(net)
  hist.seconds = time.perf_counter() - start
  return net, hist


# ------------------------------------------------------------------------ distillation
@contextlib.contextmanager
def validation_placement(net: Network, device=None):
  """``net`` on ``device`` (default: the first local device), under
  ``jax.default_device(device)``: where :func:`fit` and a search evaluator validate a
  network. The default device is part of jit's cache key, so code that wants the
  validation program a network compiled in training (a distillation teacher's outputs, a
  student's agreement) runs it here."""
  device = jax.local_devices()[0] if device is None else device
  with jax.default_device(device):
    yield jax.device_put(net, device)


_TARGET_IMAGES = 8192  # images whose soft targets distillation computes in one go


def teacher_logits(teacher: Network, x, config: TrainConfig) -> np.ndarray:
  """``teacher``'s outputs on ``x`` by its validation program (:func:`logits` under
  :func:`validation_placement`): a teacher that was trained and
  validated in this process compiles nothing for distillation."""
  x = np.asarray(x, np.float32)
  n = len(x)
  if n < config.eval_batch_size:  # keep the validation batch size: pad, then drop
    x = np.concatenate([x, np.zeros((config.eval_batch_size - n,) + x.shape[1:], x.dtype)])
  with validation_placement(teacher) as local:
    return logits(local, x, config.eval_batch_size, dtype=config.dtype)[:n]


def distill(student: Network, teacher: Network, data: data_lib.Dataset, config: TrainConfig,
            *, steps: int, key, temperature: float = 4.0, learning_rate: float | None = None,
            devices: Sequence[Any] | None = None) -> tuple[Network, History, list[float]]:
  """Train ``student`` for ``steps`` steps to match ``teacher``'s softened outputs.

  Knowledge distillation (Hinton et al., 2015) with :func:`fit`'s own compiled train
  step: the targets are ``softmax(teacher(x) / T)`` on batches of ``data.x_train`` (no
  labels), the loss is :func:`soft_cross_entropy` at temperature ``T``, and the optimiser,
  batch size and devices are ``config``'s. A later :func:`fit` of the student with the
  same ``config`` and devices therefore compiles nothing: both run one program.

  Args:
    student: the network to train (not modified).
    teacher: the network to imitate, in inference mode; same input and output shapes.
    data: images to distil on (``x_train``; the labels are not used).
    config: optimiser, batch size and dtype (``epochs``, ``schedule`` and ``max_steps``
      do not apply).
    steps: optimisation steps, each on a fresh random batch.
    key: PRNG key of the batches.
    temperature: softmax temperature ``T``.
    learning_rate: constant step size (default ``config.learning_rate``).
    devices: as in :func:`fit`.

  Returns:
    ``(student, history, losses)``: the trained student, a :class:`History` (its
    ``status`` is ``"diverged"`` if a step was not finite; the student is then the last
    finite one) and the loss of every step taken.
  """
  start = time.perf_counter()
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"distill: steps must be a positive int, got {steps!r}")
  if not temperature > 0:
    raise ValueError(f"distill: temperature must be > 0, got {temperature!r}")
  if (student.arch.input_shape != teacher.arch.input_shape
      or student.arch.output_shape != teacher.arch.output_shape):
    raise ValueError("distill: student and teacher differ in shape: "
                     f"{student.arch.input_shape}->{student.arch.output_shape} vs "
                     f"{teacher.arch.input_shape}->{teacher.arch.output_shape}")
  devices = (data_parallel_devices(config.batch_size) if devices is None
             else list(devices))
  if not devices:
    raise ValueError("devices is empty")
  _check(student, data, config, len(devices))
  lr = np.float32(config.learning_rate if learning_rate is None else learning_rate)
  mesh, replicated, batch_sharding = _placement(devices)
  net, opt_state = _prepare(student, config, replicated)
  hist = History()
  t = time.perf_counter()
  step = _compiled_step(config, mesh, net, opt_state, data.input_shape, data.num_classes,
                        batch_sharding)
  hist.compile_seconds = time.perf_counter() - t
  x_train = np.asarray(data.x_train, np.float32)
  idx = np.random.default_rng(key_seed(key)).integers(0, len(x_train),
                                                      (steps, config.batch_size))
  temp = np.float32(temperature)
  chunk = max(1, _TARGET_IMAGES // config.batch_size)  # steps whose targets come at once
  losses = []
  for s in range(steps):
    if s % chunk == 0:
      # The teacher's soft targets for the next steps' batches, by its validation program.
      images = x_train[idx[s:s + chunk].reshape(-1)]
      targets = softmax(teacher_logits(teacher, images, config), temperature)
    j = (s % chunk) * config.batch_size
    xb, probs = jax.device_put((images[j:j + config.batch_size],
                                targets[j:j + config.batch_size]), batch_sharding)
    net, opt_state, loss, ok = step(net, opt_state, xb, probs, lr, temp)
    if not bool(ok):  # also keeps collectives on host devices from overlapping steps
      hist.status = "diverged"
      break
    losses.append(float(loss))
    hist.steps += 1
  hist.train_loss = [float(np.mean(losses))] if losses else []
  if mesh is not None:
    net = jax.device_put(net, devices[0])
  jax.block_until_ready(net)
  hist.seconds = time.perf_counter() - start
  return net, hist, losses
