"""Regularized evolution (Real et al., "Regularized Evolution for Image Classifier
Architecture Search", AAAI 2019; aging evolution).

A population of ``P`` architectures, first filled with random samples. Each cycle picks
``S`` members uniformly at random (with replacement), mutates the best of them (one
position of its code changed to a different value) and adds the child, removing the
*oldest* member rather than the worst, so that only architectures that keep being
rediscovered survive. NAS-Bench-201 runs it with ``P = 10``, ``S = 3``.

Here the population is a ring buffer of codes: the slot of the next child is always the
oldest one. A failed child (NaN fitness) does not join the population, so it is never a
parent. With several objectives the tournament prefers the sampled member dominated by
the fewest population members, then the one best on the first objective; with one
objective this is exactly the fittest sampled member (the first one on a tie).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from nasjax.search.base import fitness_matrix, register_strategy
from nasjax.search.options import Options, integer, option
from nasjax.search.pareto import domination_counts
from nasjax.search.spaces import SearchSpace


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvolutionConfig(Options):
  """Attributes:
    population_size: P.
    sample_size: S, the tournament size (at most P).
    batch_size: children per ``ask`` (each from its own tournament).
  """

  strategy = "rea"
  population_size: int = option(10, integer(1))
  sample_size: int = option(3, integer(1))
  batch_size: int = option(1, integer(1))

  def check(self) -> None:
    # Sampling with replacement would allow S > P, but such a tournament is all but
    # certain to hold the best member, which turns aging evolution into greedy search.
    if self.sample_size > self.population_size:
      raise ValueError(f"{self.strategy}: sample_size={self.sample_size} must be at most "
                       f"population_size={self.population_size}")


@flax.struct.dataclass
class EvolutionState:
  """The state of regularized evolution.

  Attributes:
    population: ``(P, L)`` int32 codes; slots ``>= size`` are unused.
    fitness: ``(P, M)`` float32 fitness of the members (NaN in unused slots).
    size: ``()`` int32, number of members (at most P).
    inserted: ``()`` int32, children that joined; the next one goes to slot
      ``inserted % P``, the oldest member's.
    count: ``()`` int32, candidates told (failed ones included).
  """

  population: jax.Array
  fitness: jax.Array
  size: jax.Array
  inserted: jax.Array
  count: jax.Array


@dataclasses.dataclass(frozen=True)
class RegularizedEvolution:
  """Aging evolution over search-space codes.

  Attributes:
    space: the search space.
    config: an :class:`EvolutionConfig`; ``config.num_objectives`` is M, the length of
      the fitness vectors.
  """

  space: SearchSpace
  config: EvolutionConfig = EvolutionConfig()
  name = "rea"
  # NB201's REA script drops the child whose time would pass the budget
  # (nasjax.search.bench.charged_prefix).
  budget_crossing = "drop"

  def init(self, key: jax.Array) -> EvolutionState:
    del key  # the population starts empty; ask fills it with random samples
    P, L, M = self.config.population_size, self.space.length, self.config.num_objectives
    zero = jnp.zeros((), jnp.int32)
    return EvolutionState(jnp.zeros((P, L), jnp.int32), jnp.full((P, M), jnp.nan, jnp.float32),
                          zero, zero, zero)

  def _child(self, words: jax.Array, state: EvolutionState, rank: jax.Array) -> jax.Array:
    space, S = self.space, self.config.sample_size
    random_code = space.sample_bits(words[:space.sample_words])
    tournament = words[space.sample_words:space.sample_words + S]
    idx = (tournament % jnp.maximum(state.size, 1).astype(jnp.uint32)).astype(jnp.int32)
    r = rank[idx]
    first = jnp.where(r == r.min(), state.fitness[idx, 0], jnp.inf)
    parent = state.population[idx[jnp.argmin(first)]]
    child = space.mutate_bits(words[space.sample_words + S:], parent)
    return jnp.where(state.size >= self.config.population_size, child, random_code)

  def ask(self, key: jax.Array, state: EvolutionState) -> tuple[jax.Array, EvolutionState]:
    """Random codes until the population is full, then mutated tournament winners.

    Returns:
      ``(codes (batch_size, L) int32, state)``.
    """
    rank = domination_counts(state.fitness)
    width = self.space.sample_words + self.config.sample_size + self.space.mutate_words
    # One PRNG call for the whole generation (see SearchSpace.sample_bits).
    words = jax.random.bits(key, (self.config.batch_size, width), jnp.uint32)
    return jax.vmap(lambda w: self._child(w, state, rank))(words), state

  def tell(self, key, state: EvolutionState, candidates, fitness) -> EvolutionState:
    """Add each successfully evaluated candidate in place of the oldest member."""
    del key
    P = self.config.population_size
    f = fitness_matrix(fitness, self.config.num_objectives)
    codes = jnp.asarray(candidates, jnp.int32)

    def add(s: EvolutionState, item):
      code, fit = item
      ok = jnp.all(jnp.isfinite(fit))
      slot = s.inserted % P
      return s.replace(
          population=jnp.where(ok, s.population.at[slot].set(code), s.population),
          fitness=jnp.where(ok, s.fitness.at[slot].set(fit), s.fitness),
          size=jnp.minimum(s.size + ok, P),
          inserted=s.inserted + ok), None

    state, _ = jax.lax.scan(add, state, (codes, f))
    return state.replace(count=state.count + codes.shape[0])


register_strategy(
    "rea", RegularizedEvolution, options=EvolutionConfig, spaces=("*",), multi_objective=True,
    jittable=True, smoke={"config": {"population_size": 3, "sample_size": 2}, "max_evals": 5},
    asynchronous=True,  # each result joins the population as it arrives (Real et al. 2019)
    description="regularized (aging) evolution, Real et al. 2019")
