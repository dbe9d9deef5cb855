"""What the one-shot strategies (SPOS, DARTS, ENAS) share: their common options, the
shared-weight optimiser and training step, their place in the strategy protocol and the
ranking they propose from.

Weight training. The shared weights are trained with SGD as an optax transformation
(:func:`sgd`): gradient clipping by global norm, L2 weight decay on conv and dense
kernels, momentum, and a cosine learning rate from ``learning_rate`` to
``min_learning_rate`` over the search's ``steps`` (:func:`schedule`,
``optax.cosine_decay_schedule``), the recipe of NB201's and DARTS's supernet searches.
A step takes the architecture as data, either a path (SPOS and ENAS: one sampled
architecture per step) or mixing weights (DARTS), so one compiled step serves the whole
search. An op that a path leaves out has exactly zero gradient; :func:`freeze_idle`
leaves such a parameter array *and its momentum* exactly as they are (an SGD step would
otherwise decay and move them), so a sampled step trains the sampled sub-network only.

Place in the protocol. Strategies propose; evaluators train. The strategy state
(:class:`OneShotState`) holds the shared weights (supernet, optimiser state and the
method's architecture parameters or controller), the step counter, the phase, the logs
and the ranking. The search has ``phases`` phases; phase ``p`` ends at weight step
``round(steps * (p + 1) / phases)``. ``ask`` returns, in turn:

1. while the phase's weight steps are not done, a :class:`~nasjax.search.work.TrainShared`
   for the next chunk of at most ``chunk_steps`` steps (``0`` or None: the rest of the
   phase), whose step function is one pure function per method and options, so it
   compiles once; ``tell`` stores the trained weights and logs the chunk's metrics;
2. then the phase's search: SPOS scores each generation of its evolution with a
   :class:`~nasjax.search.work.ScoreShared`, ENAS scores samples of its controller with
   one, DARTS derives its cell from the architecture parameters (no data needed); the
   scored codes become the ranking;
3. then the ranking's best code, which the runner's evaluator measures (training from
   scratch); so a run records how the derived architecture improves from phase to phase,
   as NB201 reports one-shot methods. After the last phase, further asks propose the
   next codes of the final ranking, best first, without repeats.

``tell`` with codes only counts them: the measured accuracy never feeds back into a
one-shot search. The data is the evaluator's: the strategy knows the input shape and
the number of classes from the :class:`~nasjax.search.work.Problem`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.models import supernet as sn_lib
from nasjax.search import work
from nasjax.search.options import Options, boolean, integer, number, option
from nasjax.search.spaces import SearchSpace

KERNEL_PARAMS = ("kernel", "depthwise", "pointwise")


# ------------------------------------------------------------------------------ options
@dataclasses.dataclass(frozen=True, kw_only=True)
class OneShotConfig(Options):
  """The options every one-shot strategy takes.

  Attributes:
    steps: weight steps of the whole search (all phases).
    phases: the search runs after each ``steps / phases`` weight steps.
    chunk_steps: weight steps per :class:`~nasjax.search.work.TrainShared` (the run
      directory checkpoints after each); 0 or None: a whole phase at once.
    batch_size: training images per weight step.
    learning_rate, min_learning_rate: the cosine schedule's start and end.
    momentum, weight_decay, grad_clip: of the weights' SGD (:func:`sgd`); ``grad_clip``
      None: no clipping.
    affine: scale and bias in the batch norms inside cells.
    remat: rematerialise each cell in the backward pass (less memory).
    augment: random crops and flips of the training batches.
    proposals: length of the ranking proposed from.
  """

  strategy = "one-shot"
  steps: int = option(1000, integer(1))
  phases: int = option(1, integer(1))
  chunk_steps: int | None = option(50, integer(0, none=True))
  batch_size: int = option(64, integer(1))
  learning_rate: float = option(0.025, number(0, open_min=True))
  min_learning_rate: float = option(0.001, number(0))
  momentum: float = option(0.9, number(0))
  weight_decay: float = option(3e-4, number(0))
  grad_clip: float | None = option(5.0, number(0, open_min=True, none=True))
  affine: bool = option(False, boolean())
  remat: bool = option(False, boolean())
  augment: bool = option(False, boolean())
  proposals: int = option(64, integer(1))

  def check(self) -> None:
    if not self.momentum < 1:
      raise ValueError(f"{self.strategy}: option momentum must lie in [0, 1), got "
                       f"{self.momentum!r}")
    if self.phases > self.steps:
      raise ValueError(f"{self.strategy}: options phases ({self.phases}) must be at most "
                       f"steps ({self.steps})")

  @property
  def chunk(self) -> int:
    """Weight steps per training request."""
    return self.chunk_steps or self.steps


def steps_for_epochs(epochs: float, num_train: int, batch_size: int) -> int:
  """Weight steps of ``epochs`` passes over ``num_train`` examples in full batches (at
  least one), for a ``steps`` option given in epochs of a known data set."""
  return max(int(np.ceil(epochs * max(num_train // batch_size, 1))), 1)


def phase_end(phase: int, phases: int, total: int) -> int:
  """The weight step at which phase ``phase`` (0-based) ends."""
  return int(round(total * (phase + 1) / phases))


# ---------------------------------------------------------------------------- optimiser
def kernel_mask(params):
  """``params``' tree of bools: True for conv and dense kernels (weight decay applies)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) in KERNEL_PARAMS, params)


def freeze_idle(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """``inner``, except that a parameter array whose gradient is all zero gets a zero
  update and keeps its part of the optimiser state (e.g. its momentum) exactly.

  The state's subtrees shaped like the parameters are the per-array parts; the others
  (step counts) follow ``inner``.
  """

  def update(grads, state, params=None):
    live = jax.tree_util.tree_map(lambda g: jnp.any(g != 0), grads)
    treedef = jax.tree_util.tree_structure(grads)
    updates, new_state = inner.update(grads, state, params)
    updates = jax.tree_util.tree_map(lambda on, u: jnp.where(on, u, jnp.zeros_like(u)),
                                     live, updates)
    shaped = lambda x: jax.tree_util.tree_structure(x) == treedef  # noqa: E731

    def keep(new, old):
      if not shaped(new):
        return new
      return jax.tree_util.tree_map(lambda on, a, b: jnp.where(on, a, b), live, new, old)

    return updates, jax.tree_util.tree_map(keep, new_state, state, is_leaf=shaped)

  return optax.GradientTransformation(inner.init, update)


def sgd(learning_rate, *, momentum: float = 0.9, weight_decay: float = 3e-4,
        grad_clip: float | None = 5.0, nesterov: bool = False
        ) -> optax.GradientTransformation:
  """The shared-weight optimiser (see the module docstring).

  The gradient is clipped to global norm ``grad_clip``, ``weight_decay * w`` is added on
  kernels, then ``m <- momentum * m + g`` and the update is ``-lr * m`` (``-lr * (g +
  momentum * m)`` with Nesterov); parameter arrays with zero gradient are left alone
  (:func:`freeze_idle`).

  Args:
    learning_rate: a float or an optax schedule of the step count.

  Raises:
    ValueError: for a momentum outside [0, 1), a negative decay or a clip <= 0.
  """
  if not 0 <= momentum < 1:
    raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
  if not weight_decay >= 0:
    raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
  if grad_clip is not None and not grad_clip > 0:
    raise ValueError(f"grad_clip must be positive or None, got {grad_clip!r}")
  parts = [] if grad_clip is None else [optax.clip_by_global_norm(grad_clip)]
  parts += [optax.add_decayed_weights(weight_decay, mask=kernel_mask),
            optax.trace(decay=momentum, nesterov=nesterov),
            optax.scale_by_learning_rate(learning_rate)]
  return freeze_idle(optax.chain(*parts))


def schedule(config: OneShotConfig) -> optax.Schedule:
  """The cosine learning rate of ``config`` over its ``steps``."""
  return optax.cosine_decay_schedule(config.learning_rate, config.steps,
                                     alpha=config.min_learning_rate / config.learning_rate)


def optimizer(config: OneShotConfig) -> optax.GradientTransformation:
  """The shared weights' optimiser of ``config`` (:func:`sgd` with its schedule)."""
  return sgd(schedule(config), momentum=config.momentum, weight_decay=config.weight_decay,
             grad_clip=config.grad_clip)


def momentum(opt_state):
  """The momentum (a tree like the parameters) in a state of :func:`sgd`."""
  for part in opt_state:
    if isinstance(part, optax.TraceState):
      return part.trace
  raise ValueError("not a state of oneshot.sgd: it has no momentum")


# ------------------------------------------------------------------------------ training
def cross_entropy(logits, labels) -> jax.Array:
  """``(B,)`` softmax cross-entropy of ``(B, K)`` logits and ``(B,)`` int labels."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


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


def train_step(tx: optax.GradientTransformation, sn: sn_lib.Supernet, opt_state, x, y, arch,
               *, by_path: bool, impl: str = "switch", dtype: str = "float32"):
  """One weight step on ``(x, y)`` under ``arch`` (a path, with ``by_path``, or ``(T, E,
  K)`` mixing weights), pure and jittable.

  Ops the step does not run keep their weights, optimiser state and batch-norm
  statistics. A step whose loss or new weights are not finite is discarded.

  Returns:
    ``(supernet, opt_state, loss, accuracy)``.
  """
  (loss, (st, acc)), grads = jax.value_and_grad(supernet_loss, has_aux=True)(
      sn.params, sn, x, y, arch, by_path=by_path, impl=impl, dtype=dtype)
  updates, new_opt = tx.update(grads, opt_state, sn.params)
  new_p = optax.apply_updates(sn.params, updates)
  ok = jnp.isfinite(loss) & _all_finite(new_p)
  keep = functools.partial(jax.tree_util.tree_map, lambda a, b: jnp.where(ok, a, b))
  return (sn.replace(params=keep(new_p, sn.params), state=keep(st, sn.state)),
          keep(new_opt, opt_state), loss, acc)


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


@functools.lru_cache(maxsize=32)
def weight_step_fn(tx: optax.GradientTransformation, by_path: bool, impl: str = "switch",
                   dtype: str = "float32"):
  """:func:`train_step` jitted: ``(sn, opt_state, x, y, arch) -> (sn, opt_state, loss,
  accuracy)``, the supernet and optimiser state donated."""
  step = functools.partial(train_step, tx, by_path=by_path, impl=impl, dtype=dtype)
  return jax.jit(step, donate_argnums=(0, 1))


def step_memory(sn: sn_lib.Supernet, tx: optax.GradientTransformation, batch_size: int, *,
                by_path: bool, impl: str = "switch") -> dict[str, int]:
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
  fn = weight_step_fn(tx, by_path, impl)
  compiled = fn.lower(sn, tx.init(sn.params), x, y, arch).compile()
  m = compiled.memory_analysis()
  out = {"temp": int(m.temp_size_in_bytes), "argument": int(m.argument_size_in_bytes),
         "output": int(m.output_size_in_bytes), "alias": int(m.alias_size_in_bytes)}
  out["peak"] = out["temp"] + out["argument"] + out["output"] - out["alias"]
  return out


def score_codes(weights, codes, data, *, bn: str = "recalibrate", calib_batches: int = 8,
                calib_batch_size: int = 128, max_examples: int | None = None,
                impl: str = "switch", seed: int = 0) -> np.ndarray:
  """A :class:`~nasjax.search.work.ScoreShared` score: the validation accuracy of each
  code with the shared weights' supernet (``weights.supernet``) on ``data``
  (:func:`nasjax.models.supernet.score_paths`)."""
  return sn_lib.score_paths(weights.supernet, codes, data, bn=bn, calib_batches=calib_batches,
                            calib_batch_size=calib_batch_size, max_examples=max_examples,
                            impl=impl, seed=seed)


# ------------------------------------------------------------------------------- state
@flax.struct.dataclass
class SharedWeights:
  """The shared weights SPOS trains: the supernet and its optimiser's state."""

  supernet: sn_lib.Supernet
  opt_state: Any


@flax.struct.dataclass
class PhaseLog:
  """Per-phase (or per-iteration) records of a weight-sharing search: the weight ``step``
  at its end, the mean ``train_loss`` and ``train_accuracy`` of its steps, the best and
  mean score of its ranking and the seconds the evaluator spent on its training and
  scoring."""

  step: jax.Array
  train_loss: jax.Array
  train_accuracy: jax.Array
  best_score: jax.Array
  mean_score: jax.Array
  seconds: jax.Array

  @classmethod
  def empty(cls, n: int) -> "PhaseLog":
    nan = np.full((n,), np.nan, np.float32)
    return cls(np.zeros((n,), np.int32), nan, nan, nan, nan, np.zeros((n,), np.float32))


@flax.struct.dataclass
class Log:
  """Rows of named metrics at weight steps (rows past ``count`` unused).

  Attributes:
    step: ``(R,)`` int32, the weight step of each row.
    values: name -> ``(R,)`` float32 (NaN where a row has no such value).
    count: ``()`` int32 rows written.
  """

  step: jax.Array
  values: dict
  count: jax.Array

  @classmethod
  def empty(cls, rows: int, names: Sequence[str]) -> "Log":
    return cls(jnp.zeros((rows,), jnp.int32),
               {n: jnp.full((rows,), jnp.nan, jnp.float32) for n in names},
               jnp.zeros((), jnp.int32))

  def add(self, step: int, **values) -> "Log":
    """The log with one more row (names it does not hold are ignored)."""
    i = int(self.count)
    if i >= len(self.step):
      raise ValueError(f"the log is full ({i} rows)")
    new = {k: (v.at[i].set(float(values[k])) if k in values else v)
           for k, v in self.values.items()}
    return self.replace(step=self.step.at[i].set(int(step)), values=new, count=self.count + 1)

  def rows(self) -> list[dict]:
    """The rows written, as ``{"step": int, name: float, ...}``."""
    step = np.asarray(self.step)
    values = {k: np.asarray(v) for k, v in self.values.items()}
    return [{"step": int(step[i]), **{k: float(v[i]) for k, v in values.items()}}
            for i in range(int(self.count))]


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


@flax.struct.dataclass
class OneShotState:
  """The state of a one-shot strategy.

  Attributes:
    weights: the shared weights (:class:`SharedWeights`, or the method's own class with
      its architecture parameters or controller): what the training requests update.
    data_key: ``(2,)`` uint32 key data: the batch order and the steps' keys.
    step: ``()`` int32 weight steps done.
    phase: ``()`` int32 phases whose search is done.
    fresh: ``()`` bool: a phase's ranking is made and its best code not proposed yet.
    log: one row per training chunk: the means of the step's metrics, ``seconds``.
    phase_log: one row per phase: what its search found.
    search: the method's own progress (SPOS: its evolution; ENAS: its controller steps).
    proposals: the ranking proposed from.
    count: ``()`` int32 candidates told.
  """

  weights: Any
  data_key: jax.Array
  step: jax.Array
  phase: jax.Array
  fresh: jax.Array
  log: Log
  phase_log: Log
  search: Any
  proposals: Proposals
  count: jax.Array


# ------------------------------------------------------------------------------ strategy
@dataclasses.dataclass(frozen=True, eq=False)
class OneShot:
  """The protocol of the one-shot strategies (see the module docstring); SPOS, DARTS and
  ENAS derive from it and provide the weights, the step function and the search.

  Attributes:
    space: an ``nb201`` or ``darts`` search space.
    config: the method's options (a :class:`OneShotConfig` subclass).
    problem: the task (input shape and classes of the supernet).
  """

  space: SearchSpace
  config: OneShotConfig
  problem: work.Problem
  name = "one-shot"
  log_names = ("loss", "accuracy", "seconds")  # the chunk log's columns
  phase_names = ("best_score",)  # the phase log's columns

  def __post_init__(self):
    work.require_problem(self.problem, self.name, "trains a supernet for the task")

  @property
  def spec(self) -> sn_lib.SupernetSpec:
    """The supernet whose paths are the space's codes."""
    return sn_lib.supernet_for_space(self.space, self.problem.input_shape,
                                     self.problem.num_classes, affine=self.config.affine,
                                     remat=self.config.remat)

  def phase_end(self, phase: int) -> int:
    return phase_end(phase, self.config.phases, self.config.steps)

  def log_rows(self) -> int:
    """Rows the chunk log may need (an upper bound)."""
    return -(-self.config.steps // self.config.chunk) + self.config.phases

  # The method's parts.
  def init_weights(self, sn: sn_lib.Supernet, key) -> Any:
    return SharedWeights(sn, optimizer(self.config).init(sn.params))

  def init_search(self) -> Any:
    return jnp.zeros((), jnp.int32)

  def step_function(self):
    """The request's ``step(weights, batch, key, step) -> (weights, metrics)``."""
    raise NotImplementedError

  def val_batch_size(self) -> int:
    return 0

  def search_ask(self, key, state: OneShotState):
    """The phase's search once its training is done: a request, or ``(codes, state)``."""
    raise NotImplementedError

  def scored(self, key, state: OneShotState, request, result) -> OneShotState:
    raise NotImplementedError

  # The protocol.
  def init(self, key) -> OneShotState:
    k_net, k_weights, k_data = jax.random.split(key, 3)
    z = jnp.zeros((), jnp.int32)
    cfg = self.config
    return OneShotState(
        self.init_weights(self.spec.init(k_net), k_weights),
        jax.random.key_data(k_data).astype(jnp.uint32), z, z, jnp.zeros((), bool),
        Log.empty(self.log_rows(), self.log_names), Log.empty(cfg.phases, self.phase_names),
        self.init_search(), Proposals.empty(cfg.proposals, self.space.length), z)

  def data_key(self, state: OneShotState, tag: int) -> jax.Array:
    return jax.random.fold_in(jax.random.wrap_key_data(state.data_key), tag)

  def train_request(self, state: OneShotState) -> work.TrainShared | None:
    """The next training chunk of the current phase; None once the phase is trained."""
    step, end = int(state.step), self.phase_end(int(state.phase))
    if step >= end:
      return None
    return work.TrainShared(state.weights, self.step_function(), step,
                            min(end, step + self.config.chunk), self.config.batch_size,
                            self.data_key(state, 0), val_batch_size=self.val_batch_size(),
                            augment=self.config.augment)

  def ask(self, key, state: OneShotState):
    """The next request on the shared weights, or the next code to measure.

    Returns:
      ``(request, state)`` (a :class:`~nasjax.search.work.TrainShared` or
      :class:`~nasjax.search.work.ScoreShared`) or ``(codes (1, L) int32, state)``.
    """
    if bool(state.fresh) or int(state.phase) >= self.config.phases:
      return propose(state, self.config.phases)
    request = self.train_request(state)
    if request is not None:
      return request, state
    return self.search_ask(key, state)

  def tell(self, key, state: OneShotState, candidates, fitness) -> OneShotState:
    """Store a request's result (``fitness`` is then a
    :class:`~nasjax.search.work.SharedResult`); count measured codes."""
    if isinstance(candidates, work.TrainShared):
      return self.trained(state, candidates, fitness)
    if isinstance(candidates, work.ScoreShared):
      return self.scored(key, state, candidates, fitness)
    return state.replace(count=state.count + np.shape(candidates)[0])

  def chunk_values(self, weights) -> dict:
    """What the chunk log records of the weights a chunk ends with, beyond its metrics."""
    del weights
    return {}

  def trained(self, state: OneShotState, request: work.TrainShared,
              result: work.SharedResult) -> OneShotState:
    """The trained weights, the chunk's metrics logged."""
    log = state.log.add(request.stop, **result.metrics, seconds=result.seconds,
                        **self.chunk_values(result.weights))
    return state.replace(weights=result.weights, step=jnp.asarray(request.stop, jnp.int32),
                         log=log)

  def finish_phase(self, state: OneShotState, codes, scores, **found) -> OneShotState:
    """The phase's ranking of ``codes`` by ``scores`` (NaN last), ``found`` logged."""
    proposals = Proposals.from_scores(codes, np.nan_to_num(np.asarray(scores, np.float64),
                                                           nan=-np.inf), self.config.proposals)
    return state.replace(phase=state.phase + 1, fresh=jnp.ones((), bool), proposals=proposals,
                         phase_log=state.phase_log.add(int(state.step), **found))


def propose(state: OneShotState, phases: int):
  """The next proposal of ``state``: ``(codes (1, L) int32, state)``. While phases remain,
  the pointer into the ranking stays (the next phase ranks again)."""
  code, proposals = state.proposals.pop()
  if int(state.phase) < phases:
    proposals = proposals.replace(next=state.proposals.next)
  return (jnp.asarray(code, jnp.int32)[None],
          state.replace(proposals=proposals, fresh=jnp.zeros((), bool)))


def run_until_proposal(strategy: OneShot, state: OneShotState, key, data, device=None):
  """Drive a one-shot strategy by hand on ``data`` (a :class:`nasjax.data.Dataset`) until
  it proposes: its requests run with :func:`nasjax.search.evaluators.run_shared`, with
  the keys of the search loop (:func:`~nasjax.search.base.generation_keys`).

  Returns:
    ``(codes (1, L), state, key)``: the proposal, the state after it and the loop key
    that continues the search.
  """
  from nasjax.search.base import generation_keys
  from nasjax.search.evaluators import run_shared

  while True:
    key, k_ask, _, k_tell = generation_keys(key)
    asked, state = strategy.ask(k_ask, state)
    if not work.is_shared(asked):
      return np.asarray(asked), state, key
    state = strategy.tell(k_tell, state, asked, run_shared(asked, data, device))


__all__ = ["OneShotConfig", "OneShotState", "OneShot", "SharedWeights", "Log", "Proposals",
           "sgd", "freeze_idle", "schedule", "optimizer", "momentum", "kernel_mask",
           "train_step", "weight_step_fn", "supernet_loss", "step_memory", "cross_entropy",
           "score_codes", "phase_end", "steps_for_epochs", "propose", "run_until_proposal"]
