"""Neural Architecture Optimization (Luo et al., "Neural Architecture Optimization",
NeurIPS 2018): search by gradient ascent in a learned continuous embedding.

Algorithm 1 of the paper, as an ask/tell strategy over search-space codes:

1. ``ask`` first proposes ``seed_size`` distinct random architectures.
2. ``tell`` adds the evaluated architectures to the set ``X`` and trains the encoder,
   predictor and decoder (:class:`~nasjax.search.nao_model.NAOModel`) jointly on all of
   ``X`` for ``epochs`` epochs, continuing from the previous parameters. Scores are the
   negated fitness, min-max normalised over ``X`` as NAO normalises accuracies.
3. Every later ``ask`` takes the ``top_k`` best architectures of ``X``, moves the
   representation of each along the predictor's gradient with step ``eta``, ``2 eta``,
   ... ``max_steps * eta``, and proposes, per seed, the first decoded architecture that
   is neither in ``X`` nor proposed for a better seed (codes are compared up to the
   space's symmetries, :meth:`~nasjax.search.nao_model.TokenScheme.canonical`). A seed
   whose steps find nothing new is replaced by a new random architecture.

Training, the gradient steps and the decoding are jitted; the evaluated set lives in the
state as arrays padded to a power-of-two multiple of the batch size, so a search
compiles a handful of programs. The state is a pytree (parameters, Adam state and the
evaluated codes and fitness), but its arrays grow, so the strategy is not ``jittable``.

NAO-WS (:class:`NAOWS`, strategy ``nao_ws``) is the weight-sharing variant of the
paper's §3.5: the architectures NAO evaluates are scored by a weight-shared supernet
(validation accuracy with inherited weights) instead of being trained alone.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from nasjax.search.base import register_strategy, select_objective
from nasjax.search.nao_model import NAOModel
from nasjax.search.spaces import SearchSpace

SELECT = ("first", "predicted")
TARGETS = ("minmax", "rank")
MODEL_OPTIONS = ("embed_dim", "hidden", "mlp_layers", "mlp_hidden", "trade_off",
                 "learning_rate", "weight_decay", "grad_clip", "batch_size")


@flax.struct.dataclass
class NAOState:
  """Attributes:
    params: the model's parameters (flax variables).
    opt_state: Adam's state.
    codes: ``(N, L)`` int32 codes of every told candidate, in order.
    fitness: ``(N,)`` float32 their fitness (minimised; NaN for failures).
    count: ``()`` int32, candidates told (N).
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


@functools.partial(jax.jit, static_argnums=(0,))
def _draw(space: SearchSpace, key: jax.Array) -> jax.Array:
  """``(64, L)`` uniform random codes (a fixed count, so one program serves every call)."""
  return jax.vmap(space.sample)(jax.random.split(key, 64))


def _bucket(n: int, base: int) -> int:
  """The smallest ``base * 2**k >= n`` (padded sizes, so programs are reused)."""
  size = base
  while size < n:
    size *= 2
  return size


def normalised_scores(fitness: np.ndarray, method: str = "minmax"
                      ) -> tuple[np.ndarray, np.ndarray]:
  """``(scores, weights)`` of a fitness vector ``(N,)``: scores in [0, 1], 1 the best.

  ``"minmax"`` (NAO): ``(max - f) / (max - min)`` over the finite values (0.5 everywhere
  when they are all equal). ``"rank"``: the rank among the finite values divided by
  their count minus one (ties share their mean rank), which spreads the scores evenly
  however skewed the fitness is. Weight 0 (and score 0) where the fitness is not finite.
  """
  if method not in TARGETS:
    raise ValueError(f"target must be one of {TARGETS}, got {method!r}")
  f = np.asarray(fitness, np.float64)
  ok = np.isfinite(f)
  s = np.zeros(f.shape, np.float64)
  if ok.any():
    g = f[ok]
    if method == "minmax":
      lo, hi = g.min(), g.max()
      s[ok] = (hi - g) / (hi - lo) if hi > lo else 0.5
    else:
      less = np.sum(g[None, :] > g[:, None], axis=1)  # worse values than each
      ties = np.sum(g[None, :] == g[:, None], axis=1)
      s[ok] = (less + (ties - 1) / 2) / max(len(g) - 1, 1) if len(g) > 1 else 0.5
  return s.astype(np.float32), ok.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class NAO:
  """Neural Architecture Optimization over the codes of ``model.space``.

  Attributes:
    model: the encoder-predictor-decoder and its training settings.
    seed_size: random architectures evaluated before the first model.
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
    select: which new candidate of a seed's steps to propose: ``"first"`` (the smallest
      step, NAO) or ``"predicted"`` (the one whose own encoding the predictor scores
      highest).
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
  target: str = "minmax"
  name = "nao"

  def __post_init__(self):
    for what in ("seed_size", "top_k", "max_steps", "epochs"):
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

  @property
  def space(self) -> SearchSpace:
    return self.model.space

  def config(self) -> dict:
    return {"seed_size": self.seed_size, "top_k": self.top_k, "step_size": self.step_size,
            "max_steps": self.max_steps, "epochs": self.epochs, "objective": self.objective,
            "unlabeled": self.unlabeled, "select": self.select, "target": self.target,
            **{k: getattr(self.model, k) for k in MODEL_OPTIONS}}

  def init(self, key: jax.Array) -> NAOState:
    params, opt_state = self.model.init(key)
    L = self.space.length
    zero = jnp.zeros((), jnp.int32)
    return NAOState(params, opt_state, jnp.zeros((0, L), jnp.int32),
                    jnp.zeros((0,), jnp.float32), zero, jnp.full((4,), jnp.nan, jnp.float32),
                    zero, zero)

  # -- helpers ------------------------------------------------------------------------
  def _canonical_hashes(self, codes) -> list[int]:
    """Hashes of ``codes (N, L)`` after ordering their symmetric parts."""
    canon = np.asarray(self.model.scheme.canonical(jnp.asarray(codes, jnp.int32)))
    return [self.space.hash(c) for c in canon]

  def _random_new(self, key: jax.Array, count: int, known: set[int]) -> np.ndarray:
    """``count`` random codes whose canonical hashes are not in ``known`` and differ
    from each other (repeats are allowed only once the space is exhausted)."""
    out, known = [], set(known)
    while len(out) < count:
      key, sub = jax.random.split(key)
      draws = np.asarray(_draw(self.space, sub))
      for code, h in zip(draws, self._canonical_hashes(draws)):
        if h not in known or len(known) >= self.space.size:
          known.add(h)
          out.append(code)
          if len(out) == count:
            break
    return np.stack(out).astype(np.int32)

  def _padded(self, state: NAOState) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Evaluated codes, scores, weights and a real-row mask, padded to a bucket size."""
    n = int(state.count)
    size = _bucket(max(n, 1), self.model.batch_size)
    scores, weights = normalised_scores(np.asarray(state.fitness), self.target)
    pad = size - n
    codes = np.concatenate([np.asarray(state.codes), np.zeros((pad, self.space.length),
                                                              np.int32)])
    return (jnp.asarray(codes), jnp.asarray(np.concatenate([scores, np.zeros(pad, np.float32)])),
            jnp.asarray(np.concatenate([weights, np.zeros(pad, np.float32)])),
            jnp.asarray(np.arange(size) < n))

  # -- protocol ------------------------------------------------------------------------
  def ask(self, key: jax.Array, state: NAOState) -> tuple[np.ndarray, NAOState]:
    """Random seeds first, then one gradient-stepped architecture per top-K seed.

    Returns:
      ``(codes (B, L) int32, state)`` with ``B = seed_size`` on the first call (nothing
      told yet or nothing evaluated successfully) and ``top_k`` afterwards.
    """
    k_seed, k_fill = jax.random.split(key)
    f = np.asarray(state.fitness, np.float64)
    ok = np.flatnonzero(np.isfinite(f))
    known = set(self._canonical_hashes(state.codes)) if int(state.count) else set()
    if len(ok) == 0:
      return self._random_new(k_seed, self.seed_size, known), state
    best = ok[np.argsort(f[ok], kind="stable")]
    seeds = np.asarray(state.codes)[np.resize(best[:self.top_k], self.top_k)]
    codes, _, _, mask = self._padded(state)
    memory = self.model.encode(state.params, jnp.asarray(seeds))
    cands = self.model.step(state.params, memory, self.step_size, max_steps=self.max_steps)
    priority = None
    if self.select == "predicted":
      k, j, L = cands.shape
      priority = self.model.predict(state.params, cands.reshape(k * j, L)).reshape(k, j)
    picked, found, _ = self.model.pick_new(cands, codes, mask, priority)
    picked, found = np.array(picked), np.asarray(found)
    misses = int((~found).sum())
    if misses:
      known |= set(self._canonical_hashes(picked[found])) if found.any() else set()
      picked[~found] = self._random_new(k_fill, misses, known)
    return picked.astype(np.int32), state.replace(stepped=state.stepped + len(found) - misses,
                                                  fallback=state.fallback + misses)

  def tell(self, key: jax.Array, state: NAOState, candidates, fitness) -> NAOState:
    """Add the candidates to the evaluated set and train the model on all of it."""
    codes = jnp.asarray(np.asarray(candidates), jnp.int32)
    f = select_objective(jnp.asarray(np.asarray(fitness, np.float32)), self.objective)
    state = state.replace(codes=jnp.concatenate([state.codes, codes]),
                          fitness=jnp.concatenate([state.fitness, f]),
                          count=state.count + codes.shape[0])
    padded, scores, weights, real = self._padded(state)
    rec_weight = real.astype(jnp.float32)  # failed evaluations are still architectures
    k_draw, key = jax.random.split(key)
    if self.unlabeled:
      n = int(state.count)
      extra = jax.vmap(self.space.sample)(jax.random.split(k_draw, self.unlabeled))
      size = _bucket(n + self.unlabeled, self.model.batch_size)
      padded = jnp.concatenate([padded[:n], extra,
                                jnp.zeros((size - n - self.unlabeled, self.space.length),
                                          jnp.int32)])
      grow = lambda a, fill: jnp.concatenate([a[:n], jnp.full(size - n, fill, a.dtype)])
      rec_weight = grow(rec_weight, 0.0).at[n:n + self.unlabeled].set(1.0)
      scores, weights = grow(scores, 0.0), grow(weights, 0.0)
    params, opt_state, m = self.model.train(state.params, state.opt_state, padded, scores,
                                            weights, key, rec_weight, epochs=self.epochs)
    metrics = jnp.stack([m["loss"], m["mse"], m["nll"], m["token_accuracy"]])
    return state.replace(params=params, opt_state=opt_state, metrics=metrics)


def _make(space: SearchSpace, config: dict) -> NAO:
  objective = config["objective"]
  if not 0 <= objective < config["num_objectives"]:
    raise ValueError(f"objective {objective} is outside the {config['num_objectives']} "
                     "objectives")
  model = NAOModel(space, **{k: config[k] for k in MODEL_OPTIONS})
  return NAO(model, seed_size=config["seed_size"], top_k=config["top_k"],
             step_size=float(config["step_size"]), max_steps=config["max_steps"],
             unlabeled=config["unlabeled"], select=config["select"], target=config["target"],
             epochs=config["epochs"], objective=objective)


DEFAULTS = {"seed_size": 20, "top_k": 10, "step_size": 1.0, "max_steps": 20, "epochs": 100,
            "objective": 0, "unlabeled": 0, "select": "first", "target": "minmax", "embed_dim": 32, "hidden": 64, "mlp_layers": 1, "mlp_hidden": 64,
            "trade_off": 0.8, "learning_rate": 0.005, "weight_decay": 1e-4, "grad_clip": 5.0,
            "batch_size": 32}
SMOKE_CONFIG = {"seed_size": 4, "top_k": 2, "max_steps": 4, "epochs": 5, "embed_dim": 8,
                "hidden": 16, "mlp_hidden": 16, "batch_size": 8}

register_strategy(
    "nao", _make, spaces=("*",), multi_objective=False, jittable=False,
    default_config=DEFAULTS,
    smoke={"evaluator": {"kind": "nb201", "dataset": "cifar10"}, "config": SMOKE_CONFIG,
           "max_evals": 8},
    description="Neural Architecture Optimization: gradient steps in a learned embedding "
                "(Luo et al. 2018)")


# ----------------------------------------------------------------------------- NAO-WS
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
    cand, state = nao.ask(k_ask, state)
    cand = cand[:evaluations - sum(len(c) for c in codes)]
    s = np.asarray(score(np.asarray(cand)), np.float64)
    state = nao.tell(k_tell, state, cand, -s)
    codes.append(np.asarray(cand))
    scores.append(s)
  return np.concatenate(codes), np.concatenate(scores), state


NAO_WS_PREFIX = "nao_"


@flax.struct.dataclass
class NAOWSState:
  """Attributes:
    spos: the supernet, its optimiser state, phase log and proposal ranking (the state
      of :class:`~nasjax.search.spos.Spos`, whose search is replaced by NAO).
    controller: the NAO state of the last phase's search.
  """

  spos: Any
  controller: NAOState


@dataclasses.dataclass(eq=False)
class NAOWS:
  """NAO-WS: NAO on a weight-sharing supernet's validation accuracy.

  Each of ``phases`` phases trains the supernet further with uniformly sampled paths
  (SPOS's recipe, :meth:`~nasjax.search.spos.Spos.train`), then runs NAO from scratch
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
    from nasjax.search import spos

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
    from nasjax.search import oneshot

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
    code, proposals = sp.proposals.pop()
    if int(sp.phase) < phases:
      proposals = proposals.replace(next=sp.proposals.next)  # re-ranked next phase
    return (jnp.asarray(code, jnp.int32)[None],
            NAOWSState(sp.replace(proposals=proposals), controller))

  def tell(self, key, state: NAOWSState, candidates, fitness) -> NAOWSState:
    del key, fitness  # the measured accuracy does not steer a one-shot search
    return state.replace(spos=state.spos.replace(
        count=state.spos.count + np.shape(candidates)[0]))


def _nao_ws_config() -> dict:
  from nasjax.search import spos

  supernet = {k: v for k, v in spos.DEFAULT_CONFIG.items()
              if k not in ("cycles", "population_size", "sample_size")}
  nao = {NAO_WS_PREFIX + k: v for k, v in DEFAULTS.items() if k != "objective"}
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
