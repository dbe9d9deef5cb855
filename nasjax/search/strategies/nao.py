"""Neural Architecture Optimization (Luo et al., "Neural Architecture Optimization",
NeurIPS 2018): search by gradient ascent in a learned continuous embedding.

Algorithm 1 of the paper, as an ask/tell strategy over search-space codes:

1. ``ask`` first proposes ``seed_size`` distinct random architectures (``top_k`` per
   ``ask``).
2. ``tell`` adds the evaluated architectures to the set ``X`` and, once the seeds are
   told, trains the encoder, predictor and decoder
   (:class:`~nasjax.search.strategies.nao_model.NAOModel`) jointly on all of ``X`` for ``epochs``
   epochs, continuing from the previous parameters. Scores are the negated fitness,
   min-max normalised over ``X`` as NAO normalises accuracies.
3. Every later ``ask`` takes the ``top_k`` best architectures of ``X``, moves the
   representation of each along the predictor's gradient with step ``eta``, ``2 eta``,
   ... ``max_steps * eta``, and proposes, per seed, the first decoded architecture that
   is neither in ``X`` nor proposed for a better seed (codes are compared up to the
   space's symmetries, :meth:`~nasjax.search.strategies.nao_model.TokenScheme.canonical`). A seed
   whose steps find nothing new is replaced by a new random architecture.

Options beyond the paper (the registered defaults, :data:`DEFAULTS`, use them;
:data:`PAPER` restores NAO's choices): ``select="pool"`` decodes every step of the
``pool_seeds`` best architectures and proposes the ``top_k`` new distinct ones that the
predictor scores highest (the predictor filters all gradient-step proposals instead of
taking the first new one per seed); ``fallback="predicted"`` replaces a proposal the
steps cannot fill by the predictor's best of ``fallback_draws`` uniform new
architectures instead of a uniform one; ``target="rank"`` trains the predictor on rank
scores instead of min-max ones. The defaults also halve ``top_k`` (5) and ``epochs`` (50).

The state is a pytree of fixed shapes: ``X`` lives in a buffer of ``capacity`` rows with
a count, every growing quantity is a mask over it (training runs only the batches that
hold evaluated rows), the steps of all seeds are decoded at once and the first new one
picked by a scan, and the random fallback is drawn in the program. So ``ask`` and
``tell`` are jittable, and ``nasjax bench`` runs many seeds as one vectorised program.

NAO-WS (:class:`NAOWS`, strategy ``nao_ws``) is the weight-sharing variant of the
paper's §3.5: the architectures NAO evaluates are scored by a weight-shared supernet
(validation accuracy with inherited weights) instead of being trained alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from nasjax.search.base import register_strategy, select_objective
from nasjax.search.strategies.nao_model import NAOModel
from nasjax.search.spaces import SearchSpace

SELECT = ("first", "predicted", "pool")
FALLBACKS = ("random", "predicted")
TARGETS = ("minmax", "rank")
MODEL_OPTIONS = ("embed_dim", "hidden", "mlp_layers", "mlp_hidden", "trade_off",
                 "learning_rate", "weight_decay", "grad_clip", "batch_size")


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
  """Neural Architecture Optimization over the codes of ``model.space``.

  Every ``ask`` proposes ``top_k`` architectures, so ``ask`` and ``tell`` are array
  programs of fixed shapes (``jittable``: many seeds run vectorised). The defaults of
  this class are NAO's; the registered strategy ``nao`` defaults to :data:`DEFAULTS`
  (``select="pool"``, ``fallback="predicted"``, ``target="rank"``, ``top_k`` 5, 50
  epochs).

  Attributes:
    model: the encoder-predictor-decoder and its training settings.
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
    target: how fitness becomes the predictor's target, see :func:`normalised_scores`
      (``"minmax"`` in NAO).
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
    capacity: C, the most evaluated architectures kept (the state's buffer size). A
      search should tell at most C candidates; later ones are neither trained on nor
      known as evaluated.
  """

  model: NAOModel
  seed_size: int = 20
  top_k: int = 10
  step_size: float = 1.0
  max_steps: int = 20
  epochs: int = 100
  objective: int = 0
  unlabeled: int = 0
  select: str = "first"
  pool_seeds: int = 0
  fallback: str = "random"
  fallback_draws: int = 256
  target: str = "minmax"
  capacity: int = 256
  name = "nao"

  def __post_init__(self):
    for what in ("seed_size", "top_k", "max_steps", "epochs", "capacity", "fallback_draws"):
      v = getattr(self, what)
      if not isinstance(v, int) or v < 1:
        raise ValueError(f"{what} must be a positive int, got {v!r}")
    if not self.step_size > 0:
      raise ValueError(f"step_size must be positive, got {self.step_size!r}")
    if not isinstance(self.unlabeled, int) or self.unlabeled < 0:
      raise ValueError(f"unlabeled must be a non-negative int, got {self.unlabeled!r}")
    if self.target not in TARGETS:
      raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
    if self.select not in SELECT:
      raise ValueError(f"select must be one of {SELECT}, got {self.select!r}")
    if not isinstance(self.pool_seeds, int) or self.pool_seeds < 0:
      raise ValueError(f"pool_seeds must be a non-negative int, got {self.pool_seeds!r}")
    if self.fallback not in FALLBACKS:
      raise ValueError(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}")
    if self.capacity < self.seed_size:
      raise ValueError(f"capacity {self.capacity} is below seed_size {self.seed_size}")

  @property
  def space(self) -> SearchSpace:
    return self.model.space

  def config(self) -> dict:
    return {"seed_size": self.seed_size, "top_k": self.top_k, "step_size": self.step_size,
            "max_steps": self.max_steps, "epochs": self.epochs, "objective": self.objective,
            "unlabeled": self.unlabeled, "select": self.select, "pool_seeds": self.pool_seeds,
            "fallback": self.fallback, "fallback_draws": self.fallback_draws,
            "target": self.target,
            "capacity": self.capacity, **{k: getattr(self.model, k) for k in MODEL_OPTIONS}}

  def init(self, key: jax.Array) -> NAOState:
    params, opt_state = self.model.init(key)
    zero = jnp.zeros((), jnp.int32)
    return NAOState(params, opt_state, jnp.zeros((self.capacity, self.space.length), jnp.int32),
                    jnp.full((self.capacity,), jnp.nan, jnp.float32), zero,
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
    told = state.told
    ok = told & jnp.isfinite(state.fitness)
    ready = (state.count >= self.seed_size) & jnp.any(ok)
    order = jnp.argsort(jnp.where(ok, state.fitness, jnp.inf), stable=True)
    seeds = (self.pool_seeds or self.top_k) if self.select == "pool" else self.top_k
    best = order[jnp.arange(seeds) % jnp.maximum(jnp.sum(ok), 1)]  # cycle if < seeds
    memory = self.model.encode(state.params, state.codes[best])
    cands = self.model.step(state.params, memory, self.step_size, max_steps=self.max_steps)
    k, j, L = cands.shape
    if self.select == "first":
      picked, found, _ = self.model.pick_new(cands, state.codes, told)
    else:
      flat = cands.reshape(k * j, L)
      priority = self.model.predict(state.params, flat)
      if self.select == "predicted":
        picked, found, _ = self.model.pick_new(cands, state.codes, told,
                                               priority.reshape(k, j))
      else:
        picked, found, _ = self.model.pick_best(flat, state.codes, told, priority,
                                                k=self.top_k)
    found = found & ready
    first = None
    if self.fallback == "predicted":
      k_draw, key = jax.random.split(key)
      draws = jax.vmap(self.space.sample)(jax.random.split(k_draw, self.fallback_draws))
      # Uniform order during the seed phase, the predictor's order once it is trained.
      rank = jnp.where(ready, -self.model.predict(state.params, draws), 0.0)
      first = draws[jnp.argsort(rank, stable=True)]
    codes = self._random_new(key, picked, found, state.codes, told, first)
    hits = jnp.sum(found, dtype=jnp.int32)
    return codes, state.replace(stepped=state.stepped + hits,
                                fallback=state.fallback + jnp.where(ready, self.top_k - hits, 0))

  def tell(self, key: jax.Array, state: NAOState, candidates, fitness) -> NAOState:
    """Add the candidates to the evaluated set and, once the seed phase is told, train
    the model on all of it."""
    codes = jnp.asarray(candidates, jnp.int32)
    f = select_objective(fitness, self.objective)
    rows = state.count + jnp.arange(codes.shape[0])
    state = state.replace(codes=state.codes.at[rows].set(codes, mode="drop"),
                          fitness=state.fitness.at[rows].set(f, mode="drop"),
                          count=state.count + codes.shape[0])
    ready = state.count >= self.seed_size
    real = state.told & ready  # nothing is trained on during the seed phase
    scores, weights = normalised_scores(state.fitness, self.target, real)
    train_codes, rec_weight = state.codes, real.astype(jnp.float32)  # failures too
    k_draw, key = jax.random.split(key)
    b = self.model.batch_size
    rows = self.capacity + self.unlabeled
    pad = -rows % b if rows > b else 0
    extra = jnp.zeros((self.unlabeled + pad, self.space.length), jnp.int32)
    if self.unlabeled:
      extra = extra.at[:self.unlabeled].set(
          jax.vmap(self.space.sample)(jax.random.split(k_draw, self.unlabeled)))
    if self.unlabeled or pad:
      more = (jnp.arange(self.unlabeled + pad) < self.unlabeled) & ready
      train_codes = jnp.concatenate([train_codes, extra])
      rec_weight = jnp.concatenate([rec_weight, more.astype(jnp.float32)])
      scores, weights = (jnp.pad(a, (0, self.unlabeled + pad)) for a in (scores, weights))
    params, opt_state, m = self.model.train(state.params, state.opt_state, train_codes,
                                            scores, weights, key, rec_weight,
                                            epochs=self.epochs)
    metrics = jnp.stack([m["loss"], m["mse"], m["nll"], m["token_accuracy"]])
    return state.replace(params=params, opt_state=opt_state,
                         metrics=jnp.where(ready, metrics, state.metrics))


def _make(space: SearchSpace, config: dict) -> NAO:
  objective = config["objective"]
  if not 0 <= objective < config["num_objectives"]:
    raise ValueError(f"objective {objective} is outside the {config['num_objectives']} "
                     "objectives")
  model = NAOModel(space, **{k: config[k] for k in MODEL_OPTIONS})
  return NAO(model, seed_size=config["seed_size"], top_k=config["top_k"],
             step_size=float(config["step_size"]), max_steps=config["max_steps"],
             unlabeled=config["unlabeled"], select=config["select"],
             pool_seeds=config["pool_seeds"],
             fallback=config["fallback"], fallback_draws=config["fallback_draws"],
             target=config["target"],
             epochs=config["epochs"], objective=objective, capacity=config["capacity"])


# The registry's defaults: NAO's search with the predictor as a filter over all steps
# (``select="pool"``), the predictor's best random cell as the fallback, rank targets,
# and 5 proposals per generation with 50 epochs per ``tell`` (as much training as 10
# with 100), chosen on NB201 seeds 1000-1079 (docs/results/nao.md). PAPER restores
# NAO's proposal rules and the previous defaults (10 per generation, 100 epochs).
PAPER = {"select": "first", "pool_seeds": 0, "fallback": "random", "target": "minmax",
         "top_k": 10, "epochs": 100}
DEFAULTS = {"seed_size": 20, "top_k": 5, "step_size": 1.0, "max_steps": 20, "epochs": 50,
            "objective": 0, "unlabeled": 0, "select": "pool", "pool_seeds": 0,
            "fallback": "predicted", "fallback_draws": 256, "target": "rank",
            "capacity": 256, "embed_dim": 32, "hidden": 64, "mlp_layers": 1,
            "mlp_hidden": 64, "trade_off": 0.8, "learning_rate": 0.005, "weight_decay": 1e-4,
            "grad_clip": 5.0, "batch_size": 32}
SMOKE_CONFIG = {"seed_size": 4, "top_k": 2, "max_steps": 4, "epochs": 5, "embed_dim": 8,
                "hidden": 16, "mlp_hidden": 16, "batch_size": 8, "capacity": 16}

register_strategy(
    "nao", _make, spaces=("*",), multi_objective=False, jittable=True,
    default_config=DEFAULTS,
    smoke={"evaluator": {"kind": "nb201", "dataset": "cifar10"}, "config": SMOKE_CONFIG,
           "max_evals": 8},
    description="Neural Architecture Optimization: gradient steps in a learned embedding "
                "(Luo et al. 2018)")


# ----------------------------------------------------------------------------- NAO-WS
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


NAO_WS_PREFIX = "nao_"


@flax.struct.dataclass
class NAOWSState:
  """Attributes:
    spos: the supernet, its optimiser state, phase log and proposal ranking (the state
      of :class:`~nasjax.search.strategies.spos.Spos`, whose search is replaced by NAO).
    controller: the NAO state of the last phase's search.
  """

  spos: Any
  controller: NAOState


@dataclasses.dataclass(eq=False)
class NAOWS:
  """NAO-WS: NAO on a weight-sharing supernet's validation accuracy.

  Each of ``phases`` phases trains the supernet further with uniformly sampled paths
  (SPOS's recipe, :meth:`~nasjax.search.strategies.spos.Spos.train`), then runs NAO from scratch
  against the supernet's scores (:func:`optimise`, ``nao_evaluations`` scored paths), and
  ranks every path it scored. As for the other one-shot strategies, ``ask`` proposes the
  best-ranked path not proposed yet, and ``tell`` only counts: the evaluator's measurement
  never feeds back.

  Attributes:
    space: an ``nb201`` or ``darts`` search space.
    options: keys of :data:`NAO_WS_CONFIG`: the supernet options of ``spos`` (without its
      evolution's) and NAO's options prefixed with ``nao_``.
    data: the data set; loaded from ``options`` when None.
  """

  space: SearchSpace
  options: dict
  data: Any = None
  name = "nao_ws"

  def __post_init__(self):
    from nasjax.search.strategies import spos

    opts = {k: v for k, v in self.options.items() if k != "num_objectives"}
    unknown = set(opts) - set(NAO_WS_CONFIG)
    if unknown:
      raise ValueError(f"unknown option(s) {sorted(unknown)} for {self.name!r}; it takes "
                       f"{sorted(NAO_WS_CONFIG)}")
    self.options = {**NAO_WS_CONFIG, **opts}
    nao_opts = {k[len(NAO_WS_PREFIX):]: v for k, v in self.options.items()
                if k.startswith(NAO_WS_PREFIX) and k != "nao_evaluations"}
    evaluations = self.options["nao_evaluations"]
    if not isinstance(evaluations, int) or evaluations < 1:
      raise ValueError(f"nao_evaluations must be a positive int, got {evaluations!r}")
    self.nao = _make(self.space, {**DEFAULTS, **nao_opts, "num_objectives": 1})
    if evaluations > self.nao.capacity:
      raise ValueError(f"nao_evaluations {evaluations} exceeds nao_capacity "
                       f"{self.nao.capacity}")
    spos_opts = {k: v for k, v in self.options.items() if not k.startswith(NAO_WS_PREFIX)}
    self.spos = spos.Spos(self.space, spos_opts, self.data)
    self.data = self.spos.data

  def config(self) -> dict:
    return dict(self.options)

  def init(self, key: jax.Array) -> NAOWSState:
    k_spos, k_nao = jax.random.split(key)
    return NAOWSState(self.spos.init(k_spos), self.nao.init(k_nao))

  def search(self, state: NAOWSState) -> tuple[np.ndarray, np.ndarray, NAOState]:
    """NAO on the current supernet: every scored code, its score and NAO's state."""
    sp = state.spos
    key = jax.random.fold_in(self.spos._key(sp, 3), int(sp.phase))
    return optimise(self.nao, lambda c: self.spos.score(sp, c), key,
                    evaluations=self.options["nao_evaluations"])

  def ask(self, key: jax.Array, state: NAOWSState):
    """Run the next phase (train the supernet, then NAO on its scores) if any; propose
    the best-ranked path not proposed yet.

    Returns:
      ``(codes (1, L) int32, state)``.
    """
    from nasjax.search.strategies import oneshot

    del key  # the search is deterministic given init's key
    sp, controller = state.spos, state.controller
    phase = int(sp.phase)
    phases = self.options["phases"]
    if phase < phases:
      sp, loss, acc = self.spos.train(sp, oneshot.phase_end(phase, phases, self.spos.total))
      codes, scores, controller = self.search(state.replace(spos=sp))
      log = sp.log
      log = log.replace(step=log.step.at[phase].set(sp.step),
                        train_loss=log.train_loss.at[phase].set(loss),
                        train_accuracy=log.train_accuracy.at[phase].set(acc),
                        best_score=log.best_score.at[phase].set(float(np.nanmax(scores))))
      sp = sp.replace(phase=sp.phase + 1, log=log,
                      proposals=oneshot.Proposals.from_scores(
                          codes, np.nan_to_num(scores, nan=-np.inf), self.options["proposals"]))
    codes, sp = oneshot.propose(sp, phases)
    return codes, NAOWSState(sp, controller)

  def tell(self, key, state: NAOWSState, candidates, fitness) -> NAOWSState:
    from nasjax.search.strategies import oneshot

    del key, fitness
    return state.replace(spos=oneshot.count_told(state.spos, candidates))


def _nao_ws_config() -> dict:
  from nasjax.search.strategies import spos

  supernet = {k: v for k, v in spos.DEFAULT_CONFIG.items()
              if k not in ("cycles", "population_size", "sample_size")}
  # NAO-WS keeps NAO's own proposal rules (the NB201 tuning used the table's accuracy).
  nao = {NAO_WS_PREFIX + k: v for k, v in {**DEFAULTS, **PAPER}.items() if k != "objective"}
  nao[NAO_WS_PREFIX + "evaluations"] = 100
  return {**supernet, **nao}


NAO_WS_CONFIG = _nao_ws_config()

register_strategy(
    "nao_ws", lambda space, config: NAOWS(space, dict(config)), spaces=("nb201", "darts"),
    multi_objective=False, jittable=False, default_config=NAO_WS_CONFIG,
    smoke={"space": "nb201", "space_config": {"C": 2, "N": 1},
           "config": {"epochs": 1.0, "max_steps": 4, "data_limit": 256, "batch_size": 16,
                      "calib_batches": 2, "calib_batch_size": 16, "eval_examples": 64,
                      "nao_evaluations": 8,
                      **{NAO_WS_PREFIX + k: v for k, v in SMOKE_CONFIG.items()}},
           "max_evals": 2, "train": {"epochs": 0.05, "batch_size": 32}},
    description="NAO-WS: NAO on a uniformly trained weight-sharing supernet's validation "
                "accuracy (Luo et al. 2018, section 3.5)")
