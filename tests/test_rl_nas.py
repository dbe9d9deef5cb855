"""RL-NAS: the LSTM controller, layer strings, REINFORCE and the MnasNet reward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nasjax
from nasjax.search.strategies import controller as controller_lib
from nasjax.search import hardware
from nasjax.search.strategies import rl_nas
from nasjax.search.base import make_strategy
from nasjax.search.strategies.evolution import EvolutionConfig, RegularizedEvolution
from nasjax.search.spaces import DartsCellSpace, NB201Space, PlainCNNSpace, make_space


def _sample(space, n, seed=0):
  """``n`` codes sampled by a fresh controller, their log-probabilities when sampled and
  when scored by teacher forcing."""
  ctl = controller_lib.make_controller(space, hidden=16, num_layers=1)

  @jax.jit
  def go(key):
    k_init, k_sample = jax.random.split(key)
    params = controller_lib.init_params(ctl, k_init)
    codes, log_prob, _ = controller_lib.sample(ctl, params, jax.random.split(k_sample, n))
    return codes, log_prob, controller_lib.score(ctl, params, codes)[0]

  return tuple(np.asarray(a) for a in go(jax.random.key(seed)))


def test_sampled_layer_strings_are_valid_architectures():
  space = rl_nas.LayerStringSpace(num_layers=4, filters=(8, 16), layer_strides=(1, 2))
  codes, log_prob, scored = _sample(space, 16)
  assert codes.shape == (16, space.length)
  assert np.all((codes >= 0) & (codes < np.asarray(space.num_choices)))
  # Teacher forcing the sampled code gives back the sampling log-probability.
  np.testing.assert_allclose(scored, log_prob, rtol=1e-5, atol=1e-5)
  assert len({space.hash(c) for c in codes}) >= 12
  for code in codes:
    np.testing.assert_array_equal(space.encode(space.describe(code)), code)
    arch = space.build(code, (16, 16, 3), 10)
    assert arch.output_shape == (10,)
    layers = space.decode(code)
    read_by_someone = set()
    for i, (h, w, f, s, inputs) in enumerate(layers):
      conv = arch[f"l{i}_conv"]
      assert (conv["kernel"], conv["features"], conv["stride"]) == ((h, w), f, (s, s))
      # The conv reads the concatenation of exactly the anchored layers (or the image).
      cin = arch.in_shapes(f"l{i}_conv")[0][-1]
      assert cin == (sum(layers[j][2] for j in inputs) if inputs else 3)
      read_by_someone.update(inputs)
    out_channels = arch.in_shapes("gap")[0][-1]
    assert out_channels == sum(l[2] for j, l in enumerate(layers) if j not in read_by_someone)


def test_layer_string_pools_larger_inputs_down_to_the_smallest():
  space = rl_nas.LayerStringSpace(num_layers=3, filters=(8, 16), layer_strides=(1, 2))
  code = space.encode("3x3-8/2 1x5-16/1 3x1-8/2<0,1")
  arch = space.build(code, (15, 15, 3), 4)
  # Layer 1 reads the image at full size (no input layer): 15x15; layer 0 is 8x8.
  assert arch.shape("l0_relu") == (8, 8, 8) and arch.shape("l1_relu") == (15, 15, 16)
  assert arch["l1_relu_pool2"].op == "max_pool" and arch.shape("l1_relu_pool2") == (8, 8, 16)
  assert arch.in_shapes("l2_conv") == [(8, 8, 24)]
  assert arch.shape("l2_relu") == (4, 4, 8)
  assert arch["gap"].inputs == ("l2_relu",)
  with pytest.raises(ValueError, match="powers of two"):
    rl_nas.LayerStringSpace(layer_strides=(1, 3))
  with pytest.raises(ValueError, match="reads"):
    space.encode("3x3-8/2 1x5-16/1<1 3x1-8/2")


@pytest.mark.parametrize("space", [NB201Space(), PlainCNNSpace(num_blocks=2, max_layers=3),
                                   DartsCellSpace(steps=2)], ids=lambda s: s.name)
def test_controller_codes_are_canonical_and_scored_exactly(space):
  codes, log_prob, scored = _sample(space, 8)
  assert np.all((codes >= 0) & (codes < np.asarray(space.num_choices)))
  np.testing.assert_array_equal(codes, np.asarray(jax.vmap(space.canonical)(codes)))
  np.testing.assert_allclose(scored, log_prob, rtol=1e-5, atol=1e-5)
  # An untrained controller is near uniform: log P is near -sum(log n) over active genes.
  active = np.asarray(jax.vmap(space.active)(codes))
  uniform = -np.sum(np.where(active, np.log(np.asarray(space.num_choices)), 0.0), axis=1)
  np.testing.assert_allclose(log_prob, uniform, rtol=0.05)


def test_reinforce_raises_the_probability_of_a_rewarded_token():
  space = NB201Space()
  strategy = rl_nas.RLNAS(space, rl_nas.RLNASConfig(batch_size=8, learning_rate=0.02, hidden=16,
                                                    num_layers=1))

  def prob_of_target(params, key):
    codes, _, _ = controller_lib.sample(strategy.controller, params, jax.random.split(key, 500))
    return jnp.mean(codes[:, 0] == 3)

  def generation(state, key):
    k_ask, k_tell = jax.random.split(key)
    codes, state = strategy.ask(k_ask, state)
    fitness = -(codes[:, 0] == 3).astype(jnp.float32)  # reward 1 for op 3 on edge 1<-0
    return strategy.tell(k_tell, state, codes, fitness), None

  @jax.jit
  def train(key):
    state = strategy.init(key)
    before = prob_of_target(state.params, jax.random.key(7))
    state, _ = jax.lax.scan(generation, state, jax.random.split(key, 60))
    return before, prob_of_target(state.params, jax.random.key(7)), state

  before, after, state = train(jax.random.key(0))
  assert abs(float(before) - 0.2) < 0.06  # uniform over 5 ops
  assert float(after) > float(before) + 0.4
  assert int(state.count) == 480 and int(state.rewarded) == 480
  # The baseline tracks the mean reward, which approaches 1 as the target dominates.
  assert 0.3 < float(state.baseline) <= 1.0


def test_rl_nas_skips_failed_children_and_rejects_bad_options():
  strategy = make_strategy("rl_nas", NB201Space(), {"batch_size": 2, "hidden": 8,
                                                   "num_layers": 1})
  state = strategy.init(jax.random.key(0))
  codes = jnp.array([[0, 1, 2, 3, 4, 0], [1, 1, 1, 1, 1, 1]], jnp.int32)
  after = jax.jit(strategy.tell)(None, state, codes, jnp.array([jnp.nan, jnp.nan]))
  assert int(after.rewarded) == 0 and int(after.count) == 2
  diff = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), after.params,
                                state.params)
  # With no reward, only the entropy bonus moves the parameters: no step at all here.
  assert max(jax.tree_util.tree_leaves(diff)) == 0.0
  with pytest.raises(ValueError, match="baseline_decay"):
    make_strategy("rl_nas", NB201Space(), {"baseline_decay": 1.0})
  with pytest.raises(ValueError, match="objective 1"):
    make_strategy("rl_nas", NB201Space(), {"objective": 1})


def test_paper_preset_runs_zoph_and_les_settings():
  from nasjax.search.options import preset_config

  paper = preset_config("rl_nas", "paper")
  defaults = rl_nas.RLNASConfig.defaults()
  changed = {k: v for k, v in paper.items() if v != defaults[k]}
  # Adam 0.0006, 8 children per update, no entropy bonus; only what differs is set.
  assert {k: paper[k] for k in rl_nas.PAPER} == {"learning_rate": 0.0006, "batch_size": 8,
                                                 "entropy_weight": 0.0}
  assert set(changed) <= set(rl_nas.PAPER)
  strategy = make_strategy("rl_nas", NB201Space(), paper)
  codes, _ = strategy.ask(jax.random.key(0), strategy.init(jax.random.key(1)))
  assert codes.shape == (8, 6)
  assert preset_config("rl_nas", "paper", {"batch_size": 2})["batch_size"] == 2
  with pytest.raises(ValueError, match="strategy 'rl_nas' has no preset 'fast'; it has "
                                       r"\['paper'\]"):
    preset_config("rl_nas", "fast")
  with pytest.raises(ValueError, match="unknown strategy 'nope'"):
    preset_config("nope", "paper")


# ------------------------------------------------------------------------- MnasNet reward
def test_mnas_reward_formula():
  # reward = ACC * (LAT / T) ** w with w = -0.07 (soft) or 0 / -1 (hard).
  r = hardware.mnas_reward(jnp.array([0.75, 0.75, 0.75]), jnp.array([2.0, 0.5, 1.0]), 1.0)
  np.testing.assert_allclose(r, [0.75 * 2 ** -0.07, 0.75 * 0.5 ** -0.07, 0.75], rtol=1e-6)
  np.testing.assert_allclose(r, [0.714478, 0.787288, 0.75], atol=1e-6)
  a, b = hardware.HARD
  r = hardware.mnas_reward(jnp.array([0.75, 0.75, 0.8]), jnp.array([0.5, 2.0, 3.0]), 2.0, a, b)
  np.testing.assert_allclose(r, [0.75, 0.75, 0.8 / 1.5], rtol=1e-6)
  assert bool(jnp.isnan(hardware.mnas_reward(jnp.nan, 1.0, 1.0)))
  with pytest.raises(ValueError, match="target cost must be positive"):
    hardware.mnas_reward(0.5, 1.0, 0.0)


def test_mnas_scalarizer_reads_error_and_cost_objectives():
  # val_error 25 % and latency twice the 10 ms target: 0.75 * 2 ** -0.07.
  s = hardware.make_scalarizer({"target": 0.01}, 2)
  f = jnp.array([[25.0, 0.02], [25.0, 0.01], [jnp.nan, 0.01]])
  np.testing.assert_allclose(s(f)[:2], [-0.714478, -0.75], atol=1e-6)
  assert bool(jnp.isnan(s(f)[2]))
  hard = hardware.make_scalarizer({"kind": "mnas", "target": 0.01, "mode": "hard"}, 2)
  np.testing.assert_allclose(hard(f)[:2], [-0.375, -0.75], atol=1e-6)
  with pytest.raises(ValueError, match="reads objective 2"):
    hardware.make_scalarizer({"target": 1.0, "cost_objective": 2}, 2)
  with pytest.raises(ValueError, match="unknown reward kind"):
    hardware.make_scalarizer({"kind": "fbnet", "target": 1.0}, 2)
  with pytest.raises(ValueError, match="target must be a positive"):
    hardware.make_scalarizer({"target": -1.0}, 2)
  with pytest.raises(ValueError, match="both alpha and beta"):
    hardware.make_scalarizer({"target": 1.0, "alpha": 0.0}, 2)


def test_any_scalar_strategy_can_search_the_mnas_reward():
  space = NB201Space()
  reward = {"kind": "mnas", "target": 1.0e5, "cost_objective": 1}
  rea = hardware.Scalarized(RegularizedEvolution(space, EvolutionConfig(population_size=4)),
                            hardware.make_scalarizer(reward, 2))
  state = rea.init(jax.random.key(0))
  codes, state = jax.jit(rea.ask)(jax.random.key(1), state)
  fitness = jnp.array([[10.0, 2.0e5]])
  state = jax.jit(rea.tell)(None, state, codes, fitness)
  np.testing.assert_allclose(state.fitness[0, 0], -0.9 * 2 ** -0.07, rtol=1e-6)
  # RL-NAS takes the same reward as an option.
  rl = make_strategy("rl_nas", space, {"reward": reward}, num_objectives=2)
  np.testing.assert_allclose(rl.rewards(fitness), [0.9 * 2 ** -0.07], rtol=1e-6)


def test_measure_cost_counts_params_and_times_inference():
  arch = nasjax.sequential((8, 8, 1), [("conv", {"features": 4, "kernel": 3}), ("gap", {}),
                                       ("dense", {"features": 2})])
  assert hardware.measure_cost(arch, "params") == 3 * 3 * 4 + 4 * 2 + 2
  assert hardware.measure_cost(arch, "flops") == nasjax.flops(arch)
  assert 0 < hardware.measure_cost(arch, "latency", repeats=3) < 1.0
  with pytest.raises(ValueError, match="unknown cost metric"):
    hardware.measure_cost(arch, "energy")


def test_layer_string_space_is_registered_for_make_space():
  space = make_space("layer_string", num_layers=2)
  assert isinstance(space, rl_nas.LayerStringSpace) and space.length == 2 * 4 + 1


def test_updates_stay_finite_on_a_space_with_unequal_choice_counts():
  # The plain CNN space mixes decisions of 2 and 3 choices: the controller masks the
  # missing ones, whose log-probability is -inf. A NaN gradient there once turned every
  # parameter to NaN after the first update, and the controller then sampled one code
  # only.
  space = make_space("plain_cnn", num_blocks=3, max_layers=2, filters=[16, 32, 64],
                     kernels=[3, 5])
  assert len(set(space.num_choices)) > 1
  strategy = make_strategy("rl_nas", space, {}, num_objectives=1)
  state = strategy.init(jax.random.key(0))
  for step, error in enumerate((89.98, 70.0, 60.0)):
    codes, state = strategy.ask(jax.random.key(10 + step), state)
    state = strategy.tell(jax.random.key(20 + step), state, codes, jnp.array([error]))
  leaves = jax.tree_util.tree_leaves(state.params)
  assert all(bool(jnp.all(jnp.isfinite(a))) for a in leaves)
  drawn = {tuple(np.asarray(strategy.ask(jax.random.key(100 + i), state)[0])[0].tolist())
           for i in range(8)}
  assert len(drawn) >= 6, drawn  # still a spread policy after three small updates
