"""Random search: every candidate drawn uniformly from the search space.

The baseline every NAS method must beat (Li & Talwalkar, 2019; NAS-Bench-201's
``RANDOM``): ``sample`` draws each code position uniformly, so on NB201 every edge op is
uniform and duplicates are allowed (and charged again under NB201's protocol).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from nasjax.search.base import register_strategy
from nasjax.search.options import Options, integer, option
from nasjax.search.spaces import SearchSpace


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomConfig(Options):
  """Attributes: batch_size: candidates per ``ask``."""

  strategy = "random"
  batch_size: int = option(1, integer(1))


@flax.struct.dataclass
class RandomState:
  """Attributes: count: ``()`` int32, candidates told so far."""

  count: jax.Array


@dataclasses.dataclass(frozen=True)
class RandomSearch:
  """Propose ``config.batch_size`` uniform samples per generation.

  Attributes:
    space: the search space.
    config: a :class:`RandomConfig`.
  """

  space: SearchSpace
  config: RandomConfig = RandomConfig()
  name = "random"
  # NB201's random-search script drops the query that would pass its time budget
  # (nasjax.search.bench.charged_prefix).
  budget_crossing = "drop"

  def init(self, key: jax.Array) -> RandomState:
    del key  # nothing random to initialise
    return RandomState(count=jnp.zeros((), jnp.int32))

  def ask(self, key: jax.Array, state: RandomState) -> tuple[jax.Array, RandomState]:
    """Returns ``(codes (batch_size, L) int32, state)``."""
    words = jax.random.bits(key, (self.config.batch_size, self.space.sample_words),
                            jnp.uint32)
    return jax.vmap(self.space.sample_bits)(words), state

  def tell(self, key, state: RandomState, candidates, fitness) -> RandomState:
    del key, fitness  # random search does not learn
    return state.replace(count=state.count + jnp.shape(candidates)[0])


register_strategy(
    "random", RandomSearch, options=RandomConfig, spaces=("*",), multi_objective=True,
    jittable=True, smoke={"config": {"batch_size": 2}, "max_evals": 4},
    asynchronous=True,  # each sample is independent of the results
    description="uniform random sampling of the search space")
