"""SPOS: single-path one-shot search with uniform sampling (Guo et al., ECCV 2020).

Two stages, as the weight-sharing part of the NAS overview describes:

1. Supernet training: each SGD step trains one path, drawn uniformly from the space
   (every edge's op uniform in NB201) with the step's key, so every path's weights are
   trained about equally and no architecture is favoured before the search.
2. Search: evolution over paths, where a path's fitness is its validation accuracy with
   the inherited weights after its batch-norm statistics are recalibrated on training
   batches (:func:`nasjax.models.supernet.score_paths`); no path is trained.

   - ``search="genetic"`` (the default, SPOS's Algorithm 1 and §3.4): a first
     population of ``population_size`` random paths; then each generation takes the
     ``parents`` best paths scored so far (top-k) and makes ``mutations`` children by
     redrawing each choice of a random parent with probability ``mutation_prob`` and
     ``crossovers`` children by taking each choice from one of two random parents, then
     fills the generation with random paths. A child is rejected, and drawn again (at
     most ``max_tries`` times per child), when it was scored before, repeats another
     child or breaks a constraint: ``max_params`` and ``max_flops`` cap the parameters
     and FLOPs (:func:`nasjax.count_params`, :func:`nasjax.flops`) of the path's
     stand-alone network for the task. SPOS's values: population 50, top-10 parents, 25
     mutations with probability 0.1 and 25 crossovers per generation, 20 generations
     (1,000 paths).
   - ``search="aging"``: regularized evolution (the registered ``rea`` strategy: aging,
     tournament selection of ``sample_size``), ``evolution_batch`` children per
     generation; it takes no constraints.

   Each generation is one :class:`~nasjax.search.work.ScoreShared`; the paths scored so
   far (and the aging evolution's state) are kept in the strategy state.

Every path scored by the evolution joins the ranking the strategy proposes from (best
score first). ``phases > 1`` runs the evolution after each share of the supernet
training, so a run shows how the chosen architecture changes as the supernet trains.
See :mod:`nasjax.search.strategies.oneshot` for how ask and tell work.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

import nasjax
from nasjax.models import supernet as sn_lib
from nasjax.search import work
from nasjax.search.base import make_strategy, register_strategy
from nasjax.search.options import integer, number, one_of, option
from nasjax.search.spaces import SearchSpace
from nasjax.search.strategies import oneshot

SEARCHES = ("genetic", "aging")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SposConfig(oneshot.OneShotConfig):
  """SPOS's options: those of :class:`~nasjax.search.strategies.oneshot.OneShotConfig`
  and

  Attributes:
    impl: how a path runs (:data:`nasjax.models.supernet.IMPLS`).
    search: ``"genetic"`` (SPOS's) or ``"aging"`` (:data:`SEARCHES`; see the module
      docstring).
    cycles: paths the evolution scores per phase (the first ``population_size`` random).
    population_size: P, paths per generation (genetic) or the aging population.
    parents: the genetic search's top-k, the best paths scored so far that breed.
    mutations, crossovers: children made by mutation and by crossover per generation
      (None: half of ``population_size`` each); the rest of a generation is random.
    mutation_prob: probability that a mutation redraws each choice of the parent.
    max_tries: draws per child before the genetic search gives up on it.
    max_params, max_flops: constraints of the genetic search on the stand-alone network
      of a path (None: none); children that break them are rejected.
    sample_size: S, the aging evolution's tournament size.
    evolution_batch: children per generation of the aging evolution.
    bn: batch norm when scoring (:data:`nasjax.models.supernet.BN_MODES`).
    calib_batches, calib_batch_size: the recalibration batches.
    eval_examples: score on the first this many validation examples (None: all).
  """

  strategy = "spos"
  weight_decay: float = option(5e-4, number(0))
  impl: str = option("switch", one_of(*sn_lib.IMPLS))
  search: str = option("genetic", one_of(*SEARCHES))
  cycles: int = option(1000, integer(1))
  population_size: int = option(50, integer(1))
  parents: int = option(10, integer(1))
  mutations: int | None = option(None, integer(0, none=True))
  crossovers: int | None = option(None, integer(0, none=True))
  mutation_prob: float = option(0.1, number(0, 1, open_min=True))
  max_tries: int = option(10, integer(1))
  max_params: int | None = option(None, integer(1, none=True))
  max_flops: int | None = option(None, integer(1, none=True))
  sample_size: int = option(5, integer(1))
  evolution_batch: int = option(1, integer(1))
  bn: str = option("recalibrate", one_of(*sn_lib.BN_MODES))
  calib_batches: int = option(8, integer(1))
  calib_batch_size: int = option(64, integer(1))
  eval_examples: int | None = option(None, integer(1, none=True))

  def check(self) -> None:
    super().check()
    if self.search == "aging":
      if self.sample_size > self.population_size:
        raise ValueError(f"spos: option sample_size ({self.sample_size}) must be at most "
                         f"population_size ({self.population_size})")
      if self.max_params is not None or self.max_flops is not None:
        raise ValueError("spos: options max_params and max_flops constrain the genetic "
                         "search only; search='aging' takes none")
    if self.mutation_count + self.crossover_count > self.population_size:
      raise ValueError(f"spos: options mutations ({self.mutation_count}) and crossovers "
                       f"({self.crossover_count}) add up to more than population_size "
                       f"({self.population_size})")

  @property
  def mutation_count(self) -> int:
    return self.population_size // 2 if self.mutations is None else self.mutations

  @property
  def crossover_count(self) -> int:
    return self.population_size // 2 if self.crossovers is None else self.crossovers


@functools.cache
def uniform_step(space: SearchSpace, config: SposConfig):
  """SPOS's training step ``(weights, batch, key, step) -> (weights, metrics)``: one
  weight step on the path ``space.sample(key)`` (one function per space and options)."""
  tx = oneshot.optimizer(config)

  def step(weights: oneshot.SharedWeights, batch, key, step):
    del step  # the schedule counts in the optimiser's state
    x, y = batch
    sn, opt_state, loss, acc = oneshot.train_step(
        tx, weights.supernet, weights.opt_state, x, y, space.sample(key), by_path=True,
        impl=config.impl)
    return weights.replace(supernet=sn, opt_state=opt_state), {"loss": loss, "accuracy": acc}

  return step


@functools.cache
def _evolution(space: SearchSpace, population_size: int, sample_size: int, batch_size: int):
  """``(rea strategy, jitted ask, jitted tell)``."""
  evo = make_strategy("rea", space, {"population_size": population_size,
                                     "sample_size": sample_size, "batch_size": batch_size})
  return evo, jax.jit(evo.ask), jax.jit(evo.tell)


# ---------------------------------------------------------------------- genetic search
@functools.lru_cache(maxsize=65536)
def network_cost(space: SearchSpace, input_shape: tuple, num_classes: int, code: tuple
                 ) -> tuple[int, int]:
  """``(parameters, FLOPs)`` of the stand-alone network of ``code`` for the task."""
  arch = space.build(np.asarray(code, np.int32), input_shape, num_classes)
  return nasjax.count_params(arch), nasjax.flops(arch)


def mutate(rng: np.random.Generator, space: SearchSpace, parent, prob: float) -> np.ndarray:
  """``parent`` with each choice redrawn uniformly with probability ``prob``."""
  n = np.asarray(space.num_choices)
  redraw = rng.random(len(n)) < prob
  return np.where(redraw, rng.integers(0, n), np.asarray(parent)).astype(np.int32)


def crossover(rng: np.random.Generator, first, second) -> np.ndarray:
  """Each choice from ``first`` or ``second`` with probability 1/2."""
  return np.where(rng.random(len(first)) < 0.5, first, second).astype(np.int32)


def genetic_generation(rng: np.random.Generator, space: SearchSpace, codes, scores, size: int,
                       config: SposConfig, allowed=lambda code: True) -> np.ndarray:
  """The next generation of SPOS's genetic search (see the module docstring).

  Args:
    rng: the generation's random numbers.
    space: the search space.
    codes: ``(N, L)`` every path scored so far.
    scores: ``(N,)`` their scores (higher is better; NaN is worst).
    size: children wanted (at most ``config.population_size``).
    config: ``parents``, ``mutation_count``, ``crossover_count``, ``mutation_prob``,
      ``max_tries``.
    allowed: ``code -> bool``, the constraints.

  Returns:
    ``(n, L)`` int32 new distinct allowed codes, ``n <= size``: first the mutants, then
    the crossovers, then random codes (fewer only when the draws run out).
  """
  codes = np.asarray(codes, np.int32).reshape(-1, space.length)
  seen = {space.hash(c) for c in codes}
  out: list[np.ndarray] = []

  def breed(make, count):
    goal = min(len(out) + count, size)
    for _ in range(config.max_tries * max(count, 0)):
      if len(out) >= goal:
        return
      child = make()
      if space.has_inactive:
        child = np.asarray(space.canonical(jnp.asarray(child)), np.int32)
      h = space.hash(child)
      if h not in seen and allowed(child):
        seen.add(h)
        out.append(child)

  if len(codes):
    order = np.argsort(-np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf),
                       kind="stable")
    top = codes[order[:config.parents]]
    pick = lambda: top[rng.integers(len(top))]  # noqa: E731
    breed(lambda: mutate(rng, space, pick(), config.mutation_prob), config.mutation_count)
    breed(lambda: crossover(rng, pick(), pick()), config.crossover_count)
  n = np.asarray(space.num_choices)
  breed(lambda: rng.integers(0, n).astype(np.int32), size - len(out))
  return np.stack(out) if out else np.zeros((0, space.length), np.int32)


@flax.struct.dataclass
class SposSearch:
  """The evolution of the current phase.

  Attributes:
    evolution: the ``rea`` strategy's state (``search="aging"``; ``()`` int32 zero for
      the genetic search, whose state is the paths scored so far).
    codes: ``(N, L)`` int32 every path scored so far, in order (rows past ``scored``
      unused).
    scores: ``(N,)`` float32 their shared-weight accuracy.
    scored: ``()`` int32 paths scored.
  """

  evolution: object
  codes: jax.Array
  scores: jax.Array
  scored: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class Spos(oneshot.OneShot):
  """SPOS as a strategy (see the module docstring).

  Attributes:
    space: an ``nb201`` or ``darts`` search space.
    config: a :class:`SposConfig`.
    problem: the task (input shape and classes).
  """

  config: SposConfig
  name = "spos"

  def evolution(self):
    cfg = self.config
    return _evolution(self.space, cfg.population_size, cfg.sample_size, cfg.evolution_batch)

  def init_search(self) -> SposSearch:
    cfg = self.config
    if cfg.search == "aging":
      evo = self.evolution()[0].init(jax.random.key(0))
      n = -(-cfg.cycles // cfg.evolution_batch) * cfg.evolution_batch
    else:
      evo, n = jnp.zeros((), jnp.int32), cfg.cycles
    return SposSearch(evo, jnp.zeros((n, self.space.length), jnp.int32),
                      jnp.full((n,), jnp.nan, jnp.float32), jnp.zeros((), jnp.int32))

  def step_function(self):
    return uniform_step(self.space, self.config)

  def score_function(self):
    """The requests' ``score(weights, codes, data)``: accuracy with the shared weights."""
    cfg = self.config
    return functools.partial(oneshot.score_codes, bn=cfg.bn, calib_batches=cfg.calib_batches,
                             calib_batch_size=cfg.calib_batch_size,
                             max_examples=cfg.eval_examples, impl=cfg.impl)

  def allowed(self, code) -> bool:
    """Whether the stand-alone network of ``code`` meets ``max_params`` and ``max_flops``."""
    cfg = self.config
    if cfg.max_params is None and cfg.max_flops is None:
      return True
    params, flops = network_cost(self.space, tuple(self.problem.input_shape),
                                 int(self.problem.num_classes), tuple(int(c) for c in code))
    return ((cfg.max_params is None or params <= cfg.max_params) and
            (cfg.max_flops is None or flops <= cfg.max_flops))

  def search_ask(self, key, state: oneshot.OneShotState):
    """The evolution's next generation, to score (the ranking once the genetic search
    finds no new allowed path)."""
    if self.config.search == "aging":
      _, ask, _ = self.evolution()
      codes, evolution = ask(key, state.search.evolution)
      state = state.replace(search=state.search.replace(evolution=evolution))
      return work.ScoreShared(state.weights, np.asarray(codes), self.score_function()), state
    search, cfg = state.search, self.config
    done = int(search.scored)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
    codes = genetic_generation(rng, self.space, np.asarray(search.codes)[:done],
                               np.asarray(search.scores)[:done],
                               min(cfg.population_size, cfg.cycles - done), cfg, self.allowed)
    if len(codes):
      return work.ScoreShared(state.weights, codes, self.score_function()), state
    if done == 0:
      raise ValueError(f"spos: no path of the space meets max_params={cfg.max_params} and "
                       f"max_flops={cfg.max_flops} in {cfg.max_tries * cfg.population_size} "
                       "random draws")
    return oneshot.propose(self.end_search(state), cfg.phases)

  def scored(self, key, state, request: work.ScoreShared, result: work.SharedResult):
    """The generation recorded (and told to the aging evolution); after ``cycles``
    paths, the ranking."""
    s, codes = np.asarray(result.scores, np.float64), np.asarray(request.codes, np.int32)
    search = state.search
    if self.config.search == "aging":
      _, _, tell = self.evolution()
      search = search.replace(evolution=tell(key, search.evolution, jnp.asarray(codes),
                                             jnp.asarray(-s, jnp.float32)))
    i = int(search.scored)
    search = search.replace(
        codes=search.codes.at[i:i + len(codes)].set(codes),
        scores=search.scores.at[i:i + len(codes)].set(np.asarray(s, np.float32)),
        scored=search.scored + len(codes))
    state = state.replace(search=search)
    if int(search.scored) < self.config.cycles:
      return state
    return self.end_search(state)

  def end_search(self, state: oneshot.OneShotState) -> oneshot.OneShotState:
    """The phase's ranking of every path scored; the evolution starts afresh."""
    n = int(state.search.scored)
    scores = np.asarray(state.search.scores)[:n]
    state = self.finish_phase(state, np.asarray(state.search.codes)[:n], scores,
                              best_score=float(np.nanmax(scores)))
    return state.replace(search=self.init_search())


register_strategy(
    "spos", Spos, options=SposConfig, spaces=("nb201", "darts"), multi_objective=False,
    jittable=False, needs_problem=True,
    smoke={"space": "nb201", "space_config": {"C": 2, "N": 1},
           "config": {"steps": 4, "chunk_steps": 2, "batch_size": 16, "cycles": 4,
                      "population_size": 2, "parents": 2, "sample_size": 2,
                      "calib_batches": 2,
                      "calib_batch_size": 16, "eval_examples": 64},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="SPOS: uniform single-path supernet training, then a genetic search "
                "(or aging evolution) on shared-weight validation accuracy")
