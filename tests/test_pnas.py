"""PNAS: progressive growth per space, the surrogate's ranking, the search on NB201."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.search.strategies import pnas
from nasjax.search.base import make_strategy
from nasjax.search.spaces import MacroSpace, NB201Space, make_space
from nasjax.search.tabular import load_nb201


def _kendall_tau(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  iu = np.triu_indices(len(a), 1)
  return float(np.mean((np.sign(a[:, None] - a[None]) * np.sign(b[:, None] - b[None]))[iu]))


def test_nb201_cells_grow_node_by_node_as_ordinary_cells():
  space = NB201Space()
  prog = pnas.progression_for(space)
  first = [space.decode(c) for c in prog.first]
  assert first[3] == "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"
  assert len(first) == 5
  kids = np.asarray(prog.children(jnp.asarray(prog.first[3:4]), 2))
  assert kids.shape == (25, 6)
  # Node 2 takes every pair of ops; node 3 now copies node 2.
  assert space.decode(kids[13]) == ("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|"
                                   "+|none~0|none~1|skip_connect~2|")
  full = np.asarray(prog.children(jnp.asarray(kids[13:15]), 3))
  assert full.shape == (250, 6)
  np.testing.assert_array_equal(full[:, :3], np.repeat(kids[13:15, :3], 125, axis=0))
  assert len({space.hash(c) for c in full}) == 250
  tokens, mask = prog.tokens(jnp.asarray(kids[13:14]), jnp.array([2]))
  np.testing.assert_array_equal(tokens[0, :3], [0 * 5 + 3, 1 * 5 + 2, 2 * 5 + 3])
  np.testing.assert_array_equal(mask[0], [True] * 3 + [False] * 3)


def test_pnas_cell_space_counts_sorts_and_builds():
  space = pnas.PnasCellSpace(max_blocks=3, C=4, layers=3)
  prog = pnas.progression_for(space)
  # C(2 inputs * 7 ops + 1, 2): unordered pairs of (input, op).
  assert len(prog.first) == 105 and len(prog.combos[2]) == 28 * 29 // 2
  code = space.encode("sep_conv_3x3~1+skip_connect~0|max_pool_3x3~2+sep_conv_5x5~1")
  # The pairs of a block are kept sorted: (0, skip) comes before (1, sep_conv_3x3).
  assert space.describe(code) == "skip_connect~0+sep_conv_3x3~1|sep_conv_5x5~1+max_pool_3x3~2"
  assert space.hash(code) == space.hash(space.encode(space.describe(code)))
  g = space.decode(code)
  assert g.normal_concat == (3,) and g.reduce == g.normal  # block 0 is read by block 1
  arch = space.build(code, (16, 16, 3), 10)
  assert arch.output_shape == (10,)
  codes = np.asarray(jax.vmap(space.sample)(jax.random.split(jax.random.key(0), 64)))
  np.testing.assert_array_equal(codes, np.asarray(jax.vmap(space.canonical)(codes)))
  for c in codes:  # genes of the blocks after the last are inactive, hence 0
    assert np.all(c[1 + 4 * (c[0] + 1):] == 0)
  assert make_space("pnas_cell", max_blocks=2).length == 9
  with pytest.raises(ValueError, match="not in the space"):
    space.encode("sep_conv_3x3~2+skip_connect~0")


def test_lstm_predictor_reads_only_the_blocks_a_cell_has():
  space = NB201Space()
  prog = pnas.progression_for(space)
  module = pnas.LSTMPredictor(prog.vocab, prog.group, embed=8, hidden=16)
  # Equal first two nodes (positions 0-2), different third node (positions 3-5).
  codes = jnp.array([[1, 2, 3, 0, 0, 1], [1, 2, 3, 4, 2, 3]], jnp.int32)
  tokens, mask = prog.tokens(codes, jnp.array([2, 2]))
  params = module.init(jax.random.key(0), tokens[0], mask[0])
  predict = jax.jit(jax.vmap(lambda t, m: module.apply(params, t, m)))
  two = np.asarray(predict(tokens, mask))
  assert abs(float(two[0] - two[1])) <= 1e-7  # the masked third node is never read
  full = np.asarray(predict(*prog.tokens(codes, jnp.array([3, 3]))))
  assert abs(float(full[0] - full[1])) > 1e-4
  assert abs(float(full[0] - two[0])) > 1e-4


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_surrogate_ranks_held_out_nb201_cells(kind):
  space = NB201Space()
  val = load_nb201().val("cifar10")
  order = np.random.default_rng(0).permutation(len(val))
  train, test = order[:100], order[100:500]
  codes = jnp.asarray(np.stack([space.from_index(i) for i in train]))
  held = jnp.asarray(np.stack([space.from_index(i) for i in test]))
  sur = pnas.Surrogate(pnas.progression_for(space), kind, members=3, embed=16, hidden=32,
                       steps=100)
  params = sur.init(jax.random.key(0))
  params = jax.jit(sur.fit)(params, codes, jnp.full(100, 3), jnp.asarray(val[train]),
                            jnp.ones(100, bool))
  pred = np.asarray(jax.jit(sur.predict)(params, held, jnp.full(400, 3)))
  # Chance is 0; trained on 100 cells the ensembles reach 0.43 (MLP) and 0.44 (LSTM).
  assert _kendall_tau(pred, val[test]) > 0.3


def test_pnas_grows_nb201_cells_and_ranks_expansions_above_average():
  space = NB201Space()
  val = load_nb201().val("cifar10")
  strategy = make_strategy("pnas", space, {"beam": 4, "predictor": "mlp", "members": 3,
                                           "hidden": 32, "embed": 16, "capacity": 64})
  state = strategy.init(jax.random.key(0))
  levels, asked = [], []
  for _ in range(5 + 4 + 12):
    levels.append(int(state.level))
    codes, state = strategy.ask(None, state)
    asked.append(np.asarray(codes[0]))
    state = strategy.tell(None, state, codes, 100.0 - val[np.asarray(space.index(codes))])
  assert levels == [1] * 5 + [2] * 4 + [3] * 12
  ranks = [space.hash(c) for c in asked]
  assert len(set(ranks)) == len(ranks)  # nothing evaluated twice
  assert sorted(space.decode(c) for c in asked[:5]) == sorted(
      space.decode(c) for c in pnas.progression_for(space).first)
  # The level-3 picks beat the average expansion of their parents by a wide margin
  # (83.4 % against 73.3 % validation accuracy with this seed).
  prog = pnas.progression_for(space)
  picked = np.mean(val[ranks[9:]])
  parents = np.stack(asked[5:9])
  all_kids = np.asarray(prog.children(jnp.asarray(parents), 3))
  average = np.mean(val[np.asarray(space.index(jnp.asarray(all_kids)))])
  assert picked > average + 5.0


def test_pnas_never_expands_a_failed_cell():
  space = MacroSpace()
  strategy = make_strategy("pnas", space, {"beam": 2, "batch_size": 3, "predictor": "mlp",
                                           "members": 2, "fit_steps": 5, "capacity": 16})
  state = strategy.init(jax.random.key(1))
  codes, state = strategy.ask(None, state)
  assert sorted(np.asarray(codes)[:, 0].tolist()) == [0, 1, 2]
  fitness = jnp.where(codes[:, 0] == 2, jnp.nan, codes[:, 0].astype(jnp.float32))
  state = strategy.tell(None, state, codes, fitness)
  assert int(state.level) == 2
  kids, _ = strategy.ask(None, state)
  # Parents are the two finite cells (first layer 0 or 1); the NaN one is never grown.
  assert set(np.asarray(kids)[:, 0].tolist()) <= {0, 1}
  assert np.all(np.asarray(state.queue)[:int(state.queue_size), 0] != 2)
  with pytest.raises(ValueError, match="does not search space 'darts'"):
    make_strategy("pnas", make_space("darts"))
  with pytest.raises(ValueError, match="PNAS grows spaces"):
    pnas.PNAS(make_space("darts"))
  with pytest.raises(ValueError, match="predictor must be one of"):
    make_strategy("pnas", space, {"predictor": "gp"})


def _tell_all(strategy, state, space, val, count):
  """Ask and tell ``count`` batches on NB201's table; returns the state and asked codes."""
  asked = []
  for _ in range(count):
    codes, state = strategy.ask(None, state)
    asked.append(np.asarray(codes))
    state = strategy.tell(None, state, codes, 100.0 - val[np.asarray(space.index(codes))])
  return state, np.concatenate(asked)


def test_each_level_expands_every_cell_the_level_before_evaluated():
  space = NB201Space()
  val = load_nb201().val("cifar10")
  strategy = make_strategy("pnas", space, {"beam": 2, "predictor": "mlp", "members": 2,
                                           "fit_steps": 5})
  state, asked = _tell_all(strategy, strategy.init(jax.random.key(3)), space, val, 5)
  # Level 2 expands all five one-block cells (not the best K = 2): 5 x 25 cells, scored
  # by the surrogate and queued best first; the level evaluates the first K.
  assert int(state.level) == 2 and int(state.queue_size) == 125
  queue = np.asarray(state.queue[:125])
  np.testing.assert_array_equal(np.unique(queue[:, 0]), np.arange(5))
  score = np.asarray(strategy.surrogate.predict(state.predictor, jnp.asarray(queue),
                                                jnp.full(125, 2)))
  assert np.all(np.diff(score) <= 1e-6)
  state, level2 = _tell_all(strategy, state, space, val, 2)
  np.testing.assert_array_equal(level2, queue[:2])
  # Level 3 expands the K = 2 cells level 2 evaluated: 2 x 125 expansions, less the two
  # that are their parents again (node 3 a skip from node 2), evaluated already.
  assert int(state.level) == 3 and int(state.queue_size) == 248
  queue = np.asarray(state.queue[:248])
  evaluated = {space.hash(c) for c in np.concatenate([asked, level2])}
  assert not {space.hash(c) for c in queue} & evaluated
  assert {tuple(c[:3]) for c in queue} == {tuple(c[:3]) for c in level2}


def test_the_surrogates_training_set_forgets_no_evaluated_cell():
  space = NB201Space()
  val = load_nb201().val("cifar10")
  strategy = make_strategy("pnas", space, {"beam": 4, "predictor": "mlp", "members": 2,
                                           "fit_steps": 5, "capacity": 4})
  state, asked = _tell_all(strategy, strategy.init(jax.random.key(0)), space, val, 29)
  # The buffer started with 4 rows and doubled to 32: all 29 cells are in it, in order,
  # and none was proposed twice (a forgotten cell would be new again).
  assert state.codes.shape == (32, 6) and int(state.inserted) == 29
  np.testing.assert_array_equal(np.asarray(state.codes[:29]), asked)
  np.testing.assert_allclose(np.asarray(state.fitness[:29]),
                             100.0 - val[np.asarray(space.index(jnp.asarray(asked)))],
                             atol=1e-4)
  assert np.all(np.asarray(state.levels[29:]) == 0)
  assert len({space.hash(c) for c in asked}) == 29
  assert pnas.grown(state, 3) is state  # room left: nothing copied
  assert pnas.grown(state, 4).codes.shape == (64, 6)


def test_each_refit_trains_on_every_cell_evaluated_so_far():
  space = NB201Space()
  val = load_nb201().val("cifar10")
  strategy = make_strategy("pnas", space, {"beam": 2, "predictor": "mlp", "members": 2,
                                           "fit_steps": 5, "capacity": 4})
  state, _ = _tell_all(strategy, strategy.init(jax.random.key(1)), space, val, 6)
  # Level 2's second (last) evaluation ends the level: the refit that follows trains on
  # all seven cells (five of level 1, two of level 2; the buffer grew from 4 to 8 rows),
  # warm-started from the surrogate of level 1.
  before = state
  state, _ = _tell_all(strategy, state, space, val, 1)
  assert int(state.level) == 3 and int(state.inserted) == 7 and state.codes.shape[0] == 8
  surrogate = strategy.surrogate
  valid = np.asarray(state.levels) > 0
  np.testing.assert_array_equal(np.asarray(state.levels), [1] * 5 + [2] * 2 + [0])
  fit = jax.jit(surrogate.fit)
  refit = lambda keep: fit(before.predictor, state.codes, state.levels, -state.fitness,
                           jnp.asarray(keep))
  leaves = lambda p: np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)])
  np.testing.assert_allclose(leaves(state.predictor), leaves(refit(valid)), atol=1e-5)
  # A refit on the last level's cells alone (a buffer that forgot level 1) differs.
  last_only = np.asarray(state.levels) == 2
  assert np.max(np.abs(leaves(refit(last_only)) - leaves(state.predictor))) > 1e-3


def test_paper_preset_is_the_papers_beam_and_lstm_ensemble():
  from nasjax.search.options import preset_config

  paper = preset_config("pnas", "paper")
  assert paper["beam"] == 256 and paper["predictor"] == "lstm" and paper["members"] == 5
  assert paper["first_level"] is None  # every one-block cell, as in PNAS
  strategy = make_strategy("pnas", NB201Space(), paper)
  assert strategy.surrogate.kind == "lstm" and sorted(strategy.surrogate.modules) == ["lstm"]
  # Level 3 expands up to K = 256 cells by 125 each; level 2 all five by 25.
  assert strategy.parents_at(2) == 5 and strategy.parents_at(3) == 256
  assert strategy.queue_length == 256 * 125
