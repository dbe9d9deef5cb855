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

import numpy as np

from nasjax.network import Network


def agreement(student: Network, teacher: Network, x, *, teacher_probs=None,
              batch_size: int = 512, dtype: str = "float32") -> dict[str, float]:
  """How closely ``student`` follows ``teacher`` on images ``x`` (inference mode).

  The student is scored by :func:`nasjax.train.evaluate` against the teacher's softmax
  (the program that validates it in training, so nothing new is compiled for it).

  Args:
    student, teacher: networks with equal input and output shapes.
    x: ``(N, H, W, C)`` images.
    teacher_probs: the teacher's ``(N, K)`` softmax on ``x`` if already known.
    batch_size: the evaluation batch size.
    dtype: compute dtype of the student.

  Returns:
    ``{"agreement": a, "kl": k}``: ``a`` the share of equal top-1 predictions, ``k`` the
    mean KL(teacher || student) of the softmax outputs.
  """
  from nasjax import train as train_lib

  x = np.asarray(x, np.float32)
  if teacher_probs is None:
    teacher_probs = train_lib.softmax(train_lib.teacher_logits(
        teacher, x, train_lib.TrainConfig(eval_batch_size=batch_size, dtype=dtype)))
  p = np.asarray(teacher_probs, np.float64)
  entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1).mean()
  with train_lib.validation_placement(student) as local:  # reuses its validation program
    r = train_lib.evaluate(local, x, np.asarray(teacher_probs, np.float32), batch_size,
                           dtype=dtype)
  return {"agreement": r["accuracy"], "kl": max(r["loss"] - float(entropy), 0.0)}


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
  x_val = np.asarray(data.x_val[:eval_size], np.float32)
  # The teacher's outputs and the students' by the evaluation programs that validate
  # them in training: agreement compiles nothing.
  probs = train_lib.softmax(train_lib.teacher_logits(teacher, x_val, config))
  before, after = (agreement(s, teacher, x_val, teacher_probs=probs,
                             batch_size=config.eval_batch_size, dtype=config.dtype)
                   for s in (student, trained))
  return trained, {"agreement_before": before["agreement"],
                   "agreement_after": after["agreement"],
                   "kl_before": before["kl"], "kl_after": after["kl"],
                   "loss_first": losses[0] if losses else float("nan"),
                   "loss_last": losses[-1] if losses else float("nan"),
                   "status": hist.status}


__all__ = ["distill", "agreement"]
