"""Tabular benchmarks: NB201's protocol against a plain-Python reference, NAS-Bench-Macro."""

import csv

import jax
import numpy as np
import pytest

import nasjax
from nasjax.search import base as search_base
from nasjax.search import (Budget, MacroEvaluator, MacroSpace, NB201Evaluator, NB201Space,
                           bench, generation_keys, init_keys, make_strategy, run, tabular)

DATA = tabular.data_dir()
needs_tables = pytest.mark.skipif(
    not (DATA / tabular.NB201_FILE).is_file() or not (DATA / tabular.MACRO_FILE).is_file(),
    reason=f"reference tables not found under {DATA}")

# Independent of nasjax.search.tabular: the README's column names, read with csv.
COLUMNS = {"cifar10": ("c10valid_val_12ep", "c10_test_200ep"),
           "cifar100": ("c100_val_12ep", "c100_test_200ep"),
           "imagenet16-120": ("in16_val_12ep", "in16_test_200ep")}


def _reference_table(dataset):
  val_col, test_col = COLUMNS[dataset]
  out = {}
  with open(DATA / "nb201" / "nb201.csv", newline="") as f:
    for row in csv.DictReader(f):
      cost = 12 * float(row["c10valid_train_per_epoch_s"]) + float(
          row["c10valid_valid_per_epoch_s"])
      out[row["arch_str"]] = (float(row[val_col]), float(row[test_col]), cost)
  return out


# What NB201's scripts do with the query whose time crosses the budget: RANDOM.py and
# R_EA.py make it and, as its cost would pass the budget, stop without it; reinforce.py
# appends it to its trace before checking, so it counts.
NB201_SCRIPTS = {"random": "drop", "rea": "drop", "reinforce": "keep"}


def _reference_protocol(strategy, table, seed, budget, crossing):
  """NB201's loop in plain Python: query while the charged time is below the budget
  (dropping or keeping the query that passes it); keep the first architecture with the
  highest validation accuracy."""
  space = strategy.space
  ask, tell = jax.jit(strategy.ask), jax.jit(strategy.tell)
  key, k_init = init_keys(seed)
  state = strategy.init(k_init)
  elapsed, queries, best_val, best_test = 0.0, 0, -1.0, None
  while elapsed < budget:
    key, k_ask, _, k_tell = generation_keys(key)
    cands, state = ask(k_ask, state)
    fitness = []
    for code in np.asarray(cands):
      if elapsed >= budget:
        break
      val, test, cost = table[space.decode(code)]
      if crossing == "drop" and elapsed + cost > budget:
        return queries, best_test
      elapsed += cost
      queries += 1
      if val > best_val:
        best_val, best_test = val, test
      fitness.append(100.0 - val)
    state = tell(k_tell, state, cands, np.array(fitness))
  return queries, best_test


@needs_tables
@pytest.mark.parametrize("name,dataset", [("rea", "cifar10"), ("random", "cifar10"),
                                          ("reinforce", "cifar10"), ("rea", "cifar100"),
                                          ("random", "imagenet16-120")])
def test_nb201_protocol_equals_plain_python_reference(name, dataset):
  evaluator = NB201Evaluator(dataset)
  strategy = make_strategy(name, evaluator.space)
  assert bench.crossing_rule(strategy) == NB201_SCRIPTS[name]
  seeds = np.arange(7, 10)
  seqs = bench.query_sequences(strategy, evaluator, seeds, time_budget=12000.0)
  res = bench.nb201_results(seqs, evaluator, 12000.0, bench.crossing_rule(strategy))
  table = _reference_table(dataset)
  for i, seed in enumerate(seeds):
    queries, test = _reference_protocol(strategy, table, int(seed), 12000.0,
                                        NB201_SCRIPTS[name])
    assert int(res["queries"][i]) == queries
    assert float(res["test"][i]) == test  # exact: same float64 numbers, same choice


def test_charged_prefix_drops_or_keeps_the_query_that_crosses_the_budget():
  cost = np.array([4.0, 4.0, 3.0])
  seqs = np.array([[0, 1, 2, -1], [0, 0, 1, 0]])  # charged: 4, 8, 11 / 4, 8, 12, 16
  for budget, drop, keep in ((10.0, [2, 2], [3, 3]), (8.0, [2, 2], [2, 2]),
                             (11.0, [3, 2], [3, 3])):
    np.testing.assert_array_equal(bench.charged_prefix(seqs, cost, budget, "drop"), drop)
    np.testing.assert_array_equal(bench.charged_prefix(seqs, cost, budget, "keep"), keep)
  with pytest.raises(ValueError, match="crossing must be one of"):
    bench.charged_prefix(seqs, cost, 10.0, "last")
  with pytest.raises(ValueError, match="end before its time budget"):
    bench.charged_prefix(seqs, cost, 20.0, "drop")
  assert [bench.crossing_rule(make_strategy(n, NB201Space())) for n in
          ("random", "rea", "reinforce", "nao", "rl_nas", "pnas")] == [
              "drop", "drop", "keep", "drop", "drop", "drop"]


@needs_tables
def test_bench_nb201_looks_the_chosen_cells_up_on_every_data_set():
  out = bench.bench_nb201("random", "cifar10", runs=4, seed=3)
  evaluator = NB201Evaluator("cifar10")
  seqs = bench.query_sequences(make_strategy("random", evaluator.space), evaluator,
                               np.arange(3, 7), time_budget=12000.0)
  res = bench.nb201_results(seqs, evaluator, 12000.0, "drop")
  table = evaluator.table
  by = out["test_by_dataset"]
  assert sorted(by) == ["cifar10", "cifar100", "imagenet16-120"]
  assert by["cifar10"]["mean"] == out["mean"] == pytest.approx(np.mean(res["test"]), abs=0)
  for name in ("cifar100", "imagenet16-120"):
    looked_up = table.test(name)[res["best_index"]]
    assert by[name]["mean"] == pytest.approx(np.mean(looked_up), abs=1e-12)
    assert by[name]["std"] == pytest.approx(np.std(looked_up), abs=1e-12)
  assert out["crossing"] == "drop" and out["preset"] is None
  with pytest.raises(ValueError, match="strategy 'rea' has no preset 'paper'"):
    bench.bench_nb201("rea", runs=2, preset="paper")


@needs_tables
@pytest.mark.parametrize("name,budget", [("rea", 12000.0), ("random", 4000.0),
                                         ("reinforce", 4000.0), ("nao", 4000.0),
                                         ("rl_nas", 4000.0), ("pnas", 4000.0)])
def test_run_directory_records_the_protocol_of_the_benchmark_path(tmp_path, name, budget):
  # The run directory's loop and the benchmark's loop query the same cells in the same
  # order for the same seed. (The benchmark's vectorised program, one vmapped while loop
  # over seeds, rounds a learned model's float32 maths differently and may part from
  # them after a few dozen queries; test_vmapped_rea_over_seeds_equals_the_per_seed_loop
  # and test_nao's vectorised test compare it where it is exact.) The run directory
  # records every query up to the one that crosses the budget, as the "keep" rule
  # counts them; under the "drop" rule the benchmark leaves out that last one.
  evaluator = NB201Evaluator("cifar10")
  result = run(name, evaluator, Budget(time_budget=budget), tmp_path, 11, quiet=True)
  strategy = make_strategy(name, evaluator.space)
  seqs = bench.query_sequences(strategy, evaluator, [11], time_budget=budget,
                               vectorize=False,
                               jittable=search_base.strategy_entry(name).jittable)
  res = bench.nb201_results(seqs, evaluator, budget, "keep")
  assert result.evals == int(res["queries"][0])
  ranks = [evaluator.space.hash(h["code"]) for h in result.history]
  np.testing.assert_array_equal(ranks, seqs[0, :result.evals])
  assert result.summary["test_accuracy"] == float(res["test"][0])
  assert result.history[-2]["elapsed"] < budget <= result.history[-1]["elapsed"]
  dropped = bench.nb201_results(seqs, evaluator, budget, bench.crossing_rule(strategy))
  crossed = result.history[-1]["elapsed"] > budget and bench.crossing_rule(strategy) == "drop"
  assert int(dropped["queries"][0]) == result.evals - crossed


@needs_tables
def test_vmapped_rea_over_seeds_equals_the_per_seed_loop():
  evaluator = MacroEvaluator()
  strategy = make_strategy("rea", evaluator.space, num_objectives=2)
  seeds = np.arange(4)
  vec = bench.query_sequences(strategy, evaluator, seeds, max_evals=40)
  loop = bench.query_sequences(strategy, evaluator, seeds, max_evals=40, vectorize=False)
  np.testing.assert_array_equal(vec, loop)
  assert vec.shape == (4, 40) and np.all(vec >= 0)


@needs_tables
def test_nb201_table_rows_follow_code_ranks():
  table = tabular.load_nb201()
  space = NB201Space()
  for r in range(0, 15625, 7):
    assert space.decode(space.from_index(r)) == table.arch_str[r]
  # The first row of the official table (index 0) is where the csv puts it.
  r = space.hash(space.encode(
      "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|"
      "skip_connect~2|"))
  assert int(table.official_index[r]) == 0
  assert table.test("cifar10")[r] == pytest.approx(85.86333333333334, abs=1e-12)
  assert table.cost[r] == pytest.approx(12 * 7.221092999 + 2.548979237, abs=1e-9)


@needs_tables
def test_macro_network_parameters_equal_the_benchmark():
  table = tabular.load_macro()
  space = MacroSpace()
  for key in ("00000000", "11111221", "22222222", "02012100"):
    r = space.hash(space.encode(key))
    assert nasjax.count_params(space.build(space.encode(key))) == int(table.params[r])


@needs_tables
def test_macro_hypervolume_of_full_and_single_point_searches():
  evaluator = MacroEvaluator()
  F, _ = evaluator.arrays()
  lo, hi = F.min(axis=0), F.max(axis=0)
  everything = np.arange(len(F))[None, :]
  best_acc = int(np.argmin(F[:, 0]))
  hvs, true_hv = bench.macro_hypervolumes(np.array([everything[0], [best_acc] * len(F)]),
                                          evaluator)
  assert hvs[0] == pytest.approx(true_hv, rel=1e-12)
  g = (F[best_acc] - lo) / (hi - lo)
  assert hvs[1] == pytest.approx((1.1 - g[0]) * (1.1 - g[1]), rel=1e-12)
  # the front reaches both corners: the volume exceeds the two corner boxes' union
  assert 1.1 * 0.1 * 2 < true_hv < 1.1 * 1.1


@needs_tables
def test_bench_macro_reports_fractions():
  out = bench.bench_macro("random", evals=30, runs=3, seed=0)
  assert 0.0 < out["hv_fraction_mean"] <= 1.0
  assert out["hv_fraction_std"] >= 0.0
  assert out["true_hypervolume"] == pytest.approx(
      bench.macro_hypervolumes(np.zeros((1, 1), int), MacroEvaluator())[1], rel=1e-12)
  assert out["runs"] == 3 and out["evals"] == 30


def test_missing_table_names_the_path_and_the_variable(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)) as e:
    NB201Evaluator("cifar10", data_dir=str(tmp_path))
  assert "NASJAX_DATA_DIR" in str(e.value) and "nb201.csv" in str(e.value)
  monkeypatch.setenv("NASJAX_DATA_DIR", str(tmp_path / "elsewhere"))
  with pytest.raises(FileNotFoundError, match="elsewhere"):
    MacroEvaluator()
  with pytest.raises(ValueError, match="unknown NB201 data set 'svhn'"):
    NB201Evaluator("svhn")
