"""The vocabulary between strategies and evaluators (nasjax.search.work), strategy options
(nasjax.search.options), the evaluator's side of it and the loop running shared-weight work."""

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nasjax
from nasjax import data as data_lib
from nasjax import train as train_lib
from nasjax.search import (STRATEGIES, PlainCNNSpace, TrainingEvaluator, make_strategy,
                           read_history, register_strategy, resume, run, runner, work)
from nasjax.search.evaluators import run_shared
from nasjax.search.options import Options, boolean, integer, number, one_of, option

SPACE = PlainCNNSpace(num_blocks=1, max_layers=1, filters=(4, 8), kernels=(1, 3))


@functools.cache
def synthetic():
  return data_lib.load("synthetic")


# ------------------------------------------------------------------------------ stream
def test_a_stream_restarted_at_any_step_continues_the_same_batches():
  x = np.arange(10, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32)
  y = np.arange(10, dtype=np.int32)
  key = jax.random.key(3)
  full = data_lib.stream(x, y, 3, key)
  reference = [next(full) for _ in range(8)]  # 3 batches per epoch: crosses two epochs
  for start in (0, 2, 3, 5, 7):
    again = data_lib.stream(x, y, 3, key, start=start)
    for i in range(start, 8):
      xb, yb = next(again)
      np.testing.assert_array_equal(yb, reference[i][1])
      np.testing.assert_array_equal(xb, reference[i][0])
  epoch = np.concatenate([b[1] for b in reference[:3]])
  assert len(set(epoch.tolist())) == 9  # one epoch: 9 distinct examples (one dropped)
  with pytest.raises(ValueError, match="batch_size 11 exceeds the 10 examples"):
    next(data_lib.stream(x, y, 11, key))


# ----------------------------------------------------------------------------- problem
def test_problem_of_a_dataset_and_its_checks():
  data = synthetic()
  p = work.Problem.of(data, 16)
  assert p.input_shape == (8, 8, 3) and p.num_classes == 4
  np.testing.assert_array_equal(p.inputs, data.x_train[:16])
  with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\).*\(8, 8\)"):
    work.Problem((8, 8), 4, np.zeros((1, 8, 8)))
  with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
    work.Problem((8, 8, 3), 1, np.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError,
                     match=r"inputs must have shape \(n, 8, 8, 3\), got \(2, 8, 8, 1\)"):
    work.Problem((8, 8, 3), 4, np.zeros((2, 8, 8, 1)))
  evaluator = TrainingEvaluator(SPACE, dataset="synthetic")
  assert evaluator.problem().inputs.shape == (nasjax.ops.MORPH_BATCH, 8, 8, 3)


def _trained_teacher(data, key):
  arch = SPACE.build(np.array([0, 1, 1]), data.input_shape, data.num_classes)
  net, _ = train_lib.fit(nasjax.init(arch, key), data,
                         train_lib.TrainConfig(epochs=3, batch_size=32, optimizer="adam",
                                               learning_rate=0.01), key)
  return net


def _kl(teacher, student, x, temperature):
  p = jax.nn.log_softmax(train_lib.logits(teacher, x) / temperature)
  q = jax.nn.log_softmax(train_lib.logits(student, x) / temperature)
  return float(jnp.mean(jnp.sum(jnp.exp(p) * (p - q), -1)))


def test_the_evaluator_distils_a_child_from_its_teacher_before_training():
  data = synthetic()
  teacher = _trained_teacher(data, jax.random.key(0))
  student = nasjax.init(SPACE.build(np.array([0, 0, 0]), data.input_shape, data.num_classes),
                        jax.random.key(1))
  evaluator = TrainingEvaluator(SPACE, dataset="synthetic",
                                train={"max_steps": 0, "batch_size": 32, "optimizer": "adam",
                                       "learning_rate": 0.01})
  child = work.Child(student, teacher=teacher, distill_steps=60, temperature=1.0)
  [rec] = evaluator.evaluate([child], jax.random.key(2))
  assert rec.status == "ok" and rec.metrics["distill_steps"] == 60
  before = _kl(teacher, student, data.x_val, 1.0)
  after = _kl(teacher, rec.network, data.x_val, 1.0)
  assert after < 0.5 * before, (before, after)
  # Without distillation steps a child is its network, trained as any network.
  [plain] = evaluator.evaluate([work.Child(student)], jax.random.key(2))
  assert "distill_steps" not in plain.metrics
  assert _kl(student, plain.network, data.x_val, 1.0) == pytest.approx(0.0, abs=1e-6)


def test_child_checks():
  net = nasjax.init(SPACE.build(np.array([0, 0, 0]), (8, 8, 3), 4), jax.random.key(0))
  with pytest.raises(ValueError, match="network must be a nasjax.Network, got Arch"):
    work.Child(net.arch)
  with pytest.raises(ValueError, match="distill_steps=5 needs a teacher"):
    work.Child(net, distill_steps=5)
  with pytest.raises(ValueError, match="distill_steps must be an int >= 0, got -1"):
    work.Child(net, teacher=net, distill_steps=-1)
  with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
    work.Child(net, teacher=net, distill_steps=1, temperature=0)


# ---------------------------------------------------------------------- shared weights
def _linear_logits(w, x):
  return jnp.reshape(x, (x.shape[0], -1)) @ w["kernel"] + w["bias"]


def _init_linear(key, data):
  d = int(np.prod(data.input_shape))
  return {"kernel": 0.01 * jax.random.normal(key, (d, data.num_classes)),
          "bias": jnp.zeros((data.num_classes,))}


TX = optax.sgd(0.1, momentum=0.9)


def linear_step(weights, batch, key, step):
  """A shared linear classifier's SGD step (the strategy's pure maths)."""
  del key, step
  params, opt_state = weights
  x, y = batch

  def loss_fn(p):
    return optax.softmax_cross_entropy_with_integer_labels(_linear_logits(p, x), y).mean()

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = TX.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state), {"loss": loss}


def test_run_shared_in_chunks_equals_one_chunk_bitwise():
  data = synthetic()
  params = _init_linear(jax.random.key(0), data)
  weights = (params, TX.init(params))
  key = jax.random.key(5)
  whole = run_shared(work.TrainShared(weights, linear_step, 0, 12, 32, key), data)
  first = run_shared(work.TrainShared(weights, linear_step, 0, 5, 32, key), data)
  second = run_shared(work.TrainShared(first.weights, linear_step, 5, 12, 32, key), data)
  for a, b in zip(jax.tree_util.tree_leaves(whole.weights),
                  jax.tree_util.tree_leaves(second.weights)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The chunk did train: the loss fell, and the input weights were not touched.
  assert second.metrics["loss"] < first.metrics["loss"] - 0.05
  np.testing.assert_array_equal(np.asarray(weights[0]["kernel"]), np.asarray(params["kernel"]))
  scored = run_shared(work.ScoreShared(whole.weights, np.zeros((3, 2), np.int32),
                                       lambda w, codes, d: np.arange(len(codes)) * 1.0), data)
  np.testing.assert_array_equal(scored.scores, [0.0, 1.0, 2.0])
  with pytest.raises(ValueError, match="need 0 <= start < stop, got 4, 4"):
    work.TrainShared(weights, linear_step, 4, 4, 32, key)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SharedLinearConfig(Options):
  strategy = "test_shared_linear"
  steps: int = option(24, integer(1))
  chunk_steps: int = option(5, integer(1))
  batch_size: int = option(32, integer(1))


@flax.struct.dataclass
class SharedLinearState:
  weights: tuple
  step: jax.Array
  key: jax.Array
  count: jax.Array
  losses: jax.Array


@dataclasses.dataclass(frozen=True)
class SharedLinear:
  """A minimal weight-sharing strategy: trains a shared linear classifier in chunks, then
  proposes random codes (the loop mechanics are what is tested)."""

  space: object
  config: SharedLinearConfig
  problem: work.Problem
  name = "test_shared_linear"

  def init(self, key):
    k_w, k_data = jax.random.split(key)
    d = int(np.prod(self.problem.input_shape))
    params = {"kernel": 0.01 * jax.random.normal(k_w, (d, self.problem.num_classes)),
              "bias": jnp.zeros((self.problem.num_classes,))}
    z = jnp.zeros((), jnp.int32)
    return SharedLinearState((params, TX.init(params)), z, jax.random.key_data(k_data), z,
                             jnp.full((self.config.steps,), jnp.nan))

  def ask(self, key, state):
    step = int(state.step)
    if step < self.config.steps:
      stop = min(step + self.config.chunk_steps, self.config.steps)
      return work.TrainShared(state.weights, linear_step, step, stop, self.config.batch_size,
                              jax.random.wrap_key_data(state.key)), state
    return self.space.sample(key)[None], state

  def tell(self, key, state, candidates, result):
    if isinstance(result, work.SharedResult):
      stop = candidates.stop
      return state.replace(weights=result.weights, step=jnp.asarray(stop, jnp.int32),
                           losses=state.losses.at[candidates.start].set(
                               result.metrics["loss"]))
    return state.replace(count=state.count + 1)


@pytest.fixture
def shared_linear():
  entry = register_strategy("test_shared_linear", SharedLinear, options=SharedLinearConfig,
                            needs_problem=True)
  yield entry
  dict.pop(STRATEGIES, "test_shared_linear")


def _evaluator():
  return TrainingEvaluator(SPACE, dataset="synthetic", train={"epochs": 0.5, "batch_size": 32})


def test_a_search_killed_while_shared_weights_train_resumes_from_its_last_chunk(
    shared_linear, tmp_path, monkeypatch):
  reference = run("test_shared_linear", _evaluator(), 2, tmp_path / "ref", seed=4, quiet=True)
  assert [e["eval"] for e in reference.history] == [0, 1]
  ref_state = runner.load_checkpoint(tmp_path / "ref")["state"]
  assert int(ref_state.step) == 24 and np.isfinite(np.asarray(ref_state.losses)[::5]).all()
  # Kill the search in its third chunk: the checkpoint holds two chunks.
  calls = []
  real = TrainingEvaluator.run_shared

  def dying(self, request):
    calls.append(request.start)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real(self, request)

  monkeypatch.setattr(TrainingEvaluator, "run_shared", dying)
  with pytest.raises(KeyboardInterrupt):
    run("test_shared_linear", _evaluator(), 2, tmp_path / "cut", seed=4, quiet=True)
  assert int(runner.load_checkpoint(tmp_path / "cut")["state"].step) == 10
  monkeypatch.setattr(TrainingEvaluator, "run_shared", real)
  resumed = resume(tmp_path / "cut", quiet=True)
  state = runner.load_checkpoint(tmp_path / "cut")["state"]
  for a, b in zip(jax.tree_util.tree_leaves(ref_state.weights),
                  jax.tree_util.tree_leaves(state.weights)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  strip = lambda h: [{k: v for k, v in e.items() if k not in ("cost", "elapsed", "wall",
                                                              "compile", "metrics")} for e in h]
  assert strip(read_history(tmp_path / "cut")) == strip(reference.history)
  assert len(resumed.history) == 2


def test_a_strategy_that_builds_networks_gets_the_evaluators_problem(shared_linear):
  assert make_strategy("test_shared_linear", SPACE, {}).problem is None  # no evaluator
  strategy = make_strategy("test_shared_linear", SPACE, {"steps": 3},
                           evaluator=_evaluator())
  assert strategy.config.steps == 3 and strategy.problem.input_shape == (8, 8, 3)


# ----------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True, kw_only=True)
class ExampleConfig(Options):
  strategy = "example"
  size: int = option(4, integer(2, 10))
  rate: float = option(0.1, number(0.0, 1.0, open_min=True))
  limit: int | None = option(None, integer(1, none=True))
  mode: str = option("a", one_of("a", "b"))
  flag: bool = option(False, boolean())
  widths: tuple = option([1, 2])
  extra: dict = option({"k": 1})

  def check(self):
    if self.mode == "b" and self.limit is None:
      raise ValueError("example: mode 'b' needs a limit")


@pytest.mark.parametrize("bad, message", [
    ({"size": 1}, "option size must be an int >= 2 <= 10, got 1"),
    ({"size": 2.0}, "option size must be an int >= 2 <= 10, got 2.0"),
    ({"size": True}, "option size must be an int >= 2 <= 10, got True"),
    ({"rate": 0.0}, "option rate must be a number > 0.0 <= 1.0, got 0.0"),
    ({"rate": float("nan")}, "option rate must be a number > 0.0 <= 1.0, got nan"),
    ({"limit": 0}, "option limit must be an int >= 1 or None, got 0"),
    ({"mode": "c"}, r"option mode must be one of \['a', 'b'\], got 'c'"),
    ({"flag": 1}, "option flag must be true or false, got 1"),
    ({"mode": "b"}, "mode 'b' needs a limit"),
    ({"sise": 3}, r"unknown option\(s\) \['sise'\] for strategy 'example'"),
])
def test_options_name_the_bad_option_and_value(bad, message):
  with pytest.raises(ValueError, match=message):
    ExampleConfig.from_dict(bad)


def test_options_round_trip_through_json():
  import json

  config = ExampleConfig.from_dict({"widths": [3, 4], "limit": 5, "mode": "b"})
  assert config.widths == (3, 4)
  again = ExampleConfig.from_dict(json.loads(json.dumps(config.to_dict())))
  assert again == config
  assert ExampleConfig.defaults() == {"size": 4, "rate": 0.1, "limit": None, "mode": "a",
                                      "flag": False, "widths": [1, 2], "extra": {"k": 1}}
  assert ExampleConfig().extra is not ExampleConfig().extra


def test_a_bad_smoke_preset_fails_at_registration():
  with pytest.raises(ValueError, match="option size must be an int >= 2 <= 10, got 40"):
    register_strategy("example_bad_smoke", lambda space, config: None,
                      options=ExampleConfig, smoke={"config": {"size": 40}})
  assert not dict.__contains__(STRATEGIES, "example_bad_smoke")
