"""Knowledge distillation: recover a parent's function in a child after an approximate morphism.

LEMONADE (Elsken et al., ICLR 2019, §3.2) initialises the child of an approximate
network morphism from its parent and then trains it to mimic the parent (Hinton et al.,
2015): the loss is the KL divergence between the parent's and the child's softmax at a
temperature ``T``, scaled by ``T^2`` so that its gradients keep their size across
temperatures. No labels are used.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from nasjax.network import Network, forward


def _kl(teacher_logits, student_logits, temperature):
  """Mean over the batch of KL(softmax(t / T) || softmax(s / T))."""
  t = jax.nn.log_softmax(teacher_logits / temperature)
  s = jax.nn.log_softmax(student_logits / temperature)
  return jnp.mean(jnp.sum(jnp.exp(t) * (t - s), axis=-1))


_AXIS = "batch"


def _distill_body(student, teacher, xs, temperature, *, learning_rate, axis_name):
  """The distillation loop over batches ``xs`` ``(steps, B, H, W, C)``; under shard_map
  each device holds a slice of every batch."""
  opt = optax.adam(learning_rate)

  def loss_fn(params, state, xb):
    target = jax.lax.stop_gradient(forward(teacher, xb))
    logits, new_state = forward(Network(student.arch, params, state), xb, train=True,
                                axis_name=axis_name)
    loss = _kl(target, logits, temperature) * temperature ** 2
    if axis_name is not None:
      # The gradient of the device mean is the global batch's: replicated parameters
      # already sum their cotangents over devices.
      loss = jax.lax.pmean(loss, axis_name)
    return loss, new_state

  def step(carry, xb):
    params, state, opt_state = carry
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, xb)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), state, opt_state), loss

  carry = (student.params, student.state, opt.init(student.params))
  (params, state, _), losses = jax.lax.scan(step, carry, xs)
  return Network(student.arch, params, state), losses


@functools.lru_cache(maxsize=16)
def _distill_fn(learning_rate: float, mesh: jax.sharding.Mesh | None):
  """The jitted loop on one device, or data parallel over ``mesh`` (cached, so that jit's
  cache of compiled programs per architecture lives on)."""
  body = functools.partial(_distill_body, learning_rate=learning_rate,
                           axis_name=None if mesh is None else _AXIS)
  if mesh is not None:
    body = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(), P(None, _AXIS), P()),
                         out_specs=(P(), P()))
  return jax.jit(body)


@jax.jit
def _agreement(student, teacher, x):
  t, s = forward(teacher, x), forward(student, x)
  top1 = jnp.mean(jnp.argmax(t, -1) == jnp.argmax(s, -1))
  return top1, _kl(t, s, 1.0)


def agreement(student: Network, teacher: Network, x) -> dict[str, float]:
  """How closely ``student`` follows ``teacher`` on images ``x`` (inference mode).

  Returns:
    ``{"agreement": share of equal top-1 predictions, "kl": mean KL(teacher || student)
    of the softmax outputs}``.
  """
  top1, kl = _agreement(student, teacher, jnp.asarray(x))
  return {"agreement": float(top1), "kl": float(kl)}


def distill(student: Network, teacher: Network, data, *, steps: int, key,
            temperature: float = 4.0, learning_rate: float = 1e-3, batch_size: int = 64,
            eval_size: int = 512, devices=None) -> tuple[Network, dict]:
  """Train ``student`` to match ``teacher``'s soft outputs on the training images.

  Adam on ``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over random batches of
  ``data.x_train``, with the student's batch norm in training mode (its running
  statistics are updated); the whole loop is one compiled ``lax.scan``. Like
  :func:`nasjax.train.fit` it is data parallel over the local devices that divide the
  batch: each device distils on its slice, batch-norm statistics and the loss are
  averaged over devices, so the result equals one device's up to float rounding (on
  CPU this is several times faster: XLA's convolution gradients cost less per image on
  small slices).

  Args:
    student: the network to train, e.g. the child of an approximate morphism.
    teacher: the network to imitate (e.g. the parent); not trained.
    data: a :class:`nasjax.data.Dataset` (anything with ``x_train`` and ``x_val`` arrays
      of images ``(N, H, W, C)``).
    steps: number of optimisation steps.
    key: PRNG key for the batches.
    temperature: softmax temperature ``T``.
    learning_rate: Adam step size.
    batch_size: images per step.
    eval_size: validation images on which agreement is measured.
    devices: devices to split each batch over (``batch_size`` must divide among them);
      default :func:`nasjax.train.data_parallel_devices`.

  Returns:
    ``(student, metrics)``: the trained student, and ``agreement_before``,
    ``agreement_after`` (top-1 agreement with the teacher on the first ``eval_size``
    validation images), ``kl_before``, ``kl_after`` (mean KL at temperature 1 there) and
    ``loss_first``, ``loss_last`` (distillation loss of the first and last steps).

  Raises:
    ValueError: for non-positive steps/temperature/batch size, or students and teachers
      with different input or output shapes.
  """
  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"distill: steps must be a positive int, got {steps!r}")
  if not temperature > 0:
    raise ValueError(f"distill: temperature must be > 0, got {temperature!r}")
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"distill: batch_size must be a positive int, got {batch_size!r}")
  if (student.arch.input_shape != teacher.arch.input_shape
      or student.arch.output_shape != teacher.arch.output_shape):
    raise ValueError("distill: student and teacher differ in shape: "
                     f"{student.arch.input_shape}->{student.arch.output_shape} vs "
                     f"{teacher.arch.input_shape}->{teacher.arch.output_shape}")
  from nasjax.train import data_parallel_devices

  devices = (data_parallel_devices(batch_size) if devices is None else list(devices))
  if not devices or batch_size % len(devices):
    raise ValueError(f"distill: batch_size {batch_size} does not divide among "
                     f"{len(devices)} devices")
  x_train = np.asarray(data.x_train, np.float32)
  # The batches are drawn on the host: only they, not the whole training set, go to the
  # devices.
  idx = np.asarray(jax.random.randint(key, (steps, batch_size), 0, len(x_train)))
  xs = x_train[idx]
  x_val = jnp.asarray(np.asarray(data.x_val[:eval_size], np.float32))
  before = agreement(student, teacher, x_val)
  mesh = None
  if len(devices) > 1:
    mesh = jax.sharding.Mesh(np.asarray(devices), (_AXIS,),
                             axis_types=(jax.sharding.AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    student_d, teacher_d = jax.device_put((student, teacher), replicated)
    xs = jax.device_put(xs, NamedSharding(mesh, P(None, _AXIS)))
  else:
    student_d, teacher_d = jax.device_put((student, teacher), devices[0])
    xs = jax.device_put(xs, devices[0])
  trained, losses = _distill_fn(float(learning_rate), mesh)(
      student_d, teacher_d, xs, jnp.float32(temperature))
  trained = jax.block_until_ready(jax.device_put(trained, devices[0]))
  after = agreement(trained, teacher, x_val)
  return trained, {"agreement_before": before["agreement"],
                   "agreement_after": after["agreement"],
                   "kl_before": before["kl"], "kl_after": after["kl"],
                   "loss_first": float(losses[0]), "loss_last": float(losses[-1])}


__all__ = ["distill", "agreement"]
