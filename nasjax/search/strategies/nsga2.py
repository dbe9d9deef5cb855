"""NSGA-II over search-space codes (Deb et al., "A Fast and Elitist Multiobjective Genetic
Algorithm: NSGA-II", IEEE TEC 2002): the multi-objective baseline LEMONADE is compared to.

A population of ``P`` codes. Each generation breeds ``B`` children: two binary tournaments
pick the parents (lower non-domination rank wins, then larger crowding distance), uniform
crossover mixes them with probability ``crossover_prob``, and one position of the result
is mutated. The children are evaluated and the next population is the best ``P`` of
parents and children, ranked by non-dominated front and, within the last front that
fits, by crowding distance (elitist environmental selection). The first generations are
uniform random codes until the population is full. Failed evaluations (NaN fitness) rank
behind every finite point and are never kept when anything else fits.

The state is all arrays and ``ask``/``tell`` are pure ``jax.numpy``, so whole runs go
under ``jax.lax.scan`` and many seeds under ``jax.vmap``. Ranks and crowding distances
come from :mod:`nasjax.search.pareto` (its jittable versions, with fixed shapes).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from nasjax.search.base import fitness_matrix, register_strategy
from nasjax.search.options import Options, integer, number, option
from nasjax.search.pareto import crowding_distances, front_ranks
from nasjax.search.spaces import SearchSpace


@flax.struct.dataclass
class NSGA2State:
  """Attributes:
    population: ``(P, L)`` int32 codes; slots ``>= size`` are unused.
    fitness: ``(P, M)`` float32 (NaN in unused slots).
    rank: ``(P,)`` int32 front ranks within the population.
    crowding: ``(P,)`` float32 crowding distances within the population.
    size: ``()`` int32, number of members.
    count: ``()`` int32, candidates told.
  """

  population: jax.Array
  fitness: jax.Array
  rank: jax.Array
  crowding: jax.Array
  size: jax.Array
  count: jax.Array


@dataclasses.dataclass(frozen=True, kw_only=True)
class NSGA2Config(Options):
  """Attributes:
    population_size: P.
    batch_size: B, children per generation (None: P, the classic setting).
    crossover_prob: probability that a child is a uniform crossover of its two parents
      (otherwise a copy of the first) before its mutation.
  """

  strategy = "nsga2"
  population_size: int = option(20, integer(1))
  batch_size: int | None = option(None, integer(1, none=True))
  crossover_prob: float = option(0.9, number(0, 1))


@dataclasses.dataclass(frozen=True)
class NSGA2:
  """NSGA-II over the codes of a search space.

  Attributes:
    space: the search space.
    config: an :class:`NSGA2Config`; ``config.num_objectives`` is M.
  """

  space: SearchSpace
  config: NSGA2Config = NSGA2Config()
  name = "nsga2"

  @property
  def batch_size(self) -> int:
    """B, children per generation."""
    cfg = self.config
    return cfg.population_size if cfg.batch_size is None else cfg.batch_size

  def init(self, key: jax.Array) -> NSGA2State:
    del key  # the first generations are random samples drawn by ask
    P, L, M = self.config.population_size, self.space.length, self.config.num_objectives
    zero = jnp.zeros((), jnp.int32)
    return NSGA2State(jnp.zeros((P, L), jnp.int32), jnp.full((P, M), jnp.nan, jnp.float32),
                      jnp.full((P,), P, jnp.int32), jnp.zeros((P,), jnp.float32), zero, zero)

  def _tournament(self, key, state: NSGA2State) -> jax.Array:
    i, j = jax.random.randint(key, (2,), 0, jnp.maximum(state.size, 1))
    better_i = (state.rank[i] < state.rank[j]) | (
        (state.rank[i] == state.rank[j]) & (state.crowding[i] >= state.crowding[j]))
    return jnp.where(better_i, i, j)

  def _child(self, key, state: NSGA2State) -> jax.Array:
    k_a, k_b, k_x, k_mask, k_mut, k_rand = jax.random.split(key, 6)
    a = state.population[self._tournament(k_a, state)]
    b = state.population[self._tournament(k_b, state)]
    mix = jax.random.bernoulli(k_mask, 0.5, a.shape)
    crossed = jnp.where(jax.random.bernoulli(k_x, self.config.crossover_prob),
                        jnp.where(mix, a, b), a)
    child = self.space.mutate(k_mut, self.space.canonical(crossed))
    return jnp.where(state.size >= self.config.population_size, child,
                     self.space.sample(k_rand))

  def ask(self, key: jax.Array, state: NSGA2State) -> tuple[jax.Array, NSGA2State]:
    """Random codes until the population is full, then bred children.

    Returns:
      ``(codes (batch_size, L) int32, state)``.
    """
    keys = jax.random.split(key, self.batch_size)
    return jax.vmap(lambda k: self._child(k, state))(keys), state

  def tell(self, key, state: NSGA2State, candidates, fitness) -> NSGA2State:
    """Keep the best ``P`` of the population and the children (rank, then crowding)."""
    del key
    f = fitness_matrix(fitness, self.config.num_objectives)
    codes = jnp.asarray(candidates, jnp.int32)
    P = self.config.population_size
    pool_codes = jnp.concatenate([state.population, codes])
    pool_f = jnp.concatenate([state.fitness, f])
    member = jnp.concatenate([jnp.arange(P) < state.size, jnp.ones(codes.shape[0], bool)])
    # Unused slots are NaN like failures but must never win over a failure: push them last.
    rank = front_ranks(pool_f)
    crowd = crowding_distances(pool_f, rank)
    order = jnp.lexsort((-crowd, rank, (~member).astype(jnp.int32)))
    keep = order[:P]
    kept_member = member[keep]
    new_f = jnp.where(kept_member[:, None], pool_f[keep], jnp.nan)
    new_rank = front_ranks(new_f)
    new_crowd = crowding_distances(new_f, new_rank)
    size = jnp.minimum(member.sum(), P).astype(jnp.int32)
    return state.replace(population=jnp.where(kept_member[:, None], pool_codes[keep], 0),
                         fitness=new_f, rank=new_rank, crowding=new_crowd, size=size,
                         count=state.count + codes.shape[0])


register_strategy(
    "nsga2", NSGA2, options=NSGA2Config, spaces=("*",), multi_objective=True, jittable=True,
    smoke={"config": {"population_size": 4}, "max_evals": 8},
    description="NSGA-II, elitist non-dominated sorting with crowding distance (Deb et al. 2002)")
