"""LEMONADE and the NSGA-II baseline: densities, sampling, inheritance, fronts."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nasjax
from nasjax.ops import EXACT, MORPH_BATCH, MORPHISMS
from nasjax.search import Budget, bench, pareto, work
from nasjax.search.base import generation_keys, init_keys
from nasjax.search.evaluators import MacroEvaluator, TrainingEvaluator
from nasjax.search.spaces import MacroSpace, NB201Space, PlainCNNSpace
from nasjax.search.strategies import kde, lemonade, nsga2
from nasjax.search.strategies.lemonade import LemonadeConfig


def _lem(space=None, problem=None, **options):
  """A LEMONADE strategy on ``space`` (default NB-201's codes) with ``options``."""
  return lemonade.Lemonade(space or NB201Space(), LemonadeConfig(**options), problem)


# ------------------------------------------------------------------------------- KDE
def test_log_density_is_a_normalised_density():
  pts = np.array([[0.0, 1.0], [0.5, 1.2], [2.0, -1.0]])
  h = kde.scott_bandwidth(pts, 0.1)
  g = np.linspace(-6, 8, 281)
  xx, yy = np.meshgrid(g, g)
  q = np.stack([xx.ravel(), yy.ravel()], 1)
  mass = np.exp(kde.log_density(pts, q, h)).sum() * (g[1] - g[0]) ** 2
  assert mass == pytest.approx(1.0, abs=1e-3)
  # One point: the estimate is a Gaussian of width min_bandwidth in every dimension.
  one = kde.log_density(pts[:1], pts[:1], kde.scott_bandwidth(pts[:1], 0.5))
  assert one[0] == pytest.approx(-np.log(2 * np.pi * 0.25), abs=1e-9)


def test_transform_logs_the_chosen_columns():
  v = np.array([[1e3, 2.0], [1e6, 3.0]])
  out = kde.transform(v, [True, False])
  np.testing.assert_allclose(out, [[np.log(1e3), 2.0], [np.log(1e6), 3.0]], rtol=1e-12)
  with pytest.raises(ValueError, match="shape"):
    kde.transform(np.ones(3), True)


def test_parent_sampling_favours_sparse_regions():
  # 20 networks of about 10k parameters and one of 1M: on a log scale the big one is alone.
  rng = np.random.default_rng(0)
  params = np.concatenate([1e4 * np.exp(0.05 * rng.standard_normal(20)), [1e6]])[:, None]
  x = kde.transform(params, True)
  logd = kde.log_density(x, x, kde.scott_bandwidth(x, 0.1))
  p = kde.inverse_density_probs(logd)
  # Its density is about 1/20 of a clustered network's, so it is drawn about 20 times as
  # often as each of them: about half the draws, where uniform sampling gives 1/21.
  assert p[-1] / p[:20].max() > 15 and p[-1] > 0.4
  draws = kde.sample_sparse(jax.random.key(0), logd, 4000, replace=True)
  freq = np.bincount(draws, minlength=21) / 4000
  # binomial std of a frequency near 0.5 over 4000 draws is 0.008
  assert freq[-1] == pytest.approx(p[-1], abs=0.03)
  assert freq[:20].max() < 0.05


def test_acceptance_without_replacement_is_successive_sampling():
  logd = np.log(np.array([0.5, 0.25, 0.125, 0.125]))  # acceptance weights 1:2:4:4
  p = kde.inverse_density_probs(logd)
  np.testing.assert_allclose(p, [1 / 11, 2 / 11, 4 / 11, 4 / 11], rtol=1e-12)
  first, pairs = np.zeros(4), 0
  n = 3000
  for i in range(n):
    idx = kde.sample_sparse(jax.random.key(i), logd, 2, replace=False)
    assert idx[0] != idx[1]
    first[idx[0]] += 1
    pairs += {int(idx[0]), int(idx[1])} == {2, 3}
  np.testing.assert_allclose(first / n, p, atol=0.03)
  # P({2, 3} accepted) = 2 * (4/11) * (4/7) under successive sampling.
  assert pairs / n == pytest.approx(2 * 4 / 11 * 4 / 7, abs=0.03)
  # The mask removes entries; asking for more than remain is an error.
  idx = kde.sample_sparse(jax.random.key(0), logd, 2, replace=False, mask=[1, 0, 0, 1])
  assert sorted(idx.tolist()) == [0, 3]
  with pytest.raises(ValueError, match="distinct"):
    kde.sample_sparse(jax.random.key(0), logd, 3, replace=False, mask=[1, 0, 0, 1])


def test_acceptance_density_counts_the_proposed_children():
  # Population at e^0, e^5, e^10 parameters; three children at e^2.5 and one at e^7.5,
  # points the population's density treats alike (by symmetry).
  pop = np.exp([[0.0], [5.0], [10.0]])
  children = np.exp([[2.5], [2.5], [2.5], [7.5]])
  alone = _lem(accept_density="population")
  p = kde.inverse_density_probs(alone.child_log_density(pop, children))
  np.testing.assert_allclose(p, 0.25, rtol=1e-9)
  # Counting the children, the three at e^2.5 crowd each other: the lone one is favoured.
  joint = _lem(accept_density="joint")
  p = kde.inverse_density_probs(joint.child_log_density(pop, children))
  assert p[3] > 0.33 and p[3] > 1.5 * p[0]  # 0.37 and 0.21 with these wide kernels
  np.testing.assert_allclose(p[:3], p[0], rtol=1e-9)
  # Parents: the middle member, between the other two, is the densest.
  q = kde.inverse_density_probs(joint.parent_log_density(pop))
  assert q[1] < q[0] and q[0] == pytest.approx(q[2], rel=1e-9)


def test_paper_preset_is_algorithm_1():
  from nasjax.search.options import preset_config

  preset, defaults = LemonadeConfig.preset("paper"), LemonadeConfig.defaults()
  assert preset_config("lemonade", "paper") == preset
  # Where the paper differs from the defaults: the acceptance density and the operators.
  assert {k for k in defaults if preset[k] != defaults[k]} == {"accept_density",
                                                               "morphisms"}
  assert preset["accept_density"] == "population" and defaults["accept_density"] == "joint"
  assert set(preset["morphisms"]) == set(MORPHISMS) - {"net2deeper"}
  # The options this package adds are pinned off, so the preset over other options
  # restores the paper's rules.
  pinned = {**LemonadeConfig.defaults(), "min_params": 4000, "dominance_margin": [0.1],
            "cost_objective": "flops", "initial_depth": 3, "monotone_widths": True,
            "widen_to_monotone": True, "accept_density": "joint"}
  over = LemonadeConfig(**{**pinned, **lemonade.PAPER}).to_dict()
  assert over == {**preset, "num_objectives": 1}
  # Step 4 under the preset: each child's density is the population's alone, the
  # density of the parents' step 1; the children do not crowd each other.
  paper = _lem(**lemonade.PAPER)
  pop = np.exp([[0.0], [5.0], [10.0]])
  children = np.exp([[2.5], [2.5], [2.5], [7.5]])
  np.testing.assert_allclose(paper.child_log_density(pop, children),
                             paper.log_density(pop, children), rtol=1e-12)
  np.testing.assert_allclose(
      paper.accept_log_weight(pop, children, [None] * 4),
      _lem(accept_density="population").child_log_density(pop, children), rtol=1e-12)
  assert not np.allclose(paper.child_log_density(pop, children),
                         _lem().child_log_density(pop, children), rtol=1e-3)


def test_paper_preset_runs_a_tiny_search(tmp_path):
  from nasjax.search.options import preset_config
  from nasjax.search.runner import load_checkpoint, read_config, run

  config = preset_config("lemonade", "paper", {"n_pc": 4, "n_ac": 2, "initial": [[[4]]],
                                               "distill_steps": 2})
  result = run("lemonade", _evaluator(), Budget(max_evals=5), tmp_path / "run", 0, config,
               quiet=True)
  assert result.evals == 5 and all(h["status"] == "ok" for h in result.history)
  saved = read_config(tmp_path / "run")["strategy_config"]
  assert saved["accept_density"] == "population"
  assert saved["morphisms"] == list(lemonade.PAPER_MORPHISMS)
  ops = {op for h in result.history for op in h["lineage"]["ops"]}
  assert ops - {"initial"} and ops - {"initial"} <= set(lemonade.PAPER_MORPHISMS)
  state = load_checkpoint(tmp_path / "run")["state"]
  assert state.population and state.count == 5


def test_cost_weighted_acceptance_divides_by_a_power_of_the_cost():
  from nasjax.models import plain_cnn

  archs = [plain_cnn(spec, input_shape=(28, 28, 1), num_classes=10)
           for spec in ([[8], [16], [32]], [[24, 24], [48, 48], [192, 192]])]
  cost = np.array([nasjax.flops(a) for a in archs], np.float64)
  assert cost[1] / cost[0] == pytest.approx(56.5, rel=0.01)  # 52.7M and 0.93M FLOPs
  pop = np.exp([[0.0], [10.0]])
  children = np.exp([[5.0], [5.0]])  # the same density: only the cost tells them apart
  plain = _lem()
  weighted = _lem(cost_objective="flops", cost_exponent=0.5)
  base = plain.accept_log_weight(pop, children, archs)
  np.testing.assert_allclose(base, plain.child_log_density(pop, children), rtol=1e-12)
  np.testing.assert_allclose(kde.inverse_density_probs(base), 0.5, rtol=1e-12)
  log_w = weighted.accept_log_weight(pop, children, archs)
  np.testing.assert_allclose(log_w, base + 0.5 * np.log(cost), rtol=1e-12)
  p = kde.inverse_density_probs(log_w)
  # Acceptance odds are the inverse square root of the FLOPs ratio: 7.5 to 1.
  assert p[0] / p[1] == pytest.approx(np.sqrt(cost[1] / cost[0]), rel=1e-9)
  zero = _lem(cost_objective="flops", cost_exponent=0)
  np.testing.assert_allclose(zero.accept_log_weight(pop, children, archs), base, rtol=1e-12)


def test_cost_weighted_acceptance_spends_less_on_costly_children_on_macro():
  ev = MacroEvaluator()

  def accepted_sizes(config):
    s = _lem(ev.space, n_pc=16, n_ac=2, num_objectives=2, **config)
    key, k0 = init_keys(0)
    state, out = s.init(k0), []
    for _ in range(25):
      key, k_ask, _, k_tell = generation_keys(key)
      codes, state = s.ask(k_ask, state)
      if state.generation > 0:  # the children, not the initial networks
        out += [ind.cheap[0] for ind in state.pending]
      recs = ev.evaluate(np.asarray(codes))
      state = s.tell(k_tell, state, codes, np.array([r.objectives for r in recs]))
    return np.array(out)

  plain = accepted_sizes({"cheap_objectives": ("params",)})
  cheap = accepted_sizes({"cheap_objectives": ("params",), "cost_objective": "params",
                          "cost_exponent": 8.0})
  assert len(plain) == len(cheap) == 48
  # Geometric mean size of the accepted children: 1.55x smaller with the cost (1.55x to
  # 1.85x over seeds 0-3; with exponent 2, 1.17x to 1.42x).
  ratio = np.exp(np.mean(np.log(plain)) - np.mean(np.log(cheap)))
  assert ratio > 1.4, ratio


# ---------------------------------------------------------------------------- NSGA-II
def test_nsga2_ranks_and_crowding_match_the_host_versions():
  rng = np.random.default_rng(1)
  F = rng.integers(0, 8, (40, 2)).astype(np.float64)
  F[5] = np.nan
  rank = np.asarray(pareto.front_ranks(jnp.asarray(F)))
  ref = pareto.nondominated_sort(F)
  ok = ref >= 0
  np.testing.assert_array_equal(rank[ok], ref[ok])
  assert rank[5] == 40
  crowd = np.asarray(pareto.crowding_distances(jnp.asarray(F), jnp.asarray(rank)))
  for r in range(ref.max() + 1):
    idx = np.flatnonzero(ref == r)
    want = pareto.crowding_distance(np.unique(F[idx], axis=0))
    if len(np.unique(F[idx], axis=0)) == len(idx):  # no duplicate points: orders agree
      got = crowd[idx][np.lexsort(F[idx].T[::-1])]
      np.testing.assert_allclose(got, want, rtol=1e-5)


def test_nsga2_keeps_the_best_fronts_and_never_a_failure():
  space = MacroSpace()
  s = nsga2.NSGA2(space, nsga2.NSGA2Config(population_size=4, batch_size=4, num_objectives=2))
  ask, tell = jax.jit(s.ask), jax.jit(s.tell)
  state = s.init(jax.random.key(0))
  codes, state = ask(jax.random.key(1), state)
  state = tell(None, state, codes, jnp.array([[1., 4.], [2., 3.], [3., 3.], [np.nan, 0.]]))
  assert int(state.size) == 4
  codes, state = ask(jax.random.key(2), state)
  state = tell(None, state, codes, jnp.array([[0.5, 5.], [4., 0.5], [9., 9.], [8., 8.]]))
  kept = sorted(map(tuple, np.asarray(state.fitness).tolist()))
  assert kept == [(0.5, 5.0), (1.0, 4.0), (2.0, 3.0), (4.0, 0.5)]
  np.testing.assert_array_equal(np.asarray(state.rank), 0)


# ------------------------------------------------------------------- tabular (macro)
def test_lemonade_on_macro_gives_a_valid_front():
  ev = MacroEvaluator()
  s = _lem(ev.space, n_pc=8, n_ac=4, num_objectives=2)
  key, k0 = init_keys(3)
  state, seen, F = s.init(k0), [], []
  while len(seen) < 60:
    key, k_ask, _, k_tell = generation_keys(key)
    codes, state = s.ask(k_ask, state)
    recs = ev.evaluate(np.asarray(codes))
    f = np.array([r.objectives for r in recs])
    seen += [ev.space.hash(c) for c in np.asarray(codes)]
    F += list(f)
    state = s.tell(k_tell, state, codes, f)
  assert len(set(seen)) == len(seen)  # no code is evaluated twice
  F = np.array(F)
  front = np.array([ind.fitness for ind in state.population])
  # The population is exactly the front of everything evaluated.
  assert sorted(map(tuple, front)) == sorted(map(tuple, pareto.pareto_front(F)))
  assert not pareto.dominance_matrix(front).any()
  # Cheap objective of every member = its parameter count in the table.
  for ind in state.population:
    assert ind.cheap[0] == pytest.approx(ind.fitness[1], rel=1e-9)
  res = bench.bench_macro("lemonade", evals=60, runs=2, config={"n_pc": 8, "n_ac": 4})
  assert 0.9 < res["hv_fraction_mean"] <= 1.0


# ------------------------------------------------------------ networks: inheritance
TRAIN = {"epochs": 1.0, "batch_size": 32, "max_steps": 3, "learning_rate": 0.05}


@functools.cache
def _evaluator(**train):
  """The training evaluator of these tests (the synthetic data set: 8x8x3, 4 classes)."""
  return TrainingEvaluator(PlainCNNSpace(), dataset="synthetic", train={**TRAIN, **train})


@pytest.fixture(scope="module")
def tiny():
  """``(data, problem)`` of the evaluator the network tests train with."""
  ev = _evaluator()
  return ev.data, ev.problem()


def _strategy(**kw):
  base = dict(num_objectives=1, n_pc=6, n_ac=3, initial=(((4,),), ((4,), (8,))),
              distill_steps=3, representation="networks")
  return _lem(NB201Space(), _evaluator().problem(), **{**base, **kw})


def _train(cands, key):
  """The candidates trained by the evaluator, and their validation errors: what the
  search runner tells LEMONADE (the trained network in place of each candidate)."""
  records = _evaluator().evaluate(list(cands), key)
  assert all(r.status == "ok" for r in records), [r.status for r in records]
  return [r.network for r in records], np.array([r.objectives[0] for r in records])


def _untrained(cands, seed=0):
  """The candidates as networks without training (an initial Arch initialised)."""
  return [nasjax.init(c, jax.random.key(seed + j)) if isinstance(c, nasjax.Arch) else c
          for j, c in enumerate(cands)]


def _leaves(net):
  return [np.asarray(a) for a in jax.tree_util.tree_leaves((net.params, net.state))]


@pytest.fixture(scope="module")
def first_generation(tiny):
  """The state after the initial network (two conv layers) was trained and told."""
  s = _strategy(initial=(((4,), (8,)),))
  key, k0 = init_keys(0)
  key, k_ask, k_eval, k_tell = generation_keys(key)
  cands, state = s.ask(k_ask, s.init(k0))
  # The initial network is proposed as an architecture, for the evaluator to train.
  assert len(cands) == 1 and isinstance(cands[0], nasjax.Arch)
  assert state.pending[0].ops == ("initial",) and state.pending[0].genome is cands[0]
  trained, fit = _train(cands, k_eval)
  return key, s.tell(k_tell, state, trained, fit)


def test_end_to_end_children_inherit_weights_and_the_front_is_nondominated(tiny,
                                                                          first_generation):
  data, _ = tiny
  key, state = first_generation
  s = _strategy(morphisms=EXACT, n_pc=4, n_ac=2)
  x = data.x_val[:16]
  for gen in range(2):
    key, k_ask, k_eval, k_tell = generation_keys(key)
    nets, state = s.ask(k_ask, state)
    assert len(nets) == len(state.pending) == 2
    by_uid = {ind.uid: ind for ind in state.population}
    for net, ind in zip(nets, state.pending):
      assert ind.cheap == (float(nasjax.count_params(net.arch)),)
      # An exact child computes its trained parent's function before its own training.
      assert isinstance(net, nasjax.Network) and ind.exact and ind.ops[0] in EXACT
      parent = by_uid[ind.parent].genome
      assert net.arch != parent.arch
      np.testing.assert_allclose(nasjax.apply(net, x), nasjax.apply(parent, x),
                                 rtol=1e-4, atol=1e-4)
    if gen == 1:
      break
    trained, fit = _train(nets, k_eval)
    by_pending = {ind.uid: t for ind, t in zip(state.pending, trained)}
    state = s.tell(k_tell, state, trained, fit)
    # Members keep the weights they were trained to.
    for ind in state.population:
      if ind.uid in by_pending:
        assert ind.genome is by_pending[ind.uid]
    objs = np.array([ind.objectives() for ind in state.population])
    assert not pareto.dominance_matrix(objs).any()
    assert state.generation == 2 and state.count == 3


def test_inserted_batch_norms_keep_the_parents_function_in_training_mode(tiny,
                                                                         first_generation):
  """A conv-BN-ReLU unit takes its batch norm's statistics on the problem's training
  inputs: on them the child equals its trained parent in training mode too (with running
  mean 0 and variance 1 instead, the logits moved by 9.6 % of the largest there)."""
  data, problem = tiny
  _, state = first_generation
  s = _strategy(morphisms=("insert_conv_bn_relu",), n_pc=4, n_ac=2)
  batch = s.morph_batch
  np.testing.assert_array_equal(batch, problem.inputs)
  np.testing.assert_array_equal(batch, data.x_train[:MORPH_BATCH])
  children, state = s.ask(jax.random.key(5), state)
  by_uid = {ind.uid: ind for ind in state.population}
  assert len(children) == 2
  for net, ind in zip(children, state.pending):
    parent = by_uid[ind.parent].genome
    (bn,) = [n.name for n in net.arch.nodes if n.op == "batchnorm" and n.name not in
             parent.arch]
    want = np.asarray(nasjax.apply_train(parent, batch)[0])
    got = np.asarray(nasjax.apply_train(net, batch)[0])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(nasjax.apply(net, batch), nasjax.apply(parent, batch),
                               rtol=0, atol=1e-5 * np.abs(want).max())
    assert float(np.min(net.state[bn]["var"])) >= 0.0 and not np.allclose(
        net.state[bn]["var"], 1.0)


def test_tell_keeps_the_trained_networks_and_drops_failures():
  s = _strategy()
  cands, state = s.ask(jax.random.key(0), s.init(jax.random.key(1)))
  assert [type(c) for c in cands] == [nasjax.Arch, nasjax.Arch]
  trained = [n.replace(params=jax.tree_util.tree_map(lambda a: a + 1.0, n.params))
             for n in _untrained(cands)]
  # A candidate told back without its trained network: only a failure may be.
  with pytest.raises(ValueError, match="needs the trained network"):
    s.tell(None, state, [trained[0], cands[1]], np.array([50.0, 40.0]))
  state = s.tell(None, state, [trained[0], cands[1]], np.array([50.0, np.nan]))
  assert len(state.population) == 1
  member = state.population[0]
  assert member.genome is trained[0] and member.fitness == (50.0,)
  with pytest.raises(ValueError, match="last ask proposed 0"):
    s.tell(None, state, trained, np.array([1.0, 2.0]))
  _, again = s.ask(jax.random.key(2), s.init(jax.random.key(1)))
  with pytest.raises(ValueError, match="different architecture"):
    s.tell(None, again, trained[::-1], np.array([1.0, 2.0]))


def test_ask_trains_nothing_and_approximate_children_are_distilled_by_the_evaluator(
    tiny, first_generation):
  data, _ = tiny
  _, state = first_generation
  told = [_leaves(ind.genome) for ind in state.population]
  s = _strategy(morphisms=("prune_filters",), n_pc=2, n_ac=1, distill_steps=20,
                distill_temperature=2.0, distill_learning_rate=0.05)
  children, asked = s.ask(jax.random.key(3), state)
  parent = state.population[0].genome
  (child,), (ind,) = children, asked.pending
  assert not ind.exact and ind.ops == ("prune_filters",) and ind.parent == 0
  # An approximate child is a work.Child: distillation is the evaluator's, with the
  # strategy's steps, temperature and rate, from the parent as it was told.
  assert isinstance(child, work.Child) and child.teacher is parent
  assert (child.distill_steps, child.temperature, child.learning_rate) == (20, 2.0, 0.05)
  assert child.network is ind.genome and child.arch == ind.genome.arch
  assert nasjax.count_params(child.arch) < nasjax.count_params(parent.arch)
  # No gradient step in ask: the population's networks are bitwise the ones told, and
  # every layer the morphism left alone is bitwise the parent's.
  assert asked.population == state.population
  for member, leaves in zip(asked.population, told):
    for a, b in zip(_leaves(member.genome), leaves):
      np.testing.assert_array_equal(a, b)
  same = [n for n in child.network.params if n in parent.params and all(
      np.shape(child.network.params[n][k]) == np.shape(parent.params[n][k])
      for k in parent.params[n])]
  assert same and len(same) < len(parent.params)
  for n in same:
    for k, v in parent.params[n].items():
      np.testing.assert_array_equal(np.asarray(child.network.params[n][k]), np.asarray(v))
  # The evaluator distils it (no training after: max_steps 0): the KL to the teacher on
  # validation images falls tenfold (measured 0.131 -> 0.013; agreement 0.66 -> 1.0).
  from nasjax.ops.distill import agreement

  (rec,) = _evaluator(max_steps=0).evaluate([child], jax.random.key(4))
  assert rec.status == "ok" and rec.metrics["distill_steps"] == 20
  before = agreement(child.network, parent, data.x_val)["kl"]
  after = agreement(rec.network, parent, data.x_val)["kl"]
  assert after < 0.3 * before, (before, after)
  # With no distillation steps an approximate child is its network, trained as it is.
  plain, _ = _strategy(morphisms=("prune_filters",), n_pc=2, n_ac=1, distill_steps=0).ask(
      jax.random.key(3), state)
  assert isinstance(plain[0], nasjax.Network) and plain[0].arch == child.arch


def test_children_outside_the_size_bounds_are_not_proposed(first_generation):
  _, state = first_generation
  parent = state.population[0].genome
  n = nasjax.count_params(parent.arch)
  # Shrinking children only (pruning), all below a floor at the parent's size: none left.
  s = _strategy(morphisms=("prune_filters",), n_pc=4, n_ac=2, min_params=n)
  assert s._propose_networks(jax.random.key(0), state, np.zeros(4, np.int32)) == []
  # Growing children only (Net2Wider): every one above the parent, so a ceiling at the
  # parent's size rejects them all, while a floor there keeps all four.
  s = _strategy(morphisms=("net2wider",), n_pc=4, n_ac=2, max_params=n)
  assert s._propose_networks(jax.random.key(0), state, np.zeros(4, np.int32)) == []
  s = _strategy(morphisms=("net2wider",), n_pc=4, n_ac=2, min_params=n)
  props = s._propose_networks(jax.random.key(0), state, np.zeros(4, np.int32))
  assert len(props) == 4 and all(p.cheap[0] > n for p in props)
  with pytest.raises(ValueError, match="min_params \\(10\\) exceeds max_params \\(5\\)"):
    _strategy(min_params=10, max_params=5)
  with pytest.raises(ValueError, match="option min_params must be an int >= 1 or None"):
    _strategy(min_params=0)


def test_narrowing_conv_names_the_first_conv_narrower_than_one_before_it():
  plain = nasjax.models.plain_cnn
  kw = dict(input_shape=(8, 8, 1), num_classes=4)
  assert lemonade.narrowing_conv(plain([[16], [32, 32]], **kw)) is None
  assert lemonade.narrowing_conv(plain([[16, 16], [16]], **kw)) is None
  assert lemonade.narrowing_conv(plain([[32], [16, 64]], **kw)) == "b1_l0_conv"
  assert lemonade.narrowing_conv(plain([[16], [32, 16]], **kw)) == "b1_l1_conv"
  # Any path counts: a conv on a side branch narrower than the stem is a bottleneck.
  n = nasjax.Node
  arch = nasjax.Arch([
      n("x", "input", shape=(8, 8, 1)), n("a", "conv", ["x"], features=32),
      n("b", "conv", ["a"], features=8), n("c", "conv", ["x"], features=8),
      n("s", "concat", ["b", "c"]), n("p", "gap", ["s"]),
      n("y", "dense", ["p"], features=4)])
  assert lemonade.narrowing_conv(arch) == "b"
  assert lemonade.narrowing_conv(arch.replace_nodes(arch["b"].replace(features=32))) is None


def test_monotone_widths_drops_exactly_the_narrowing_children():
  # Two 8-filter convs: widening the first (to 12) or pruning the second (to 4 or 6)
  # makes a conv narrower than one before it.
  kw = dict(morphisms=("net2wider", "prune_filters"), n_pc=32, n_ac=2,
            initial=(((8,), (8,)),))
  s = _strategy(**kw)
  nets, state = s.ask(jax.random.key(0), s.init(jax.random.key(0)))
  state = s.tell(None, state, _untrained(nets), np.array([50.0]))  # (8|8), untrained
  parents = np.zeros(32, np.int32)
  free = _strategy(**kw)._propose_networks(jax.random.key(0), state, parents)
  kept = _strategy(monotone_widths=True, **kw)._propose_networks(jax.random.key(0), state,
                                                                 parents)
  narrowing = [p for p in free if lemonade.narrowing_conv(p.arch) is not None]
  assert len(narrowing) >= 3 and len(free) == 32
  assert [p.arch for p in kept] == [p.arch for p in free
                                    if lemonade.narrowing_conv(p.arch) is None]
  with pytest.raises(ValueError, match="option monotone_widths must be true or false, got "
                     "'yes'"):
    _strategy(monotone_widths="yes")


def test_min_width_drops_exactly_the_children_with_a_narrower_conv(first_generation):
  _, state = first_generation
  parents = np.zeros(32, np.int32)
  kw = dict(morphisms=("insert_conv_bn_relu", "prune_filters"), n_pc=32, n_ac=2)
  free = _strategy(**kw)._propose_networks(jax.random.key(0), state, parents)
  kept = _strategy(min_width=4, **kw)._propose_networks(jax.random.key(0), state, parents)

  def narrowest(arch):
    return min(arch[n]["features"] for n in arch.topo_order if arch[n].op == "conv")

  # The parent's convs have 4 and 8 filters; a conv inserted after the 3-channel input
  # has 3, a pruned one fewer than before.
  assert sum(narrowest(p.arch) < 4 for p in free) >= 3 and len(free) == 32
  assert [p.arch for p in kept] == [p.arch for p in free if narrowest(p.arch) >= 4]
  with pytest.raises(ValueError, match="option min_width must be an int >= 1 or None, got 0"):
    _strategy(min_width=0)


def test_initial_depth_trains_the_starts_again_unchanged_before_any_morphism(tiny):
  data, _ = tiny
  s = _strategy(num_objectives=2, morphisms=EXACT, n_pc=4, n_ac=2, initial_depth=3)
  key, k0 = init_keys(0)
  state = s.init(k0)
  x = data.x_val[:16]
  # Hand-set errors: each start's lineage improves by 2 points per evaluation, so every
  # retrained network dominates its parent (same size, lower error).
  errors = {(((4,),)): 30.0, (((4,), (8,))): 20.0}
  for gen in range(4):
    key, k_ask, k_eval, k_tell = generation_keys(key)
    nets, state = s.ask(k_ask, state)
    pending = state.pending
    if gen == 0:
      assert [ind.ops for ind in pending] == [("initial",)] * 2
    elif gen < 3:
      by_uid = {ind.uid: ind for ind in state.population}
      assert [ind.ops for ind in pending] == [("train",)] * 2
      assert sorted(by_uid) == sorted(ind.parent for ind in pending)
      for net, ind in zip(nets, pending):
        parent = by_uid[ind.parent]
        assert ind.depth == parent.depth + 1 == gen + 1 and ind.generation == gen
        assert net.arch == parent.genome.arch and ind.cheap == parent.cheap
        # The told (trained) network itself, not a re-initialised one.
        np.testing.assert_allclose(np.asarray(nasjax.apply(net, x)),
                                   np.asarray(nasjax.apply(parent.genome, x)), rtol=0, atol=0)
    else:  # morphisms from the fourth generation on, on the depth-3 lineages
      assert all(ind.ops not in (("initial",), ("train",)) for ind in pending)
      assert len(pending) == 2 and all(ind.depth == 4 for ind in pending)
    trained, _ = _train(nets, k_eval)
    fit = []
    for ind in pending:
      arch = ind.genome if isinstance(ind.genome, nasjax.Arch) else ind.genome.arch
      spec = tuple((n,) for n in _conv_widths(arch))
      err = errors.get(spec, 25.0) - 2.0 * (ind.depth - 1)
      fit.append([err, ind.cheap[0]])
    state = s.tell(k_tell, state, trained, np.array(fit))
    if 0 < gen < 3:  # the retrained networks replaced their parents
      assert sorted(ind.uid for ind in state.population) == sorted(
          ind.uid for ind in pending)
  assert [s.config.initial_depth, LemonadeConfig.defaults()["initial_depth"]] == [3, 1]
  with pytest.raises(ValueError, match="option initial_depth must be an int >= 1, got 0"):
    _strategy(initial_depth=0)
  with pytest.raises(ValueError, match="initial_depth=2 needs networks"):
    _lem(representation="codes", initial_depth=2)


def _conv_widths(arch):
  return [arch[n]["features"] for n in arch.topo_order if arch[n].op == "conv"]


def test_widen_to_monotone_widens_a_block_and_preserves_the_function():
  from nasjax.models import plain_cnn
  from nasjax.ops import MORPHISMS

  arch = plain_cnn([[8], [16, 16], [32]], input_shape=(12, 12, 1), num_classes=4)
  first = [n.name for n in arch.nodes_of("conv")][1]  # the first conv of the middle block
  step = ("net2wider", {"node": first, "width": 24})
  wide = MORPHISMS["net2wider"](nasjax.init(arch, jax.random.key(0)), jax.random.key(1),
                                **step[1]).arch
  assert lemonade.narrowing_conv(wide) is not None
  grown, ops = lemonade.widen_to_monotone(wide, [step])
  assert lemonade.narrowing_conv(grown) is None
  assert [n["features"] for n in grown.nodes_of("conv")] == [8, 24, 24, 32]
  assert [name for name, _ in ops] == ["net2wider", "net2wider"]
  # Applying the steps to a trained-like network keeps its outputs (inference mode).
  net = nasjax.init(arch, jax.random.key(2))
  x = jax.random.normal(jax.random.key(3), (16, 12, 12, 1))
  out = net
  for s, (name, kwargs) in enumerate(ops):
    out = MORPHISMS[name](out, jax.random.key(10 + s), noise=0.1, **kwargs)
  assert out.arch == grown
  a, b = np.asarray(nasjax.apply(net, x)), np.asarray(nasjax.apply(out, x))
  np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
  # Nothing to do for a network whose widths never shrink.
  assert lemonade.widen_to_monotone(arch) == (arch, [])


def test_widen_to_monotone_keeps_grown_children_that_monotone_widths_drops():
  kw = dict(morphisms=("net2wider", "prune_filters"), n_pc=32, n_ac=2, monotone_widths=True,
            initial=(((4, 4), (8,)),))
  s = _strategy(**kw)
  nets, state = s.ask(jax.random.key(0), s.init(jax.random.key(0)))
  state = s.tell(None, state, _untrained(nets), np.array([50.0]))  # (4,4|8), untrained
  parents = np.zeros(32, np.int32)
  dropped = s._propose_networks(jax.random.key(0), state, parents)
  grown = _strategy(widen_to_monotone=True, **kw)._propose_networks(jax.random.key(0), state,
                                                                    parents)
  assert all(lemonade.narrowing_conv(p.arch) is None for p in grown)
  # Exact children that narrowed are now widened instead of dropped; approximate ones
  # (pruned) that narrow are still dropped.
  assert len(grown) > len(dropped)
  new = [p for p in grown if p.arch not in [q.arch for q in dropped]]
  assert len(new) >= 3 and all(p.exact for p in new)
  with pytest.raises(ValueError, match="widen_to_monotone=True needs monotone_widths=True"):
    _strategy(widen_to_monotone=True)
  with pytest.raises(ValueError, match="option widen_to_monotone must be true or false, "
                     "got 1"):
    _strategy(widen_to_monotone=1, monotone_widths=True)


def test_pareto_population_drops_dominated_and_duplicate_members():
  ind = lambda uid, f, c: lemonade.Individual(uid, None, (c,), (f,))
  pop = lemonade.pareto_population([ind(3, 5.0, 100.0), ind(1, 5.0, 100.0),
                                    ind(2, 6.0, 200.0), ind(4, 4.0, 300.0)])
  assert [p.uid for p in pop] == [1, 4]
  # With front_objectives only the chosen fitness columns count: here the error, not the
  # latency in column 1, so uid 6 (same error and size, lower latency) is a copy of 5.
  two = lambda uid, f, lat, c: lemonade.Individual(uid, None, (c,), (f, lat))
  inds = [two(5, 5.0, 0.2, 100.0), two(6, 5.0, 0.1, 100.0), two(7, 6.0, 0.05, 100.0)]
  assert [p.uid for p in lemonade.pareto_population(inds, (0,))] == [5]
  assert [p.uid for p in lemonade.pareto_population(inds)] == [6, 7]


def test_pareto_population_with_a_margin_keeps_near_ties():
  ind = lambda uid, f, c: lemonade.Individual(uid, None, (c,), (f, c))
  inds = [ind(0, 9.42, 37_722.0), ind(1, 9.43, 556_730.0), ind(2, 9.80, 600_000.0),
          ind(3, 12.0, 5_000.0)]
  assert [p.uid for p in lemonade.pareto_population(inds, (0, 1))] == [0, 3]
  # 0.15 points of error: the 556k network (0.01 behind) stays, the 600k one (0.38
  # behind) does not.
  kept = lemonade.pareto_population(inds, (0, 1), (0.15, 0.0))
  assert [p.uid for p in kept] == [0, 1, 3]
  strategy = _lem(num_objectives=3, front_objectives=(0, 1), dominance_margin=(0.15, 0))
  assert strategy.config.to_dict()["dominance_margin"] == [0.15, 0.0]
  state = lemonade.LemonadeState(pending=tuple(
      lemonade.Individual(i.uid, (0,) * 6, i.cheap) for i in inds))
  state = strategy.tell(None, state, [(0,) * 6] * 4,
                        [[i.fitness[0], i.fitness[1], 0.0] for i in inds])
  assert sorted(p.uid for p in state.population) == [0, 1, 3]


def test_depth_margin_keeps_shallow_members_as_parents_not_on_the_returned_front(tmp_path):
  import json

  ind = lambda uid, f, c, d: lemonade.Individual(uid, (0,) * 6, (c,), (f, c, 0.0), depth=d)
  # A measured search's case: the 454k start's child (4 evaluations deep) against the 73k
  # start's lineage 5 and 12 evaluations deep.
  top, mid, deep = ind(16, 10.37, 501_506, 4), ind(44, 10.15, 109_914, 5), ind(
      114, 8.12, 206_866, 12)
  plain = lambda inds: [p.uid for p in lemonade.pareto_population(inds, (0, 1), (0.15, 0))]
  deep_ok = lambda inds, dm: [p.uid for p in lemonade.pareto_population(
      inds, (0, 1), (0.15, 0), dm)]
  assert plain([top, mid]) == [44] and plain([top, mid, deep]) == [44, 114]
  # 10.15 + 0.15 + 2 * log2(5 / 4) = 10.94 > 10.37 and 8.12 + 0.15 + 2 * log2(12 / 4) =
  # 11.44 > 10.37: the top stays ...
  assert deep_ok([top, mid, deep], 2.0) == [16, 44, 114]
  # ... but not against a network twice as deep and 3.37 points better (7.0 + 0.15 +
  # 2 * 1 = 9.15 <= 10.37), nor with a margin of 0.25 per doubling.
  assert deep_ok([top, mid, ind(120, 7.0, 300_000, 8)], 2.0) == [44, 120]
  assert deep_ok([top, mid, deep], 0.25) == [44, 114]
  # A deeper network is never protected: the margin only counts against the deeper one.
  assert deep_ok([ind(1, 10.0, 1000.0, 9), ind(2, 9.0, 900.0, 1)], 5.0) == [2]
  # Against brute force on random sets (the rule of the docstring).
  rng = np.random.default_rng(1)
  for trial in range(30):
    n = 12
    err, size, depth = rng.uniform(8, 14, n), rng.integers(1, 6, n) * 1e4, rng.integers(
        1, 10, n)
    inds = [ind(i, float(e), float(c), int(d)) for i, (e, c, d) in enumerate(
        zip(err, size, depth))]
    dm = float(rng.choice([0.0, 0.1, 0.5]))
    brute = [i for i in range(n) if not any(
        size[j] <= size[i] and err[j] + 0.15 + dm * max(0.0, np.log2(depth[j] / depth[i]))
        <= err[i]
        for j in range(n) if j != i)]
    assert deep_ok(inds, dm) == brute, trial
  # tell keeps the population with it; front() and export_front leave the protected out.
  s = _strategy(num_objectives=3, front_objectives=(0, 1), dominance_margin=(0.15, 0),
                depth_margin=2.0, constraints=((0, 14.0),))
  (net,) = _untrained([nasjax.models.plain_cnn([[4]], input_shape=(8, 8, 3),
                                               num_classes=4)])
  top, mid = (dataclasses.replace(i, genome=net) for i in (top, mid))
  state = lemonade.LemonadeState(pending=(top, mid))
  state = s.tell(None, state, [net, net], [list(top.fitness), list(mid.fitness)])
  assert [p.uid for p in state.population] == [16, 44]
  assert [p.uid for p in s.front(state)] == [44]
  records = lemonade.export_front(state, tmp_path / "front", ("val_error", "params", "lat"),
                                  s.constraints, s.config.front_objectives,
                                  s.config.dominance_margin)
  assert [r["uid"] for r in records] == [44]
  assert [r["uid"] for r in json.loads((tmp_path / "front" / "front.json").read_text())] == [44]
  # Config round trip, default and bad values.
  assert s.config.depth_margin == 2.0 and LemonadeConfig.defaults()["depth_margin"] == 0.0
  rebuilt = LemonadeConfig.from_dict(s.config.to_dict())
  assert rebuilt.to_dict() == s.config.to_dict() and rebuilt.depth_margin == 2.0
  for bad in (-0.1, float("nan"), True, "0.2"):
    with pytest.raises(ValueError, match="option depth_margin must be a number >= 0"):
      _strategy(depth_margin=bad)
  with pytest.raises(ValueError, match="depth_margin=0.5 needs networks"):
    _lem(representation="codes", depth_margin=0.5)


def test_fronts_by_generation_and_report_use_the_margin():
  history = [{"generation": 0, "status": "ok", "objectives": {"val_error": e, "params": p}}
             for e, p in ((9.42, 37_722), (9.43, 556_730), (9.80, 600_000))]
  (_, plain), = lemonade.fronts_by_generation(history, "params", "val_error")
  (_, tolerant), = lemonade.fronts_by_generation(history, "params", "val_error", 0.15)
  np.testing.assert_allclose(plain, [[37_722, 9.42]], rtol=0, atol=1e-12)
  np.testing.assert_allclose(tolerant, [[37_722, 9.42], [556_730, 9.43]], rtol=0, atol=1e-12)


def test_constraints_bound_the_returned_front_not_the_population(tmp_path):
  import json

  rng = np.random.default_rng(0)
  strategy = _lem(num_objectives=3, front_objectives=(0, 1), dominance_margin=(0.15, 0),
                  constraints=((0, 14.0),))
  assert strategy.config.to_dict()["constraints"] == [[0, 14.0]]
  rebuilt = LemonadeConfig.from_dict(strategy.config.to_dict())  # as config.json holds it
  assert lemonade.Lemonade(NB201Space(), rebuilt).constraints == ((0, 14.0),)
  state, told, uid = lemonade.LemonadeState(), [], 0
  for _ in range(6):  # six generations of eight children of 4k-1M parameters, the
    # smaller the less accurate: 22% error at 4k, 11% at 1M, +-1.5 points of noise
    size = np.exp(rng.uniform(np.log(4e3), np.log(1e6), 8)).round()
    err = 22.0 - 2.0 * np.log(size / 4e3) + rng.uniform(-1.5, 1.5, 8)
    inds = [lemonade.Individual(uid + i, (0,) * 6, (float(c),)) for i, c in enumerate(size)]
    uid += len(inds)
    state = strategy.tell(None, dataclasses.replace(state, pending=tuple(inds)),
                          [(0,) * 6] * len(inds), np.stack([err, size, 0 * err], 1))
    told += [(i.uid, e, c) for i, e, c in zip(inds, err, size)]
  front = strategy.front(state)
  assert all(ind.fitness[0] <= 14.0 for ind in front)
  # The population keeps infeasible networks (the smallest ones, as parents) ...
  assert any(ind.fitness[0] > 14.0 for ind in state.population)
  assert {i.uid for i in front} < {i.uid for i in state.population}
  # ... and its feasible part is the tolerant Pareto front of the feasible networks told.
  ok = [(u, e, c) for u, e, c in told if e <= 14.0]
  brute = [u for u, e, c in ok
           if not any(e2 + 0.15 <= e and c2 <= c for _, e2, c2 in ok)]
  assert sorted(ind.uid for ind in front) == sorted(brute) and len(brute) >= 3
  # export_front writes exactly that front; without constraints, the population.
  names = ("val_error", "params", "latency")
  records = lemonade.export_front(state, tmp_path / "front", names, strategy.constraints)
  assert [r["uid"] for r in records] == [ind.uid for ind in front]
  saved = json.loads((tmp_path / "front" / "front.json").read_text())
  assert [r["uid"] for r in saved] == [ind.uid for ind in front]
  assert all(r["fitness"]["val_error"] <= 14.0 for r in saved)
  everyone = lemonade.export_front(state, tmp_path / "all", names)
  assert [r["uid"] for r in everyone] == [ind.uid for ind in state.population]


def test_fronts_by_generation_leaves_out_evaluations_over_a_bound():
  history = [{"generation": g, "status": "ok", "objectives": {"val_error": e, "params": p}}
             for g, e, p in ((0, 20.0, 5_000), (0, 13.0, 40_000), (1, 12.0, 9_000))]
  (g0, f0), (g1, f1) = lemonade.fronts_by_generation(history, "params", "val_error",
                                                      bounds={"val_error": 14.0})
  assert (g0, g1) == (0, 1)
  np.testing.assert_allclose(f0, [[40_000, 13.0]], rtol=0, atol=1e-12)
  np.testing.assert_allclose(f1, [[9_000, 12.0]], rtol=0, atol=1e-12)
  (_, plain), _ = lemonade.fronts_by_generation(history, "params", "val_error")
  np.testing.assert_allclose(plain, [[5_000, 20.0], [40_000, 13.0]], rtol=0, atol=1e-12)


def test_bad_options_are_rejected(tmp_path):
  cases = [
      ({"num_objectives": 2, "dominance_margin": (0.1,)},
       "dominance_margin has 1 values, but the front is taken over 2"),
      ({"num_objectives": 2, "front_objectives": (0, 1), "dominance_margin": (-0.1, 0)},
       "option dominance_margin values must be finite and >= 0, -0.1 is not"),
      ({"n_pc": 2, "n_ac": 3}, r"n_ac \(3\) cannot exceed n_pc \(2\)"),
      ({"cheap_objectives": ("size",)}, "names an unknown cheap objective 'size'"),
      ({"cheap_objectives": ()}, "option cheap_objectives needs at least one of"),
      ({"morphisms": ("grow",)}, "names an unknown morphism 'grow'"),
      ({"morphism_options": {"grow": {}}}, "option morphism_options names an unknown "
       "morphism 'grow'"),
      ({"num_objectives": 2, "front_objectives": (0, 2)}, "front_objectives names column 2"),
      ({"accept_density": "parents"}, "option accept_density must be one of"),
      ({"cost_objective": "time"}, "option cost_objective must be one of .*, got 'time'"),
      ({"cost_exponent": -1}, "option cost_exponent must be a number >= 0.0, got -1"),
      ({"initial": ()}, "option initial needs at least one network"),
      ({"initial": (((4,),), ((4,),))}, "option initial holds the same network twice"),
      ({"distill_steps": -1}, "option distill_steps must be an int >= 0, got -1"),
      ({"distill_temperature": 0.0}, "option distill_temperature must be a number > 0.0"),
  ]
  two = dict(num_objectives=3, front_objectives=(0, 1))
  cases += [
      ({"constraints": ((2, 0.01),), **two}, r"constraint column 2 is not one of the "
       r"fitness columns the front is taken over, \[0, 1\]"),
      ({"constraints": ((0, float("nan")),), **two},
       "needs a finite number as each bound, nan is not"),
      ({"constraints": (14.0,), **two}, r"needs \(column, bound\) pairs, 14.0 is not one"),
      ({"constraints": ((0, 14.0), (0, 12.0)), **two}, "constraints bound column 0 twice"),
  ]
  for options, message in cases:
    with pytest.raises(ValueError, match=message):
      LemonadeConfig(**options)
  # A config.json of a run from before holds options that are gone (the strategy's own
  # data and distillation trainer): resuming it fails, naming them.
  import json

  from nasjax.search import runner

  old = {**LemonadeConfig.defaults(), "dataset": "synthetic", "data_limit": None,
         "distill_batch_size": 64, "distill_train": {}}
  work_dir = tmp_path / "old"
  work_dir.mkdir()
  (work_dir / "config.json").write_text(json.dumps({
      "format": "nasjax.search.run/1", "strategy": "lemonade", "strategy_config": old,
      "evaluator": {"kind": "train", "space": "plain_cnn", "dataset": "synthetic"},
      "objectives": ["val_error"], "budget": {"max_evals": 4, "time_budget": None},
      "seed": 0}))
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['data_limit', 'dataset', "
                     r"'distill_batch_size', 'distill_train'\] for strategy 'lemonade'"):
    runner.resume(work_dir, quiet=True)
  # Networks need the problem they are built for; codes do not.
  with pytest.raises(ValueError, match="lemonade builds networks on space 'nb201': give "
                     "it problem="):
    _lem(representation="networks").ask(jax.random.key(0), lemonade.LemonadeState())


# ------------------------------------------------------------------------- experiment
def _experiment(name: str):
  """The module ``experiments/<name>.py``."""
  import importlib.util
  import sys
  from pathlib import Path

  path = Path(__file__).parents[1] / "experiments" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module


def test_fmnist_experiment_tiny_variant_runs_end_to_end(tmp_path):
  import json

  module = _experiment("lemonade_fmnist")
  out = tmp_path / "rows.json"
  assert module.main(["--variant", "tiny", "--workdir", str(tmp_path / "run"),
                      "--json", str(out), "--plots", str(tmp_path / "plots"),
                      "--scratch"]) == 0
  rows = json.loads(out.read_text())["rows"]
  assert rows and all(0.0 <= r["test_error"] <= 100.0 for r in rows)
  assert all(0.0 <= r["scratch_test_error"] <= 100.0 for r in rows)
  cache = json.loads((tmp_path / "run" / "baselines.json").read_text())
  scratch = [v for v in cache.values() if str(v["blocks"]).startswith("member ")]
  assert len(scratch) == len({(r["uid"], r["baseline_epochs"]) for r in rows})
  assert all(v["params"] == next(r["params"] for r in rows
                                 if v["blocks"].split()[1] == str(r["uid"]))
             for v in scratch)
  assert all(r["baseline_epochs"] == pytest.approx(min(r["depth"], 2.0), abs=1e-9)
             for r in rows)
  assert (tmp_path / "plots" / "lemonade_fmnist_fronts_params.png").stat().st_size > 1000
  front = json.loads((tmp_path / "run" / "report" / "front" / "front.json").read_text())
  assert sorted(r["uid"] for r in rows) == sorted(r["uid"] for r in front)
  net = nasjax.load(front[0]["network"])
  assert nasjax.count_params(net.arch) == front[0]["params"]


def _smoke_run(workdir, max_evals):
  """Runs LEMONADE's ``smoke`` preset into ``workdir``; returns the strategy config."""
  from nasjax.search.cli import _smoke_plan
  from nasjax.search.runner import run

  class Args:
    devices = None

  evaluator, config, _ = _smoke_plan("lemonade", Args)
  run("lemonade", evaluator, Budget(max_evals=max_evals), workdir, 0, config, quiet=True)
  return config


def test_report_plots_fronts_per_generation_and_exports_the_front(tmp_path):
  from nasjax.search import report as report_lib

  _smoke_run(tmp_path / "run", max_evals=4)
  summary = report_lib.report(tmp_path / "run")
  assert (tmp_path / "run" / "fronts_params.png").stat().st_size > 1000
  assert str(tmp_path / "run" / "fronts_params.png") in summary["plots"]
  front = summary["strategy"]["front"]
  assert len(front) >= 1
  for rec in front:
    net = nasjax.load(rec["network"])
    assert nasjax.count_params(net.arch) == rec["params"]
    x = np.zeros((2, *net.arch.input_shape), np.float32)
    assert np.all(np.isfinite(np.asarray(nasjax.apply(net, x))))
  assert (tmp_path / "run" / "front" / "front.json").exists()


def test_report_exports_only_the_front_within_the_runs_constraints(tmp_path):
  import json

  _smoke_run(tmp_path / "run", max_evals=4)
  everyone = lemonade.report_run(tmp_path / "run", tmp_path / "all")["front"]
  errors = [r["fitness"]["val_error"] for r in everyone]
  cfg_path = tmp_path / "run" / "config.json"
  cfg = json.loads(cfg_path.read_text())
  cfg["strategy_config"]["constraints"] = [[0, min(errors)]]
  cfg_path.write_text(json.dumps(cfg))
  bounded = lemonade.report_run(tmp_path / "run", tmp_path / "bounded")["front"]
  assert [r["uid"] for r in bounded] == [r["uid"] for r in everyone
                                         if r["fitness"]["val_error"] <= min(errors)]
  assert len(bounded) == 1 and len(everyone) >= 2
  saved = json.loads((tmp_path / "bounded" / "front" / "front.json").read_text())
  assert [r["uid"] for r in saved] == [r["uid"] for r in bounded]


def test_history_records_each_candidates_lineage(tmp_path):
  from nasjax.search.runner import read_history

  config = _smoke_run(tmp_path / "run", max_evals=8)
  history = read_history(tmp_path / "run")
  assert len(history) == 8
  by_uid = {}
  for e in history:
    lin = e["lineage"]
    assert lin["uid"] not in by_uid
    by_uid[lin["uid"]] = lin
    if lin["parent"] == -1:  # an initial network
      assert lin["ops"] == ["initial"] and lin["depth"] == 1
    else:  # a child of an earlier candidate, one step deeper, by 1 to max_morphisms
      assert lin["parent"] in by_uid
      assert lin["depth"] == by_uid[lin["parent"]]["depth"] + 1
      assert 1 <= len(lin["ops"]) <= config.get("max_morphisms", 1)
  assert sum(lin["parent"] != -1 for lin in by_uid.values()) >= 1


def test_fmnist_experiment_ladder_tiny_trains_each_size_once(tmp_path):
  import json

  module = _experiment("lemonade_fmnist")
  out = tmp_path / "ladder.json"
  argv = ["--variant", "tiny", "--workdir", str(tmp_path / "run"), "--ladder", "1",
          "--ladder-min-params", "100", "--json", str(out)]
  assert module.main(argv) == 0
  rows = json.loads(out.read_text())["ladder"]
  params = [r["params"] for r in rows]
  # The tiny variant's three networks, all above 100 parameters, smallest first.
  assert len(rows) == 3 and params == sorted(params) and params[0] >= 100
  assert all(r["epochs"] == pytest.approx(1.0, abs=1e-12) for r in rows)
  assert all(0.0 <= r["test_error"] <= 100.0 for r in rows)
  cache = json.loads((tmp_path / "run" / "baselines.json").read_text())
  assert len(cache) == 3
  # A second call reuses the cache: the same numbers, nothing retrained.
  assert module.main(argv) == 0
  again = json.loads(out.read_text())["ladder"]
  assert [r["test_error"] for r in again] == pytest.approx([r["test_error"] for r in rows],
                                                           abs=0.0)
  assert all(a["seconds"] == r["seconds"] for a, r in zip(again, rows))
  with pytest.raises(ValueError, match="-2"):
    module.main(["--variant", "tiny", "--workdir", str(tmp_path / "run"), "--ladder", "-2"])


def test_lineage_lr_experiment_tiny_rows_and_bad_rate(tmp_path):
  import json

  module = _experiment("lineage_lr")
  out = tmp_path / "rows.json"
  assert module.main(["--tiny", "--lrs", "0.05", "0.1", "--generations", "2",
                      "--json", str(out)]) == 0
  rows = json.loads(out.read_text())
  assert [(r["lr"], r["generation"]) for r in rows] == [(0.05, 1), (0.05, 2), (0.1, 1),
                                                          (0.1, 2)]
  assert all(0.0 <= r["val_error"] <= 100.0 and 0.0 <= r["test_error"] <= 100.0
             for r in rows)
  with pytest.raises(ValueError, match="-0.1"):
    module.main(["--tiny", "--lrs", "-0.1", "--generations", "1"])
  assert module.main(["--tiny", "--lrs", "0.1", "--generations", "3", "--decay", "0.5",
                      "--reference", "--json", str(out)]) == 0
  rows = json.loads(out.read_text())
  assert [r["generation"] for r in rows] == [0, 1, 2, 3]
  assert [r["peak_lr"] for r in rows] == pytest.approx([0.1, 0.1, 0.05, 0.025], rel=1e-12)
  assert all(0.0 <= r["test_error"] <= 100.0 for r in rows)
  with pytest.raises(ValueError, match="1.5"):
    module.main(["--tiny", "--lrs", "0.1", "--decay", "1.5"])


def test_fmnist_experiment_retraining_in_shards_trains_each_network_once(tmp_path, capsys):
  import json

  module = _experiment("lemonade_fmnist")
  run = tmp_path / "run"
  base = ["--variant", "tiny", "--workdir", str(run)]
  with pytest.raises(ValueError, match="front.json"):  # no exported front yet
    module.main(base + ["--no-search", "--scratch-epochs", "3", "--shard", "0/2"])
  assert module.main(base + ["--search-only"]) == 0
  report = json.loads((run / "report" / "front" / "front.json").read_text())

  def trainings_per_shard(n):  # the shards one after the other; each one's trainings
    counts = []
    for i in range(n):
      capsys.readouterr()
      assert module.main(base + ["--no-search", "--scratch-epochs", "3", "--shard",
                                 f"{i}/{n}"]) == 0
      counts.append(capsys.readouterr().out.count("from scratch:"))
    return counts

  shards = trainings_per_shard(2)
  cache = json.loads((run / "baselines.json").read_text())
  # Every training lands once in the shared cache, split between the two shards.
  members = [v for v in cache.values() if str(v["blocks"]).startswith("member ")]
  assert len(members) == len(report) and sum(shards) == len(cache) and min(shards) >= 1
  assert all(v["epochs"] == pytest.approx(3.0, abs=0.0) for v in cache.values())
  # The first shard saved the split; the second, started after it finished, followed it.
  plan = json.loads((run / "shards.json").read_text())
  assert plan["n"] == 2 and set(plan["owner"]) == set(cache)
  assert sorted(plan["owner"].values()).count(0) == shards[0]
  # Only what the cache lacks is split: one entry dropped, three shards train it once.
  dropped = sorted(cache)[0]
  del cache[dropped]
  (run / "baselines.json").write_text(json.dumps(cache))
  trained = trainings_per_shard(3)
  assert sorted(trained) == [0, 0, 1]
  assert json.loads((run / "shards.json").read_text())["owner"] == {dropped: trained.index(1)}
  cache = json.loads((run / "baselines.json").read_text())
  assert dropped in cache
  out = tmp_path / "rows.json"
  capsys.readouterr()
  assert module.main(base + ["--no-search", "--scratch-epochs", "3", "--json",
                             str(out)]) == 0
  assert "from scratch:" not in capsys.readouterr().out  # the table trains nothing new
  assert len(json.loads((run / "baselines.json").read_text())) == len(cache)
  rows = json.loads(out.read_text())["rows"]
  assert sorted(r["uid"] for r in rows) == sorted(r["uid"] for r in report)
  for r in rows:
    assert r["baseline_epochs"] == pytest.approx(3.0, abs=0.0)
    digest = [k for k in cache if f"member {r['uid']} " in k]
    assert len(digest) == 1 and r["scratch_test_error"] == pytest.approx(
        cache[digest[0]]["test_error"], abs=0.0)
  for bad in ("2/2", "1", "a/b"):
    with pytest.raises(ValueError, match=bad):
      module.main(base + ["--no-search", "--scratch-epochs", "3", "--shard", bad])
  with pytest.raises(ValueError, match="-1"):
    module.main(base + ["--no-search", "--scratch-epochs", "-1"])


def test_fmnist_experiment_seed_spread_trains_members_and_baselines_per_seed(tmp_path,
                                                                          capsys):
  import json

  module = _experiment("lemonade_fmnist")
  run = tmp_path / "run"
  base = ["--variant", "tiny", "--workdir", str(run), "--scratch-epochs", "1"]
  with pytest.raises(ValueError, match="front.json"):  # no exported front yet
    module.main(base + ["--spread-seeds", "1", "--members", "100"])
  assert module.main(["--variant", "tiny", "--workdir", str(run), "--search-only"]) == 0
  front = json.loads((run / "report" / "front" / "front.json").read_text())
  sizes = [r["params"] for r in front]
  member = next(r for r in front if sizes.count(r["params"]) == 1)
  out = tmp_path / "spread.json"
  capsys.readouterr()
  assert module.main(base + ["--spread-seeds", "1,1", "--members", str(member["params"]),
                             "--json", str(out)]) == 0
  printed = capsys.readouterr().out
  rows = json.loads(out.read_text())["spread"]
  assert [r["network"] for r in rows] == [f"member {member['uid']}", rows[1]["network"]]
  assert rows[0]["baseline"] == rows[1]["network"]
  for r in rows:
    assert list(r["errors"]) == ["0", "1"]  # the config's seed, then the one asked for
    assert r["mean"] == pytest.approx(sum(r["errors"].values()) / 2, abs=1e-9)
  assert rows[0]["baseline_mean"] == pytest.approx(rows[1]["mean"], abs=0.0)
  assert f"mean {rows[0]['mean']:.2f} %" in printed
  # The config's seed is the comparison's own cache entry; another seed gets its own.
  cfg = module.load_variants()["tiny"]
  cache = json.loads((run / "baselines.json").read_text())
  assert len(cache) == 4
  net = nasjax.load(member["network"])
  name = module._member_name(member, net)
  same = cache[module._cache_key(cfg, name, 1.0)]
  other = cache[module._cache_key(cfg, name, 1.0, seed=1)]
  assert module._cache_key(cfg, name, 1.0, seed=0) == module._cache_key(cfg, name, 1.0)
  assert same["seed"] == 0 and other["seed"] == 1
  assert (same["test_error"], other["test_error"]) == pytest.approx(
      (rows[0]["errors"]["0"], rows[0]["errors"]["1"]), abs=0.0)
  # Trained again without the cache, seed 1 gives the same network: nothing is random
  # beyond the seed.
  data, _, _ = module._data_and_cache(cfg, tmp_path / "fresh")
  again = module.train_from_scratch(cfg, net.arch, name, 1.0, data, {},
                                    tmp_path / "fresh" / "baselines.json", seed=1)
  assert again["test_error"] == pytest.approx(other["test_error"], abs=1e-6)
  with pytest.raises(ValueError, match="12345"):
    module.main(base + ["--spread-seeds", "1", "--members", "12345"])
  with pytest.raises(ValueError, match="'x'"):
    module.main(base + ["--spread-seeds", "x", "--members", str(member["params"])])
  with pytest.raises(ValueError, match="--spread-seeds and --members go together"):
    module.main(base + ["--spread-seeds", "1"])
  with pytest.raises(ValueError, match="go together"):
    module.main(["--variant", "tiny", "--workdir", str(run), "--spread-seeds", "1",
                 "--members", str(member["params"])])
  assert len(json.loads((run / "baselines.json").read_text())) == 4  # nothing lost


def test_fmnist_experiment_cache_writes_merge_what_others_saved(tmp_path):
  import json

  module = _experiment("lemonade_fmnist")
  path = tmp_path / "baselines.json"
  mine, theirs = {}, {}
  module._store(mine, path, "a", {"test_error": 1.0})
  module._store(theirs, path, "b", {"test_error": 2.0})  # a second process's cache
  module._store(mine, path, "c", {"test_error": 3.0})
  saved = json.loads(path.read_text())
  assert sorted(saved) == ["a", "b", "c"] and saved["b"]["test_error"] == 2.0
  assert sorted(mine) == ["a", "b", "c"]


def test_fmnist_experiment_search_train_overrides_only_the_children(tmp_path):
  import json

  module = _experiment("lemonade_fmnist")
  tiny = module.load_variants()["tiny"]
  cfg = dataclasses.replace(tiny, search_train={"learning_rate": 0.0125}, max_evals=2)
  module.search(cfg, tmp_path / "search")
  saved = json.loads((tmp_path / "search" / "config.json").read_text())
  assert saved["evaluator"]["train"]["learning_rate"] == pytest.approx(0.0125, abs=0.0)
  assert cfg.train["learning_rate"] == pytest.approx(0.05, abs=0.0)  # from scratch: train
  default = module.load_variants()["default"]
  assert default.search_train == {} and default.train["learning_rate"] == pytest.approx(
      0.1, abs=0.0)


def test_fmnist_experiment_search_seed_changes_only_the_search(tmp_path):
  import json

  module = _experiment("lemonade_fmnist")
  cfg = dataclasses.replace(module.load_variants()["tiny"], max_evals=2, search_seed=3)
  module.search(cfg, tmp_path / "search")
  saved = json.loads((tmp_path / "search" / "config.json").read_text())
  assert saved["seed"] == 3  # the search's sampling, morphisms and children
  assert saved["evaluator"]["data_seed"] == cfg.seed == 0  # one data split for all seeds


def test_fmnist_experiment_with_no_network_within_the_constraints(tmp_path, capsys,
                                                                   monkeypatch):
  import json

  module = _experiment("lemonade_fmnist")
  tiny = module.load_variants()["tiny"]
  bounded = dataclasses.replace(tiny, max_evals=2,
                                lemonade={**tiny.lemonade, "constraints": [[0, 0.0]]})
  monkeypatch.setattr(module, "load_variants", lambda: {"tiny": bounded})
  assert module.main(["--variant", "tiny", "--workdir", str(tmp_path / "run")]) == 0
  assert "front: no network within the search's constraints" in capsys.readouterr().out
  front = json.loads((tmp_path / "run" / "report" / "front" / "front.json").read_text())
  assert front == []
  saved = json.loads((tmp_path / "run" / "search" / "config.json").read_text())
  assert saved["strategy_config"]["constraints"] == [[0, 0.0]]


def test_fmnist_experiment_variants_start_inside_their_own_bounds():
  from nasjax.models import plain_cnn

  module = _experiment("lemonade_fmnist")
  variants = module.load_variants()
  assert sorted(variants) == ["default", "tiny"]
  problem = work.Problem((28, 28, 1), 10, np.zeros((1, 28, 28, 1), np.float32))
  paper = module.with_preset(variants["default"], "paper")
  for name, cfg in [*variants.items(), ("default + paper", paper)]:
    config = LemonadeConfig(num_objectives=len(cfg.objectives), **cfg.lemonade)
    if name == "tiny":
      continue
    strategy = lemonade.Lemonade(PlainCNNSpace(), config, problem)  # for allowed()
    for spec in cfg.lemonade["initial"]:
      assert strategy.allowed(plain_cnn(spec, input_shape=(28, 28, 1), num_classes=10)), (
          name, spec)
  sizes = [nasjax.count_params(plain_cnn(s, input_shape=(28, 28, 1), num_classes=10))
           for s in variants["default"].lemonade["initial"]]
  assert sizes == [5178, 24058, 94186, 372682]
  # The preset over the default variant: the paper's Algorithm 1 (acceptance by the
  # population's density, its operators, no size bounds), the rest the variant's.
  default = LemonadeConfig(num_objectives=2, **variants["default"].lemonade).to_dict()
  with_paper = LemonadeConfig(num_objectives=2, **paper.lemonade).to_dict()
  assert {k for k in default if default[k] != with_paper[k]} == {
      "accept_density", "morphisms", "min_params", "max_params"}
  assert with_paper["accept_density"] == "population"
  assert (with_paper["min_params"], with_paper["max_params"]) == (None, None)
  assert (paper.train, paper.search_seconds) == (variants["default"].train, 3200.0)
  assert module.with_preset(variants["default"], None) is variants["default"]
  with pytest.raises(ValueError, match="has no preset 'fast'"):
    module.with_preset(variants["default"], "fast")


def test_fmnist_experiment_seeds_runs_a_search_per_seed_and_pools_the_fronts(tmp_path,
                                                                             capsys):
  import json

  module = _experiment("lemonade_fmnist")
  run, out = tmp_path / "run", tmp_path / "seeds.json"
  argv = ["--variant", "tiny", "--preset", "paper", "--workdir", str(run), "--seeds",
          "0,1", "--scratch-epochs", "1", "--json", str(out)]
  assert module.main(argv) == 0
  printed = capsys.readouterr().out
  saved = json.loads(out.read_text())
  assert saved["preset"] == "paper" and sorted(saved["seeds"]) == ["0", "1"]
  summaries = []
  for seed in (0, 1):
    result = saved["seeds"][str(seed)]
    assert json.loads((run / f"seed{seed}" / "result.json").read_text()) == result
    config = json.loads((run / f"seed{seed}" / "search" / "config.json").read_text())
    assert config["seed"] == seed  # the search seed; one data split for both
    assert config["evaluator"]["data_seed"] == 0
    assert config["strategy_config"]["accept_density"] == "population"
    assert config["strategy_config"]["morphisms"] == list(lemonade.PAPER_MORPHISMS)
    front = json.loads((run / f"seed{seed}" / "report" / "front" / "front.json").read_text())
    rows, s = result["rows"], result["summary"]
    params = sorted(r["params"] for r in front)
    assert (s["members"], s["min_params"], s["max_params"]) == (len(front), params[0],
                                                               params[-1])
    assert s["under_20k"] == len(front) and s["over_500k"] == 0  # tiny networks
    assert s["compared"] == len(rows) == len(front) and s["evaluations"] == 4
    assert s["as_found"] == sum(r["test_error"] <= r["baseline_test_error"] for r in rows)
    assert s["retrained"] == sum(r["scratch_test_error"] <= r["baseline_test_error"]
                                 for r in rows)
    summaries.append(s)
  pooled = saved["pooled"]
  assert pooled["members"] == sum(s["members"] for s in summaries)
  assert pooled["retrained"] == sum(s["retrained"] for s in summaries)
  assert pooled["min_params"] == min(s["min_params"] for s in summaries)
  assert pooled["max_params"] == max(s["max_params"] for s in summaries)
  members = [s["members"] for s in summaries]
  assert f"| mean ± std | 4.00 ± 0.00 | {np.mean(members):.2f} ± " in printed
  assert (f"| pooled | 8 | {pooled['members']} | {pooled['min_params']:,} to "
          f"{pooled['max_params']:,} |") in printed
  assert saved["table"] in printed
  # The trainings from scratch (data split and initialisation of the config's seed) are
  # shared by the seeds: one cache, each baseline and member architecture in it once.
  cfg = module.with_preset(module.load_variants()["tiny"], "paper")
  expected = set()
  for seed in (0, 1):
    for rec in json.loads((run / f"seed{seed}" / "report" / "front" / "front.json"
                           ).read_text()):
      name = module._member_name(rec, nasjax.load(rec["network"]))
      expected.add(module._cache_key(cfg, name, 1.0))
    for r in saved["seeds"][str(seed)]["rows"]:
      expected.add(module._cache_key(cfg, r["baseline_blocks"], 1.0))
  assert set(json.loads((run / "baselines.json").read_text())) == expected
  assert not (run / "seed0" / "baselines.json").exists()
  # Seeds run by separate processes pool into the same table (--pool).
  parts = []
  for seed in ("0", "1"):
    parts.append(tmp_path / f"seed{seed}.json")
    parts[-1].write_text(json.dumps({**saved, "seeds": {seed: saved["seeds"][seed]}}))
  both = tmp_path / "both.json"
  assert module.main(["--pool", f"{parts[1]},{parts[0]}", "--json", str(both)]) == 0
  assert json.loads(both.read_text()) == saved
  assert capsys.readouterr().out == saved["table"] + "\n"
  with pytest.raises(ValueError, match=f"seed 0 of {parts[0]} is already in {out}"):
    module.pool_files([out, parts[0]])
  other = tmp_path / "other.json"
  other.write_text(json.dumps({**saved, "preset": None, "seeds": {"2": saved["seeds"]["0"]}}))
  with pytest.raises(ValueError, match=f"seed 2 of {other} was run with variant 'tiny', "
                     f"preset None, retrained True, epochs 1.0; {parts[0]} with variant "
                     "'tiny', preset 'paper'"):
    module.pool_files([parts[0], other])
  with pytest.raises(ValueError, match=f"{run / 'baselines.json'} is not the --json output"):
    module.pool_files([run / "baselines.json"])
  # A seed's directory is not resumed with other options.
  with pytest.raises(ValueError, match="was searched with other options "
                     r"\['accept_density', 'morphisms'\]"):
    module.main(["--variant", "tiny", "--workdir", str(run), "--seeds", "1"])
  with pytest.raises(ValueError, match="does not go with --search-seed"):
    module.main(argv + ["--search-seed", "3"])
