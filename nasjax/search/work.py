"""What a strategy asks an evaluator to do, and what the evaluator tells it about the task.

Strategies propose; evaluators train. A strategy's ``ask`` returns a batch of candidates,
each one of:

* a code of the search space (an int vector), built and initialised by the evaluator;
* an :class:`~nasjax.Arch`, initialised by the evaluator from the candidate's key;
* a :class:`~nasjax.Network`: trained further from its own weights (inherited weights);
* a :class:`Child`: a network and how its training starts (distilled from a teacher
  for ``distill_steps`` steps first, then trained).

A weight-sharing strategy also asks for work on its shared weights (a supernet, a
hypernetwork, architecture parameters): its ``ask`` returns a :class:`TrainShared` (train
the shared weights for a chunk of steps) or a :class:`ScoreShared` (score architectures
with the shared weights) in place of candidates. The evaluator runs it on its own data
and the loop tells the strategy a :class:`SharedResult`; the run directory checkpoints the
state after every chunk, so a search killed while its supernet trains resumes from its
last chunk. The functions in these requests are the strategy's pure, jittable maths; the
data, the batches and the loop over steps are the evaluator's.

:class:`Problem` is what a strategy may know of the data without loading it: the input
shape, the number of classes and a batch of training inputs (the batch that morphisms
initialise inserted batch norms from). :meth:`TrainingEvaluator.problem
<nasjax.search.evaluators.TrainingEvaluator.problem>` gives it; strategies that build
networks take it as ``problem=``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import numpy as np

from nasjax.network import Network


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
  """The task a strategy builds networks for.

  Attributes:
    input_shape: ``(H, W, C)`` of one input.
    num_classes: the number of classes.
    inputs: ``(n, H, W, C)`` float32 training inputs (normalised as the evaluator trains
      on them): the batch morphisms initialise inserted batch norms from, so that a child
      computes its parent's function in training mode on it.
  """

  input_shape: tuple[int, ...]
  num_classes: int
  inputs: np.ndarray

  def __post_init__(self):
    shape = tuple(int(d) for d in self.input_shape)
    if len(shape) != 3 or min(shape) < 1:
      raise ValueError(f"Problem: input_shape must be (H, W, C) with positive sizes, got "
                       f"{self.input_shape!r}")
    if isinstance(self.num_classes, bool) or int(self.num_classes) < 2:
      raise ValueError(f"Problem: num_classes must be an int >= 2, got {self.num_classes!r}")
    inputs = np.asarray(self.inputs, np.float32)
    if inputs.ndim != 4 or inputs.shape[1:] != shape or len(inputs) < 1:
      raise ValueError(f"Problem: inputs must have shape (n, {', '.join(map(str, shape))}), "
                       f"got {inputs.shape}")
    object.__setattr__(self, "input_shape", shape)
    object.__setattr__(self, "num_classes", int(self.num_classes))
    object.__setattr__(self, "inputs", inputs)

  @classmethod
  def of(cls, data, n: int | None = None) -> "Problem":
    """The problem of a :class:`nasjax.data.Dataset`: its first ``n`` training inputs
    (default :data:`nasjax.ops.MORPH_BATCH`)."""
    from nasjax.ops import MORPH_BATCH

    n = MORPH_BATCH if n is None else n
    return cls(tuple(data.input_shape), int(data.num_classes),
               np.asarray(data.x_train[:n], np.float32))


@dataclasses.dataclass(frozen=True, eq=False)
class Child:
  """A candidate network and how its training starts.

  The evaluator first distils ``network`` from ``teacher`` for ``distill_steps`` steps
  (:func:`nasjax.train.distill` on its own training inputs, with its own optimiser and
  batch size, at ``temperature`` and a constant ``learning_rate``), then trains it as it
  trains every candidate. With ``distill_steps=0`` a child is its network, trained from
  its inherited weights.

  Attributes:
    network: the weights training starts from.
    teacher: the network to imitate first (usually the parent), or None.
    distill_steps: distillation steps (0: none).
    temperature: distillation temperature.
    learning_rate: distillation's constant step size; None for the evaluator's.
  """

  network: Network
  teacher: Network | None = None
  distill_steps: int = 0
  temperature: float = 4.0
  learning_rate: float | None = None

  def __post_init__(self):
    if not isinstance(self.network, Network):
      raise ValueError(f"Child: network must be a nasjax.Network, got "
                       f"{type(self.network).__name__}")
    steps = self.distill_steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
      raise ValueError(f"Child: distill_steps must be an int >= 0, got {steps!r}")
    if steps and self.teacher is None:
      raise ValueError(f"Child: distill_steps={steps} needs a teacher")
    if not self.temperature > 0:
      raise ValueError(f"Child: temperature must be > 0, got {self.temperature!r}")
    if self.learning_rate is not None and not self.learning_rate > 0:
      raise ValueError(f"Child: learning_rate must be > 0 or None, got {self.learning_rate!r}")

  @property
  def arch(self):
    return self.network.arch


@dataclasses.dataclass(frozen=True, eq=False)
class TrainShared:
  """Train shared weights for steps ``start, ..., stop - 1``.

  The evaluator draws the batches from its training split (and, with
  ``val_batch_size``, its validation split) with :func:`nasjax.data.stream` seeded
  by ``key`` (so a chunk started at any step continues the same stream), calls the jitted
  ``step`` once per step and returns the new weights with the mean of every metric.

  Attributes:
    weights: the shared-weight pytree (weights, optimiser state, architecture
      parameters, controller: whatever ``step`` updates).
    step: ``step(weights, batch, key, step) -> (weights, metrics)``, pure and jittable;
      ``batch`` is ``(x, y)`` or, with ``val_batch_size``, ``((x, y), (x_val, y_val))``;
      ``key`` is ``fold_in(key, step)``; ``step`` a traced int32; ``metrics`` a dict of
      scalars.
    start, stop: the step range of this chunk.
    batch_size: training images per step.
    key: PRNG key of the batch order, augmentation and per-step keys.
    val_batch_size: validation images per step (0: the step gets no validation batch).
    augment: random crops and flips of the training batches.
  """

  weights: Any
  step: Callable
  start: int
  stop: int
  batch_size: int
  key: jax.Array
  val_batch_size: int = 0
  augment: bool = False

  def __post_init__(self):
    if not 0 <= int(self.start) < int(self.stop):
      raise ValueError(f"TrainShared: need 0 <= start < stop, got {self.start}, {self.stop}")
    if int(self.batch_size) < 1 or int(self.val_batch_size) < 0:
      raise ValueError(f"TrainShared: bad batch sizes {self.batch_size}, "
                       f"{self.val_batch_size}")


@dataclasses.dataclass(frozen=True, eq=False)
class ScoreShared:
  """Score architectures with the shared weights.

  Attributes:
    weights: the shared-weight pytree.
    codes: ``(B, L)`` codes to score.
    score: ``score(weights, codes, data) -> (B,)`` scores (higher is better, NaN for a
      failure); ``data`` is the evaluator's :class:`nasjax.data.Dataset`.
  """

  weights: Any
  codes: np.ndarray
  score: Callable


@dataclasses.dataclass(frozen=True, eq=False)
class SharedResult:
  """What the evaluator returns for a :class:`TrainShared` or :class:`ScoreShared`.

  Attributes:
    weights: the shared weights after the work (unchanged by a score).
    metrics: means over the chunk's steps (training) or ``{}``.
    scores: ``(B,)`` scores (scoring) or None.
    seconds: wall seconds the work took.
  """

  weights: Any
  metrics: Mapping[str, float]
  scores: np.ndarray | None
  seconds: float


def require_problem(problem, strategy: str, what: str = "builds networks for the task"
                    ) -> Problem:
  """``problem`` if it is a :class:`Problem`; otherwise a ValueError saying that
  ``strategy`` needs one (it gets one from a training evaluator)."""
  if not isinstance(problem, Problem):
    raise ValueError(f"strategy {strategy!r} {what}: give problem= (a "
                     "nasjax.search.work.Problem) or a training evaluator, got "
                     f"{type(problem).__name__}")
  return problem


def is_shared(work) -> bool:
  """Whether ``work`` (what ``ask`` returned) is work on shared weights."""
  return isinstance(work, (TrainShared, ScoreShared))
