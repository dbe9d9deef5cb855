"""One-shot search: the shared-weight optimiser (ops off the path frozen), DARTS's
hypergradient and derivation, the ENAS controller, the ranking one-shot strategies
propose from, and the three strategies in the search loop: asks only request work,
a run equals driving the strategy by hand, and a run killed between chunks resumes to the
same weights (tiny supernets on the ``synthetic`` data)."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from nasjax import data as data_lib
from nasjax.models import supernet as S
from nasjax.search import (TrainingEvaluator, generation_keys, init_keys, make_strategy,
                           read_history, resume, run, runner, work)
from nasjax.search.evaluators import run_shared
from nasjax.search.spaces import DartsCellSpace, MacroSpace, NB201Space
from nasjax.search.strategies import darts, enas, oneshot, spos

SMOKE_SPACE = NB201Space(C=2, N=1)
METHODS = ("spos", "darts", "enas")
# Tiny searches: two or more chunks per phase, a search stage, two proposals.
TINY = {
    "spos": {"steps": 4, "chunk_steps": 1, "batch_size": 16, "cycles": 3,
             "population_size": 2, "parents": 2, "sample_size": 2, "calib_batches": 2,
             "calib_batch_size": 16, "eval_examples": 32},
    "darts": {"steps": 3, "chunk_steps": 1, "batch_size": 16, "order": "second"},
    "enas": {"steps": 4, "chunk_steps": 1, "batch_size": 16, "child_steps": 2,
             "controller_steps": 2, "controller_batch": 2, "hidden": 8, "derive_samples": 3,
             "eval_examples": 32},
}
TRAIN = {"max_steps": 2, "batch_size": 32}


@functools.cache
def synthetic():
  return data_lib.load("synthetic")


def _strategy(name, **overrides):
  return make_strategy(name, SMOKE_SPACE, {**TINY[name], **overrides},
                       problem=work.Problem.of(synthetic()))


def _leaves(tree):
  return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def _assert_bitwise_equal(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)  # tolerance 0


# ---------------------------------------------------------------------------- optimiser
def test_weight_step_trains_only_the_sampled_path():
  data = synthetic()
  spec = S.NB201Supernet(C=2, N=1, input_shape=data.input_shape,
                         num_classes=data.num_classes)
  tx = oneshot.sgd(0.05, momentum=0.9, weight_decay=5e-4, grad_clip=5.0)  # SPOS's defaults
  step = oneshot.weight_step_fn(tx, True, "switch")
  sn = spec.init(jax.random.key(0))
  opt_state = tx.init(sn.params)
  x, y = data.x_train[:16], data.y_train[:16]
  paths = [[3, 3, 2, 1, 4, 0], [2, 1, 0, 4, 3, 3], [3, 3, 2, 1, 4, 0]]
  before = jax.tree_util.tree_map(np.asarray, sn.params)
  params, moms = [], []
  for path in paths:
    sn, opt_state, loss, acc = step(sn, opt_state, x, y, jnp.asarray(path, jnp.int32))
    assert np.isfinite(float(loss)) and 0 <= float(acc) <= 1
    params.append(jax.tree_util.tree_map(np.asarray, sn.params))
    moms.append(jax.tree_util.tree_map(np.asarray, oneshot.momentum(opt_state)))
  assert step._cache_size() == 1  # one program for every path
  # After the first path (edge 1<-0: nor_conv_3x3): its kernel moved, the 1x1 did not.
  first = params[0]
  on, off = "s0_c0_e10_nor_conv_3x3_conv", "s0_c0_e10_nor_conv_1x1_conv"
  assert np.max(np.abs(first[on]["kernel"] - before[on]["kernel"])) > 1e-6
  np.testing.assert_array_equal(first[off]["kernel"], before[off]["kernel"])
  # Path 2 ran that 1x1 and path 3 did not: after path 3 its weights and momentum are
  # exactly those path 2 left.
  assert np.all(moms[0][off]["kernel"] == 0) and np.any(moms[1][off]["kernel"] != 0)
  np.testing.assert_array_equal(params[2][off]["kernel"], params[1][off]["kernel"])
  np.testing.assert_array_equal(moms[2][off]["kernel"], moms[1][off]["kernel"])
  m = oneshot.momentum(opt_state)
  # Shared weights always train.
  assert np.max(np.abs(first["stem_conv"]["kernel"] - before["stem_conv"]["kernel"])) > 1e-6
  # Edge 3<-2 ran 'none' on path 1 and nor_conv_3x3 on path 2; nor_conv_1x1 never ran.
  never = "s2_c0_e32_nor_conv_1x1_conv"
  np.testing.assert_array_equal(np.asarray(sn.params[never]["kernel"]),
                                before[never]["kernel"])
  # Its momentum stayed zero too: no weight decay or momentum leaked into it.
  assert np.all(np.asarray(m[never]["kernel"]) == 0)
  assert np.any(np.asarray(m[on]["kernel"]) != 0)


def _with_momentum(opt_state, m):
  return tuple(s._replace(trace=m) if isinstance(s, optax.TraceState) else s
               for s in opt_state)


def test_sgd_update_matches_the_formula_and_freezes_idle_arrays():
  tx = oneshot.sgd(0.1, momentum=0.5, weight_decay=0.1, grad_clip=1.0)
  params = {"a": {"kernel": jnp.array([1.0, -1.0])}, "b": {"bias": jnp.array([2.0])},
            "c": {"kernel": jnp.array([5.0])}}
  grads = {"a": {"kernel": jnp.array([3.0, 0.0])}, "b": {"bias": jnp.array([4.0])},
           "c": {"kernel": jnp.array([0.0])}}  # norm 5: clipped to norm 1; c is idle
  m0 = {"a": {"kernel": jnp.array([0.5, 1.0])}, "b": {"bias": jnp.array([0.0])},
        "c": {"kernel": jnp.array([7.0])}}
  state = _with_momentum(tx.init(params), m0)
  updates, state = tx.update(grads, state, params)
  # g = clip(grad) + 0.1 w on kernels; m = 0.5 m0 + g; update = -lr m.
  m = oneshot.momentum(state)
  np.testing.assert_allclose(m["a"]["kernel"], [0.25 + 0.6 + 0.1, 0.5 + 0.0 - 0.1], rtol=1e-6)
  np.testing.assert_allclose(m["b"]["bias"], [0.8], rtol=1e-6)
  np.testing.assert_allclose(updates["a"]["kernel"], [-0.095, -0.04], rtol=1e-6)
  np.testing.assert_allclose(updates["b"]["bias"], [-0.08], rtol=1e-6)
  # The idle array: no update, momentum as it was (no decay, no momentum drift).
  np.testing.assert_array_equal(updates["c"]["kernel"], [0.0])
  np.testing.assert_array_equal(m["c"]["kernel"], [7.0])
  with pytest.raises(ValueError, match="momentum must lie in"):
    oneshot.sgd(0.1, momentum=1.0)


def test_cosine_schedule_ends_at_the_minimum():
  lr = oneshot.schedule(oneshot.OneShotConfig(steps=10, learning_rate=0.1,
                                              min_learning_rate=0.001))
  assert float(lr(0)) == pytest.approx(0.1, rel=1e-6)
  assert float(lr(5)) == pytest.approx(0.0505, rel=1e-6)
  assert float(lr(10)) == pytest.approx(0.001, rel=1e-6)
  assert float(lr(20)) == pytest.approx(0.001, rel=1e-6)


# ------------------------------------------------------------------------------ DARTS
def _mixed_regression():
  """A tiny mixed op: y = v . sum_k softmax(alpha)_k tanh(x W_k)."""
  d, K, n = 3, 4, 8
  rng = np.random.default_rng(0)
  P = K * d * d + d
  w = jnp.asarray(rng.normal(size=P) * 0.5, jnp.float32)
  alpha = jnp.asarray(rng.normal(size=K), jnp.float32)

  def loss(w, a, batch):
    x, t = batch
    W, v = w[:K * d * d].reshape(K, d, d), w[K * d * d:]
    p = jax.nn.softmax(a)
    h = sum(p[k] * jnp.tanh(x @ W[k]) for k in range(K))
    return jnp.mean((h @ v - t) ** 2)

  batch = lambda: (jnp.asarray(rng.normal(size=(n, d)), jnp.float32),
                   jnp.asarray(rng.normal(size=n), jnp.float32))
  c = jnp.asarray(rng.normal(size=P) * 0.01, jnp.float32)
  return loss, w, alpha, batch(), batch(), c


@pytest.mark.parametrize("xi", [0.1, 0.5])
def test_second_order_hypergradient_matches_autodiff(xi):
  loss, w, alpha, bt, bv, c = _mixed_regression()
  fd = darts.second_order(loss, w, alpha, bt, bv, xi, c)
  exact = darts.second_order(loss, w, alpha, bt, bv, xi, c, hessian="exact")
  scale = float(jnp.max(jnp.abs(exact)))
  # float32 difference quotients: agreement to ~1e-4 of the gradient's size.
  np.testing.assert_allclose(fd, exact, atol=2e-4 * scale)
  # The Hessian term matters: the gradient at w' alone is far off.
  w2 = darts.virtual_step(loss, w, alpha, bt, xi, c)
  at_w2 = darts.first_order(loss, w2, alpha, bv)
  assert float(jnp.max(jnp.abs(at_w2 - exact))) > 1e-2 * scale
  # A finite difference centred on the stepped weights w' (instead of w) is off too.
  v = jax.grad(loss)(w2, alpha, bv)
  eps = 0.01 / jnp.linalg.norm(v)
  ga = jax.grad(loss, argnums=1)
  off_centre = at_w2 - xi * (ga(w2 + eps * v, alpha, bt) - ga(w2 - eps * v, alpha, bt)) / (
      2 * eps)
  assert float(jnp.max(jnp.abs(off_centre - exact))) > 100 * float(jnp.max(jnp.abs(fd - exact)))


def test_darts_virtual_step_uses_the_real_optimisers_decay_and_momentum():
  # The second-order gradient of the strategy's step equals autodiff through the step
  # w' = w - xi (grad + wd * kernels + momentum * m) built from the optax state.
  data = synthetic()
  strat = _strategy("darts", hessian="exact")
  state = strat.init(jax.random.key(0))
  w = state.weights
  m = jax.tree_util.tree_map(lambda a: jnp.full(a.shape, 0.01, a.dtype), w.supernet.params)
  w = w.replace(opt_state=_with_momentum(w.opt_state, m))
  train, val = (data.x_train[:8], data.y_train[:8]), (data.x_val[:8], data.y_val[:8])
  _, grad = darts.arch_gradient(strat.config, w, train, val, 0.05)
  flat, unravel = ravel_pytree(w.supernet.params)
  loss = darts._flat_loss(w.supernet, unravel)
  kernels = oneshot.kernel_mask(w.supernet.params)
  c = ravel_pytree(jax.tree_util.tree_map(
      lambda k, p, mm: jnp.where(k, strat.config.weight_decay * p, 0.0) + 0.9 * mm,
      kernels, w.supernet.params, m))[0]
  ref = jax.grad(lambda a: loss(flat - 0.05 * (jax.grad(loss)(flat, a, train) + c), a,
                                val))(w.alphas)
  np.testing.assert_allclose(grad, ref, rtol=1e-5, atol=1e-7)


def test_darts_derivation_nb201_and_darts_spaces():
  nb = S.NB201Supernet(C=2, N=1)
  a = np.zeros((1, 6, 5))
  a[0, np.arange(6), [0, 1, 2, 3, 4, 1]] = 1.0
  np.testing.assert_array_equal(nb.derive(a), [0, 1, 2, 3, 4, 1])  # 'none' may win
  share, weight = darts.skip_share(nb, a)
  assert share == pytest.approx(2 / 6)
  e = np.exp(1.0)
  assert weight == pytest.approx(np.mean([1, e, 1, 1, 1, e]) / (e + 4))

  ds = S.DartsSupernet(C=2, layers=3, steps=2)
  a = np.zeros(ds.weights_shape)  # (2, 5, 8): node 2 <- 0, 1; node 3 <- 0, 1, 2
  a[0, :, 0] = 5.0  # 'none' is strongest everywhere but never chosen
  a[0, 0, 4] = 2.0  # node 2 <- 0: sep_conv_3x3
  a[0, 1, 3] = 3.0  # node 2 <- 1: skip_connect
  a[0, 4, 7] = 4.0  # node 3 <- 2: dil_conv_5x5
  a[0, 2, 2] = 1.0  # node 3 <- 0: avg_pool_3x3
  code = ds.derive(a)
  g = ds.space.decode(code)
  assert tuple(g.normal) == (("sep_conv_3x3", 0), ("skip_connect", 1),
                             ("avg_pool_3x3", 0), ("dil_conv_5x5", 2))
  assert darts.skip_share(ds, a)[0] == pytest.approx(1 / 4)


def test_rank_by_alpha_puts_the_derived_cell_first():
  nb = S.NB201Supernet(C=2, N=1)
  alphas = np.asarray(jax.random.normal(jax.random.key(0), (1, 6, 5)))
  p = darts.rank_by_alpha(nb, alphas, 10)
  ranked = np.asarray(p.ranked)
  np.testing.assert_array_equal(ranked[0], nb.derive(alphas))
  assert len({r.tobytes() for r in ranked}) == 10
  logp = np.asarray(jax.nn.log_softmax(alphas[0], -1))
  totals = [logp[np.arange(6), r].sum() for r in ranked]
  assert totals == sorted(totals, reverse=True)


def test_darts_strategy_runs_phases_and_logs_skip_share():
  data = synthetic()
  strat = _strategy("darts", order="first", phases=2)
  state = strat.init(jax.random.key(0))
  key = jax.random.key(1)
  codes, state, key = oneshot.run_until_proposal(strat, state, key, data)
  assert int(state.step) == 2 and int(state.phase) == 1  # round(3 * 1 / 2) steps
  np.testing.assert_array_equal(codes[0], strat.derived(state))
  codes, state, key = oneshot.run_until_proposal(strat, state, key, data)
  assert int(state.step) == 3 and int(state.phase) == 2
  rows = state.log.rows()
  assert [r["step"] for r in rows] == [1, 2, 3]  # one row per chunk of one step
  assert all(0 <= r["skip_share"] <= 1 and np.isfinite(r["loss"]) and
             np.isfinite(r["val_loss"]) for r in rows)
  assert [r["step"] for r in state.phase_log.rows()] == [2, 3]
  np.testing.assert_array_equal(codes[0], strat.derived(state))
  nxt, state, key = oneshot.run_until_proposal(strat, state, key, data)
  assert np.any(nxt != codes)  # then the next-ranked cell
  assert int(strat.tell(None, state, nxt, jnp.zeros(1)).count) == 1


# ------------------------------------------------------------------------------ ENAS
def test_controller_samples_valid_codes_with_their_log_probabilities():
  space = DartsCellSpace(steps=1)  # inputs: 2 choices, ops: 7, so some logits are masked
  ctrl = enas.Controller(tuple(space.num_choices), hidden=8)
  params = ctrl.init(jax.random.key(0), jnp.zeros((1, space.length), jnp.int32))
  sample = jax.jit(lambda p, k: ctrl.apply(p, k, 64, method=enas.Controller.sample))
  codes, logp, ent = sample(params, jax.random.key(1))
  n = np.asarray(space.num_choices)
  assert codes.shape == (64, space.length)
  assert np.all((np.asarray(codes) >= 0) & (np.asarray(codes) < n))
  logp2, ent2 = jax.jit(ctrl.apply)(params, codes)
  np.testing.assert_allclose(logp, logp2, rtol=1e-5)
  np.testing.assert_allclose(ent, ent2, rtol=1e-5)
  # The entropy is at most that of the uniform policy, and close to it at init.
  assert np.all(np.asarray(ent) <= np.log(n).sum() + 1e-4)
  assert np.all(np.asarray(ent) > 0.9 * np.log(n).sum())


def test_reinforce_update_favours_the_rewarded_path():
  cfg = enas.EnasConfig(hidden=8)
  ctrl = enas.controller_of(SMOKE_SPACE, cfg)
  tx = optax.adam(cfg.controller_lr)
  update = jax.jit(functools.partial(enas.reinforce_update, ctrl, tx, cfg.entropy_weight,
                                     cfg.baseline_decay))
  params = ctrl.init(jax.random.key(0), jnp.zeros((1, 6), jnp.int32))
  opt = tx.init(params)
  codes = jnp.asarray([[3, 3, 3, 1, 3, 3], [0, 0, 0, 0, 0, 0]])  # rewarded 1 and 0
  log_prob = jax.jit(lambda p: ctrl.apply(p, codes)[0])
  before = log_prob(params)
  baseline, started = jnp.zeros(()), jnp.zeros((), bool)
  for _ in range(60):
    params, opt, baseline, _, _ = update(params, opt, baseline, started, codes,
                                         jnp.asarray([1.0, 0.0]))
    started = jnp.ones((), bool)
  change = np.asarray(log_prob(params) - before)
  assert change[0] > 1.0 and change[1] < -1.0
  assert float(baseline) == pytest.approx(0.5, abs=1e-6)  # the mean reward, every time


def test_enas_strategy_trains_controller_and_supernet():
  data = synthetic()
  strat = _strategy("enas")
  state = strat.init(jax.random.key(0))
  ctrl0 = state.weights.controller
  kinds = []
  key = jax.random.key(1)
  while True:  # by hand, to see each request
    key, k_ask, _, k_tell = generation_keys(key)
    asked, state = strat.ask(k_ask, state)
    if not work.is_shared(asked):
      break
    if isinstance(asked, work.TrainShared):
      kinds.append(("child" if asked.val_batch_size == 0 else "controller", asked.start,
                    asked.stop, asked.batch_size))
    state = strat.tell(k_tell, state, asked, run_shared(asked, data))
  # Rounds of child_steps=2 weight steps, then controller_steps=2 updates (one a chunk).
  assert kinds == [("child", 0, 1, 16), ("child", 1, 2, 16), ("controller", 0, 1, 1),
                   ("controller", 1, 2, 1), ("child", 2, 3, 16), ("child", 3, 4, 16),
                   ("controller", 2, 3, 1), ("controller", 3, 4, 1)]
  rows = state.log.rows()
  assert [r["step"] for r in rows] == [1, 2, 2, 2, 3, 4, 4, 4]
  rewards = [r["reward"] for r in rows if not np.isnan(r["reward"])]
  assert len(rewards) == 4 and all(0 <= r <= 1 for r in rewards)
  moved = [float(np.max(np.abs(a - b))) for a, b in zip(_leaves(ctrl0),
                                                         _leaves(state.weights.controller))]
  assert max(moved) > 1e-6
  ranked = np.asarray(state.proposals.ranked)[:int(state.proposals.size)]
  np.testing.assert_array_equal(asked[0], ranked[0])
  scores = np.asarray(state.proposals.scores)[:int(state.proposals.size)]
  assert np.all(np.diff(scores) <= 0)
  assert float(state.phase_log.rows()[0]["best_score"]) == pytest.approx(scores[0], abs=1e-6)


# ------------------------------------------------------------------------------ SPOS
def test_spos_strategy_is_deterministic_and_proposes_by_score():
  data = synthetic()
  runs = []
  for _ in range(2):
    strat = _strategy("spos")
    state = strat.init(jax.random.key(7))
    codes, state, _ = oneshot.run_until_proposal(strat, state, jax.random.key(1), data)
    runs.append((codes, np.asarray(state.proposals.scores), state))
  np.testing.assert_array_equal(runs[0][0], runs[1][0])
  np.testing.assert_array_equal(runs[0][1], runs[1][1])
  state = runs[0][2]
  size = int(state.proposals.size)
  ranked = np.asarray(state.proposals.ranked)[:size]
  scores = np.asarray(state.proposals.scores)[:size]
  assert 1 <= size <= 3 and np.all(np.diff(scores) <= 0)
  np.testing.assert_array_equal(runs[0][0][0], ranked[0])
  # The stored scores are the shared-weight accuracies of the ranked paths.
  np.testing.assert_allclose(strat.score_function()(state.weights, ranked, data), scores,
                             atol=1e-6)
  assert int(state.step) == 4
  assert state.phase_log.rows()[0]["best_score"] == pytest.approx(scores[0], abs=1e-6)
  assert [r["step"] for r in state.log.rows()] == [1, 2, 3, 4]


def _generation(history, scores, size=12, space=NB201Space(), allowed=lambda c: True,
                **options):
  cfg = spos.SposConfig(**{"population_size": size, **options})
  rng = np.random.default_rng(0)
  return spos.genetic_generation(rng, space, np.asarray(history, np.int32),
                                 np.asarray(scores, np.float64), size, cfg, allowed)


def test_genetic_generation_breeds_from_the_top_parents():
  space = NB201Space()
  top = np.array([[0, 0, 0, 0, 0, 0], [4, 4, 4, 4, 4, 4]])
  worse = np.array([[1, 2, 3, 1, 2, 3], [2, 2, 2, 2, 2, 2]])
  history, scores = np.concatenate([worse, top]), [0.1, 0.2, 0.9, 0.8]
  # Crossovers only: every choice comes from one of the two best paths.
  kids = _generation(history, scores, parents=2, mutations=0, crossovers=12)
  assert kids.shape == (12, 6) and np.all((kids == 0) | (kids == 4))
  # Mutants only: each differs from a top parent in few choices (probability 0.1 each).
  kids = _generation(history, scores, parents=2, mutations=12, crossovers=0)
  dist = np.min([(kids != p).sum(-1) for p in top], axis=0)
  assert kids.shape == (12, 6) and np.all(dist >= 1) and np.mean(dist) <= 2.0
  # Every child is new and distinct (up to the space's symmetries).
  hashes = [space.hash(c) for c in kids]
  assert len(set(hashes)) == 12 and not set(hashes) & {space.hash(c) for c in history}
  # No history: the first generation is random (choices spread over all ops).
  first = _generation(np.zeros((0, 6)), [], size=50)
  assert first.shape == (50, 6) and set(np.unique(first)) == {0, 1, 2, 3, 4}


def test_genetic_generation_rejects_paths_that_break_the_constraint():
  space = NB201Space(C=4, N=1)
  cost = lambda c: spos.network_cost(space, (8, 8, 3), 4, tuple(int(v) for v in c))[0]
  cap = cost(np.full(6, 2))  # six 1x1 convs: about a third of random paths exceed it
  history = np.array([[3, 3, 3, 3, 3, 3], [2, 2, 2, 2, 2, 2]])  # the best breaks the cap
  kids = _generation(history, [0.9, 0.5], size=30, space=space,
                     allowed=lambda c: cost(c) <= cap, parents=2)
  params = np.array([cost(c) for c in kids])
  assert len(kids) == 30 and np.all(params <= cap)
  unconstrained = _generation(history, [0.9, 0.5], size=30, space=space, parents=2)
  assert np.mean([cost(c) > cap for c in unconstrained]) >= 0.2  # the cap did reject


def test_spos_genetic_search_respects_max_params_and_aging_remains_an_option():
  data = synthetic()
  space = SMOKE_SPACE
  cost = lambda c: spos.network_cost(space, data.input_shape, data.num_classes,
                                     tuple(int(v) for v in c))[0]
  cap = cost(np.full(6, 2))
  strat = _strategy("spos", cycles=8, population_size=4, max_params=cap)
  _, state, _ = oneshot.run_until_proposal(strat, strat.init(jax.random.key(0)),
                                           jax.random.key(1), data)
  ranked = np.asarray(state.proposals.ranked)[:int(state.proposals.size)]
  assert len(ranked) == 8 and all(cost(c) <= cap for c in ranked)
  aging = _strategy("spos", search="aging")
  kinds, state, key = [], aging.init(jax.random.key(0)), jax.random.key(1)
  while True:
    key, k_ask, _, k_tell = generation_keys(key)
    asked, state = aging.ask(k_ask, state)
    if not work.is_shared(asked):
      break
    kinds.append(type(asked).__name__)
    state = aging.tell(k_tell, state, asked, run_shared(asked, data))
  assert kinds.count("ScoreShared") == 3  # cycles=3 children, one per generation
  assert int(state.search.evolution.count) == 0 and int(state.phase) == 1


def test_proposals_rank_distinct_codes_and_cycle():
  codes = np.array([[1, 2], [0, 0], [1, 2], [3, 1]])
  p = oneshot.Proposals.from_scores(codes, np.array([0.5, 0.9, 0.7, 0.1]), capacity=8)
  assert int(p.size) == 3
  got = []
  for _ in range(4):
    c, p = p.pop()
    got.append(c.tolist())
  assert got == [[0, 0], [1, 2], [3, 1], [0, 0]]


def test_one_shot_options_are_checked():
  problem = work.Problem.of(synthetic())
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['epoch'\]"):
    make_strategy("spos", SMOKE_SPACE, {"epoch": 1}, problem=problem)
  with pytest.raises(ValueError, match=r"darts: option order must be one of \['first', "
                     r"'second'\], got 'third'"):
    darts.DartsConfig(order="third")
  with pytest.raises(ValueError, match="enas: option phases must be an int >= 1, got 0"):
    enas.EnasConfig(phases=0)
  with pytest.raises(ValueError, match=r"spos: options phases \(5\) must be at most steps"):
    spos.SposConfig(phases=5, steps=4)
  with pytest.raises(ValueError, match=r"spos: options mutations \(30\) and crossovers "
                     r"\(25\) add up to more than population_size \(50\)"):
    spos.SposConfig(mutations=30)
  with pytest.raises(ValueError, match="constrain the genetic search only"):
    spos.SposConfig(search="aging", max_params=1000)
  with pytest.raises(ValueError, match=r"spos: option search must be one of \['genetic', "
                     r"'aging'\], got 'random'"):
    spos.SposConfig(search="random")
  with pytest.raises(ValueError, match="enas: option baseline_decay must lie in"):
    enas.EnasConfig(baseline_decay=1.0)
  with pytest.raises(ValueError, match="does not search space 'macro'"):
    make_strategy("spos", MacroSpace(), {}, problem=problem)
  with pytest.raises(ValueError, match="'darts' trains a supernet for the task: give "
                     "problem="):
    make_strategy("darts", SMOKE_SPACE, {})


def test_batch_stream_resumes_exactly_with_augmentation():
  x = np.arange(10 * 6 * 6, dtype=np.float32).reshape(10, 6, 6, 1)
  y = np.arange(10, dtype=np.int32)
  key = jax.random.key(3)
  full = data_lib.stream(x, y, 3, key, augment=True)
  batches = [next(full) for _ in range(7)]  # 3 batches per epoch: crosses two epochs
  resumed = data_lib.stream(x, y, 3, key, start=4, augment=True)
  for xb, yb in batches[4:]:
    rx, ry = next(resumed)
    np.testing.assert_array_equal(rx, xb)
    np.testing.assert_array_equal(ry, yb)
  epoch = np.concatenate([b[1] for b in batches[:3]])
  assert len(set(epoch.tolist())) == 9  # a permutation, the remainder dropped
  plain = next(data_lib.stream(x, y, 3, key))
  np.testing.assert_array_equal(plain[1], batches[0][1])  # same order either way
  assert not np.array_equal(plain[0], batches[0][0])  # but cropped / flipped


# ------------------------------------------------------------------------ the search loop
@pytest.mark.parametrize("name", METHODS)
def test_ask_never_trains_and_keeps_one_step_function(name):
  data = synthetic()
  strat = _strategy(name)
  state = strat.init(jax.random.key(0))
  key, requests, steps = jax.random.key(1), {"train": 0, "score": 0}, {}
  for _ in range(40):
    key, k_ask, _, k_tell = generation_keys(key)
    before = jax.tree_util.tree_map(np.array, state.weights)
    asked, state = strat.ask(k_ask, state)
    _assert_bitwise_equal(state.weights, before)
    if not work.is_shared(asked):
      break
    _assert_bitwise_equal(asked.weights, before)
    if isinstance(asked, work.TrainShared):
      requests["train"] += 1
      kind = asked.val_batch_size > 0 and name == "enas"
      assert steps.setdefault(kind, asked.step) is asked.step  # the same function object
    else:
      requests["score"] += 1
    state = strat.tell(k_tell, state, asked, run_shared(asked, data))
  assert requests["train"] == {"spos": 4, "darts": 3, "enas": 8}[name]
  # SPOS's genetic search scores a generation of population_size=2 paths, then the last.
  assert requests["score"] == {"spos": 2, "darts": 0, "enas": 1}[name]
  assert asked.shape == (1, SMOKE_SPACE.length)


def _evaluator():
  return TrainingEvaluator(SMOKE_SPACE, dataset="synthetic", train=TRAIN)


@functools.cache
def _reference(name, workdir):
  """The uninterrupted run of ``name`` (two proposals measured) and its final state."""
  result = run(name, _evaluator(), 2, workdir, seed=3, config=TINY[name], quiet=True)
  return result, runner.load_checkpoint(workdir)["state"]


def _stable(history):
  clocks = ("cost", "elapsed", "wall", "compile")
  return [{**{k: v for k, v in e.items() if k not in clocks},
           "metrics": {k: v for k, v in e["metrics"].items()
                       if k not in ("compile_seconds", "train_seconds")}} for e in history]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  root = tmp_path_factory.mktemp("reference")
  return lambda name: _reference(name, root / name)


@pytest.mark.parametrize("name", METHODS)
def test_a_run_equals_driving_the_strategy_by_hand(name, reference):
  result, final = reference(name)
  assert [e["eval"] for e in result.history] == [0, 1]
  evaluator = _evaluator()
  strat = make_strategy(name, evaluator.space, TINY[name], evaluator=evaluator)
  key, k_init = init_keys(3)
  state = strat.init(k_init)
  measured = []
  while len(measured) < 2:
    key, k_ask, k_eval, k_tell = generation_keys(key)
    asked, state = strat.ask(k_ask, state)
    if work.is_shared(asked):
      state = strat.tell(k_tell, state, asked, run_shared(asked, evaluator.data))
      continue
    [rec] = evaluator.evaluate(np.asarray(asked), k_eval)
    measured.append(rec)
    state = strat.tell(k_tell, state, asked, np.asarray([rec.objectives[0]]))
  for entry, rec in zip(result.history, measured):
    assert entry["code"] == rec.code
    assert entry["objectives"]["val_error"] == pytest.approx(rec.objectives[0], abs=0)
  _assert_bitwise_equal(final.weights, state.weights)
  np.testing.assert_array_equal(np.asarray(final.proposals.ranked),
                                np.asarray(state.proposals.ranked))


@pytest.mark.parametrize("name, chunks", [("spos", 2), ("darts", 1), ("enas", 5)])
def test_a_run_killed_after_some_chunks_resumes_to_the_same_weights(name, chunks, reference,
                                                                     tmp_path, monkeypatch):
  result, final = reference(name)
  calls = []
  real = TrainingEvaluator.run_shared

  def dying(self, request):
    if isinstance(request, work.TrainShared):
      calls.append(request.start)
      if len(calls) > chunks:
        raise KeyboardInterrupt
    return real(self, request)

  monkeypatch.setattr(TrainingEvaluator, "run_shared", dying)
  with pytest.raises(KeyboardInterrupt):
    run(name, _evaluator(), 2, tmp_path, seed=3, config=TINY[name], quiet=True)
  cut = runner.load_checkpoint(tmp_path)["state"]
  assert int(cut.step) < TINY[name]["steps"] and not read_history(tmp_path)
  monkeypatch.setattr(TrainingEvaluator, "run_shared", real)
  resume(tmp_path, quiet=True)
  state = runner.load_checkpoint(tmp_path)["state"]
  _assert_bitwise_equal(final.weights, state.weights)
  _assert_bitwise_equal(final.proposals, state.proposals)
  assert _stable(read_history(tmp_path)) == _stable(result.history)


# ------------------------------------------------------------------------------ experiments
def _experiment(name):
  import importlib.util
  import pathlib
  import sys

  path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"experiment_{name}", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module


def test_cifar10_nb201_experiment_tiny_variant_looks_up_the_table(tmp_path):
  exp = _experiment("oneshot_cifar10_nb201")
  best = exp.lookup("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                    "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
  assert best["index"] == 9930 and best["test_accuracy"] == pytest.approx(94.36, abs=0.01)
  assert exp.lookup("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")["test_accuracy"] == 10
  results = exp.train_and_evaluate(exp.load_variants()["tiny"], tmp_path)
  assert sorted(results["runs"]) == ["darts/0", "enas/0", "spos/0"]
  for r in results["runs"].values():
    assert 10.0 <= r["test_accuracy"] <= best["optimum"] and 1 <= r["rank"] <= 15625
  assert "| spos |" in exp.markdown(results)


@pytest.mark.slow
def test_fmnist_experiment_tiny_variant_runs_end_to_end(tmp_path):
  exp = _experiment("oneshot_fmnist")
  results = exp.train_and_evaluate(exp.load_variants()["tiny"], tmp_path)
  assert len(results["sample"]) == 2 and len(results["stand_alone"]) >= 2
  for name in ("spos", "darts", "enas"):
    m = results["methods"][name]
    assert 0 <= m["chosen_test_accuracy"] <= 1 and 1 <= m["chosen_rank_in_sample"] <= 3
    # Two architectures: tau is +-1, or NaN when a score ties.
    assert all(np.isnan(t) or abs(t) == 1 for t in m["tau"].values())
  assert exp.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
  assert exp.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
  assert exp.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
  # A second run in the same folder reuses every stage (nothing is searched again).
  again = exp.train_and_evaluate(exp.load_variants()["tiny"], tmp_path)
  for name in ("spos", "darts", "enas"):
    assert (again["methods"][name]["search_seconds"] ==
            results["methods"][name]["search_seconds"])


def test_ranking_study_cells_and_statistics():
  exp = _experiment("oneshot_ranking")
  # Edge 2<-0 feeds node 2, which reaches the output only through 'none': dead.
  np.testing.assert_array_equal(exp.live_cell([3, 2, 0, 1, 3, 0]), [3, 0, 0, 1, 3, 0])
  np.testing.assert_array_equal(exp.live_cell([3, 0, 3, 0, 0, 3]), [3, 0, 3, 0, 0, 3])
  assert exp.live_cell([3, 0, 0, 0, 0, 3]) is None  # node 2 gets nothing: no path
  assert exp.free_ops([1, 4, 0, 3, 1, 2]) == 3
  cells = exp.draw_cells(40, 0)
  assert len({c.tobytes() for c in cells}) == 40
  assert all(np.array_equal(exp.live_cell(c), c) for c in cells)
  truth = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
  assert exp.top_regret([1, 2, 3, 4, 5, 6], truth, 2) == pytest.approx(0.9 - 0.5)
  assert exp.top_regret(-truth, truth, 1) == pytest.approx(0.5)
  assert exp.top_regret(truth, truth, 1) == 0.0
  # 2 of 6 at random: the best is among them with probability 1/3, the second best
  # without the best with 4/15, ...: expected best 0.9/3 + 0.8*4/15 + 0.7/5 + 0.6*2/15
  # + 0.5/15 = 0.7667.
  assert exp.random_regret(truth, 2) == pytest.approx(0.9 - 0.76667, abs=1e-4)
  lo, hi = exp.bootstrap_tau(np.arange(30), np.arange(30) + 0.1, 100)
  assert lo == hi == 1.0
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=200), rng.normal(size=200)
  lo, hi = exp.bootstrap_tau(a, b, 300)
  assert lo < 0 < hi and hi - lo < 0.25  # no correlation: an interval around 0


@pytest.mark.slow
def test_ranking_study_tiny_variant_runs_end_to_end(tmp_path):
  exp = _experiment("oneshot_ranking")
  cfg = exp.load_variants()["tiny"]
  results = exp.train_and_evaluate(cfg, tmp_path)
  assert len(results["cells"]) == 6 and len(results["truth"]) == 12
  rows = {r["score"]: r for r in results["analysis"]["rows"]}
  assert set(rows) == {"ceiling: stand-alone seed 0 vs seed 1", "params", "synflow",
                       "spos@0.25 shared", "enas@0.25 shared", "enas@0.25 controller",
                       "darts@0.1875 shared", "darts@0.1875 alpha"}
  for r in rows.values():
    assert np.isnan(r["tau"]) or -1 <= r["tau_low"] <= r["tau"] <= r["tau_high"] <= 1
    assert 0 <= r["top_regret"] <= 1
  assert [results["supernets"][t]["steps"] for t in ("spos@0.25", "enas@0.25",
                                                    "darts@0.1875")] == [4, 4, 3]
  assert "| spos@0.25 shared |" in exp.markdown(results)
  again = exp.train_and_evaluate(cfg, tmp_path)  # every stage reused
  # Compared as JSON: the logs hold NaN (no ENAS baseline yet), and NaN != NaN.
  for part in ("supernets", "truth"):
    assert json.dumps(again[part], sort_keys=True) == json.dumps(results[part], sort_keys=True)
