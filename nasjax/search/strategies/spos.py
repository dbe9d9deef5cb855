"""SPOS: single-path one-shot search with uniform sampling (Guo et al., ECCV 2020).

Two stages, as the weight-sharing part of the NAS overview describes:

1. Supernet training: each SGD step trains one path, drawn uniformly from the space
   (every edge's op uniform in NB201) with the step's key, so every path's weights are
   trained about equally and no architecture is favoured before the search.
2. Search: regularized evolution (the registered ``rea`` strategy: aging, tournament
   selection) over paths, where a path's fitness is its validation accuracy with the
   inherited weights after its batch-norm statistics are recalibrated on training
   batches (:func:`nasjax.models.supernet.score_paths`); no path is trained. Each
   generation of ``evolution_batch`` children is one
   :class:`~nasjax.search.work.ScoreShared`, the evolution's state kept in the strategy
   state.

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

from nasjax.models import supernet as sn_lib
from nasjax.search import work
from nasjax.search.base import make_strategy, register_strategy
from nasjax.search.options import integer, number, one_of, option
from nasjax.search.spaces import SearchSpace
from nasjax.search.strategies import oneshot


@dataclasses.dataclass(frozen=True, kw_only=True)
class SposConfig(oneshot.OneShotConfig):
  """SPOS's options: those of :class:`~nasjax.search.strategies.oneshot.OneShotConfig`
  and

  Attributes:
    impl: how a path runs (:data:`nasjax.models.supernet.IMPLS`).
    cycles: paths the evolution scores per phase (the first ``population_size`` random).
    population_size, sample_size: P and S of aging evolution.
    evolution_batch: children per generation (one scoring request each).
    bn: batch norm when scoring (:data:`nasjax.models.supernet.BN_MODES`).
    calib_batches, calib_batch_size: the recalibration batches.
    eval_examples: score on the first this many validation examples (None: all).
  """

  strategy = "spos"
  weight_decay: float = option(5e-4, number(0))
  impl: str = option("switch", one_of(*sn_lib.IMPLS))
  cycles: int = option(100, integer(1))
  population_size: int = option(20, integer(1))
  sample_size: int = option(5, integer(1))
  evolution_batch: int = option(1, integer(1))
  bn: str = option("recalibrate", one_of(*sn_lib.BN_MODES))
  calib_batches: int = option(8, integer(1))
  calib_batch_size: int = option(64, integer(1))
  eval_examples: int | None = option(None, integer(1, none=True))

  def check(self) -> None:
    super().check()
    if self.sample_size > self.population_size:
      raise ValueError(f"spos: option sample_size ({self.sample_size}) must be at most "
                       f"population_size ({self.population_size})")


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


@flax.struct.dataclass
class SposSearch:
  """The evolution of the current phase.

  Attributes:
    evolution: the ``rea`` strategy's state.
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
    evo = self.evolution()[0]
    n = -(-cfg.cycles // cfg.evolution_batch) * cfg.evolution_batch
    return SposSearch(evo.init(jax.random.key(0)), jnp.zeros((n, self.space.length), jnp.int32),
                      jnp.full((n,), jnp.nan, jnp.float32), jnp.zeros((), jnp.int32))

  def step_function(self):
    return uniform_step(self.space, self.config)

  def score_function(self):
    """The requests' ``score(weights, codes, data)``: accuracy with the shared weights."""
    cfg = self.config
    return functools.partial(oneshot.score_codes, bn=cfg.bn, calib_batches=cfg.calib_batches,
                             calib_batch_size=cfg.calib_batch_size,
                             max_examples=cfg.eval_examples, impl=cfg.impl)

  def search_ask(self, key, state: oneshot.OneShotState):
    """The evolution's next generation, to score."""
    _, ask, _ = self.evolution()
    codes, evolution = ask(key, state.search.evolution)
    state = state.replace(search=state.search.replace(evolution=evolution))
    return work.ScoreShared(state.weights, np.asarray(codes), self.score_function()), state

  def scored(self, key, state, request: work.ScoreShared, result: work.SharedResult):
    """The generation told to the evolution; after ``cycles`` paths, the ranking."""
    _, _, tell = self.evolution()
    s, codes = np.asarray(result.scores, np.float64), np.asarray(request.codes, np.int32)
    search = state.search
    i = int(search.scored)
    search = search.replace(
        evolution=tell(key, search.evolution, jnp.asarray(codes), jnp.asarray(-s, jnp.float32)),
        codes=search.codes.at[i:i + len(codes)].set(codes),
        scores=search.scores.at[i:i + len(codes)].set(np.asarray(s, np.float32)),
        scored=search.scored + len(codes))
    if int(search.scored) < self.config.cycles:
      return state.replace(search=search)
    n = self.config.cycles
    scores = np.asarray(search.scores)[:n]
    state = self.finish_phase(state, np.asarray(search.codes)[:n], scores,
                              best_score=float(np.nanmax(scores)))
    return state.replace(search=self.init_search())


register_strategy(
    "spos", Spos, options=SposConfig, spaces=("nb201", "darts"), multi_objective=False,
    jittable=False, needs_problem=True,
    smoke={"space": "nb201", "space_config": {"C": 2, "N": 1},
           "config": {"steps": 4, "chunk_steps": 2, "batch_size": 16, "cycles": 4,
                      "population_size": 2, "sample_size": 2, "calib_batches": 2,
                      "calib_batch_size": 16, "eval_examples": 64},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="SPOS: uniform single-path supernet training, then regularized evolution "
                "on shared-weight validation accuracy")
