"""NAO: token schemes, the encoder-predictor-decoder, gradient steps and the search."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nasjax import data as data_lib
from nasjax.search import (Budget, DartsCellSpace, MacroSpace, NB201Space, make_strategy, run,
                           work)
from nasjax.search.strategies import nao as nao_lib
from nasjax.search.strategies.nao_model import NAOModel, token_scheme

# One tiny model per space, shared by the tests so each program compiles once.
TINY = dict(embed_dim=8, hidden=16, mlp_layers=1, mlp_hidden=16, batch_size=16,
            learning_rate=0.01)
NB201 = NAOModel(NB201Space(), **TINY)
DARTS = NAOModel(DartsCellSpace(steps=2), **TINY)


def _codes(space, n, seed=0):
  return jax.vmap(space.sample)(jax.random.split(jax.random.key(seed), n))


# ------------------------------------------------------------------------------ tokens
@pytest.mark.parametrize("space", [NB201Space(), DartsCellSpace(), MacroSpace()],
                         ids=lambda s: s.name)
def test_tokens_round_trip_and_respect_the_mask(space):
  scheme = token_scheme(space)
  codes = _codes(space, 64)
  tokens = np.asarray(scheme.tokens(codes))
  assert tokens.shape == (64, scheme.length)
  np.testing.assert_array_equal(scheme.codes(tokens), codes)
  assert np.all(scheme.valid[np.arange(scheme.length), tokens])
  assert not scheme.valid[:, 0].any()  # the start token is never an output


def test_nb201_tokens_separate_inputs_from_ops():
  scheme = token_scheme(NB201Space())
  # Edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2: fixed input tokens 1 + i, then the op.
  tokens = np.asarray(scheme.tokens(jnp.array([0, 1, 2, 3, 4, 0])))
  np.testing.assert_array_equal(tokens, [1, 4, 1, 5, 2, 6, 1, 7, 2, 8, 3, 4])
  inputs, ops = set(tokens[0::2]), set(tokens[1::2])
  assert inputs.isdisjoint(ops) and scheme.vocab_size == 9


def test_darts_swaps_keep_the_architecture():
  space = DartsCellSpace()
  scheme = token_scheme(space)
  codes = _codes(space, 32, seed=3)
  swapped = scheme.augment(jax.random.key(4), codes)
  assert int(jnp.sum(jnp.any(swapped != codes, axis=1))) >= 30  # 16 coin flips per code
  np.testing.assert_array_equal(scheme.canonical(swapped), scheme.canonical(codes))
  for a, b in zip(np.asarray(codes[:4]), np.asarray(swapped[:4])):
    g, h = space.decode(a), space.decode(b)
    for kind in ("normal", "reduce"):
      pairs_a = [sorted(getattr(g, kind)[2 * i:2 * i + 2]) for i in range(space.steps)]
      pairs_b = [sorted(getattr(h, kind)[2 * i:2 * i + 2]) for i in range(space.steps)]
      assert pairs_a == pairs_b
  # NB201 has no such symmetry: augmentation leaves codes alone.
  nb = _codes(NB201Space(), 8)
  np.testing.assert_array_equal(token_scheme(NB201Space()).augment(jax.random.key(0), nb), nb)


# ------------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def trained_nb201():
  """The tiny NB201 model trained on 16 architectures with scores rising with the
  number of 3x3 convolutions."""
  space = NB201Space()
  codes = _codes(space, 16, seed=1)
  score = jnp.mean(codes == 3, axis=1).astype(jnp.float32)
  params, opt = NB201.init(jax.random.key(0))
  params, opt, metrics = NB201.train(params, opt, codes, score, jnp.ones(16),
                                     jax.random.key(1), epochs=300)
  return params, codes, score, metrics


def test_reconstruction_learns_a_small_set(trained_nb201):
  params, codes, _, metrics = trained_nb201
  assert float(metrics["token_accuracy"]) >= 0.95
  rec = np.asarray(NB201.reconstruct(params, codes))
  assert np.mean(np.all(rec == np.asarray(codes), axis=1)) >= 0.9
  assert float(metrics["mse"]) <= 0.02


def test_a_gradient_step_raises_the_predicted_score(trained_nb201):
  params, codes, _, _ = trained_nb201
  memory = NB201.encode(params, codes)
  grads = jax.grad(lambda m: jnp.sum(NB201.predict_memory(params, m)))(memory)
  before = NB201.predict_memory(params, memory)
  moved = memory + 0.05 * grads
  moved = moved / jnp.linalg.norm(moved, axis=-1, keepdims=True)
  after = NB201.predict_memory(params, moved)
  assert np.all(np.asarray(after - before) > 1e-5)
  np.testing.assert_allclose(NB201.predict(params, codes), before, atol=1e-6)


@pytest.mark.parametrize("model", [NB201, DARTS], ids=["nb201", "darts"])
def test_decoding_any_representation_gives_valid_codes(model):
  params, _ = model.init(jax.random.key(5))
  T, H = model.scheme.length, model.hidden
  memory = jax.random.normal(jax.random.key(6), (32, T, H))
  memory = memory / jnp.linalg.norm(memory, axis=-1, keepdims=True)
  codes = np.asarray(model.decode(params, memory))
  n = np.asarray(model.space.num_choices)
  assert codes.shape == (32, model.space.length)
  assert np.all((codes >= 0) & (codes < n))
  for c in codes:
    model.space.check(c)  # raises on an invalid code


def test_steps_propose_new_architectures_only(trained_nb201):
  params, codes, score, _ = trained_nb201
  seeds = codes[jnp.argsort(-score)[:4]]
  cands = NB201.step(params, NB201.encode(params, seeds), 8.0, max_steps=8)
  assert cands.shape == (4, 8, 6)
  picked, found, step = NB201.pick_new(cands, codes, jnp.ones(16, bool))
  known = {tuple(c) for c in np.asarray(codes)}
  picked, found, step, cands = map(np.asarray, (picked, found, step, cands))
  assert found.sum() >= 3
  for i in np.flatnonzero(found):
    assert tuple(picked[i]) not in known and 1 <= step[i] <= 8
    np.testing.assert_array_equal(picked[i], cands[i, step[i] - 1])
    # Every smaller step decoded a known architecture or one an earlier seed took.
    taken = known | {tuple(c) for c in picked[:i][found[:i]]}
    assert all(tuple(c) in taken for c in cands[i, :step[i] - 1])
  new = [tuple(c) for c in picked[found]]
  assert len(new) == len(set(new))


def test_pick_best_takes_the_top_new_distinct_candidates():
  space = NB201.space
  known = np.asarray(_codes(space, 3, seed=13))
  a, b, c = np.asarray(_codes(space, 3, seed=14))
  cands = jnp.asarray(np.stack([known[0], a, b, a, c, known[1]]))
  prio = jnp.array([0.9, 0.5, 0.1, 0.5, 0.7, 0.95])
  picked, found, index = NB201.pick_best(cands, jnp.asarray(known), jnp.ones(3, bool), prio,
                                         k=4)
  # Known codes and the repeat of ``a`` are skipped; the pool holds three new ones.
  np.testing.assert_array_equal(index[:3], [4, 1, 2])
  np.testing.assert_array_equal(found, [True, True, True, False])
  np.testing.assert_array_equal(picked[:3], np.stack([c, a, b]))
  # A masked-out known row does not count as known.
  _, found, index = NB201.pick_best(cands, jnp.asarray(known), jnp.array([False, True, True]),
                                    prio, k=2)
  np.testing.assert_array_equal(index, [0, 4])
  assert bool(np.all(found))


def test_pick_new_compares_darts_codes_up_to_swaps():
  space = DARTS.space
  code = np.asarray(_codes(space, 1, seed=7))[0]
  swapped = np.asarray(DARTS.scheme.augment(jax.random.key(8), code[None]))[0]
  other = np.asarray(_codes(space, 1, seed=9))[0]
  cands = jnp.asarray(np.stack([swapped, other])[None])  # one seed, two steps
  picked, found, step = DARTS.pick_new(cands, jnp.asarray(code[None]), jnp.ones(1, bool))
  assert bool(found[0]) and int(step[0]) == 2
  np.testing.assert_array_equal(DARTS.scheme.canonical(picked[0]),
                                DARTS.scheme.canonical(other))


# ------------------------------------------------------------------------------ search
def _nao(**overrides):
  config = {"seed_size": 6, "top_k": 3, "max_steps": 6, "epochs": 20, "step_size": 0.5,
            **TINY, **overrides}
  return make_strategy("nao", NB201Space(), config)


def test_normalised_scores():
  s, w = nao_lib.normalised_scores(np.array([3.0, 1.0, np.nan, 2.0]))
  np.testing.assert_allclose(s, [0.0, 1.0, 0.0, 0.5], atol=1e-7)
  np.testing.assert_array_equal(w, [1, 1, 0, 1])
  # A mask drops rows (the padding of the evaluated set) as a NaN does.
  f = np.array([3.0, 1.0, 0.0, 2.0, 2.0])
  s, w = nao_lib.normalised_scores(f, "minmax", np.arange(5) != 2)
  np.testing.assert_allclose(s, [0.0, 1.0, 0.0, 0.5, 0.5], atol=1e-7)
  s, w = nao_lib.normalised_scores(f, "rank", np.arange(5) != 2)
  np.testing.assert_allclose(s, [0.0, 1.0, 0.0, 0.5, 0.5], atol=1e-6)
  np.testing.assert_array_equal(w, [1, 1, 0, 1, 1])
  s, _ = nao_lib.normalised_scores(f, "rank")
  np.testing.assert_allclose(s, [0.0, 0.75, 1.0, 0.375, 0.375], atol=1e-6)


@pytest.mark.parametrize("options", [nao_lib.PAPER, {"select": "pool", "pool_seeds": 5,
                                                     "fallback": "predicted",
                                                     "fallback_draws": 32}],
                         ids=["paper", "pool"])
def test_vmapped_nao_over_seeds_equals_the_per_seed_loop(options):
  from nasjax.search import bench
  from nasjax.search.evaluators import NB201Evaluator

  evaluator = NB201Evaluator("cifar10")
  strategy = _nao(**{**options, "epochs": 3, "capacity": 16, "top_k": 3})
  vec, states = bench.query_sequences(strategy, evaluator, [0, 1], max_evals=12,
                                      final_states=True)
  loop = bench.query_sequences(strategy, evaluator, [0, 1], max_evals=12, vectorize=False)
  np.testing.assert_array_equal(vec, loop)
  assert all(len(set(r)) == 12 for r in vec)
  np.testing.assert_array_equal(states.count, [12, 12])
  np.testing.assert_array_equal(states.stepped + states.fallback, [6, 6])


def test_nao_searches_the_nb201_table_without_repeats(tmp_path):
  from nasjax.search.evaluators import NB201Evaluator

  evaluator = NB201Evaluator("cifar10")
  res = run(_nao(), evaluator, Budget(max_evals=15), tmp_path / "a", seed=0, quiet=True)
  codes = [tuple(h["code"]) for h in res.history]
  assert len(codes) == 15 and len(set(codes)) == 15
  assert [h["generation"] for h in res.history] == [g for g in range(5) for _ in range(3)]
  vals = np.array([h["metrics"]["val_accuracy"] for h in res.history])
  # The first six (two asks) are random; the stepped ones derive from the best of them.
  assert res.best["metrics"]["val_accuracy"] == pytest.approx(vals.max(), abs=1e-9)
  again = run(_nao(), evaluator, Budget(max_evals=15), tmp_path / "b", seed=0, quiet=True)
  assert [tuple(h["code"]) for h in again.history] == codes


def test_nao_skips_failed_evaluations():
  strategy = _nao()
  ask, tell = jax.jit(strategy.ask), jax.jit(strategy.tell)
  state = strategy.init(jax.random.key(0))
  cands = []
  for i, fitness in enumerate(([np.nan, 1.0, np.nan], [3.0, np.nan, 5.0])):
    c, state = ask(jax.random.key(1 + i), state)
    state = tell(jax.random.key(3 + i), state, c, jnp.asarray(fitness, jnp.float32))
    # Nothing is trained on during the seed phase.
    assert np.isfinite(np.asarray(state.metrics)).all() == (i == 1)
    cands.append(np.asarray(c))
  assert int(state.count) == 6 and int(state.stepped) == 0 and int(state.fallback) == 0
  np.testing.assert_array_equal(state.codes[:6], np.concatenate(cands))
  assert np.isnan(np.asarray(state.fitness[6:])).all()
  new, state = ask(jax.random.key(5), state)
  assert new.shape == (3, 6) and int(state.stepped) + int(state.fallback) == 3
  told = {tuple(c) for c in np.concatenate(cands)}
  assert len(told) == 6 and not told & {tuple(c) for c in np.asarray(new)}


def test_nao_rejects_bad_options():
  with pytest.raises(ValueError, match="option top_k must be an int >= 1, got 0"):
    _nao(top_k=0)
  with pytest.raises(ValueError, match="option trade_off must be a number >= 0 <= 1"):
    _nao(trade_off=1.5)
  with pytest.raises(ValueError, match="objective 1 is outside"):
    _nao(objective=1)
  with pytest.raises(ValueError, match="capacity 4 is below seed_size 6"):
    _nao(capacity=4)
  with pytest.raises(ValueError, match="option select must be one of"):
    _nao(select="best")
  with pytest.raises(ValueError, match="option pool_seeds must be an int >= 0"):
    _nao(pool_seeds=-1)
  with pytest.raises(ValueError, match="option fallback must be one of"):
    _nao(fallback="neighbours")
  with pytest.raises(ValueError, match="option fallback_draws must be an int >= 1"):
    _nao(fallback_draws=0)
  with pytest.raises(ValueError, match="unknown option"):
    _nao(seeds=3)


def test_registered_defaults_and_the_model_they_build():
  # The registered defaults are the ones the results were measured with.
  assert nao_lib.NAOConfig.defaults() == {
      "seed_size": 20, "top_k": 5, "step_size": 1.0, "max_steps": 20, "epochs": 50,
      "objective": 0, "unlabeled": 0, "select": "pool", "pool_seeds": 0,
      "fallback": "predicted", "fallback_draws": 256, "target": "rank", "capacity": 256,
      "embed_dim": 32, "hidden": 64, "mlp_layers": 1, "mlp_hidden": 64, "trade_off": 0.8,
      "learning_rate": 0.005, "weight_decay": 1e-4, "grad_clip": 5.0, "batch_size": 32}
  strategy = _nao()
  assert strategy.model == NB201 and hash(strategy.model) == hash(NB201)
  assert strategy == _nao() and hash(strategy) == hash(_nao())  # jit's static argument
  # The LSTMs are flax cells, the optimiser optax's Adam.
  params, opt_state = NB201.init(jax.random.key(0))
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for part in ("['encoder']", "['decoder']['ScanDecoderStep_0']"):
    assert any(p.startswith(f"['params']{part}['OptimizedLSTMCell_0']") for p in paths)
  adam = [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: isinstance(
      x, optax.ScaleByAdamState)) if isinstance(x, optax.ScaleByAdamState)]
  assert len(adam) == 1


def test_paper_preset_is_naos_proposal_rule_without_the_predicted_fallback():
  from nasjax.search.options import preset_config

  paper, defaults = preset_config("nao", "paper"), nao_lib.NAOConfig.defaults()
  assert {k: paper[k] for k in ("select", "fallback", "target", "top_k", "epochs")} == {
      "select": "first", "fallback": "random", "target": "minmax", "top_k": 10,
      "epochs": 100}
  assert {k for k in paper if paper[k] != defaults[k]} <= set(nao_lib.PAPER)
  assert _nao(**paper).config.fallback == "random"


def test_random_fill_avoids_known_and_taken_codes():
  strategy = _nao(top_k=3, capacity=16)
  space = strategy.space
  known = _codes(space, 16, seed=11)
  picked = jnp.asarray(known[:1]).repeat(3, axis=0).at[0].set(_codes(space, 1, seed=12)[0])
  out = np.asarray(strategy._random_new(jax.random.key(0), picked,
                                        jnp.array([True, False, False]), known,
                                        jnp.ones(16, bool)))
  np.testing.assert_array_equal(out[0], picked[0])
  rows = {tuple(c) for c in out}
  assert len(rows) == 3 and not rows & {tuple(c) for c in np.asarray(known)}
  # Codes given first are tried before the random draws, in order, skipping known ones
  # and repeats (the predicted fallback passes the draws sorted by predicted score).
  x, y = np.asarray(_codes(space, 2, seed=15))
  first = jnp.asarray(np.stack([known[0], x, x, known[5], y]))
  out = np.asarray(strategy._random_new(jax.random.key(0), picked,
                                        jnp.array([True, False, False]), known,
                                        jnp.ones(16, bool), first))
  np.testing.assert_array_equal(out, np.stack([picked[0], x, y]))


def test_pool_selection_proposes_the_predictors_best_new_steps(trained_nb201):
  params, codes, score, _ = trained_nb201
  strategy = nao_lib.NAO(NB201Space(), nao_lib.NAOConfig(
      seed_size=16, top_k=4, step_size=1.0, max_steps=8, epochs=1, select="pool",
      pool_seeds=6, fallback="predicted", capacity=32, **TINY))
  assert strategy.model == NB201
  state = strategy.init(jax.random.key(0))
  state = state.replace(params=params, codes=state.codes.at[:16].set(codes),
                        fitness=state.fitness.at[:16].set(-score), count=jnp.int32(16))
  new, after = jax.jit(strategy.ask)(jax.random.key(1), state)
  new = np.asarray(new)
  # Every step of the six best seeds, decoded: the proposals are its best new ones.
  best = np.argsort(-np.asarray(score), kind="stable")[:6]
  cands = np.asarray(NB201.step(params, NB201.encode(params, codes[best]), 1.0,
                                max_steps=8)).reshape(48, 6)
  prio = np.asarray(NB201.predict(params, jnp.asarray(cands)))
  known = {tuple(c) for c in np.asarray(codes)}
  pool = {tuple(c): p for c, p in zip(cands, prio) if tuple(c) not in known}
  pool = sorted(pool, key=lambda c: -pool[c])
  stepped = int(after.stepped)
  assert stepped + int(after.fallback) == 4 and stepped == min(4, len(pool))
  assert [tuple(c) for c in new[:stepped]] == pool[:stepped]
  pred = np.asarray(NB201.predict(params, jnp.asarray(new)))
  assert np.all(np.diff(pred[:stepped]) <= 1e-6)
  assert len({tuple(c) for c in new} | known) == 20


# ------------------------------------------------------------------------------ NAO-WS
def test_optimise_scores_distinct_architectures_and_climbs():
  strategy = _nao(seed_size=6, top_k=3)
  score = lambda c: np.mean(np.asarray(c) == 3, axis=1)  # more 3x3 convs is better
  codes, scores, state = nao_lib.optimise(strategy, score, jax.random.key(0), evaluations=14)
  assert codes.shape == (14, 6) and int(state.count) == 14
  assert len({tuple(c) for c in codes}) == 14
  np.testing.assert_allclose(scores, score(codes), atol=0)
  # The stepped proposals score higher on average than the random seeds.
  assert scores[6:].mean() > scores[:6].mean() + 0.05




# ------------------------------------------------------------------------------ NAO-WS
DATA = data_lib.synthetic(num_train=128, num_val=64, num_test=8, seed=3)
PROBLEM = work.Problem.of(DATA)
WS_SPACE = NB201Space(C=2, N=1)
WS_OPTIONS = {"steps": 4, "iterations": 2, "chunk_steps": 2, "batch_size": 16,
              "calib_batches": 2, "calib_batch_size": 16, "eval_examples": 64,
              "pool_size": 8, "nao_top_k": 3,
              **{"nao_" + k: v for k, v in dict(max_steps=6, epochs=20, step_size=0.5,
                                                 **TINY).items()}}


def _nao_ws(**options):
  return make_strategy("nao_ws", WS_SPACE, {**WS_OPTIONS, **options}, problem=PROBLEM)


def _drive(strategy, state, asks):
  """``asks`` asks, the shared-weight work run on ``DATA``, every answer told."""
  from nasjax.search.evaluators import run_shared

  out = []
  for i in range(asks):
    request, state = strategy.ask(jax.random.key(100 + i), state)
    result = run_shared(request, DATA) if work.is_shared(request) else None
    told = result if result is not None else np.ones(len(request))
    state = strategy.tell(jax.random.key(200 + i), state, request, told)
    out.append((request, result, state))
  return out


def test_nao_ws_trains_on_its_pool_scores_it_and_renews_it():
  strategy = _nao_ws()
  state0 = strategy.init(jax.random.key(0))
  pool0 = np.asarray(state0.pool)
  assert pool0.shape == (8, 6) and len({tuple(c) for c in pool0}) == 8
  out = _drive(strategy, state0, 6)
  kinds = [type(r).__name__ for r, _, _ in out]
  assert kinds == ["TrainShared", "ScoreShared", "TrainShared", "ScoreShared", "ndarray",
                   "ndarray"]
  assert [(r.start, r.stop) for r, _, _ in (out[0], out[2])] == [(0, 2), (2, 4)]
  assert out[0][0].step is out[2][0].step  # one step function for every chunk
  # The pool's codes are the paths the weight steps sample.
  np.testing.assert_array_equal(out[0][0].weights["pool"], pool0)
  np.testing.assert_array_equal(out[1][0].codes, pool0)
  # Scored with the shared weights: the pool ranked best first; the worst three replaced
  # by three new distinct architectures of NAO's gradient steps.
  scores = out[1][1].scores
  np.testing.assert_allclose(scores, nao_lib.score_pool(
      strategy.config, out[1][2].supernet, pool0, DATA), atol=0)
  order = np.argsort(-scores, kind="stable")
  state = out[1][2]
  pool1 = np.asarray(state.pool)
  np.testing.assert_array_equal(pool1[:5], pool0[order[:5]])
  np.testing.assert_allclose(state.scores[:5], scores[order[:5]], atol=1e-7)
  assert np.isnan(np.asarray(state.scores[5:])).all()
  assert len({tuple(c) for c in pool1}) == 8
  assert not {tuple(c) for c in pool1[5:]} & {tuple(c) for c in pool0}
  assert int(state.controller.count) == 8 and np.isfinite(np.asarray(
      state.controller.metrics)).all()
  np.testing.assert_array_equal(out[2][0].weights["pool"], pool1)
  np.testing.assert_array_equal(out[3][0].codes, pool1)
  # The second iteration trains on from the first's shared weights and optimiser state
  # (no restart), on the renewed pool.
  for a, b in zip(jax.tree_util.tree_leaves((out[0][1].weights["supernet"].params,
                                             out[0][1].weights["opt_state"])),
                  jax.tree_util.tree_leaves((out[2][0].weights["supernet"].params,
                                             out[2][0].weights["opt_state"]))):
    np.testing.assert_array_equal(a, b)
  # After the last scoring the pool is proposed best first, and kept whole.
  final = out[3][2]
  last = np.argsort(-out[3][1].scores, kind="stable")
  np.testing.assert_array_equal(final.pool, pool1[last])
  np.testing.assert_array_equal(out[4][0][0], pool1[last[0]])
  np.testing.assert_array_equal(out[5][0][0], pool1[last[1]])
  state = out[5][2]
  np.testing.assert_array_equal(state.log.step, [2, 4])
  assert int(state.count) == 2 and int(state.step) == 4
  assert float(state.log.best_score[1]) == pytest.approx(float(np.max(out[3][1].scores)),
                                                         abs=1e-7)


def test_nao_ws_renewals_train_one_encoder_predictor_decoder_on():
  strategy = _nao_ws()
  state = strategy.init(jax.random.key(0))
  pool = np.asarray(state.pool)
  scores = np.linspace(0.9, 0.2, len(pool))
  _, _, first = strategy.renew(jax.random.key(1), pool, scores, state.controller)
  _, _, again = strategy.renew(jax.random.key(1), pool, scores, first)
  _, _, fresh = strategy.renew(jax.random.key(1), pool, scores, state.controller)
  # The second renewal starts from the first's model: its last epoch fits the pool's
  # scores and codes better than a model trained for the first time on the same pool.
  mse = lambda s: float(s.metrics[1])  # noqa: E731
  loss = lambda s: float(s.metrics[0])  # noqa: E731
  assert mse(fresh) == pytest.approx(mse(first), rel=1e-6)  # same start, same result
  assert loss(again) < 0.7 * loss(first), (loss(first), loss(again))
  assert int(again.count) == len(pool)  # it learns from the current pool only


def _on_path(spec, params, path):
  """Whether each array of ``params`` belongs to an op that ``path`` runs (or to no edge op:
  then it always runs)."""
  weights = spec.path_weights(path)
  owner = {n.name: (c.kind, e.index, k) for c in spec.plan.cells() for e in c.edges
           for k, eop in enumerate(e.ops) for n in eop.nodes}
  return {node: {name: bool(weights[owner[node]] != 0) if node in owner else True
                 for name in arrays} for node, arrays in params.items()}


def test_nao_ws_weight_step_trains_the_sampled_path_only():
  strategy = _nao_ws()
  state = strategy.init(jax.random.key(0))
  path = np.asarray(state.pool)[:1]
  weights = {"supernet": state.supernet, "opt_state": state.opt_state, "pool": path}
  step = jax.jit(nao_lib.weight_step(strategy.config))
  assert nao_lib.weight_step(strategy.config) is nao_lib.weight_step(strategy.config)
  x, y = DATA.x_train[:16], DATA.y_train[:16]
  new, metrics = step(weights, (x, y), jax.random.key(1), np.int32(0))
  new, metrics = step(new, (x, y), jax.random.key(2), np.int32(1))
  assert np.isfinite(float(metrics["loss"]))
  used = _on_path(strategy.spec, state.supernet.params, path[0])
  moved = {}
  for (p, u), a, b in zip(jax.tree_util.tree_flatten_with_path(used)[0],
                          jax.tree_util.tree_leaves(state.supernet.params),
                          jax.tree_util.tree_leaves(new["supernet"].params)):
    moved[jax.tree_util.keystr(p)] = (bool(u), not np.array_equal(a, b))
  off = [k for k, (u, m) in moved.items() if not u]
  assert off and not any(moved[k][1] for k in off)  # the ops off the path stay as they were
  assert any(m for u, m in moved.values() if u)
  assert moved["['stem_conv']['kernel']"] == (True, True)
  # Their momentum stays zero, as it started.
  trace = [x for x in jax.tree_util.tree_leaves(new["opt_state"], is_leaf=lambda x: isinstance(
      x, optax.TraceState)) if isinstance(x, optax.TraceState)][0].trace
  for (p, u), m in zip(jax.tree_util.tree_flatten_with_path(used)[0],
                       jax.tree_util.tree_leaves(trace)):
    assert bool(np.any(np.asarray(m) != 0)) == (bool(u) and moved[jax.tree_util.keystr(p)][1])


def test_nao_ws_ask_never_trains():
  from nasjax.search.evaluators import run_shared

  strategy = _nao_ws()
  state = strategy.init(jax.random.key(0))
  shared = lambda s: jax.tree_util.tree_leaves((s.supernet, s.opt_state))
  for i in range(5):
    before = [np.array(a) for a in shared(state)]
    request, after = strategy.ask(jax.random.key(i), state)
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(shared(after), before))
    told = run_shared(request, DATA) if work.is_shared(request) else np.ones(1)
    state = strategy.tell(jax.random.key(9), after, request, told)
    # The evaluator trained a copy: the asked state's weights are still the same.
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(shared(after), before))
  assert int(state.iteration) == 2


def _comparable(history):
  clocks = ("wall", "compile", "cost", "elapsed")
  return [{**{k: v for k, v in h.items() if k not in clocks},
           "metrics": {k: v for k, v in h["metrics"].items()
                       if k not in ("compile_seconds", "train_seconds")}} for h in history]


def test_nao_ws_killed_run_resumes_to_the_same_weights_and_history(tmp_path, monkeypatch):
  from nasjax.search import evaluators, read_history
  from nasjax.search.rundir import load_checkpoint

  def evaluator():
    return evaluators.TrainingEvaluator(WS_SPACE, dataset="synthetic",
                                        train={"max_steps": 2, "batch_size": 16})

  config = {**WS_OPTIONS, "steps": 6, "chunk_steps": 2}
  run("nao_ws", evaluator(), 2, tmp_path / "a", seed=3, config=config, quiet=True)
  calls, real = [], evaluators.TrainingEvaluator.run_shared

  class Killed(Exception):
    pass

  def dying(self, request):
    calls.append(1)
    if len(calls) == 4:  # chunks (0, 2) and (2, 3), the first scoring, then (3, 5)
      raise Killed()
    return real(self, request)

  monkeypatch.setattr(evaluators.TrainingEvaluator, "run_shared", dying)
  with pytest.raises(Killed):
    run("nao_ws", evaluator(), 2, tmp_path / "b", seed=3, config=config, quiet=True)
  at_kill = load_checkpoint(tmp_path / "b")["state"]
  assert int(at_kill.step) == 3 and int(at_kill.iteration) == 1
  monkeypatch.setattr(evaluators.TrainingEvaluator, "run_shared", real)
  run("nao_ws", evaluator(), 2, tmp_path / "b", seed=3, config=config, quiet=True, resume=True)
  (whole, hist_a), (resumed, hist_b) = [
      (load_checkpoint(tmp_path / d)["state"], _comparable(read_history(tmp_path / d)))
      for d in ("a", "b")]
  assert len(hist_a) == 2 and hist_b == hist_a
  for a, b in zip(jax.tree_util.tree_leaves((whole.supernet, whole.opt_state, whole.pool,
                                             whole.controller.params)),
                  jax.tree_util.tree_leaves((resumed.supernet, resumed.opt_state,
                                             resumed.pool, resumed.controller.params))):
    assert np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b)
  assert int(resumed.step) == 6 and int(resumed.iteration) == 2


def test_nao_ws_options():
  with pytest.raises(ValueError, match="unknown option"):
    _nao_ws(cycles=3)
  with pytest.raises(ValueError, match="nao_top_k 8 must be below pool_size 8"):
    _nao_ws(nao_top_k=8)
  with pytest.raises(ValueError, match="option nao_select must be one of"):
    _nao_ws(nao_select="best")
  with pytest.raises(ValueError, match="nao_ws.* trains a supernet for the task: give problem="):
    make_strategy("nao_ws", WS_SPACE, WS_OPTIONS)
  defaults = nao_lib.NAOWSConfig.defaults()
  # NAO's own proposal rules (PAPER), half the pool renewed per iteration.
  assert {k: defaults["nao_" + k] for k in nao_lib.PAPER} == {**nao_lib.PAPER, "top_k": 50}
  assert defaults["pool_size"] == 100 and defaults["nao_embed_dim"] == 32
  inner = _nao_ws().nao
  assert inner.config.seed_size == inner.config.capacity == 8 and inner.config.top_k == 3
