"""SPOS: single-path one-shot search with uniform sampling (Guo et al., ECCV 2020).

Two stages, as the weight-sharing part of the NAS overview describes:

1. Supernet training: each SGD step trains one path, drawn uniformly from the space
   (every edge's op uniform in NB201), so every path's weights are trained about equally
   and no architecture is favoured before the search.
2. Search: regularized evolution (:class:`~nasjax.search.strategies.evolution.RegularizedEvolution`,
   aging, tournament selection) over paths, where a path's fitness is its validation
   accuracy with the inherited weights after its batch-norm statistics are
   recalibrated on training batches (:func:`nasjax.models.supernet.score_paths`); no
   path is trained.

Every path scored by the evolution joins the ranking the strategy proposes from (best
score first). ``phases > 1`` runs the evolution after each share of the supernet
training, so a run shows how the chosen architecture changes as the supernet trains.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from nasjax.models import supernet as sn_lib
from nasjax.search.strategies import oneshot
from nasjax.search.base import register_strategy
from nasjax.search.strategies.evolution import RegularizedEvolution
from nasjax.search.spaces import SearchSpace


def uniform_paths(space: SearchSpace, key, n: int) -> jax.Array:
  """``(n, L)`` paths drawn uniformly from ``space`` (its ``sample``)."""
  return jax.vmap(space.sample)(jax.random.split(key, n))


def evolve(space: SearchSpace, score, key, *, cycles: int, population_size: int,
           sample_size: int, batch_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """Regularized evolution on a scoring function, maximising the score.

  Args:
    space: the search space.
    score: ``codes (B, L) -> scores (B,)`` (higher is better; NaN marks a failure).
    key: PRNG key.
    cycles: paths scored in all (the first ``population_size`` are random).
    population_size, sample_size: P and S of aging evolution.
    batch_size: children per generation.

  Returns:
    ``(codes (cycles', L), scores (cycles',))`` of every scored path, in order.
  """
  evo = RegularizedEvolution(space, population_size=population_size, sample_size=sample_size,
                             batch_size=batch_size)
  ask, tell = jax.jit(evo.ask), jax.jit(evo.tell)
  state = evo.init(key)
  codes, scores = [], []
  while len(scores) < cycles:
    key, k_ask, k_tell = jax.random.split(key, 3)
    cand, state = ask(k_ask, state)
    s = np.asarray(score(np.asarray(cand)), np.float64)
    state = tell(k_tell, state, cand, jnp.asarray(-s, jnp.float32))
    codes.append(np.asarray(cand))
    scores.append(s)
  return np.concatenate(codes)[:cycles], np.concatenate(scores)[:cycles]


@flax.struct.dataclass
class SposLog:
  """Per-phase records: weight ``step`` at the end of the phase, mean ``train_loss`` and
  ``train_accuracy`` of the phase's steps, ``best_score`` of the phase's evolution."""

  step: jax.Array
  train_loss: jax.Array
  train_accuracy: jax.Array
  best_score: jax.Array

  @classmethod
  def empty(cls, n: int) -> "SposLog":
    nan = jnp.full((n,), jnp.nan, jnp.float32)
    return cls(jnp.zeros((n,), jnp.int32), nan, nan, nan)


@flax.struct.dataclass
class SposState:
  """Attributes:
    supernet: shared weights and batch-norm statistics.
    momentum: ``(P,)`` SGD momentum.
    data_key: ``(2,)`` uint32 key of the batch order, the sampled paths and the evolution.
    step: ``()`` int32 weight steps done.
    phase: ``()`` int32 phases done.
    log: :class:`SposLog`, one row per phase.
    proposals: the ranking proposed from.
    count: ``()`` int32 candidates told.
  """

  supernet: sn_lib.Supernet
  momentum: jax.Array
  data_key: jax.Array
  step: jax.Array
  phase: jax.Array
  log: SposLog
  proposals: oneshot.Proposals
  count: jax.Array


DEFAULT_CONFIG = {**oneshot.COMMON_CONFIG, "weight_decay": 5e-4, "impl": "switch",
                  "cycles": 100, "population_size": 20, "sample_size": 5,
                  "bn": "recalibrate", "calib_batches": 8, "calib_batch_size": 64,
                  "eval_examples": None, "proposals": 64}


@dataclasses.dataclass(eq=False)
class Spos:
  """SPOS as a strategy (see :mod:`nasjax.search.strategies.oneshot` for how ask/tell work).

  Attributes:
    space: an ``nb201`` or ``darts`` search space.
    options: :data:`DEFAULT_CONFIG` keys (missing ones take the defaults).
    data: the data set; loaded from ``options`` when None.
  """

  space: SearchSpace
  options: dict
  data: Any = None
  name = "spos"

  def __post_init__(self):
    self.options = cfg = oneshot.merge_options(
        self.name, self.options, DEFAULT_CONFIG,
        ("cycles", "population_size", "sample_size", "calib_batches", "calib_batch_size",
         "proposals"))
    if cfg["impl"] not in sn_lib.IMPLS:
      raise ValueError(f"impl must be one of {sn_lib.IMPLS}, got {cfg['impl']!r}")
    if cfg["bn"] not in sn_lib.BN_MODES:
      raise ValueError(f"bn must be one of {sn_lib.BN_MODES}, got {cfg['bn']!r}")
    if self.data is None:
      self.data = oneshot.load_data(cfg)
    self.spec = sn_lib.supernet_for_space(self.space, self.data.input_shape,
                                          self.data.num_classes, affine=cfg["affine"],
                                          remat=cfg["remat"])
    self.opt = oneshot.sgd_from_config(cfg)
    self.total = oneshot.total_steps(cfg, len(self.data.y_train))

  def config(self) -> dict:
    """The options, as the run directory records them."""
    return dict(self.options)

  def init(self, key) -> SposState:
    k_net, k_data = jax.random.split(key)
    sn = self.spec.init(k_net)
    z = jnp.zeros((), jnp.int32)
    return SposState(sn, self.opt.init(sn.params),
                     jax.random.key_data(k_data).astype(jnp.uint32), z, z,
                     SposLog.empty(self.options["phases"]),
                     oneshot.Proposals.empty(self.options["proposals"], self.space.length), z)

  def _key(self, state, tag: int):
    return jax.random.fold_in(jax.random.wrap_key_data(state.data_key), tag)

  def train(self, state: SposState, until: int) -> tuple[SposState, float, float]:
    """Uniform single-path steps up to weight step ``until``.

    Returns:
      ``(state, mean loss, mean accuracy)`` of these steps.
    """
    cfg = self.options
    step0 = int(state.step)
    batches = oneshot.BatchStream(self.data.x_train, self.data.y_train, cfg["batch_size"],
                                  self._key(state, 0), start=step0, augment=cfg["augment"])
    k_paths = self._key(state, 1)
    sample = jax.jit(self.space.sample)
    step_fn = oneshot.weight_step_fn(self.opt, True, cfg["impl"])
    sn, mom = jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True),
                                     (state.supernet, state.momentum))
    losses, accs = [], []
    for step in range(step0, until):
      x, y = next(batches)
      path = sample(jax.random.fold_in(k_paths, step))
      lr = np.float32(oneshot.cosine_lr(step, self.total, cfg["learning_rate"],
                                        cfg["min_learning_rate"]))
      sn, mom, loss, acc = step_fn(sn, mom, x, y, path, lr)
      losses.append(loss)
      accs.append(acc)
    mean = lambda v: float(np.mean(np.asarray(v))) if v else float("nan")
    return (state.replace(supernet=sn, momentum=mom, step=jnp.asarray(until, jnp.int32)),
            mean(losses), mean(accs))

  def score(self, state: SposState, codes) -> np.ndarray:
    """Shared-weight validation accuracy of each code (see :func:`score_paths`)."""
    cfg = self.options
    return sn_lib.score_paths(state.supernet, codes, self.data, bn=cfg["bn"],
                              calib_batches=cfg["calib_batches"],
                              calib_batch_size=cfg["calib_batch_size"],
                              max_examples=cfg["eval_examples"], impl=cfg["impl"],
                              seed=self.options["data_seed"])

  def search(self, state: SposState) -> tuple[np.ndarray, np.ndarray]:
    """Regularized evolution on the current supernet: every scored code and its score."""
    cfg = self.options
    key = jax.random.fold_in(self._key(state, 2), int(state.phase))
    return evolve(self.space, lambda c: self.score(state, c), key, cycles=cfg["cycles"],
                  population_size=cfg["population_size"], sample_size=cfg["sample_size"])

  def ask(self, key, state: SposState):
    """Run the next phase (train, then evolve) if any; propose the best-ranked path not
    proposed yet.

    Returns:
      ``(codes (1, L) int32, state)``.
    """
    del key  # the search is deterministic given init's key
    phase = int(state.phase)
    if phase < self.options["phases"]:
      state, loss, acc = self.train(state, oneshot.phase_end(phase, self.options["phases"],
                                                             self.total))
      codes, scores = self.search(state)
      log = state.log
      log = log.replace(step=log.step.at[phase].set(state.step),
                        train_loss=log.train_loss.at[phase].set(loss),
                        train_accuracy=log.train_accuracy.at[phase].set(acc),
                        best_score=log.best_score.at[phase].set(float(np.nanmax(scores))))
      state = state.replace(phase=state.phase + 1, log=log,
                            proposals=oneshot.Proposals.from_scores(
                                codes, np.nan_to_num(scores, nan=-np.inf),
                                self.options["proposals"]))
    return oneshot.propose(state, self.options["phases"])

  def tell(self, key, state: SposState, candidates, fitness) -> SposState:
    del key, fitness
    return oneshot.count_told(state, candidates)


def _make(space: SearchSpace, config: dict) -> Spos:
  return Spos(space, dict(config))


register_strategy(
    "spos", _make, spaces=("nb201", "darts"), multi_objective=False, jittable=False,
    default_config=DEFAULT_CONFIG,
    smoke={"space": "nb201", "space_config": {"C": 2, "N": 1},
           "config": {"epochs": 1.0, "max_steps": 4, "data_limit": 256, "batch_size": 16,
                      "cycles": 4, "population_size": 2, "sample_size": 2,
                      "calib_batches": 2, "calib_batch_size": 16, "eval_examples": 64},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="SPOS: uniform single-path supernet training, then regularized evolution "
                "on shared-weight validation accuracy")
