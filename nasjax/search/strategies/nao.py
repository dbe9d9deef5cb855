"""Neural Architecture Optimization (Luo et al., "Neural Architecture Optimization",
NeurIPS 2018): search by gradient ascent in a learned continuous embedding.

Algorithm 1 of the paper, as an ask/tell strategy over search-space codes:

1. ``ask`` first proposes ``seed_size`` distinct random architectures (``top_k`` per
   ``ask``).
2. ``tell`` adds the evaluated architectures to the set ``X`` and, once the seeds are
   told, trains the encoder, predictor and decoder
   (:class:`~nasjax.search.strategies.nao_model.NAOModel`) jointly on all of ``X`` for
   ``epochs`` epochs, continuing from the previous parameters. Scores are the negated
   fitness, min-max normalised over ``X`` as NAO normalises accuracies.
3. Every later ``ask`` takes the ``top_k`` best architectures of ``X``, moves the
   representation of each along the predictor's gradient with step ``eta``, ``2 eta``,
   ... ``max_steps * eta``, and proposes, per seed, the first decoded architecture that
   is neither in ``X`` nor proposed for a better seed (codes are compared up to the
   space's symmetries, :meth:`~nasjax.search.strategies.nao_model.TokenScheme.canonical`).
   A seed whose steps find nothing new is replaced by a new random architecture.

Options beyond the paper (the registered defaults, :class:`NAOConfig`, use them; the
``paper`` preset, :data:`PAPER`, restores NAO's choices): ``select="pool"`` decodes
every step of the ``pool_seeds`` best architectures and proposes the ``top_k`` new
distinct ones that the predictor scores highest (the predictor filters all
gradient-step proposals instead of taking the first new one per seed);
``fallback="predicted"`` replaces a proposal the steps cannot fill by the predictor's
best of ``fallback_draws`` uniform new architectures instead of a uniform one;
``target="rank"`` trains the predictor on rank scores instead of min-max ones. The
defaults also halve ``top_k`` (5) and ``epochs`` (50).

The state is a pytree of fixed shapes: ``X`` lives in a buffer of ``capacity`` rows with
a count, every growing quantity is a mask over it (training runs only the batches that
hold evaluated rows), the steps of all seeds are decoded at once and the first new one
picked by a scan, and the random fallback is drawn in the program. So ``ask`` and
``tell`` are jittable, and ``nasjax bench`` runs many seeds as one vectorised program.

NAO-WS (:class:`NAOWS`, strategy ``nao_ws``) is the weight-sharing search of the paper's
§3.5: a pool of ``pool_size`` architectures shares the weights of a supernet of the
space. Each of ``iterations`` iterations trains the shared weights on the pool (each
step trains one architecture drawn uniformly from the pool), scores every architecture
of the pool by its validation accuracy with the shared weights, and, but after the last,
trains the encoder-predictor-decoder further on those scores and replaces the worst
``nao_top_k`` architectures of the pool by the new ones its gradient steps from the best
ones decode. Nothing restarts between iterations: the shared weights and their cosine
schedule run on through all ``steps``, and the encoder-predictor-decoder is one model
trained further at each renewal (only its Adam state is fresh), as in the paper's code.
The evaluator does the work on the shared weights (:mod:`nasjax.search.work`);
after the last iteration the pool is proposed best first, and the runner's evaluator
measures each proposal.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.models import supernet as sn_lib
from nasjax.search import work
from nasjax.search.base import register_strategy, select_objective
from nasjax.search.options import Options, boolean, integer, number, one_of, option
from nasjax.search.spaces import SearchSpace
from nasjax.search.strategies import oneshot
from nasjax.search.strategies.nao_model import NAOModel

SELECT = ("first", "predicted", "pool")
FALLBACKS = ("random", "predicted")
TARGETS = ("minmax", "rank")
MODEL_OPTIONS = ("embed_dim", "hidden", "mlp_layers", "mlp_hidden", "trade_off",
                 "learning_rate", "weight_decay", "grad_clip", "batch_size")


# NAO's own proposal rules and training: the ``paper`` preset. The registered defaults
# differ (chosen among five settings on NAS-Bench-201's CIFAR-100 alone,
# docs/results/nao.md): the predictor as a filter over all steps, the predictor's best
# random cell as the fallback, rank targets, and 5 proposals per generation with 50
# epochs per ``tell``, as much training as 10 with 100.
PAPER = {"select": "first", "pool_seeds": 0, "fallback": "random", "target": "minmax",
         "top_k": 10, "epochs": 100}


@dataclasses.dataclass(frozen=True, kw_only=True)
class NAOConfig(Options):
  """NAO's options. The defaults are the registered ones (see the module docstring);
  the ``paper`` preset (:data:`PAPER`) holds NAO's own choices where they differ.

  Attributes:
    seed_size: random architectures evaluated before the first model (rounded up to a
      multiple of ``top_k``: the seed phase is ``ceil(seed_size / top_k)`` asks).
    top_k: seeds per ``ask`` (the candidates proposed per generation).
    step_size: eta.
    max_steps: most step multiples tried per seed.
    epochs: training epochs after each ``tell``.
    objective: which fitness column is optimised.
    unlabeled: random architectures, drawn afresh at each ``tell``, added to the
      reconstruction loss only (0 in NAO; the semi-supervised extension of its authors'
      SemiNAS), so the decoder also learns architectures that were never evaluated.
    select: which new candidates of the steps to propose: ``"first"`` (per seed, the
      smallest step, NAO), ``"predicted"`` (per seed, the one whose own encoding the
      predictor scores highest) or ``"pool"`` (the ``top_k`` new distinct architectures
      that the predictor scores highest among all steps of all seeds: the predictor as a
      filter over every gradient-step proposal, so a seed may yield several proposals
      or none).
    pool_seeds: with ``select="pool"``, how many of the best architectures are stepped
      from to fill the pool (0: ``top_k``); the other selections step from ``top_k``.
    fallback: how a proposal that no step found is replaced: ``"random"`` (a uniform new
      architecture, NAO) or ``"predicted"`` (the new architecture that the predictor
      scores highest among ``fallback_draws`` uniform ones; not in NAO). The seed phase
      is uniform either way.
    fallback_draws: uniform architectures scored for the ``"predicted"`` fallback.
    target: how fitness becomes the predictor's target, see :func:`normalised_scores`
      (``"minmax"`` in NAO).
    capacity: C, the most evaluated architectures kept (the state's buffer size). A
      search should tell at most C candidates; later ones are neither trained on nor
      known as evaluated.
    embed_dim, hidden, mlp_layers, mlp_hidden, trade_off, learning_rate, weight_decay,
      grad_clip, batch_size: the model and its training
      (:class:`~nasjax.search.strategies.nao_model.NAOModel`).
  """

  strategy = "nao"
  presets = {"paper": PAPER}
  seed_size: int = option(20, integer(1))
  top_k: int = option(5, integer(1))
  step_size: float = option(1.0, number(0, open_min=True))
  max_steps: int = option(20, integer(1))
  epochs: int = option(50, integer(1))
  objective: int = option(0, integer(0))
  unlabeled: int = option(0, integer(0))
  select: str = option("pool", one_of(*SELECT))
  pool_seeds: int = option(0, integer(0))
  fallback: str = option("predicted", one_of(*FALLBACKS))
  fallback_draws: int = option(256, integer(1))
  target: str = option("rank", one_of(*TARGETS))
  capacity: int = option(256, integer(1))
  embed_dim: int = option(32, integer(1))
  hidden: int = option(64, integer(1))
  mlp_layers: int = option(1, integer(0))
  mlp_hidden: int = option(64, integer(1))
  trade_off: float = option(0.8, number(0, 1))
  learning_rate: float = option(0.005, number(0, open_min=True))
  weight_decay: float = option(1e-4, number(0))
  grad_clip: float = option(5.0, number(0, open_min=True))
  batch_size: int = option(32, integer(1))

  def check(self) -> None:
    if self.capacity < self.seed_size:
      raise ValueError(f"{self.strategy}: capacity {self.capacity} is below seed_size "
                       f"{self.seed_size}")
    if self.objective >= self.num_objectives:
      raise ValueError(f"{self.strategy}: objective {self.objective} is outside the "
                       f"{self.num_objectives} objectives")


SMOKE_CONFIG = {"seed_size": 4, "top_k": 2, "max_steps": 4, "epochs": 5, "embed_dim": 8,
                "hidden": 16, "mlp_hidden": 16, "batch_size": 8, "capacity": 16}


@flax.struct.dataclass
class NAOState:
  """Attributes:
    params: the model's parameters (flax variables).
    opt_state: Adam's state.
    codes: ``(C, L)`` int32 codes of the told candidates, in order, in a buffer of the
      strategy's capacity C (rows from ``count`` on are padding).
    fitness: ``(C,)`` float32 their fitness (minimised; NaN for failures and padding).
    count: ``()`` int32, candidates told (only the first C are kept).
    metrics: ``(4,)`` float32 last training epoch's loss, mse, nll, token accuracy.
    stepped: ``()`` int32, proposals found by gradient steps.
    fallback: ``()`` int32, proposals drawn at random because no step found a new one.
  """

  params: Any
  opt_state: Any
  codes: jax.Array
  fitness: jax.Array
  count: jax.Array
  metrics: jax.Array
  stepped: jax.Array
  fallback: jax.Array

  @property
  def told(self) -> jax.Array:
    """``(C,)`` bool, the rows of ``codes`` that hold told candidates."""
    return jnp.arange(self.fitness.shape[0]) < self.count


def normalised_scores(fitness: jax.Array, method: str = "minmax",
                      mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``(scores, weights)`` of a fitness vector ``(N,)``: scores in [0, 1], 1 the best.

  ``"minmax"`` (NAO): ``(max - f) / (max - min)`` over the finite values (0.5 everywhere
  when they are all equal). ``"rank"``: the rank among the finite values divided by
  their count minus one (ties share their mean rank), which spreads the scores evenly
  however skewed the fitness is. Weight 0 (and score 0) where the fitness is not finite
  or ``mask`` (``(N,)`` bool, default all true) is false. Traceable.
  """
  if method not in TARGETS:
    raise ValueError(f"target must be one of {TARGETS}, got {method!r}")
  f = jnp.asarray(fitness, jnp.float32)
  ok = jnp.isfinite(f) if mask is None else jnp.isfinite(f) & jnp.asarray(mask, bool)
  g = jnp.where(ok, f, 0.0)
  if method == "minmax":
    lo, hi = jnp.min(jnp.where(ok, f, jnp.inf)), jnp.max(jnp.where(ok, f, -jnp.inf))
    s = jnp.where(hi > lo, (hi - g) / jnp.where(hi > lo, hi - lo, 1.0), 0.5)
  else:
    pair = ok[None, :] & ok[:, None]
    worse = jnp.sum(pair & (g[None, :] > g[:, None]), axis=1)
    ties = jnp.sum(pair & (g[None, :] == g[:, None]), axis=1)
    m = jnp.sum(ok)
    s = jnp.where(m > 1, (worse + (ties - 1) / 2) / jnp.maximum(m - 1, 1), 0.5)
  return jnp.where(ok, s, 0.0).astype(jnp.float32), ok.astype(jnp.float32)


DRAWS = 64  # random codes drawn per round of the random fill
ROUNDS = 16  # rounds before the fill accepts repeats (a nearly exhausted space)


@dataclasses.dataclass(frozen=True)
class NAO:
  """Neural Architecture Optimization over the codes of ``space``.

  Every ``ask`` proposes ``top_k`` architectures, so ``ask`` and ``tell`` are array
  programs of fixed shapes (``jittable``: many seeds run vectorised).

  Attributes:
    space: the search space.
    config: a :class:`NAOConfig`.
    model: the encoder-predictor-decoder of ``space`` with the sizes and training
      settings of ``config`` (derived from them).
  """

  space: SearchSpace
  config: NAOConfig = NAOConfig()
  model: NAOModel = dataclasses.field(init=False, repr=False, compare=False)
  name = "nao"
  # Under NB201's protocol the query that would pass the time budget is dropped, as in
  # NB201's random-search and REA scripts (nasjax.search.bench.charged_prefix).
  budget_crossing = "drop"

  def __post_init__(self):
    object.__setattr__(self, "model", NAOModel(
        self.space, **{k: getattr(self.config, k) for k in MODEL_OPTIONS}))

  def init(self, key: jax.Array) -> NAOState:
    params, opt_state = self.model.init(key)
    zero = jnp.zeros((), jnp.int32)
    cap = self.config.capacity
    return NAOState(params, opt_state, jnp.zeros((cap, self.space.length), jnp.int32),
                    jnp.full((cap,), jnp.nan, jnp.float32), zero,
                    jnp.full((4,), jnp.nan, jnp.float32), zero, zero)

  # -- helpers ------------------------------------------------------------------------
  def _random_new(self, key: jax.Array, picked: jax.Array, found: jax.Array,
                  known: jax.Array, known_mask: jax.Array,
                  first: jax.Array | None = None) -> jax.Array:
    """``picked (K, L)`` with each row where ``found`` is false replaced by a random code
    that is neither known nor equal to another row (up to the scheme's swaps).

    The codes ``first (M, L)``, if given, are tried first, in order; then rounds of
    :data:`DRAWS` uniform codes are scanned in order; after :data:`ROUNDS` rounds that
    leave a row unfilled (a nearly exhausted space) the last draws fill it even if they
    repeat.
    """
    canonical = self.model.scheme.canonical
    ref = canonical(known)

    def fill(out, filled, draws, last):
      def take(c, d):
        out, filled = c
        can = canonical(d)
        seen = jnp.any(jnp.all(ref == can, axis=-1) & known_mask)
        dup = jnp.any(jnp.all(canonical(out) == can, axis=-1) & filled)
        slot = jnp.argmin(filled)  # the first unfilled row
        ok = (last | (~seen & ~dup)) & ~filled[slot]
        return (jnp.where(ok, out.at[slot].set(d), out), filled.at[slot].set(filled[slot] | ok)
                ), None

      return jax.lax.scan(take, (out, filled), draws)[0]

    if first is not None:
      picked, found = fill(picked, found, first, False)

    def round_(c):
      out, filled, key, r = c
      key, sub = jax.random.split(key)
      draws = jax.vmap(self.space.sample)(jax.random.split(sub, DRAWS))
      out, filled = fill(out, filled, draws, r + 1 >= ROUNDS)
      return out, filled, key, r + 1

    out, *_ = jax.lax.while_loop(lambda c: ~jnp.all(c[1]), round_,
                                 (picked, found, key, jnp.int32(0)))
    return out

  # -- protocol ------------------------------------------------------------------------
  def ask(self, key: jax.Array, state: NAOState) -> tuple[jax.Array, NAOState]:
    """Random seeds first, then gradient-stepped architectures from the top-K seeds.

    While fewer than ``seed_size`` candidates are told (or none succeeded), all ``top_k``
    proposals are new random architectures; afterwards each is a new decoded
    architecture of the steps (per seed, or the predictor's best of all steps, see
    ``select``), or a fallback (see ``fallback``) where the steps find none.

    Returns:
      ``(codes (top_k, L) int32, state)``.
    """
    cfg = self.config
    told = state.told
    ok = told & jnp.isfinite(state.fitness)
    ready = (state.count >= cfg.seed_size) & jnp.any(ok)
    order = jnp.argsort(jnp.where(ok, state.fitness, jnp.inf), stable=True)
    seeds = (cfg.pool_seeds or cfg.top_k) if cfg.select == "pool" else cfg.top_k
    best = order[jnp.arange(seeds) % jnp.maximum(jnp.sum(ok), 1)]  # cycle if < seeds
    memory = self.model.encode(state.params, state.codes[best])
    cands = self.model.step(state.params, memory, cfg.step_size, max_steps=cfg.max_steps)
    k, j, L = cands.shape
    if cfg.select == "first":
      picked, found, _ = self.model.pick_new(cands, state.codes, told)
    else:
      flat = cands.reshape(k * j, L)
      priority = self.model.predict(state.params, flat)
      if cfg.select == "predicted":
        picked, found, _ = self.model.pick_new(cands, state.codes, told,
                                               priority.reshape(k, j))
      else:
        picked, found, _ = self.model.pick_best(flat, state.codes, told, priority,
                                                k=cfg.top_k)
    found = found & ready
    first = None
    if cfg.fallback == "predicted":
      k_draw, key = jax.random.split(key)
      draws = jax.vmap(self.space.sample)(jax.random.split(k_draw, cfg.fallback_draws))
      # Uniform order during the seed phase, the predictor's order once it is trained.
      rank = jnp.where(ready, -self.model.predict(state.params, draws), 0.0)
      first = draws[jnp.argsort(rank, stable=True)]
    codes = self._random_new(key, picked, found, state.codes, told, first)
    hits = jnp.sum(found, dtype=jnp.int32)
    return codes, state.replace(stepped=state.stepped + hits,
                                fallback=state.fallback + jnp.where(ready, cfg.top_k - hits, 0))

  def tell(self, key: jax.Array, state: NAOState, candidates, fitness) -> NAOState:
    """Add the candidates to the evaluated set and, once the seed phase is told, train
    the model on all of it."""
    cfg = self.config
    codes = jnp.asarray(candidates, jnp.int32)
    f = select_objective(fitness, cfg.objective)
    rows = state.count + jnp.arange(codes.shape[0])
    state = state.replace(codes=state.codes.at[rows].set(codes, mode="drop"),
                          fitness=state.fitness.at[rows].set(f, mode="drop"),
                          count=state.count + codes.shape[0])
    ready = state.count >= cfg.seed_size
    real = state.told & ready  # nothing is trained on during the seed phase
    scores, weights = normalised_scores(state.fitness, cfg.target, real)
    train_codes, rec_weight = state.codes, real.astype(jnp.float32)  # failures too
    k_draw, key = jax.random.split(key)
    b = self.model.batch_size
    rows = cfg.capacity + cfg.unlabeled
    pad = -rows % b if rows > b else 0
    extra = jnp.zeros((cfg.unlabeled + pad, self.space.length), jnp.int32)
    if cfg.unlabeled:
      extra = extra.at[:cfg.unlabeled].set(
          jax.vmap(self.space.sample)(jax.random.split(k_draw, cfg.unlabeled)))
    if cfg.unlabeled or pad:
      more = (jnp.arange(cfg.unlabeled + pad) < cfg.unlabeled) & ready
      train_codes = jnp.concatenate([train_codes, extra])
      rec_weight = jnp.concatenate([rec_weight, more.astype(jnp.float32)])
      scores, weights = (jnp.pad(a, (0, cfg.unlabeled + pad)) for a in (scores, weights))
    params, opt_state, m = self.model.train(state.params, state.opt_state, train_codes,
                                            scores, weights, key, rec_weight,
                                            epochs=cfg.epochs)
    metrics = jnp.stack([m["loss"], m["mse"], m["nll"], m["token_accuracy"]])
    return state.replace(params=params, opt_state=opt_state,
                         metrics=jnp.where(ready, metrics, state.metrics))


register_strategy(
    "nao", NAO, options=NAOConfig, spaces=("*",), multi_objective=False, jittable=True,
    smoke={"evaluator": {"kind": "nb201", "dataset": "cifar10"}, "config": SMOKE_CONFIG,
           "max_evals": 8},
    description="Neural Architecture Optimization: gradient steps in a learned embedding "
                "(Luo et al. 2018)")


_init = jax.jit(lambda nao, key: nao.init(key), static_argnums=0)
_ask = jax.jit(lambda nao, key, state: nao.ask(key, state), static_argnums=0)
_tell = jax.jit(lambda nao, key, state, cands, fitness: nao.tell(key, state, cands, fitness),
                static_argnums=0)


def optimise(nao: NAO, score: Callable[[np.ndarray], np.ndarray], key: jax.Array, *,
             evaluations: int) -> tuple[np.ndarray, np.ndarray, NAOState]:
  """Run NAO against a scoring function until ``evaluations`` architectures are scored.

  Args:
    nao: the strategy.
    score: ``codes (B, L) -> (B,)`` scores, higher is better (NaN marks a failure).
    key: PRNG key.
    evaluations: how many architectures to score (the last batch is cut to fit).

  Returns:
    ``(codes (evaluations, L), scores (evaluations,), state)``: every scored
    architecture in order, and the strategy state after the last ``tell``.
  """
  k_init, key = jax.random.split(key)
  state = nao.init(k_init)
  codes, scores = [], []
  while sum(len(c) for c in codes) < evaluations:
    key, k_ask, k_tell = jax.random.split(key, 3)
    cand, state = _ask(nao, k_ask, state)
    cand = np.asarray(cand)[:evaluations - sum(len(c) for c in codes)]
    s = np.asarray(score(cand), np.float64)
    state = _tell(nao, k_tell, state, cand, jnp.asarray(-s, jnp.float32))
    codes.append(cand)
    scores.append(s)
  return np.concatenate(codes), np.concatenate(scores), state


# ----------------------------------------------------------------------------- NAO-WS
NAO_WS_PREFIX = "nao_"
# The options of NAO that NAO-WS takes, prefixed with ``nao_`` (the pool is NAO's seed set
# and known set, so seed_size and capacity are the pool's size).
WS_NAO_OPTIONS = ("top_k", "step_size", "max_steps", "epochs", "unlabeled", "select",
                  "pool_seeds", "fallback", "fallback_draws", "target", *MODEL_OPTIONS)
# NAO-WS keeps NAO's own proposal rules (the registered NAO defaults were tuned on the NB201
# table's accuracy), and half the pool is renewed per iteration.
WS_NAO_DEFAULTS = {**PAPER, "top_k": 50}


@dataclasses.dataclass(frozen=True, kw_only=True)
class _NAOWSOptions(Options):
  """The supernet and pool options of NAO-WS (:data:`NAOWSConfig` adds NAO's).

  Attributes:
    steps: training steps of the shared weights in all (the default is 10 epochs of the
      112 full batches of 64 of ``fashion_mnist_small``'s 7,200 training images).
    iterations: NAO iterations, each a share of the steps, a scoring of the pool and
      (but after the last) a new pool.
    chunk_steps: steps per :class:`~nasjax.search.work.TrainShared` request (the run
      directory checkpoints after each).
    batch_size: training images per step.
    learning_rate, min_learning_rate: the cosine schedule's first and last step size.
    momentum: SGD momentum, below 1.
    weight_decay: L2 penalty on conv and dense kernels.
    grad_clip: global-norm clipping of the gradient, or None.
    augment: random crops and flips of the training batches.
    affine, remat: the supernet's (:func:`nasjax.models.supernet.supernet_for_space`).
    impl: how a path runs (:func:`nasjax.models.supernet.forward`).
    bn, calib_batches, calib_batch_size, eval_examples: how the pool is scored
      (:func:`nasjax.models.supernet.score_paths`; ``eval_examples`` None: the whole
      validation split).
    pool_size: architectures in the pool (drawn at random first, distinct).
  """

  strategy = "nao_ws"
  steps: int = option(1120, integer(1))
  iterations: int = option(3, integer(1))
  chunk_steps: int = option(100, integer(1))
  batch_size: int = option(64, integer(1))
  learning_rate: float = option(0.025, number(0, open_min=True))
  min_learning_rate: float = option(0.001, number(0))
  momentum: float = option(0.9, number(0, 1, open_max=True))
  weight_decay: float = option(5e-4, number(0))
  grad_clip: float | None = option(5.0, number(0, open_min=True, none=True))
  augment: bool = option(False, boolean())
  affine: bool = option(False, boolean())
  remat: bool = option(False, boolean())
  impl: str = option("switch", one_of(*sn_lib.IMPLS))
  bn: str = option("recalibrate", one_of(*sn_lib.BN_MODES))
  calib_batches: int = option(8, integer(1))
  calib_batch_size: int = option(64, integer(1))
  eval_examples: int | None = option(None, integer(1, none=True))
  pool_size: int = option(100, integer(2))

  def check(self) -> None:
    if self.min_learning_rate > self.learning_rate:
      raise ValueError(f"nao_ws: min_learning_rate {self.min_learning_rate!r} exceeds "
                       f"learning_rate {self.learning_rate!r}")
    if self.iterations > self.steps:
      raise ValueError(f"nao_ws: {self.iterations} iterations need at least as many steps, "
                       f"got steps={self.steps}")
    top_k = getattr(self, NAO_WS_PREFIX + "top_k")
    if top_k >= self.pool_size:
      raise ValueError(f"nao_ws: nao_top_k {top_k} must be below pool_size {self.pool_size}")

  def nao_config(self) -> NAOConfig:
    """The options of the NAO that renews the pool."""
    return NAOConfig(seed_size=self.pool_size, capacity=self.pool_size, **{
        k: getattr(self, NAO_WS_PREFIX + k) for k in WS_NAO_OPTIONS})


def _nao_options(names, defaults) -> list:
  """``make_dataclass`` fields of the :class:`NAOConfig` options ``names``, prefixed."""
  fields = {f.name: f for f in dataclasses.fields(NAOConfig)}
  return [(NAO_WS_PREFIX + n, fields[n].type,
           option(defaults.get(n, fields[n].default), fields[n].metadata["check"]))
          for n in names]


NAOWSConfig = dataclasses.make_dataclass(
    "NAOWSConfig", _nao_options(WS_NAO_OPTIONS, WS_NAO_DEFAULTS), bases=(_NAOWSOptions,),
    frozen=True, kw_only=True,
    namespace={"__module__": __name__, "__doc__": _NAOWSOptions.__doc__.replace(
        "The supernet and pool options of NAO-WS (:data:`NAOWSConfig` adds NAO's).",
        "NAO-WS's options: these, and the :class:`NAOConfig` options named in "
        ":data:`WS_NAO_OPTIONS` prefixed with ``nao_`` (defaults: :data:`PAPER`, with "
        "``nao_top_k`` 50).")})


def supernet_optimizer(config: NAOWSConfig) -> optax.GradientTransformation:
  """SGD of the shared weights, the one-shot strategies' (:func:`oneshot.sgd
  <nasjax.search.strategies.oneshot.sgd>`: gradient clipping, L2 weight decay on
  kernels, momentum, arrays of ops off the path left alone) with optax's cosine schedule
  over ``steps`` updates."""
  schedule = optax.cosine_decay_schedule(
      config.learning_rate, config.steps,
      alpha=config.min_learning_rate / config.learning_rate)
  return oneshot.sgd(schedule, momentum=config.momentum, weight_decay=config.weight_decay,
                     grad_clip=config.grad_clip)


@functools.cache
def weight_step(config: NAOWSConfig):
  """NAO-WS's step of the shared weights for ``config``: the same function object for
  equal options, so the evaluator compiles it once for every chunk.

  ``step(weights, batch, key, step) -> (weights, metrics)`` with ``weights`` the dict
  ``{"supernet": Supernet, "opt_state": optimiser state, "pool": (P, L) codes}``: it
  draws one architecture of the pool uniformly from ``key`` and takes one one-shot weight
  step (:func:`oneshot.train_step <nasjax.search.strategies.oneshot.train_step>`) on
  ``batch = (x, y)``: the arrays of the ops off the path and their momentum stay exactly
  as they are, and a step whose loss or weights are not finite is discarded.
  ``metrics``: the step's ``loss`` and ``accuracy``.
  """
  tx = supernet_optimizer(config)

  def step(weights, batch, key, step):
    del step  # the schedule counts the updates in the optimiser state
    pool = weights["pool"]
    path = pool[jax.random.randint(key, (), 0, pool.shape[0])]
    sn, opt_state, loss, acc = oneshot.train_step(
        tx, weights["supernet"], weights["opt_state"], *batch, path, by_path=True,
        impl=config.impl)
    return ({"supernet": sn, "opt_state": opt_state, "pool": pool},
            {"loss": loss, "accuracy": acc})

  return step


def score_pool(config: NAOWSConfig, supernet: sn_lib.Supernet, codes, data) -> np.ndarray:
  """The score of a :class:`~nasjax.search.work.ScoreShared` (with ``config`` bound):
  each path's validation accuracy with the shared weights
  (:func:`nasjax.models.supernet.score_paths`)."""
  return sn_lib.score_paths(supernet, codes, data, bn=config.bn,
                            calib_batches=config.calib_batches,
                            calib_batch_size=config.calib_batch_size,
                            max_examples=config.eval_examples, impl=config.impl)


@flax.struct.dataclass
class NAOWSState:
  """Attributes:
    supernet: the shared weights and batch-norm statistics.
    opt_state: their optimiser's state.
    key: ``(2,)`` uint32 key data of the batch order and the steps' paths.
    step: ``()`` int32 weight steps done.
    iteration: ``()`` int32 pools scored.
    pool: ``(P, L)`` int32 the architecture pool; once scored, best first.
    scores: ``(P,)`` float32 the pool's scores (NaN where not scored yet).
    controller: the NAO state of the last renewal of the pool.
    log: :class:`~nasjax.search.strategies.oneshot.PhaseLog`, one row per iteration.
    next: ``()`` int32 the row of the final pool proposed next.
    count: ``()`` int32 candidates told.
  """

  supernet: sn_lib.Supernet
  opt_state: Any
  key: jax.Array
  step: jax.Array
  iteration: jax.Array
  pool: jax.Array
  scores: jax.Array
  controller: NAOState
  log: oneshot.PhaseLog
  next: jax.Array
  count: jax.Array


_random_pool = jax.jit(
    lambda nao, key, n: nao._random_new(
        key, jnp.zeros((n, nao.space.length), jnp.int32), jnp.zeros(n, bool),
        jnp.zeros((1, nao.space.length), jnp.int32), jnp.zeros(1, bool)),
    static_argnums=(0, 2))


@dataclasses.dataclass(frozen=True)
class NAOWS:
  """NAO-WS as a strategy (see the module docstring).

  Attributes:
    space: an ``nb201`` or ``darts`` search space.
    problem: the task (input shape and classes of the supernet).
    config: an :class:`NAOWSConfig`.
    nao: the NAO that renews the pool (derived from ``config``).
    spec: the supernet of ``space`` for ``problem`` (derived).
  """

  space: SearchSpace
  problem: work.Problem
  config: NAOWSConfig = NAOWSConfig()
  nao: NAO = dataclasses.field(init=False, repr=False, compare=False)
  spec: sn_lib.SupernetSpec = dataclasses.field(init=False, repr=False, compare=False)
  name = "nao_ws"

  def __post_init__(self):
    work.require_problem(self.problem, self.name, "trains a supernet for the task")
    cfg = self.config
    object.__setattr__(self, "nao", NAO(self.space, cfg.nao_config()))
    object.__setattr__(self, "spec", sn_lib.supernet_for_space(
        self.space, self.problem.input_shape, self.problem.num_classes, affine=cfg.affine,
        remat=cfg.remat))

  def init(self, key: jax.Array) -> NAOWSState:
    k_net, k_pool, k_nao, k_data = jax.random.split(key, 4)
    cfg = self.config
    sn = self.spec.init(k_net)
    z = np.zeros((), np.int32)
    return NAOWSState(sn, supernet_optimizer(cfg).init(sn.params),
                      np.asarray(jax.random.key_data(k_data), np.uint32), z, z,
                      np.asarray(_random_pool(self.nao, k_pool, cfg.pool_size)),
                      np.full(cfg.pool_size, np.nan, np.float32), _init(self.nao, k_nao),
                      oneshot.PhaseLog.empty(cfg.iterations), z, z)

  def iteration_end(self, iteration: int) -> int:
    """The weight step at which iteration ``iteration`` (0-based; -1: none) ends."""
    return int(round(self.config.steps * (iteration + 1) / self.config.iterations))

  def ask(self, key: jax.Array, state: NAOWSState):
    """Training or scoring work while iterations remain; then the final pool, best first,
    one architecture per ask.

    Returns:
      ``(request, state)``: a :class:`~nasjax.search.work.TrainShared`, a
      :class:`~nasjax.search.work.ScoreShared`, or codes ``(1, L)`` int32.
    """
    del key  # the search is deterministic given init's key
    cfg, it = self.config, int(state.iteration)
    if it >= cfg.iterations:
      i = int(state.next) % cfg.pool_size
      return np.asarray(state.pool)[i:i + 1], state.replace(next=state.next + 1)
    start, end = int(state.step), self.iteration_end(it)
    if start < end:
      weights = {"supernet": state.supernet, "opt_state": state.opt_state, "pool": state.pool}
      key = jax.random.wrap_key_data(jnp.asarray(state.key))
      return work.TrainShared(weights, weight_step(cfg), start, min(start + cfg.chunk_steps, end),
                              cfg.batch_size, key, augment=cfg.augment), state
    return work.ScoreShared(state.supernet, np.asarray(state.pool),
                            functools.partial(score_pool, cfg)), state

  def tell(self, key: jax.Array, state: NAOWSState, candidates, fitness) -> NAOWSState:
    """Keep trained weights, take the pool's scores (and renew the pool), or count the
    candidates told."""
    if isinstance(candidates, work.TrainShared):
      return self._trained(state, candidates, fitness)
    if isinstance(candidates, work.ScoreShared):
      return self._scored(key, state, candidates, fitness)
    return state.replace(count=state.count + np.shape(candidates)[0])

  def _trained(self, state: NAOWSState, request: work.TrainShared,
               result: work.SharedResult) -> NAOWSState:
    it = int(state.iteration)
    before = int(request.start) - self.iteration_end(it - 1)  # steps of the iteration before
    steps = int(request.stop) - int(request.start)
    log = jax.tree_util.tree_map(lambda a: np.array(a, copy=True), state.log)
    for row, name in ((log.train_loss, "loss"), (log.train_accuracy, "accuracy")):
      value = result.metrics.get(name, np.nan)  # the iteration's running mean
      row[it] = value if before == 0 else (row[it] * before + value * steps) / (before + steps)
    log.step[it] = int(request.stop)
    log.seconds[it] += result.seconds
    return state.replace(supernet=result.weights["supernet"],
                         opt_state=result.weights["opt_state"], step=np.int32(request.stop),
                         log=log)

  def _scored(self, key: jax.Array, state: NAOWSState, request: work.ScoreShared,
              result: work.SharedResult) -> NAOWSState:
    it = int(state.iteration)
    scores = np.asarray(result.scores, np.float64)
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    pool, scores = np.asarray(request.codes, np.int32)[order], scores[order]
    finite = scores[np.isfinite(scores)]
    log = jax.tree_util.tree_map(lambda a: np.array(a, copy=True), state.log)
    log.best_score[it] = finite.max() if len(finite) else np.nan
    log.mean_score[it] = finite.mean() if len(finite) else np.nan
    log.seconds[it] += result.seconds
    controller = state.controller
    if it + 1 < self.config.iterations:
      pool, scores, controller = self.renew(key, pool, scores, controller)
    return state.replace(iteration=np.int32(it + 1), pool=pool,
                         scores=np.asarray(scores, np.float32), controller=controller, log=log)

  def renew(self, key: jax.Array, pool: np.ndarray, scores: np.ndarray,
            controller: NAOState) -> tuple[np.ndarray, np.ndarray, NAOState]:
    """The next pool: the encoder-predictor-decoder of ``controller`` trained further on
    the scored ``pool`` (best first) with a fresh Adam state, and the worst
    ``nao_top_k`` architectures replaced by the new ones its gradient steps from the
    best decode (new to the pool and distinct).

    The model carries over from one iteration to the next and learns only from the
    current pool, as in the paper's NAO-WS code; its optimiser restarts each iteration.

    Returns:
      ``(pool, scores (NaN for the new architectures), NAO's state)``.
    """
    k_init, k_tell, k_ask = jax.random.split(key, 3)
    start = _init(self.nao, k_init).replace(params=controller.params)
    state = _tell(self.nao, k_tell, start, pool, jnp.asarray(-scores, jnp.float32))
    new, state = _ask(self.nao, k_ask, state)
    keep = self.config.pool_size - self.nao.config.top_k
    return (np.concatenate([pool[:keep], np.asarray(new, np.int32)]),
            np.concatenate([scores[:keep], np.full(len(new), np.nan)]), state)


def _make_ws(space: SearchSpace, config: NAOWSConfig, *, problem: work.Problem) -> NAOWS:
  return NAOWS(space, problem, config)


register_strategy(
    "nao_ws", _make_ws, spaces=("nb201", "darts"), multi_objective=False, jittable=False,
    options=NAOWSConfig, needs_problem=True,
    smoke={"space": "nb201", "space_config": {"C": 2, "N": 1},
           "config": {"steps": 4, "iterations": 2, "chunk_steps": 2, "batch_size": 16,
                      "calib_batches": 2, "calib_batch_size": 16, "eval_examples": 64,
                      "pool_size": 8, "nao_top_k": 4,
                      **{NAO_WS_PREFIX + k: v for k, v in SMOKE_CONFIG.items()
                         if k not in ("seed_size", "capacity", "top_k")}},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="NAO-WS: NAO renewing a pool of architectures that share a supernet's "
                "weights, trained on the pool and scored with them (Luo et al. 2018, §3.5)")
