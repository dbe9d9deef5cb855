"""One-shot search: masked supernet training, DARTS's hypergradient and derivation, the
ENAS controller, the ranking one-shot strategies propose from, and the three strategies
end to end (shapes of their smoke presets, so compiled programs are shared)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from nasjax import data as data_lib
from nasjax.models import supernet as S
from nasjax.search.strategies import darts, enas, oneshot, spos
from nasjax.search.base import make_strategy, strategy_entry
from nasjax.search.spaces import DartsCellSpace, MacroSpace, NB201Space

SMOKE_SPACE = NB201Space(C=2, N=1)


@pytest.fixture(scope="module")
def data():
  return data_lib.load("fashion_mnist_small", limit=256)


# ------------------------------------------------------------------------------ training
def test_weight_step_trains_only_the_sampled_path(data):
  spec = S.NB201Supernet(C=2, N=1, input_shape=(28, 28, 1), num_classes=10)
  opt = oneshot.SGD(momentum=0.9, weight_decay=5e-4, grad_clip=5.0)  # SPOS's defaults
  step = oneshot.weight_step_fn(opt, True, "switch")
  sn = spec.init(jax.random.key(0))
  mom = opt.init(sn.params)
  x, y = data.x_train[:16], data.y_train[:16]
  paths = [[3, 3, 2, 1, 4, 0], [2, 1, 0, 4, 3, 3], [3, 3, 2, 1, 4, 0]]
  before = jax.tree_util.tree_map(np.asarray, sn.params)
  first = None
  for path in paths:
    sn, mom, loss, acc = step(sn, mom, x, y, jnp.asarray(path, jnp.int32), np.float32(0.05))
    assert np.isfinite(float(loss)) and 0 <= float(acc) <= 1
    if first is None:
      first = jax.tree_util.tree_map(np.asarray, sn.params)
  assert step._cache_size() == 1  # one program for every path
  # After the first path (edge 1<-0: nor_conv_3x3): its kernel moved, the 1x1 did not.
  on, off = "s0_c0_e10_nor_conv_3x3_conv", "s0_c0_e10_nor_conv_1x1_conv"
  assert not np.allclose(first[on]["kernel"], before[on]["kernel"])
  np.testing.assert_array_equal(first[off]["kernel"], before[off]["kernel"])
  # Shared weights always train.
  assert not np.allclose(first["stem_conv"]["kernel"], before["stem_conv"]["kernel"])
  # Edge 3<-2 ran 'none' on path 1 and nor_conv_3x3 on path 2; nor_conv_1x1 never ran.
  never = "s2_c0_e32_nor_conv_1x1_conv"
  np.testing.assert_array_equal(np.asarray(sn.params[never]["kernel"]),
                                before[never]["kernel"])
  # Its momentum stayed zero too: no weight decay or momentum leaked into it.
  m = ravel_pytree(sn.params)[1](mom)
  assert np.all(np.asarray(m[never]["kernel"]) == 0)
  assert np.any(np.asarray(m[on]["kernel"]) != 0)


def test_sgd_direction_matches_the_formula():
  opt = oneshot.SGD(momentum=0.5, weight_decay=0.1, grad_clip=1.0)
  w = jnp.array([1.0, 2.0, -1.0])
  m = jnp.array([0.5, 0.0, 1.0])
  g = jnp.array([3.0, 4.0, 0.0])  # norm 5: clipped to norm 1
  decay = jnp.array([True, False, True])
  d, new_m = opt.direction(w, m, g, decay)
  expect_g = np.array([0.6, 0.8, 0.0]) + np.array([0.1, 0.0, -0.1])
  np.testing.assert_allclose(new_m, 0.5 * np.array([0.5, 0.0, 1.0]) + expect_g, rtol=1e-6)
  np.testing.assert_allclose(d, new_m, rtol=0)
  with pytest.raises(ValueError, match="momentum must lie in"):
    oneshot.SGD(momentum=1.0)


def test_cosine_schedule_ends_at_the_minimum():
  assert oneshot.cosine_lr(0, 10, 0.1, 0.001) == pytest.approx(0.1)
  assert oneshot.cosine_lr(5, 10, 0.1, 0.001) == pytest.approx(0.0505)
  assert oneshot.cosine_lr(10, 10, 0.1, 0.001) == pytest.approx(0.001)


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


def test_darts_strategy_runs_phases_and_logs_skip_share(data):
  entry = strategy_entry("darts")
  cfg = {**entry.smoke["config"], "phases": 2}
  strat = darts.Darts(SMOKE_SPACE, cfg, data=data)
  state = strat.init(jax.random.key(0))
  codes, state = strat.ask(jax.random.key(1), state)
  assert int(state.step) == 2 and int(state.phase) == 1  # round(3 * 1 / 2) steps
  np.testing.assert_array_equal(codes[0], strat.derived(state))
  codes, state = strat.ask(jax.random.key(2), state)
  assert int(state.step) == 3 and int(state.phase) == 2
  rows = state.log.rows()
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert all(0 <= r["skip_share"] <= 1 and np.isfinite(r["train_loss"]) for r in rows)
  np.testing.assert_array_equal(codes[0], strat.derived(state))
  nxt, state = strat.ask(jax.random.key(3), state)  # then the next-ranked cell
  assert not np.array_equal(nxt, codes)
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
  # The smoke preset's controller and settings (its compiled update is shared).
  cfg = strategy_entry("enas").smoke["config"]
  ctrl = enas.Controller(tuple(SMOKE_SPACE.num_choices), hidden=cfg["hidden"],
                         tanh_constant=enas.DEFAULT_CONFIG["tanh_constant"],
                         temperature=float(enas.DEFAULT_CONFIG["temperature"]))
  tx, _, update = enas._controller_fns(ctrl, enas.DEFAULT_CONFIG["controller_lr"],
                                       enas.DEFAULT_CONFIG["entropy_weight"],
                                       enas.DEFAULT_CONFIG["baseline_decay"])
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


def test_enas_strategy_trains_controller_and_supernet(data):
  entry = strategy_entry("enas")
  strat = enas.Enas(SMOKE_SPACE, dict(entry.smoke["config"]), data=data)
  state = strat.init(jax.random.key(0))
  ctrl0 = jax.tree_util.tree_map(np.asarray, state.controller)
  codes, state = strat.ask(jax.random.key(1), state)
  rows = state.log.rows()
  assert [r["step"] for r in rows] == [2, 4]  # child_steps=2, max_steps=4
  assert all(0 <= r["reward"] <= 1 for r in rows)
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(ctrl0),
                                                 jax.tree_util.tree_leaves(state.controller))]
  assert any(moved)
  ranked = np.asarray(state.proposals.ranked)[:int(state.proposals.size)]
  np.testing.assert_array_equal(codes[0], ranked[0])
  scores = np.asarray(state.proposals.scores)[:int(state.proposals.size)]
  assert np.all(np.diff(scores) <= 0)


# ------------------------------------------------------------------------------ SPOS
def test_spos_strategy_is_deterministic_and_proposes_by_score(data):
  entry = strategy_entry("spos")
  runs = []
  for _ in range(2):
    strat = spos.Spos(SMOKE_SPACE, dict(entry.smoke["config"]), data=data)
    state = strat.init(jax.random.key(7))
    codes, state = strat.ask(jax.random.key(1), state)
    runs.append((np.asarray(codes), np.asarray(state.proposals.scores), state))
  np.testing.assert_array_equal(runs[0][0], runs[1][0])
  np.testing.assert_array_equal(runs[0][1], runs[1][1])
  state = runs[0][2]
  size = int(state.proposals.size)
  ranked = np.asarray(state.proposals.ranked)[:size]
  scores = np.asarray(state.proposals.scores)[:size]
  assert 1 <= size <= 4 and np.all(np.diff(scores) <= 0)
  np.testing.assert_array_equal(runs[0][0][0], ranked[0])
  # The stored scores are the shared-weight accuracies of the ranked paths.
  np.testing.assert_allclose(strat.score(state, ranked), scores, atol=1e-6)
  assert int(state.step) == 4 and float(state.log.best_score[0]) == pytest.approx(scores[0])


def test_proposals_rank_distinct_codes_and_cycle():
  codes = np.array([[1, 2], [0, 0], [1, 2], [3, 1]])
  p = oneshot.Proposals.from_scores(codes, np.array([0.5, 0.9, 0.7, 0.1]), capacity=8)
  assert int(p.size) == 3
  got = []
  for _ in range(4):
    c, p = p.pop()
    got.append(c.tolist())
  assert got == [[0, 0], [1, 2], [3, 1], [0, 0]]


def test_one_shot_options_are_checked(data):
  with pytest.raises(ValueError, match="unknown option"):
    spos.Spos(SMOKE_SPACE, {"epoch": 1}, data=data)
  with pytest.raises(ValueError, match="order must be one of"):
    darts.Darts(SMOKE_SPACE, {"order": "third"}, data=data)
  with pytest.raises(ValueError, match="phases must be a positive int"):
    enas.Enas(SMOKE_SPACE, {"phases": 0}, data=data)
  with pytest.raises(ValueError, match="does not search space 'macro'"):
    make_strategy("spos", MacroSpace(), {})


def test_batch_stream_resumes_exactly_with_augmentation():
  x = np.arange(10 * 6 * 6, dtype=np.float32).reshape(10, 6, 6, 1)
  y = np.arange(10, dtype=np.int32)
  key = jax.random.key(3)
  full = oneshot.BatchStream(x, y, 3, key, augment=True)
  batches = [next(full) for _ in range(7)]  # 3 batches per epoch: crosses two epochs
  resumed = oneshot.BatchStream(x, y, 3, key, start=4, augment=True)
  for xb, yb in batches[4:]:
    rx, ry = next(resumed)
    np.testing.assert_array_equal(rx, xb)
    np.testing.assert_array_equal(ry, yb)
  epoch = np.concatenate([b[1] for b in batches[:3]])
  assert len(set(epoch.tolist())) == 9  # a permutation, the remainder dropped
  plain = next(oneshot.BatchStream(x, y, 3, key))
  np.testing.assert_array_equal(plain[1], batches[0][1])  # same order either way
  assert not np.array_equal(plain[0], batches[0][0])  # but cropped / flipped


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
