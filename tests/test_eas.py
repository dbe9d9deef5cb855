"""EAS: layer sequences, controller masks, REINFORCE, weight-preserving children, search."""

import dataclasses
import functools
import importlib.util
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nasjax
from nasjax import data as data_lib
from nasjax.models import densenet, eas_start_net
from nasjax.ops.plan import try_plan
from nasjax.search import work
from nasjax.search.strategies import eas
from nasjax.search.strategies import eas_controller as ctrl
from nasjax.search.evaluators import TrainingEvaluator
from nasjax.search.options import preset_config
from nasjax.search.runner import (Budget, load_checkpoint, read_config, read_history, resume,
                                  run)
from nasjax.search.spaces import PlainCNNSpace
from nasjax.train import TrainConfig

SHAPE, CLASSES = (8, 8, 3), 4  # the synthetic data set's
# Tiny start nets on short ladders (a 4-filter conv reaches the top after one widening).
# Both families use the same controller sizes and every test samples 4 children, so the
# controller's programs compile once for the whole file.
CONTROLLER = {"num_children": 4, "hidden": 16, "max_len": 16, "max_blocks": 4,
              "filter_levels": (4, 8), "unit_levels": (8, 16, 32),
              "growth_levels": (4, 8, 12, 16, 24, 32)}
PLAIN = {**CONTROLLER, "start": {"variant": "tiny", "num_blocks": 2, "filters": 4, "units": 8},
         "steps": ("deeper", "wider")}
DENSE = {**CONTROLLER, "family": "densenet", "steps": ("deeper", "wider"),
         "start": {"growth_rate": 4, "block_layers": [1, 1], "init_features": 4}}


@functools.cache
def _problem() -> work.Problem:
  """The task of the synthetic data set, as a training evaluator gives it."""
  return work.Problem.of(data_lib.load("synthetic"))


def _eas(config: dict) -> eas.EAS:
  return eas.EAS(PlainCNNSpace(), eas.EasConfig(**config), _problem())


def _strategy(**overrides):
  return _eas({**PLAIN, **overrides})


def _perturbed(net, seed):
  """``net`` with random weights and batch-norm statistics far from the defaults."""
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(
      lambda a: jnp.asarray(rng.normal(0, 0.5, a.shape), jnp.float32), net.params)
  state = {n: {k: jnp.asarray(rng.uniform(0.5, 2.0, v.shape) if k == "var"
                              else rng.normal(0, 0.5, v.shape), jnp.float32)
               for k, v in d.items()} for n, d in net.state.items()}
  return nasjax.Network(net.arch, params, state)


def _seeded(strategy, seed=0, fitness=50.0):
  """A state whose seed is the (perturbed) start network with ``fitness``."""
  state = strategy.init(jax.random.key(seed))
  nets, state = strategy.ask(jax.random.key(seed + 1), state)
  return strategy.tell(None, state, [_perturbed(nets[0], seed)], np.array([fitness]))


@pytest.fixture(scope="module")
def plain():
  strategy = _strategy()
  return strategy, _seeded(strategy)


# --------------------------------------------------------------------- layer sequences
def test_layer_sequence_of_the_plain_start_net():
  arch = eas_start_net("tiny", num_blocks=2, input_shape=SHAPE, num_classes=CLASSES)
  ladders = eas.Ladders(filters=(4, 8), units=(8, 16), growth=(4, 8), kernels=(1, 3, 5))
  layers = eas.layer_sequence(arch, "plain_cnn", ladders)
  assert [(l.node, l.kind, l.block, l.after, l.widen_to) for l in layers] == [
      ("b0_l0_conv", "conv", 0, "b0_l0_relu", 8), ("b0_pool", "pool", -1, None, None),
      ("b1_l0_conv", "conv", 1, "b1_l0_relu", 8), ("gap", "gap", 2, "gap", None),
      ("fc0", "fc", 2, "fc0_relu", 16)]
  # conv-4-3x3 is level 0, filter shape (1, 1) of the 3 x 3 (height, width) pairs: index
  # 4; fc-8 follows the 2 levels x 9 shapes of conv tokens.
  assert [l.token for l in layers] == [eas.FIRST_CONV + 4, eas.POOL, eas.FIRST_CONV + 4,
                                       eas.GAP, eas.FIRST_CONV + 18]
  # A non-square filter has its own token: height 1, width 5 is shape 0 * 3 + 2.
  assert ladders.conv_token(4, (1, 5), ladders.filters) == eas.FIRST_CONV + 2
  assert ladders.conv_token(8, (5, 1), ladders.filters) == eas.FIRST_CONV + 9 + 6
  assert ladders.vocab == eas.FIRST_CONV + 18 + 2
  obs = eas.observe(layers, max_len=8, max_blocks=4)
  np.testing.assert_array_equal(obs["block_sizes"], [1, 1, 2, 0])
  np.testing.assert_array_equal(obs["block_conv"], [True, True, False, False])
  np.testing.assert_array_equal(obs["widen_mask"][:6], [1, 0, 1, 0, 1, 0])
  assert int(obs["length"]) == 5 and bool(obs["deeper_ok"])
  with pytest.raises(ValueError, match="more than max_len=4"):
    eas.observe(layers, max_len=4, max_blocks=4)


def test_layer_sequence_of_a_densenet():
  arch = densenet(4, (2, 1), 4, input_shape=SHAPE, num_classes=CLASSES)
  layers = eas.layer_sequence(arch, "densenet", eas.Ladders(growth=(4, 8)))
  dense = [(l.node, l.block, l.after, l.widen_to) for l in layers if l.after]
  assert dense == [("b0_l0_conv", 0, "b0_l0_cat", 8), ("b0_l1_conv", 0, "b0_l1_cat", 8),
                   ("b1_l0_conv", 1, "b1_l0_cat", 8)]
  # The stem and the transition conv are tokens only.
  assert [l.node for l in layers if l.kind == "conv" and not l.after] == ["stem_conv",
                                                                          "t0_conv"]


# ------------------------------------------------------------------------- controller
def test_controller_shapes_and_masks(plain):
  strategy, state = plain
  layers = strategy.layers(state.seed.arch)
  obs = eas.observe(layers, strategy.config.max_len, strategy.config.max_blocks)
  # Mark the first conv as already at the top of its ladder: it must never widen.
  obs["widen_mask"][0] = False
  n = strategy.config.num_children
  batch = {k: np.stack([v] * n) for k, v in obs.items()}
  draws = []
  for r in range(16):
    keys = jax.random.split(jax.random.key(r), n)
    w = eas._sample(strategy.controller, state.params, batch, keys, "wider", strategy.uniform)
    d = eas._sample(strategy.controller, state.params, batch, keys, "deeper", strategy.uniform)
    draws.append((w, d))
  (widen, lp_w), (deeper, lp_d) = draws[0]
  assert widen.shape == (n, strategy.config.max_len) and deeper.shape == (n, 5)
  assert ctrl.DEEPER_DECISIONS == ("block", "position", "height", "width", "stride")
  assert lp_w.shape == lp_d.shape == (n,)
  assert np.all(np.isfinite(lp_w)) and np.all(np.asarray(lp_d) < 0)
  widen = np.concatenate([np.asarray(w[0]) for w, _ in draws])
  deeper = np.concatenate([np.asarray(d[0]) for _, d in draws])
  assert widen[:, ~obs["widen_mask"]].sum() == 0
  # Unmasked layers widen about half the time at initialisation (p = 0.5, 128 draws:
  # std 0.044).
  assert 0.35 < widen[:, obs["widen_mask"]].mean() < 0.65
  sizes = obs["block_sizes"]
  assert np.all(sizes[deeper[:, 0]] > 0) and np.all(deeper[:, 1] < sizes[deeper[:, 0]])
  dense_block = ~obs["block_conv"][deeper[:, 0]]
  assert dense_block.any() and np.all(deeper[dense_block, 2:] == 0)
  # In a conv block the filter height and width are separate decisions over the kernel
  # sizes (1, 3, 5), each about uniform at initialisation; the stride is the one of
  # eas.STRIDES.
  conv = deeper[~dense_block]
  assert eas.STRIDES == (1,) and np.all(deeper[:, 4] == 0)
  for axis in (2, 3):
    assert set(conv[:, axis].tolist()) == {0, 1, 2}
  assert np.mean(conv[:, 2] != conv[:, 3]) > 0.4  # 2/3 if independent and uniform
  # Teacher forcing gives back the sampled log-probabilities of both actors.
  score = jax.vmap(lambda o, a: strategy.controller.apply(
      {"params": state.params}, o, action=a, method="deeper")[1])(batch, draws[0][1][0])
  np.testing.assert_allclose(score, lp_d, atol=1e-5)
  widen = jnp.asarray(draws[0][0][0])
  score = jax.vmap(lambda o, w: strategy.controller.apply(
      {"params": state.params}, o, widen=w, method="wider")[1])(batch, jnp.asarray(widen))
  np.testing.assert_allclose(score, lp_w, atol=1e-5)


def test_top_level_layers_are_never_widened_and_head_insertions_are_dense(plain):
  strategy, state = plain
  # After widening every layer once, the convs are at the top rung (8): masked.
  arch = state.seed.arch
  for node, width in (("b0_l0_conv", 8), ("b1_l0_conv", 8)):
    arch = try_plan("net2wider", arch, node=node, width=width).arch
  top = [l for l in strategy.layers(arch) if l.kind == "conv"]
  assert all(l.widen_to is None for l in top)
  net = strategy.apply_ops(state.seed, [("net2wider", {"node": "b0_l0_conv", "width": 8}),
                                        ("net2wider", {"node": "b1_l0_conv", "width": 8})],
                           jax.random.key(0))
  wide = dataclasses.replace(state, seed=net)
  children, traj = strategy.sample_episode(jax.random.key(4), wide)
  ops = [op for c in children for op in c.ops]
  assert not [kw for name, kw in ops if name == "net2wider" and kw["node"].startswith("b")]
  head = {"gap", "fc0_relu"}
  for name, kw in ops:
    if name == "net2deeper":
      assert (kw["op"] == "dense") == (kw["after"] in head)
  assert any(name == "net2deeper" and kw["op"] == "conv" for name, kw in ops)
  assert traj["tokens"].shape == (strategy.config.num_children, 2, strategy.config.max_len)
  np.testing.assert_array_equal(traj["valid"][:, 0], True)


def test_uniform_policy_is_uniform():
  strategy = _strategy(policy="random")
  state = _seeded(strategy)
  p = strategy.action_probabilities(state.params, state.seed.arch)
  np.testing.assert_allclose(p["block"], [1 / 3] * 3, atol=1e-6)
  np.testing.assert_allclose(p["widen"], [0.5, 0.0, 0.5, 0.0, 0.5], atol=1e-6)


# ------------------------------------------------------------------------- REINFORCE
EPISODES = 16


def test_reward_is_eas_tangent_transform():
  r = eas.reward([10.0, 50.0, np.nan, 0.0])
  np.testing.assert_allclose(r[:2], [math.tan(0.45 * math.pi), 1.0], rtol=1e-12)
  assert math.isnan(r[2]) and r[3] == pytest.approx(math.tan(0.999 * math.pi / 2), rel=1e-12)


def test_reinforce_raises_the_probability_of_a_rewarded_action():
  strategy = _strategy(learning_rate=0.05, steps=("deeper", "deeper"))
  state = _seeded(strategy)
  before = strategy.action_probabilities(state.params, state.seed.arch)["block"][0]
  for episode in range(EPISODES):
    children, traj = strategy.sample_episode(jax.random.key(100 + episode), state)
    # Toy reward: inserting into the first block gives 10% error, anything else 60%.
    fitness = np.array([10.0 if traj["deeper"][i, 0, 0] == 0 else 60.0
                        for i in range(len(children))])
    state = strategy._learn(state, traj, fitness)
  after = strategy.action_probabilities(state.params, state.seed.arch)["block"][0]
  assert before == pytest.approx(1 / 3, abs=0.05)
  assert after > before + 0.3
  assert len(state.log) == EPISODES and state.baseline is not None


def test_cached_children_are_not_evaluated_again():
  arch_a, arch_b = (eas_start_net("tiny", num_blocks=n, input_shape=SHAPE,
                                  num_classes=CLASSES) for n in (1, 2))
  wide = [("net2wider", {"node": "b0_l0_conv", "width": 8})]
  a = eas.Child(arch_a, (), eas.child_key(3, ()))
  b = eas.Child(arch_b, tuple(wide), eas.child_key(3, wide))
  out = eas.EAS._assign_candidates([a, b, a, b], {a.key: 12.5}, force=False)
  assert [c.candidate for c in out] == [-1, 0, -1, 0]
  assert out[0].fitness == 12.5 and math.isnan(out[1].fitness)
  out = eas.EAS._assign_candidates([a, a], {a.key: 12.5}, force=True)
  assert [c.candidate for c in out] == [0, 0]


def test_the_cache_key_is_what_was_trained_the_seed_and_the_actions():
  deeper = ("net2deeper", {"after": "b0_l0_relu", "kernel": 3, "op": "conv"})
  wider = ("net2wider", {"node": "b0_l0_conv", "width": 8})
  key = eas.child_key(5, [deeper, wider])
  assert key == eas.child_key(5, ((deeper[0], dict(reversed(deeper[1].items()))), wider))
  # The same actions from another seed network, or other actions, are another training.
  assert key != eas.child_key(6, [deeper, wider])
  assert key != eas.child_key(5, [wider, deeper])
  assert len({key, eas.child_key(-1, ()), eas.child_key(0, ())}) == 3


def test_a_new_seed_is_not_answered_from_the_old_seeds_results(plain):
  strategy, state = plain
  children, asked = strategy.ask(jax.random.key(11), state)
  assert state.seed_id == 0 and all(c.key == eas.child_key(0, c.ops) for c in asked.pending)
  # Every child better than the seed: the first becomes the seed, with its identity.
  fitness = np.linspace(10.0, 20.0, len(children))
  told = strategy.tell(None, asked, children, fitness)
  assert told.seed is children[0] and told.seed_id == state.count
  assert told.seed_fitness == pytest.approx(10.0, abs=0.0)
  assert len(told.cache) == len(state.cache) + len(children)
  # An episode from the new seed with the same actions is a new training: not cached.
  again, asked2 = strategy.ask(jax.random.key(11), told)
  assert all(c.candidate >= 0 and c.key not in told.cache for c in asked2.pending)


def test_an_episode_repeating_trained_actions_takes_their_cached_results():
  # Random actions: the controller does not learn, so the same key samples the same
  # actions again from the same seed network. One Net2Wider step on a network of three
  # widenable layers: eight possible children, so samples of four repeat each other.
  strategy = _strategy(policy="random", max_resample=1, steps=("wider",))
  state = _seeded(strategy)
  children, asked = strategy.ask(jax.random.key(11), state)
  keys = {c.key for c in asked.pending}
  assert len(children) == len(keys) < len(asked.pending)  # one per (seed, actions)
  # Every child worse than the seed: the seed, and so every child's key, stays.
  told = strategy.tell(None, asked, children, np.full(len(children), 90.0))
  assert told.seed is state.seed and told.seed_id == state.seed_id
  assert keys <= set(told.cache) and told.cache[next(iter(keys))] == 90.0
  again, asked2 = strategy.ask(jax.random.key(11), told)
  # The first sample repeated trained actions only: the strategy learned from their
  # cached rewards (one more episode logged) and sampled again.
  assert asked2.episode == told.episode + 1
  assert asked2.log[-1]["best_child"] == pytest.approx(90.0, abs=0.0)
  # Of the second sample, what was trained is answered from the cache and only the rest
  # is evaluated.
  new = [c for c in asked2.pending if c.candidate >= 0]
  cached = [c for c in asked2.pending if c.candidate < 0]
  assert new and cached and len(again) == len({c.key for c in new})
  for c in asked2.pending:
    assert c.key == eas.child_key(state.seed_id, c.ops)
  assert all(c.key in told.cache and c.fitness == 90.0 for c in cached)
  assert all(c.key not in told.cache and math.isnan(c.fitness) for c in new)


# ------------------------------------------------------------------- weight inheritance
@pytest.mark.parametrize("config", [PLAIN, DENSE], ids=["plain_cnn", "densenet"])
def test_children_compute_their_parents_function_before_training(config):
  strategy = _eas(config)
  seeded = _seeded(strategy, seed=1)
  before = [np.asarray(a) for a in jax.tree_util.tree_leaves(seeded.seed)]
  children, state = strategy.ask(jax.random.key(7), seeded)
  # No gradient step in ask: the seed is bitwise as told, and every layer a child shares
  # with it unchanged in shape holds its weights bitwise.
  assert state.seed is seeded.seed
  for a, b in zip(jax.tree_util.tree_leaves(state.seed), before):
    np.testing.assert_array_equal(np.asarray(a), b)
  for child in children:
    kept = [n for n, p in state.seed.params.items() if n in child.params and all(
        np.shape(child.params[n][k]) == np.shape(v) for k, v in p.items())]
    assert kept
    for n in kept:
      for k, v in state.seed.params[n].items():
        np.testing.assert_array_equal(np.asarray(child.params[n][k]), np.asarray(v))
  assert children and all(c.arch != state.seed.arch for c in children)
  grown = [c for c in children if nasjax.count_params(c.arch) >
           nasjax.count_params(state.seed.arch)]
  assert len(grown) == len(children)
  x = np.asarray(jax.random.normal(jax.random.key(8), (16,) + SHAPE))
  parent = np.asarray(nasjax.apply(state.seed, x))
  scale = np.abs(parent).max()
  # In training mode too, on the training images the inserted batch norms took their
  # statistics on. (With running mean 0 and variance 1 instead, the two plain-CNN children
  # given a conv-BN unit moved by 77 % and 170 % of the largest logit there.)
  batch = strategy.morph_batch
  assert batch.shape == (nasjax.ops.MORPH_BATCH, *SHAPE)
  np.testing.assert_array_equal(batch, _problem().inputs)
  parent_train = np.asarray(nasjax.apply_train(state.seed, batch)[0])
  train_scale = np.abs(parent_train).max()
  new_bns = 0
  for child in children:
    # float32 rounding through a few layers: well under 1e-4 of the logits' scale.
    np.testing.assert_allclose(nasjax.apply(child, x), parent, atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(nasjax.apply_train(child, batch)[0], parent_train,
                               atol=1e-4 * train_scale, rtol=0)
    new_bns += sum(n.op == "batchnorm" and n.name not in state.seed.arch
                   for n in child.arch.nodes)
  # The plain CNN's Net2Deeper inserts conv-BN(-ReLU) units; a DenseNet layer has no BN.
  assert (new_bns > 0) == (config is PLAIN), new_bns


def test_non_square_filters_keep_the_function_on_real_images():
  data = data_lib.load("fashion_mnist_small")
  strategy = eas.EAS(PlainCNNSpace(), eas.EasConfig(**PLAIN), work.Problem.of(data))
  net = _perturbed(strategy.start_network(jax.random.key(0)), 3)
  layers = strategy.layers(net.arch)
  # The actor's (block, position, height, width, stride) indices: kernels (1, 3, 5).
  ops = [strategy._deeper_op(layers, (0, 0, 0, 2, 0)),
         strategy._deeper_op(layers, (1, 0, 2, 1, 0))]
  assert ops == [("net2deeper", {"after": "b0_l0_relu", "kernel": (1, 5), "op": "conv"}),
                 ("net2deeper", {"after": "b1_l0_relu", "kernel": (5, 3), "op": "conv"})]
  child = strategy.apply_ops(net, ops, jax.random.key(1))
  new = sorted(tuple(n["kernel"]) for n in child.arch.nodes
               if n.op == "conv" and n.name not in net.arch)
  assert new == [(1, 5), (5, 3)]
  x = data.x_val[:64]
  parent = np.asarray(nasjax.apply(net, x))
  np.testing.assert_allclose(nasjax.apply(child, x), parent,
                             atol=1e-4 * np.abs(parent).max(), rtol=0)
  # Training mode, on the Fashion-MNIST images the inserted batch norms took their
  # statistics on.
  batch = strategy.morph_batch
  parent_train = np.asarray(nasjax.apply_train(net, batch)[0])
  np.testing.assert_allclose(nasjax.apply_train(child, batch)[0], parent_train,
                             atol=1e-4 * np.abs(parent_train).max(), rtol=0)


# ------------------------------------------------------------------------------ presets
def test_paper_preset_differs_from_the_defaults_where_the_paper_does():
  preset, defaults = eas.EasConfig.preset("paper"), eas.EasConfig.defaults()
  assert preset_config("eas", "paper") == preset
  assert {k for k in defaults if preset[k] != defaults[k]} == {
      "num_children", "filter_levels", "unit_levels"}
  assert preset["num_children"] == 10 and defaults["num_children"] == 8
  assert preset["filter_levels"] == [16, 32, 64, 96, 128, 192, 256, 320, 384, 448, 512]
  assert preset["unit_levels"] == [64, 128, 256, 384, 512, 640, 768, 896, 1024]
  # What the preset pins at the paper's values although the defaults hold them too.
  assert (preset["kernels"], preset["embed"], preset["hidden"], preset["baseline_decay"]
          ) == ([1, 3, 5], 16, 50, 0.95)
  assert preset_config("eas", "paper", {"num_children": 3})["num_children"] == 3
  with pytest.raises(ValueError, match=r"strategy 'eas' has no preset 'fast'; it has "
                     r"\['paper'\]"):
    eas.EasConfig.preset("fast")


# ------------------------------------------------------------------------------ search
def test_tiny_search_grows_the_start_network_and_resumes(tmp_path):
  evaluator = TrainingEvaluator(PlainCNNSpace(), dataset="synthetic",
                                train={"epochs": 1.0, "max_steps": 3, "batch_size": 32})
  config = {k: list(v) if isinstance(v, tuple) else v for k, v in PLAIN.items()}
  config.update(learning_rate=0.01)
  result = run("eas", evaluator, Budget(max_evals=5), tmp_path / "run", 0, config,
               quiet=True)
  generations = [h["generation"] for h in result.history]
  assert result.evals == 5 and generations[0] == 0 and min(generations[1:]) == 1
  assert all(h["status"] == "ok" for h in result.history)
  start = nasjax.Arch.from_dict(result.history[0]["arch"])
  assert start == eas_start_net("tiny", num_blocks=2, filters=4, units=8, input_shape=SHAPE,
                                num_classes=CLASSES)
  for h in result.history[1:]:
    assert nasjax.count_params(nasjax.Arch.from_dict(h["arch"])) > nasjax.count_params(start)
  state = load_checkpoint(tmp_path / "run")["state"]
  told = [h for h in result.history if h["generation"] < state.episode + 1]
  # One cache entry per trained child (its seed and actions), none for cached ones.
  assert state.count == len(told) >= 2 and len(state.cache) == len(told)
  best = min(h["objectives"]["val_error"] for h in told)
  assert state.seed_fitness == pytest.approx(best, abs=1e-9)
  assert state.seed_depth == (1 if best == told[0]["objectives"]["val_error"] else 2)
  again = resume(tmp_path / "run", quiet=True)
  assert again.evals == 5 and again.best["eval"] == result.best["eval"]


def test_bad_options_are_rejected():
  cases = [({"family": "resnet"}, "option family must be one of"),
           ({"steps": ("deeper", "sideways")}, "option steps must be a non-empty list"),
           ({"steps": ()}, "option steps must be a non-empty list"),
           ({"policy": "greedy"}, "option policy must be one of"),
           ({"filter_levels": (8, 4)}, "option filter_levels must be increasing positive "
            r"ints, got \(8, 4\)"),
           ({"baseline_decay": 1.0}, r"option baseline_decay must lie in \[0, 1\)"),
           ({"objective": 1}, "objective 1 is outside the 1 objectives"),
           ({"start": [1]}, "option start must be a dict")]
  for options, message in cases:
    with pytest.raises(ValueError, match=message):
      eas.EasConfig(**options)
  with pytest.raises(ValueError, match="kind must be"):
    ctrl.sample(None, None, None, None, "both")
  # A config.json from before names the data set the strategy loaded: gone.
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['data_limit', 'dataset'\]"):
    eas.EasConfig.from_dict({"dataset": "synthetic", "data_limit": None})
  # The start network needs the problem it is built for.
  with pytest.raises(ValueError, match="eas builds networks: give it problem="):
    eas.EAS(PlainCNNSpace(), eas.EasConfig(**PLAIN)).start_network(jax.random.key(0))


# ------------------------------------------------------------------------- experiment
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _experiment():
  spec = importlib.util.spec_from_file_location("eas_fmnist_experiment",
                                                EXPERIMENTS / "eas_fmnist.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", ["eas_fmnist", "eas_cifar10", "eas_svhn"])
def test_experiment_configs_build_their_start_networks(name):
  shapes = {"synthetic": SHAPE, "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3),
            "svhn_cropped": (32, 32, 3)}
  for variant, cfg in _experiment().load_variants(EXPERIMENTS / "configs" / f"{name}.py"
                                                  ).items():
    strategy = eas.EAS(PlainCNNSpace(), eas.EasConfig(**cfg["eas"]))
    arch = strategy.start_arch(shapes[cfg["dataset"]], 10)
    assert arch.shape(arch.output) == (10,), variant
    TrainConfig(**cfg["train"])
    TrainConfig(**cfg["pretrain"])
    assert cfg["max_evals"] > 1 and set(cfg["arms"]) <= {"eas", "random"}


def test_tiny_experiment_runs_every_arm_and_baseline_per_seed(tmp_path, capsys):
  module = _experiment()
  out, runs = tmp_path / "results.json", tmp_path / "runs"
  assert module.main(["--variant", "tiny", "--preset", "paper", "--seeds", "0,1",
                      "--workdir", str(runs), "--json", str(out)]) == 0
  printed = capsys.readouterr().out
  saved = json.loads(out.read_text())
  tiny = module.load_variants()["tiny"]
  assert saved["preset"] == "paper" and saved["seeds"] == [0, 1]
  assert saved["options"] == json.loads(json.dumps({**tiny["eas"], **eas.PAPER}))
  # The preset ran: the paper's ten children per episode, widening on its ladder (the
  # tiny start's 4-filter convs go to 16, its first rung above).
  arm = runs / "seed0" / "eas"
  assert read_config(arm)["strategy_config"]["num_children"] == 10
  assert load_checkpoint(arm)["state"].episode == 1
  widths = {n["features"] for h in read_history(arm)[1:]
            for n in nasjax.Arch.from_dict(h["arch"]).nodes if n.op == "conv"}
  assert widths <= {4, 16}
  for seed in ("0", "1"):
    rows = saved["results"][seed]
    # Each seed's own JSON holds what the combined one does.
    assert json.loads((runs / f"seed{seed}" / "results.json").read_text()) == rows
    assert set(rows) == {"options", "start", "eas", "random", "continued", "scratch"}
    assert rows["options"] == saved["options"]
    assert rows["eas"]["evals"] == rows["random"]["evals"] == 3
    # The budget of the baselines is the EAS best's: pretraining plus its lineage.
    epochs = 1.0 + rows["eas"]["depth"] * 1.0
    assert rows["continued"]["epochs"] == rows["scratch"]["epochs"] == epochs
    for key in ("start", "eas", "random", "continued", "scratch"):
      assert 0.0 <= rows[key]["test_error"] <= 100.0
  # The table: mean ± sample std over the seeds, each seed's test error, the paired
  # difference of the arms.
  errors = [saved["results"][s]["eas"]["test_error"] for s in ("0", "1")]
  line = next(x for x in printed.splitlines() if x.startswith("| eas best |"))
  assert (f"{np.mean(errors):.2f} ± {np.std(errors, ddof=1):.2f}" in line
          and f"{errors[0]:.2f}, {errors[1]:.2f}" in line)
  diff = [saved["results"][s]["eas"]["test_error"] - saved["results"][s]["random"]["test_error"]
          for s in ("0", "1")]
  assert f"eas best minus random best, test error (points), per seed {diff[0]:+.2f}" in printed
  assert saved["table"] in printed
  # A seed directory is not reused with other options.
  with pytest.raises(ValueError, match="holds results of other EAS options"):
    module.main(["--variant", "tiny", "--seeds", "1", "--workdir", str(runs)])
  with pytest.raises(ValueError, match="has no preset 'fast'"):
    module.main(["--variant", "tiny", "--preset", "fast", "--workdir", str(runs)])
  with pytest.raises(ValueError, match="'0;1'"):
    module.main(["--variant", "tiny", "--seeds", "0;1", "--workdir", str(runs)])
