"""Knowledge distillation: recover a parent's function in a child after an approximate morphism.

LEMONADE (Elsken et al., ICLR 2019, §3.2) initialises the child of an approximate
network morphism from its parent and then trains it to mimic the parent (Hinton et al.,
2015): the loss is the KL divergence between the parent's and the child's softmax at a
temperature ``T`` (up to a constant, the cross-entropy against the parent's softmax),
scaled by ``T^2`` so that its gradients keep their size across temperatures. No labels
are used. The steps are :func:`nasjax.train.fit`'s own compiled train step, so that a
child distilled and then trained with the same optimiser settings compiles one program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.network import Network, forward


def _kl(teacher_logits, student_logits, temperature):
  """Mean over the batch of KL(softmax(t / T) || softmax(s / T))."""
  t = jax.nn.log_softmax(teacher_logits / temperature)
  s = jax.nn.log_softmax(student_logits / temperature)
  return jnp.mean(jnp.sum(jnp.exp(t) * (t - s), axis=-1))


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
            temperature: float = 4.0, learning_rate: float = 0.02, batch_size: int = 64,
            eval_size: int = 512, devices=None, config=None) -> tuple[Network, dict]:
  """Train ``student`` to match ``teacher``'s soft outputs on the training images.

  :func:`nasjax.train.distill`: SGD on ``T^2`` times the cross-entropy of the student's
  softmax at temperature ``T`` against the teacher's (the KL divergence plus a constant),
  over random batches of ``data.x_train``, with the student's batch norm in training
  mode, through :func:`nasjax.train.fit`'s compiled train step, data parallel over the
  devices as in ``fit``. Given the ``config`` that will train the student next (e.g. a
  search evaluator's), distillation and that training share one compiled program.

  Args:
    student: the network to train, e.g. the child of an approximate morphism.
    teacher: the network to imitate (e.g. the parent); not trained.
    data: a :class:`nasjax.data.Dataset` (its ``x_train`` and ``x_val`` images; the
      labels are not used).
    steps: number of optimisation steps.
    key: PRNG key for the batches.
    temperature: softmax temperature ``T``.
    learning_rate: constant step size.
    batch_size: images per step (when no ``config`` is given).
    eval_size: validation images on which agreement is measured.
    devices: devices to split each batch over; default
      :func:`nasjax.train.data_parallel_devices`.
    config: a :class:`nasjax.train.TrainConfig` whose optimiser, batch size and dtype
      distillation uses; default ``TrainConfig(batch_size=batch_size)`` (SGD, momentum
      0.9, L2 weight decay 5e-4 on kernels).

  Returns:
    ``(student, metrics)``: the trained student, and ``agreement_before``,
    ``agreement_after`` (top-1 agreement with the teacher on the first ``eval_size``
    validation images), ``kl_before``, ``kl_after`` (mean KL at temperature 1 there),
    ``loss_first``, ``loss_last`` (distillation loss of the first and last steps) and
    ``status`` (``"diverged"`` if a step was not finite).

  Raises:
    ValueError: for non-positive steps/temperature/batch size, or students and teachers
      with different input or output shapes.
  """
  from nasjax import train as train_lib

  if config is None:
    config = train_lib.TrainConfig(batch_size=batch_size)
  trained, hist, losses = train_lib.distill(student, teacher, data, config, steps=steps,
                                            key=key, temperature=temperature,
                                            learning_rate=learning_rate, devices=devices)
  x_val = jnp.asarray(np.asarray(data.x_val[:eval_size], np.float32))
  before, after = agreement(student, teacher, x_val), agreement(trained, teacher, x_val)
  return trained, {"agreement_before": before["agreement"],
                   "agreement_after": after["agreement"],
                   "kl_before": before["kl"], "kl_after": after["kl"],
                   "loss_first": losses[0] if losses else float("nan"),
                   "loss_last": losses[-1] if losses else float("nan"),
                   "status": hist.status}


__all__ = ["distill", "agreement"]
