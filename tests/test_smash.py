"""SMASH: the memory-bank space, its encoding, the hypernetwork and the strategy."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nasjax
from nasjax import data as data_lib
from nasjax.models import smash as S
from nasjax.search import make_space, make_strategy, work
from nasjax.search.strategies import smash as search_smash

# Two blocks on 8x8 inputs: every feature (several banks, widths, kernels with a centre
# slice, dilations, groups, inner widths, skipped ops and convs) at compile times of
# seconds.
TINY = S.MemoryBankSpace(num_blocks=2, max_banks=2, bank_widths=(4, 8), max_ops=2,
                         max_convs=2, kernels=(1, 3), dilations=(1, 2), groups=(1, 2),
                         width_factors=(1, 2), unit=4)
# The training tests compile gradients: a smaller space (one conv kind, one conv per op).
SMALL = search_smash.SmashSpace(num_blocks=2, max_banks=2, bank_widths=(4, 8), max_ops=2,
                                max_convs=1, kernels=(3,), dilations=(1, 2), groups=(1, 2),
                                width_factors=(1,), unit=4)
SHAPE, CLASSES = (8, 8, 3), 4


def _nets(n, seed=0, space=TINY):
  return [space.sample_net(k) for k in jax.random.split(jax.random.key(seed), n)]


def _random_params(space, seed=0):
  """One-shot parameters with every array random, so that any wrong slice shows."""
  params = S.init_params(space, jax.random.key(seed), SHAPE, CLASSES, hyper_hidden=8)
  leaves, tree = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(seed)
  leaves = [(a + 0.3 * rng.standard_normal(a.shape)).astype(np.float32) for a in leaves]
  return jax.device_put(jax.tree_util.tree_unflatten(tree, leaves))


# ------------------------------------------------------------------------------- space
def test_codes_round_trip_and_are_canonical():
  codes = np.asarray(jax.vmap(TINY.sample_code)(jax.random.split(jax.random.key(1), 40)))
  n = np.asarray(TINY.num_choices)
  assert codes.shape == (40, TINY.length) and np.all((codes >= 0) & (codes < n))
  for code in codes:
    net = TINY.decode(code)
    np.testing.assert_array_equal(TINY.encode(net), code)
    np.testing.assert_array_equal(TINY.canonical(code), code)
    for block in net.blocks:
      for op in block.ops:
        assert op.reads and op.writes and op.convs[-1].width == block.width
  # Uniform per position: over 40 samples every depth and bank count occurs.
  assert {len(b.ops) for net in map(TINY.decode, codes) for b in net.blocks} == {1, 2}
  assert {b.num_banks for net in map(TINY.decode, codes) for b in net.blocks} == {1, 2}


def test_canonical_repairs_empty_reads_and_clears_inactive_positions():
  net = _nets(1, seed=3)[0]
  code = TINY.encode(net).copy()
  M = TINY.max_banks
  op0 = 3  # the first op slot's genes start after [banks, width, ops] of block 0
  code[op0:op0 + M] = 0  # op 0 of block 0 reads nothing
  fixed = np.asarray(TINY.canonical(code))
  assert fixed[op0] == 1 and TINY.decode(code).blocks[0].ops[0].reads == (0,)
  noisy = np.where(np.asarray(TINY.active(fixed)), fixed, 1)
  np.testing.assert_array_equal(TINY.canonical(noisy), fixed)


def test_bad_values_raise_value_errors_naming_them():
  net = _nets(1)[0]
  block = net.blocks[0]
  bad = S.BankNet((S.BankBlock(block.num_banks, 5, block.ops),) + net.blocks[1:])
  with pytest.raises(ValueError, match="bank width 5"):
    TINY.encode(bad)
  op = block.ops[0]
  bad_op = S.BankOp((7,), op.writes, op.width, op.convs)
  bad = S.BankNet((S.BankBlock(block.num_banks, block.width, (bad_op,)),) + net.blocks[1:])
  with pytest.raises(ValueError, match=r"reads \(7,\)"):
    S.to_arch(TINY, bad, SHAPE, CLASSES)
  with pytest.raises(ValueError, match="groups 3 does not divide"):
    S.MemoryBankSpace(groups=(1, 3))
  with pytest.raises(ValueError, match="kernels must be odd"):
    S.MemoryBankSpace(kernels=(2, 3))
  with pytest.raises(ValueError, match="position 0 is 9"):
    TINY.decode(np.full(TINY.length, 9))


def test_to_arch_reads_concat_and_writes_add():
  for net in _nets(6, seed=4):
    arch = S.to_arch(TINY, net, SHAPE, CLASSES)
    assert arch.output_shape == (CLASSES,)
    for b, block in enumerate(net.blocks):
      for o, op in enumerate(block.ops):
        p = f"b{b}_op{o}"
        assert arch.shape(f"{p}_proj")[-1] == op.width
        src = arch[f"{p}_bn0"].inputs[0]
        assert arch.shape(src)[-1] == len(op.reads) * block.width
        assert (arch[src].op == "concat") == (len(op.reads) > 1)
        for m in op.writes:
          assert arch[f"{p}_write{m}"].op == "add"
          assert arch.shape(f"{p}_write{m}")[-1] == block.width
        for l, conv in enumerate(op.convs):
          node = arch[f"{p}_conv{l}"]
          assert (node["kernel"], node["dilation"], node["groups"], node["features"]) == (
              (conv.kernel,) * 2, (conv.dilation,) * 2, conv.groups, conv.width)
    # Resolution halves at every transition.
    assert arch.shape("b1_init0")[:2] == (4, 4)


# ---------------------------------------------------------------------------- encoding
def test_encoding_shapes_are_fixed_and_cells_count_reads_writes_dilations():
  M, u = TINY.max_banks, TINY.unit
  H, W, C = TINY.condition_shape
  assert C == 2 * M + len(TINY.dilations)
  for net in _nets(8, seed=5):
    enc = S.encode(TINY, net)
    assert enc.condition.shape == (H, W, C)
    for b, (block, be) in enumerate(zip(net.blocks, enc.blocks)):
      cm, ch = TINY.memory_channels(b), TINY.hidden_channels(b)
      O, L = TINY.max_ops, TINY.max_convs
      assert be.read_mask.shape == be.write_mask.shape == (O, cm)
      assert be.hidden_mask.shape == (O, ch) and be.conv_mask.shape == (O, L, ch, ch)
      assert int(be.bank_mask.sum()) == block.num_banks * block.width
      for o in range(O):
        c0 = TINY.condition_offset(b) + o * cm // u
        cells = enc.condition[:, c0:c0 + cm // u]
        if o >= len(block.ops):
          assert not be.op_active[o] and not cells.any()
          continue
        op = block.ops[o]
        n_cells = (len(op.reads) * block.width // u) * (op.width // u)
        assert cells[..., :M].sum() == n_cells  # one read one-hot per cell
        for m in range(M):
          assert cells[..., M + m].sum() == (n_cells if m in op.writes else 0)
        d = TINY.dilations.index(op.convs[0].dilation)
        assert cells[..., 2 * M + d].sum() == n_cells
        assert cells[..., 2 * M:].sum() == n_cells
        assert int(be.read_mask[o].sum()) == len(op.reads) * block.width
        assert int(be.hidden_mask[o].sum()) == op.width
        assert list(be.conv_active[o]) == [l < len(op.convs) for l in range(L)]


def test_generated_weights_have_the_sampled_shapes():
  params = _random_params(TINY)
  for net in _nets(4, seed=6):
    enc = S.encode(TINY, net)
    raw = S.generate(TINY, params["hyper"], jnp.asarray(enc.condition))
    for b, w in enumerate(raw):
      assert w.shape == (TINY.max_ops, TINY.memory_channels(b), TINY.hidden_channels(b))
    standalone = S.to_network(TINY, net, params, SHAPE, CLASSES)
    shapes = nasjax.param_shapes(standalone.arch)
    assert jax.tree_util.tree_map(jnp.shape, standalone.params) == shapes
    for b, block in enumerate(net.blocks):
      for o, op in enumerate(block.ops):
        proj = standalone.params[f"b{b}_op{o}_proj"]["kernel"]
        assert proj.shape == (1, 1, len(op.reads) * block.width, op.width)
        # The stand-alone 1x1 weights are the generated ones (masked, He-scaled).
        w = S.projection_weights(raw[b], enc.blocks[b])[o]
        assert float(jnp.sum(jnp.abs(w))) == pytest.approx(
            float(jnp.sum(jnp.abs(proj))), rel=1e-5)


@pytest.fixture(scope="module")
def counted_apply():
  """``S.apply`` of TINY under one ``jax.jit``, and the list its traces append to."""
  traces = []

  def counted(params, enc, x):
    traces.append(1)
    return S.apply(TINY, params, enc, x)

  return jax.jit(counted), traces


def test_masked_main_net_equals_the_stand_alone_network(counted_apply):
  apply, _ = counted_apply
  params = _random_params(TINY, seed=1)
  x = jax.random.normal(jax.random.key(2), (16,) + SHAPE)
  for net in _nets(6, seed=7):
    got = apply(params, S.encode(TINY, net), x)
    standalone = S.to_network(TINY, net, params, SHAPE, CLASSES)
    want, _ = nasjax.forward(standalone, x, train=True)
    # float32 sums in different orders (padded channels are exact zeros); logits are O(1).
    scale = float(jnp.max(jnp.abs(want)))
    assert scale > 0.1
    np.testing.assert_allclose(got, want, atol=1e-4 * max(scale, 1.0), rtol=1e-4)


def test_sampling_architectures_never_recompiles(counted_apply):
  apply, traces = counted_apply
  params = _random_params(TINY)
  x = jnp.ones((16,) + SHAPE)
  outs = [apply(params, S.encode(TINY, net), x) for net in _nets(5, seed=8)]
  assert len(traces) == 1
  assert len({float(jnp.sum(o)) for o in outs}) == 5  # five different networks ran


def test_encode_code_is_one_program_for_every_code():
  traces = []

  def counted(code):
    traces.append(1)
    return S.encode_code(TINY, code)

  fn = jax.jit(counted)
  for k in jax.random.split(jax.random.key(9), 4):
    code = TINY.sample_code(k)
    got = jax.tree_util.tree_leaves(fn(code))
    want = jax.tree_util.tree_leaves(S.encode(TINY, TINY.decode(np.asarray(code))))
    assert len(got) == len(want)
    for a, b in zip(got, want):
      np.testing.assert_array_equal(np.asarray(a), b)
  assert len(traces) == 1


# --------------------------------------------------------------------------- training
DATA = data_lib.synthetic(num_train=128, num_val=64, num_test=8, input_shape=SHAPE,
                          num_classes=CLASSES)
PROBLEM = work.Problem.of(DATA)


def test_one_training_step_lowers_the_loss_and_sampling_never_recompiles():
  x, y = DATA.x_train[:16], DATA.y_train[:16]
  config = search_smash.SmashConfig(optimizer="adam", weight_decay=1e-4, learning_rate=0.01,
                                    min_learning_rate=0.01, steps=10, hyper_hidden=8)
  params = jax.device_put(S.init_params(SMALL, jax.random.key(0), SHAPE, CLASSES,
                                        hyper_hidden=8))
  weights = {"params": params, "opt_state": search_smash.optimizer(config).init(params)}
  step_fn = search_smash.train_step(SMALL, config)
  assert search_smash.train_step(SMALL, config) is step_fn  # one function, one compile
  traces = []

  def counted(*args):
    traces.append(1)
    return step_fn(*args)

  step = jax.jit(counted)
  key = jax.random.key(10)
  enc = S.encode_code(SMALL, SMALL.sample(key))  # the architecture the step draws
  before, _ = search_smash.loss_fn(SMALL, params, enc, x, y)
  new, metrics = step(weights, (x, y), key, np.int32(0))
  after, _ = search_smash.loss_fn(SMALL, new["params"], enc, x, y)
  assert float(metrics["loss"]) == pytest.approx(float(before), rel=1e-5)
  # One Adam step of 0.01 moves every weight by about 0.01 against its gradient.
  assert float(after) < float(before) - 0.05
  for k in jax.random.split(jax.random.key(11), 2):
    new, metrics = step(new, (x, y), k, np.int32(1))
    assert np.isfinite(float(metrics["loss"]))
  assert len(traces) == 1


def _drive(strategy, state, data, asks):
  """``asks`` asks of ``strategy``, its shared-weight work run on ``data`` and every
  answer told; returns the state and what each ask returned with its result."""
  from nasjax.search.evaluators import run_shared

  out = []
  for i in range(asks):
    request, state = strategy.ask(jax.random.key(100 + i), state)
    result = run_shared(request, data) if work.is_shared(request) else None
    told = result if result is not None else np.ones(len(request))
    state = strategy.tell(jax.random.key(200 + i), state, request, told)
    out.append((request, result))
  return state, out


def _smash(**options):
  config = {"steps": 8, "chunk_steps": 3, "batch_size": 16, "num_samples": 6,
            "eval_examples": 64, "eval_batch_size": 32, "proposals": 6, "hyper_hidden": 8,
            **options}
  return make_strategy("smash", SMALL, config, problem=PROBLEM)


def test_strategy_trains_in_chunks_ranks_samples_and_proposes_the_best_first():
  strategy = _smash()
  state, out = _drive(strategy, strategy.init(jax.random.key(0)), DATA, 6)
  kinds = [type(r).__name__ for r, _ in out]
  assert kinds == ["TrainShared"] * 3 + ["ScoreShared", "ndarray", "ndarray"]
  assert [(r.start, r.stop) for r, _ in out[:3]] == [(0, 3), (3, 6), (6, 8)]
  assert len({id(r.step) for r, _ in out[:3]}) == 1  # one step function for every chunk
  request, result = out[3]
  assert request.codes.shape == (6, SMALL.length)
  # The ranking's scores are what score_codes gives for those codes, best first.
  again = search_smash.score_codes(SMALL, 64, 32, state.weights["params"],
                                   request.codes, DATA)
  np.testing.assert_allclose(result.scores, again, atol=0)
  size = int(state.size)
  scores = np.asarray(state.scores[:size])
  assert np.all(np.diff(scores) <= 0) and 0 <= scores[-1] <= scores[0] <= 1
  assert scores[0] == pytest.approx(float(np.max(again)), abs=1e-7)
  np.testing.assert_array_equal(out[4][0][0], state.ranked[0])
  np.testing.assert_array_equal(out[5][0][0], state.ranked[1])
  assert int(state.step) == 8 and int(state.count) == 2
  assert np.isfinite(float(state.log.train_loss[0]))
  assert float(state.log.best_score[0]) == pytest.approx(float(scores[0]), abs=1e-7)
  # Same key, same search.
  again, out2 = _drive(strategy, strategy.init(jax.random.key(0)), DATA, 5)
  np.testing.assert_array_equal(out2[4][0], out[4][0])


def test_phases_propose_the_best_of_each_ranking():
  strategy = _smash(steps=4, chunk_steps=2, phases=2, num_samples=4)
  state, out = _drive(strategy, strategy.init(jax.random.key(0)), DATA, 7)
  kinds = [type(r).__name__ for r, _ in out]
  assert kinds == ["TrainShared", "ScoreShared", "ndarray", "TrainShared", "ScoreShared",
                   "ndarray", "ndarray"]
  first_best = out[1][0].codes[np.argmax(out[1][1].scores)]
  np.testing.assert_array_equal(out[2][0][0], first_best)
  np.testing.assert_array_equal(out[5][0][0], state.ranked[0])
  np.testing.assert_array_equal(out[6][0][0], state.ranked[1])
  # The phases rank different samples.
  assert not np.array_equal(out[1][0].codes, out[4][0].codes)
  np.testing.assert_array_equal(state.log.step, [2, 4])


def test_ask_never_trains():
  strategy = _smash()
  state = strategy.init(jax.random.key(0))
  for i in range(5):
    before = [np.array(a) for a in jax.tree_util.tree_leaves(state.weights)]
    request, after = strategy.ask(jax.random.key(i), state)
    leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(after.weights)]
    assert len(leaves) == len(before)
    assert all(np.array_equal(a, b) for a, b in zip(leaves, before))
    if work.is_shared(request):
      from nasjax.search.evaluators import run_shared
      state = strategy.tell(jax.random.key(9), after, request, run_shared(request, DATA))
      # The evaluator trained a copy: the asked state's weights are still the same.
      assert all(np.array_equal(np.asarray(a), b) for a, b in
                 zip(jax.tree_util.tree_leaves(after.weights), before))
    else:
      state = strategy.tell(jax.random.key(9), after, request, np.ones(1))


def _comparable(history):
  clocks = ("wall", "compile", "cost", "elapsed")
  return [{**{k: v for k, v in h.items() if k not in clocks},
           "metrics": {k: v for k, v in h["metrics"].items()
                       if k not in ("compile_seconds", "train_seconds")}} for h in history]


def killed_and_resumed(name, space, config, tmp_path, monkeypatch, *, kill_at: int):
  """An uninterrupted run and a run killed at its ``kill_at``-th shared-weight request
  and resumed: ``(final state, history)`` of each and the killed run's checkpoint."""
  from nasjax.search import evaluators, read_history, run
  from nasjax.search.rundir import load_checkpoint

  def evaluator():
    return evaluators.TrainingEvaluator(space, dataset="synthetic",
                                        train={"max_steps": 2, "batch_size": 16})

  run(name, evaluator(), 2, tmp_path / "a", seed=3, config=config, quiet=True)
  calls, real = [], evaluators.TrainingEvaluator.run_shared

  class Killed(Exception):
    pass

  def dying(self, request):
    calls.append(1)
    if len(calls) == kill_at:
      raise Killed()
    return real(self, request)

  monkeypatch.setattr(evaluators.TrainingEvaluator, "run_shared", dying)
  with pytest.raises(Killed):
    run(name, evaluator(), 2, tmp_path / "b", seed=3, config=config, quiet=True)
  at_kill = load_checkpoint(tmp_path / "b")
  monkeypatch.setattr(evaluators.TrainingEvaluator, "run_shared", real)
  run(name, evaluator(), 2, tmp_path / "b", seed=3, config=config, quiet=True, resume=True)
  return ([(load_checkpoint(tmp_path / d)["state"], _comparable(read_history(tmp_path / d)))
           for d in ("a", "b")], at_kill)


def _bitwise_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(
      np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y, equal_nan=True)
      for x, y in zip(la, lb))


def test_a_killed_run_resumes_to_the_same_weights_and_history(tmp_path, monkeypatch):
  config = {"steps": 6, "chunk_steps": 2, "batch_size": 16, "num_samples": 4,
            "eval_examples": 64, "eval_batch_size": 32, "proposals": 4, "hyper_hidden": 8}
  (whole, resumed), at_kill = killed_and_resumed("smash", SMALL, config, tmp_path,
                                                  monkeypatch, kill_at=3)
  assert int(at_kill["state"].step) == 4  # killed while the third chunk trained
  assert len(whole[1]) == 2 and resumed[1] == whole[1]
  assert _bitwise_equal(resumed[0].weights, whole[0].weights)
  assert _bitwise_equal(resumed[0].ranked, whole[0].ranked)
  assert int(resumed[0].step) == 6 and int(resumed[0].count) == 2


def test_registered_space_and_strategy_options():
  space = make_space("smash", **search_smash.SMOKE_SPACE)
  assert isinstance(space, search_smash.SmashSpace) and space.kernels == (3,)
  assert make_space("smash", **space.config()) == space
  with pytest.raises(ValueError, match="unknown option"):
    make_strategy("smash", space, {"num_sample": 3}, problem=PROBLEM)
  with pytest.raises(ValueError, match="option num_samples must be an int >= 1"):
    make_strategy("smash", space, {"num_samples": 0}, problem=PROBLEM)
  with pytest.raises(ValueError, match="min_learning_rate 0.5 exceeds"):
    make_strategy("smash", space, {"min_learning_rate": 0.5}, problem=PROBLEM)
  with pytest.raises(ValueError, match="smash.* trains a hypernetwork for the task: give problem="):
    make_strategy("smash", space, {})
  with pytest.raises(ValueError, match="smash searches the memory-bank space"):
    search_smash.Smash(make_space("nb201"), PROBLEM)
  assert search_smash.SmashConfig.defaults()["steps"] == 1120


# -------------------------------------------------------------------------- experiment
def _experiment():
  import importlib.util
  import sys
  from pathlib import Path

  path = Path(__file__).parents[1] / "experiments" / "smash_fmnist.py"
  spec = importlib.util.spec_from_file_location("smash_fmnist", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module


def test_rank_correlations():
  exp = _experiment()
  a, b = [1, 2, 3, 4], [1, 3, 2, 4]
  assert exp.kendall_tau(a, b) == pytest.approx(4 / 6, abs=1e-12)  # 5 concordant, 1 not
  assert exp.kendall_tau(a, a[::-1]) == pytest.approx(-1.0, abs=1e-12)
  # tau-b with a tie in the first ranking: 2 concordant and 3 discordant of the 5 untied
  # pairs, over sqrt(5 * 6).
  assert exp.kendall_tau([1, 1, 2, 3], [1, 2, 3, 0]) == pytest.approx(
      (2 - 3) / np.sqrt(5 * 6), abs=1e-12)
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=20), rng.normal(size=20)
  assert exp.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)


def test_tiny_experiment_runs_end_to_end(tmp_path):
  exp = _experiment()
  cfg = exp.load_variants()["tiny"]
  summary = exp.run(cfg, tmp_path, log=lambda m: None)
  results = json.loads((tmp_path / "results.json").read_text())
  shot = results["one_shot"]
  assert shot["steps"] == cfg.smash["steps"] and len(shot["scores"]) == 6
  scores = np.asarray(shot["scores"])
  top = np.argsort(-scores, kind="stable")[:cfg.top_k]
  # Everything the summary names was trained alone, and the picks are the best of theirs.
  assert summary["smash_best"]["val_accuracy"] == max(summary["top_k_alone"])
  assert summary["random_best"]["val_accuracy"] == max(summary["random_k_alone"])
  assert summary["smash_best"]["sample"] in top.tolist()
  assert summary["random_best"]["sample"] in range(cfg.top_k)
  assert 0.0 <= summary["smash_best"]["test_accuracy"] <= 1.0
  n_alone = len(set(range(cfg.num_correlation)) | set(top.tolist()))
  assert len(results["standalone"]) == n_alone
  table = exp.format_tables(summary, results, search_smash.SmashSpace(**cfg.space))
  assert table.count("\n| ") >= 4 + n_alone
