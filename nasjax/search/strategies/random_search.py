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
from nasjax.search.spaces import SearchSpace


@flax.struct.dataclass
class RandomState:
  """Attributes: count: ``()`` int32, candidates told so far."""

  count: jax.Array


@dataclasses.dataclass(frozen=True)
class RandomSearch:
  """Propose ``batch_size`` uniform samples per generation.

  Attributes:
    space: the search space.
    batch_size: candidates per ``ask``.
  """

  space: SearchSpace
  batch_size: int = 1
  name = "random"

  def __post_init__(self):
    if not isinstance(self.batch_size, int) or self.batch_size < 1:
      raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")

  def config(self) -> dict:
    return {"batch_size": self.batch_size}

  def init(self, key: jax.Array) -> RandomState:
    del key  # nothing random to initialise
    return RandomState(count=jnp.zeros((), jnp.int32))

  def ask(self, key: jax.Array, state: RandomState) -> tuple[jax.Array, RandomState]:
    """Returns ``(codes (batch_size, L) int32, state)``."""
    words = jax.random.bits(key, (self.batch_size, self.space.sample_words), jnp.uint32)
    return jax.vmap(self.space.sample_bits)(words), state

  def tell(self, key, state: RandomState, candidates, fitness) -> RandomState:
    del key, fitness  # random search does not learn
    return state.replace(count=state.count + jnp.shape(candidates)[0])


register_strategy(
    "random", lambda space, config: RandomSearch(space, batch_size=config["batch_size"]),
    spaces=("*",), multi_objective=True, jittable=True,
    default_config={"batch_size": 1},
    smoke={"config": {"batch_size": 2}, "max_evals": 4},
    description="uniform random sampling of the search space")
