"""Search spaces and strategies: every registered strategy, determinism, failed evaluations."""

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nasjax
from nasjax.search import (STRATEGIES, Budget, DartsCellSpace, MacroSpace, NB201Space,
                           PlainCNNSpace, Record, generation_keys, init_keys, load_strategies,
                           make_space, make_strategy, register_strategy, run)
from nasjax.search import base as search_base
from nasjax.search import work
from nasjax.search.cli import SMOKE_SPACE_CONFIGS

SPACE_ORDER = ("nb201", "macro", "plain_cnn", "darts")


def _space_for(entry):
  """A small instance of a space the strategy supports (its smoke space otherwise)."""
  smoke = entry.smoke.get("space")
  name = next((s for s in SPACE_ORDER if entry.supports(s)), smoke)
  config = dict(SMOKE_SPACE_CONFIGS.get(name, {}))
  if name == smoke:
    config.update(entry.smoke.get("space_config", {}))
  return make_space(name, **config)


def _synthetic_fitness(codes, num_objectives):
  """A cheap deterministic landscape; codes starting with 0 fail (NaN)."""
  codes = np.asarray(codes, np.float64)
  f = np.stack([codes.sum(axis=1), -codes[:, -1]], axis=1)[:, :num_objectives]
  f[codes[:, 0] == 0] = np.nan
  return f[:, 0] if num_objectives == 1 else f


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticEvaluator:
  """Fitness from :func:`_synthetic_fitness`; each evaluation costs one second."""

  space: object
  objectives: tuple = ("f",)
  kind = "synthetic"
  cacheable = False

  def config(self):
    return {"kind": self.kind}

  def evaluate(self, candidates, key=None):
    codes = np.asarray(candidates)
    f = _synthetic_fitness(codes, len(self.objectives)).reshape(len(codes), -1)
    return [Record(self.space.describe(c), [float(v) for v in row],
                   "ok" if np.all(np.isfinite(row)) else "error: synthetic failure", 1.0, {},
                   [int(v) for v in c]) for c, row in zip(codes, f)]


# ------------------------------------------------------------------------------ spaces
SPACES = [NB201Space(), MacroSpace(), PlainCNNSpace(), DartsCellSpace()]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_space_sample_mutate_encode_decode(space):
  keys = jax.random.split(jax.random.key(0), 32)
  codes = np.asarray(jax.jit(jax.vmap(space.sample))(keys))
  n = np.asarray(space.num_choices)
  assert codes.shape == (32, space.length)
  assert np.all((codes >= 0) & (codes < n))
  children = np.asarray(jax.jit(jax.vmap(space.mutate))(keys[::-1], jnp.asarray(codes)))
  for code, child in zip(codes, children):
    assert space.hash(code) != space.hash(child)
    np.testing.assert_array_equal(space.encode(space.decode(code)), code)
    if not space.has_inactive:
      assert int(np.sum(code != child)) == 1
    assert space.hash(code) < space.size
    np.testing.assert_array_equal(space.from_index(space.hash(code)), code)


def test_nb201_sample_is_uniform_per_edge():
  codes = np.asarray(jax.vmap(NB201Space().sample)(jax.random.split(jax.random.key(1), 5000)))
  freq = np.stack([np.bincount(codes[:, i], minlength=5) for i in range(6)]) / 5000
  # binomial std of a frequency 0.2 over 5000 draws is 0.0057
  np.testing.assert_allclose(freq, 0.2, atol=0.03)


def test_plain_cnn_space_builds_its_description():
  space = PlainCNNSpace(num_blocks=2, max_layers=3, filters=(8, 16), kernels=(1, 3, 5))
  code = space.encode("8k3,16k5|16k1")
  assert space.describe(code) == "8k3,16k5|16k1"
  arch = space.build(code, (28, 28, 1), 10)
  assert [(n["features"], n["kernel"][0]) for n in arch.nodes_of("conv")] == [
      (8, 3), (16, 5), (16, 1)]
  np.testing.assert_array_equal(space.encode(arch), code)
  with pytest.raises(ValueError, match="filters must be one of"):
    space.encode("32k3|8k3")


def test_mutation_activating_a_layer_fills_it_canonically():
  space = PlainCNNSpace(num_blocks=1, max_layers=3, filters=(8, 16), kernels=(1, 3))
  code = jnp.asarray(space.encode("8k1"))
  children = jax.jit(jax.vmap(space.mutate, in_axes=(0, None)))(
      jax.random.split(jax.random.key(2), 50), code)
  np.testing.assert_array_equal(children, jax.vmap(space.canonical)(children))
  hashes = {space.hash(c) for c in np.asarray(children)}
  assert space.hash(code) not in hashes
  # From one layer, a mutation changes that layer or adds a second one.
  assert len(hashes) >= 4


def test_make_space_rejects_unknown_names_and_options():
  with pytest.raises(ValueError, match="unknown search space 'nope'"):
    make_space("nope")
  with pytest.raises(ValueError, match="unknown option"):
    make_space("nb201", width=3)


# ---------------------------------------------------------------------------- registry
def _synthetic_problem():
  """The task of the synthetic data set, for strategies that build networks."""
  from nasjax.search.work import Problem

  return Problem.of(nasjax.data.load("synthetic"))


@pytest.mark.parametrize("name", sorted(load_strategies()))
def test_every_registered_strategy_searches(name, tmp_path):
  entry = STRATEGIES[name]
  space = _space_for(entry)
  M = 2 if entry.multi_objective else 1
  problem = _synthetic_problem() if entry.needs_problem else None
  strategy = make_strategy(name, space, entry.smoke.get("config"), num_objectives=M,
                           problem=problem)
  key, k_init = init_keys(0)
  state = strategy.init(k_init)
  cands, _ = strategy.ask(key, state)
  if not isinstance(cands, (np.ndarray, jax.Array)):
    # Strategies over architectures or networks: their smoke preset trains for real. Its
    # search runs (two generations, killed and resumed, in fresh processes) in
    # tests/test_resume_every_strategy.py; here the preset's plan is checked.
    from nasjax.search.cli import _smoke_plan

    class Args:
      devices = None

    evaluator, config, budget = _smoke_plan(name, Args)
    planned = make_strategy(name, evaluator.space, config, evaluator=evaluator)
    asked, _ = planned.ask(key, planned.init(k_init))
    assert work.is_shared(asked) or len(asked) >= 1, asked
    assert budget.max_evals >= 2
    return
  evaluator = SyntheticEvaluator(space, ("f", "g")[:M])
  result = run(name, evaluator, Budget(max_evals=8), tmp_path / "run", 0,
               entry.smoke.get("config"), quiet=True)
  assert result.evals == 8 and len(result.history) == 8
  n = np.asarray(space.num_choices)
  codes = np.array([h["code"] for h in result.history])
  assert np.all((codes >= 0) & (codes < n))
  ok = [h for h in result.history if h["status"] == "ok"]
  if ok:
    best = min(h["objectives"]["f"] for h in ok)
    assert result.best["objectives"]["f"] == pytest.approx(best, abs=0)
    assert result.best["status"] == "ok"
  else:
    assert result.best is None


def test_register_strategy_rejects_duplicates_and_bad_options():
  with pytest.raises(ValueError, match="already registered"):
    register_strategy("rea", lambda space, config: None)
  with pytest.raises(ValueError, match="unknown option"):
    make_strategy("rea", NB201Space(), {"populaton_size": 3})
  with pytest.raises(ValueError, match="unknown strategy 'nope'"):
    make_strategy("nope", NB201Space())


def test_a_new_strategy_is_usable_the_moment_it_is_registered(tmp_path):
  name = "test_only_random_pairs"
  register_strategy(name, lambda space, config: _Named(space, name), jittable=True,
                    default_config={})
  try:
    space = NB201Space()
    result = run(name, SyntheticEvaluator(space), Budget(max_evals=4), tmp_path, 0,
                 quiet=True)
    assert result.evals == 4
  finally:
    del STRATEGIES[name]


@dataclasses.dataclass(frozen=True)
class _Named:
  space: object
  name: str

  def config(self):
    return {}

  def init(self, key):
    return jnp.zeros((), jnp.int32)

  def ask(self, key, state):
    return jax.vmap(self.space.sample)(jax.random.split(key, 2)), state + 1

  def tell(self, key, state, candidates, fitness):
    return state


# The registered defaults of the baselines, RL-NAS and PNAS, as published by each method's
# module (a change here changes every search that relies on them).
DEFAULTS = {
    "reinforce": {"learning_rate": 0.01, "baseline_momentum": 0.9, "batch_size": 1,
                  "objective": 0},
    "rea": {"population_size": 10, "sample_size": 3, "batch_size": 1},
    "nsga2": {"population_size": 20, "batch_size": None, "crossover_prob": 0.9},
    "rl_nas": {"batch_size": 1, "learning_rate": 0.005, "baseline_decay": 0.9,
               "entropy_weight": 1e-3, "hidden": 35, "num_layers": 2, "temperature": 1.0,
               "tanh_constant": None, "objective": 0, "reward": None},
    "pnas": {"beam": 16, "first_level": None, "batch_size": 1, "predictor": "lstm",
             "members": 5, "embed": 16, "hidden": 32, "learning_rate": 0.01, "fit_steps": 100,
             "capacity": 128, "objective": 0, "reward": None},
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_options_classes_keep_the_defaults_and_are_what_the_strategy_holds(name):
  entry = STRATEGIES[name]
  assert entry.options is not None and entry.default_config == DEFAULTS[name]
  M = 2 if entry.multi_objective else 1
  strategy = make_strategy(name, NB201Space(), num_objectives=M)
  assert isinstance(strategy.config, entry.options)
  assert strategy.config.to_dict() == {**DEFAULTS[name], "num_objectives": M}
  with pytest.raises(dataclasses.FrozenInstanceError):
    strategy.config.batch_size = 2


@pytest.mark.parametrize("name,options,message", [
    ("reinforce", {"baseline_momentum": 1.0}, "option baseline_momentum must be a number "
     ">= 0.0 < 1.0, got 1.0"),
    ("reinforce", {"learning_rate": 0}, "option learning_rate must be a number > 0"),
    ("reinforce", {"objective": 1}, "objective 1 is outside the 1 objectives"),
    ("rea", {"population_size": 0}, "option population_size must be an int >= 1, got 0"),
    ("rea", {"batch_size": 1.5}, "option batch_size must be an int >= 1, got 1.5"),
    ("nsga2", {"crossover_prob": 1.5}, "option crossover_prob must be a number >= 0 <= 1"),
    ("nsga2", {"batch_size": 0}, "option batch_size must be an int >= 1 or None, got 0"),
    ("rl_nas", {"tanh_constant": 0.0}, "option tanh_constant must be a number > 0"),
    ("rl_nas", {"reward": "mnas"}, "option reward must be a reward config"),
    ("rl_nas", {"reward": {"target": 1.0, "cost_objective": 1}}, "reads objective 1"),
    ("pnas", {"first_level": 0}, "option first_level must be an int >= 1 or None, got 0"),
    ("pnas", {"predictor": "gp"}, "option predictor must be one of"),
])
def test_options_are_checked_next_to_each_field(name, options, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    make_strategy(name, NB201Space(), options)


# ------------------------------------------------------------------------- determinism
def _codes_of(name, seed, gens=25, space=None, M=1):
  space = space or NB201Space()
  strategy = make_strategy(name, space, num_objectives=M)
  ask, tell = jax.jit(strategy.ask), jax.jit(strategy.tell)
  key, k_init = init_keys(seed)
  state = strategy.init(k_init)
  out = []
  for _ in range(gens):
    key, k_ask, _, k_tell = generation_keys(key)
    cands, state = ask(k_ask, state)
    out.append(np.asarray(cands))
    state = tell(k_tell, state, cands, _synthetic_fitness(cands, M))
  return np.concatenate(out), state


@pytest.mark.parametrize("name", ["random", "rea", "reinforce"])
def test_same_seed_same_search(name):
  a, _ = _codes_of(name, 0)
  b, _ = _codes_of(name, 0)
  c, _ = _codes_of(name, 1)
  np.testing.assert_array_equal(a, b)
  assert np.any(a != c)


# -------------------------------------------------------------------- failed evaluations
def test_rea_never_keeps_or_selects_a_failed_candidate():
  # Codes starting with op 0 fail; they would otherwise be the fittest (lowest sums).
  codes, state = _codes_of("rea", 3, gens=150)
  pop = np.asarray(state.population)[:int(state.size)]
  assert int(state.size) == 10
  assert np.all(pop[:, 0] != 0)
  assert np.all(np.isfinite(np.asarray(state.fitness)))
  # Evolution still improves among the valid codes.
  f = _synthetic_fitness(codes, 1)
  assert np.nanmin(f[-50:]) <= np.nanmin(f[:20])


def test_rea_tell_ignores_nan_and_fills_population_in_order():
  strategy = make_strategy("rea", NB201Space(), {"population_size": 3})
  state = strategy.init(jax.random.key(0))
  codes = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % 5
  state = strategy.tell(None, state, codes, jnp.array([jnp.nan, 1.0]))
  assert int(state.size) == 1 and int(state.count) == 2
  np.testing.assert_array_equal(state.population[0], codes[1])


def test_rea_refuses_a_tournament_larger_than_the_population():
  with pytest.raises(ValueError, match=r"sample_size=5 must be at most population_size=4"):
    make_strategy("rea", NB201Space(), {"population_size": 4, "sample_size": 5})
  # S = P is the largest tournament allowed.
  rea = make_strategy("rea", NB201Space(), {"population_size": 4, "sample_size": 4})
  assert (rea.config.population_size, rea.config.sample_size) == (4, 4)


def test_reinforce_ignores_failed_candidates():
  strategy = make_strategy("reinforce", NB201Space())
  tell = jax.jit(strategy.tell)
  state = strategy.init(jax.random.key(0))
  codes, _ = jax.jit(strategy.ask)(jax.random.key(1), state)
  after = tell(None, state, codes, jnp.array([jnp.nan]))
  np.testing.assert_array_equal(after.logits, state.logits)
  # A reward below the baseline lowers the probability of the sampled ops.
  s1 = tell(None, state, codes, jnp.array([10.0]))
  s2 = tell(None, s1, codes, jnp.array([20.0]))
  picked = np.asarray(s2.logits)[np.arange(6), np.asarray(codes[0])]
  assert np.all(picked < 0)


def test_runner_best_is_never_a_failed_evaluation(tmp_path):
  space = NB201Space()
  result = run("random", SyntheticEvaluator(space), Budget(max_evals=40), tmp_path, 5,
               quiet=True)
  failed = [h for h in result.history if h["status"] != "ok"]
  assert failed and all(h["objectives"]["f"] is None for h in failed)
  assert result.best["code"][0] != 0
  assert math.isfinite(result.best["objectives"]["f"])


def test_multi_objective_rea_uses_pareto_rank():
  # Two objectives: the tournament winner is non-dominated within the population.
  codes, state = _codes_of("rea", 0, gens=60, M=2)
  F = np.asarray(state.fitness)
  assert F.shape == (10, 2) and np.all(np.isfinite(F))
  assert np.all(np.asarray(state.population)[:, 0] != 0)


def test_fitness_helpers_validate_shapes():
  with pytest.raises(ValueError, match=r"\(B,\) or \(B, 2\)"):
    search_base.fitness_matrix(jnp.zeros((3, 3)), 2)
  with pytest.raises(ValueError, match="objective 1"):
    search_base.select_objective(jnp.zeros(3), 1)


def test_macro_space_matches_benchmark_parameter_counts_without_table():
  # Counts worked out by hand from the NAS-Bench-Macro network definition.
  space = MacroSpace()
  assert nasjax.count_params(space.build(space.encode("00000000"))) == 387882
