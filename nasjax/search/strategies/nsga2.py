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
are computed here with fixed shapes; :mod:`nasjax.search.pareto` holds the host-side
versions they agree with.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from nasjax.search.base import fitness_matrix, register_strategy
from nasjax.search.options import Options, integer, number, option
from nasjax.search.spaces import SearchSpace


def front_ranks(F: jax.Array) -> jax.Array:
  """Non-domination rank of every point (0 = non-dominated), jittable.

  Args:
    F: ``(n, m)`` objective values; rows with NaN are failed points.

  Returns:
    ``(n,)`` int32 ranks; failed points get ``n`` (behind every front).
  """
  n = F.shape[0]
  ok = ~jnp.isnan(F).any(axis=1)
  le = jnp.all(F[:, None, :] <= F[None, :, :], axis=-1)
  lt = jnp.any(F[:, None, :] < F[None, :, :], axis=-1)
  D = le & lt & ok[:, None] & ok[None, :]

  def cond(carry):
    _, remaining, _ = carry
    return remaining.any()

  def body(carry):
    rank, remaining, r = carry
    dominated = jnp.any(D & remaining[:, None], axis=0)
    current = remaining & ~dominated
    return jnp.where(current, r, rank), remaining & ~current, r + 1

  rank0 = jnp.full((n,), n, jnp.int32)
  rank, _, _ = jax.lax.while_loop(cond, body, (rank0, ok, jnp.int32(0)))
  return rank


def crowding_distances(F: jax.Array, rank: jax.Array) -> jax.Array:
  """NSGA-II crowding distance of every point within its own front, jittable.

  Per objective, the gap between a point's neighbours in its front, divided by the
  front's range in that objective; the extreme points of a front get ``inf``.

  Args:
    F: ``(n, m)`` objective values.
    rank: ``(n,)`` front ranks from :func:`front_ranks`.

  Returns:
    ``(n,)`` float32 distances (0 for failed points).
  """
  n = F.shape[0]
  ok = ~jnp.isnan(F).any(axis=1)
  Fz = jnp.where(ok[:, None], F, 0.0).astype(jnp.float32)
  same = rank[:, None] == rank[None, :]

  def one(f):
    order = jnp.lexsort((f, rank))  # by rank, then by value
    fs, rs = f[order], rank[order]
    prev_ok = jnp.concatenate([jnp.array([False]), rs[1:] == rs[:-1]])
    next_ok = jnp.concatenate([rs[:-1] == rs[1:], jnp.array([False])])
    prev_f = jnp.concatenate([fs[:1], fs[:-1]])
    next_f = jnp.concatenate([fs[1:], fs[-1:]])
    lo = jnp.min(jnp.where(same, f[None, :], jnp.inf), axis=1)[order]
    hi = jnp.max(jnp.where(same, f[None, :], -jnp.inf), axis=1)[order]
    span = hi - lo
    gap = jnp.where(span > 0, (next_f - prev_f) / jnp.where(span > 0, span, 1.0), 0.0)
    d = jnp.where(prev_ok & next_ok, gap, jnp.inf)
    return jnp.zeros(n, jnp.float32).at[order].set(d)

  dist = jax.vmap(one, in_axes=1)(Fz).sum(axis=0)
  return jnp.where(ok, dist, 0.0)


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
