"""Bad command-line input: one line on stderr, exit status 2, nothing made; the options
that ``--preset smoke`` takes on top of its own; the MnasNet reward as an evaluator
objective for any strategy."""

import errno
import json
import math

import numpy as np
import pytest

from nasjax import cli
from nasjax.search import (MacroEvaluator, PlainCNNSpace, TrainingEvaluator, hardware,
                           make_evaluator, read_history, rundir, runner, tabular)

DATA = tabular.data_dir()
needs_tables = pytest.mark.skipif(
    not (DATA / tabular.MACRO_FILE).is_file(),
    reason=f"NAS-Bench-Macro table not found under {DATA}")

# A few training steps of tiny networks on synthetic data: seconds per search.
TINY_SPACE = ["--space", "plain_cnn", "--space-config",
              '{"num_blocks": 1, "max_layers": 1, "filters": [4], "kernels": [3]}']
TINY_TRAIN = ["--train", '{"max_steps": 2, "batch_size": 32}']
SMALLER = '{"num_blocks": 1, "max_layers": 1, "filters": [4]}'  # over the smoke preset's


def _error(capsys, argv) -> str:
  """The one stderr line of a command that must fail with exit status 2."""
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.endswith("\n"), err
  return err.strip()


def _config(workdir) -> dict:
  return json.loads((workdir / runner.CONFIG_FILE).read_text())


# ------------------------------------------------------------------ bad training options
@pytest.mark.parametrize("option, message", [
    (["--dataset", "nope"], "nasjax search: error: unknown data set 'nope'; known: "),
    (["--dataset", "synthetic", "--limit", "0"],
     "nasjax search: error: limit must be a positive number of examples, got 0"),
    (["--dataset", "synthetic", "--limit", "-5"],
     "nasjax search: error: limit must be a positive number of examples, got -5"),
])
def test_training_search_with_bad_data_options_fails_before_starting(tmp_path, capsys,
                                                                     option, message):
  # These searches used to exit 0 after recording every evaluation as failed.
  workdir = tmp_path / "run"
  err = _error(capsys, ["search", "--strategy", "random", *TINY_SPACE, *TINY_TRAIN,
                        *option, "--max-evals", "2", "--workdir", str(workdir)])
  assert err.startswith(message)
  assert not workdir.exists()


def test_training_evaluator_checks_dataset_and_limit_when_built():
  space = PlainCNNSpace(num_blocks=1, max_layers=1, filters=(4,), kernels=(3,))
  with pytest.raises(ValueError, match="unknown data set 'nope'"):
    TrainingEvaluator(space, dataset="nope")
  for bad in (0, -1, 2.5, True, "10"):
    with pytest.raises(ValueError, match=f"limit must be a positive number of examples, got "
                       f"{bad!r}"):
      TrainingEvaluator(space, dataset="synthetic", data_limit=bad)
  assert TrainingEvaluator(space, dataset="synthetic", data_limit=np.int64(7)).data_limit == 7


# ------------------------------------------------------------------ --preset smoke
def test_smoke_preset_applies_train_max_evals_limit_and_dataset(tmp_path, capsys):
  # --train, --max-evals, --limit and --dataset used to be ignored under --preset.
  workdir = tmp_path / "smoke"
  assert cli.main(["search", "--strategy", "random", "--preset", "smoke", "--dataset",
                   "synthetic", "--limit", "100", *TINY_TRAIN, "--max-evals", "2", "--seed",
                   "7", "--space-config", SMALLER, "--quiet", "--json", "--workdir",
                   str(workdir)]) == 0
  out = json.loads(capsys.readouterr().out)
  cfg = _config(workdir)
  ev = cfg["evaluator"]
  # The preset's other training options stay; --train's fields replace theirs.
  assert ev["train"] == {"epochs": 1.0, "max_steps": 2, "batch_size": 32,
                         "eval_batch_size": 256}
  assert ev["dataset"] == "synthetic" and ev["data_limit"] == 100
  # --space-config's fields replace the preset's, the others stay.
  assert ev["space"] == "plain_cnn"
  assert ev["space_config"] == {"num_blocks": 1, "max_layers": 1, "filters": [4],
                                "kernels": [1, 3, 5]}
  assert cfg["budget"] == {"max_evals": 2, "time_budget": None} and cfg["seed"] == 7
  assert cfg["strategy_config"]["batch_size"] == 2  # the preset's strategy option
  assert out["evaluations"] == 2 and len(read_history(workdir)) == 2
  assert all(h["metrics"]["steps"] == 2 for h in read_history(workdir))


def test_smoke_preset_applies_time_budget(tmp_path, capsys):
  # A budget of a millisecond records the first training only (rea's preset: 5 evals).
  workdir = tmp_path / "smoke"
  assert cli.main(["search", "--strategy", "rea", "--preset", "smoke", "--dataset",
                   "synthetic", "--space-config", SMALLER, *TINY_TRAIN, "--time-budget",
                   "0.001", "--quiet", "--workdir", str(workdir)]) == 0
  assert _config(workdir)["budget"] == {"max_evals": None, "time_budget": 0.001}
  assert len(read_history(workdir)) == 1


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "rea", "--benchmark", "nb201"],
     "--preset smoke of strategy 'rea' trains networks; it cannot apply --benchmark nb201 "
     "(drop --preset)"),
    (["--strategy", "rea", "--space", "darts"],
     "--preset smoke of strategy 'rea' searches --space plain_cnn; it cannot apply --space "
     "darts (drop --preset)"),
    (["--strategy", "nao", "--benchmark", "macro"],
     "--preset smoke of strategy 'nao' searches --benchmark nb201; it cannot apply "
     "--benchmark macro (drop --preset)"),
    (["--strategy", "nao", "--train", '{"max_steps": 1}'],
     "--train applies to training searches, not to --benchmark nb201 (the benchmark of "
     "--preset smoke of strategy 'nao')"),
    (["--strategy", "nao", "--limit", "10"],
     "--limit applies to training searches, not to --benchmark nb201 (the benchmark of "
     "--preset smoke of strategy 'nao')"),
])
def test_smoke_preset_refuses_options_that_cannot_apply(tmp_path, capsys, argv, message):
  err = _error(capsys, ["search", *argv, "--preset", "smoke", "--workdir",
                        str(tmp_path / "w")])
  assert err == f"nasjax search: error: {message}"
  assert not (tmp_path / "w").exists()


def test_benchmark_search_refuses_training_options(tmp_path, capsys):
  # --train used to be ignored by a benchmark search.
  err = _error(capsys, ["search", "--strategy", "rea", "--benchmark", "macro", "--train",
                        '{"epochs": 2}', "--max-evals", "3", "--workdir", str(tmp_path / "w")])
  assert err == ("nasjax search: error: --train applies to training searches, not to "
                 "--benchmark macro")


# ------------------------------------------------------------------ paths and values
def test_workdir_that_is_a_file_or_under_one_is_one_line(tmp_path, capsys):
  # These raised FileExistsError / NotADirectoryError tracebacks.
  f = tmp_path / "file"
  f.write_text("keep")
  args = ["search", "--strategy", "random", *TINY_SPACE, "--dataset", "synthetic",
          "--max-evals", "1", "--workdir"]
  assert _error(capsys, [*args, str(f)]) == (
      f"nasjax search: error: --workdir {str(f)!r} is a file, not a directory")
  assert _error(capsys, [*args, str(f / "sub" / "run")]) == (
      f"nasjax search: error: --workdir {str(f / 'sub' / 'run')!r} lies under the file "
      f"{str(f)!r}")
  assert f.read_text() == "keep"


def test_report_on_a_file_and_on_no_run_is_one_line(tmp_path, capsys):
  f = tmp_path / "file"
  f.write_text("keep")
  # Used to raise FileExistsError from making the plot folder.
  assert _error(capsys, ["report", str(f)]) == (
      f"nasjax report: error: {str(f)!r} is a file, not a run directory")
  missing = tmp_path / "missing"
  assert _error(capsys, ["report", str(missing)]).startswith(
      f"nasjax report: error: no search run in {missing}")
  assert not missing.exists()  # report used to make it


def test_train_out_that_is_a_file_fails_before_training(tmp_path, capsys, monkeypatch):
  # Used to train first and then raise FileExistsError.
  from nasjax import train as train_lib

  def never(*args, **kwargs):
    raise AssertionError("trained despite a bad --out")

  monkeypatch.setattr(train_lib, "fit", never)
  f = tmp_path / "file"
  f.write_text("keep")
  base = ["train", "--family", "plain_cnn", "--dataset", "synthetic", "--out"]
  assert _error(capsys, [*base, str(f)]) == (
      f"nasjax train: error: --out {str(f)!r} is a file, not a directory")
  assert _error(capsys, [*base, str(f / "net")]) == (
      f"nasjax train: error: --out {str(f / 'net')!r} lies under the file {str(f)!r}")
  # A folder that cannot be written (root may write anywhere: access is simulated).
  monkeypatch.setattr(cli.os, "access", lambda path, mode: False)
  assert _error(capsys, [*base, str(tmp_path / "new")]) == (
      f"nasjax train: error: --out {str(tmp_path / 'new')!r}: {str(tmp_path)!r} is not "
      "writable")
  assert f.read_text() == "keep" and not (tmp_path / "new").exists()


def test_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
  # An OSError from the run directory used to be a traceback.
  def full(path, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))

  monkeypatch.setattr(rundir, "atomic_write", full)
  workdir = tmp_path / "run"
  err = _error(capsys, ["search", "--strategy", "random", *TINY_SPACE, "--dataset",
                        "synthetic", "--max-evals", "1", "--workdir", str(workdir)])
  assert err.startswith("nasjax search: error: ")
  assert str(workdir / runner.CONFIG_FILE) in err and "No space left on device" in err


@pytest.mark.parametrize("argv", [
    ["search", "--strategy", "random", *TINY_SPACE, "--dataset", "synthetic", "--max-evals",
     "1"],
    ["search", "--strategy", "random", "--preset", "smoke"],
])
def test_seed_out_of_range_fails_before_the_run_directory_is_made(tmp_path, capsys, argv):
  # --seed 10**23 raised OverflowError after making the run directory.
  workdir = tmp_path / "run"
  err = _error(capsys, [*argv, "--seed", str(10**23), "--workdir", str(workdir)])
  assert err == ("nasjax search: error: --seed must be an integer from -2**63 to 2**63 - 1, "
                 f"got {10**23}")
  assert not workdir.exists()


def test_seed_range_is_what_prng_keys_take():
  cli.check_seed(2**63 - 1)
  cli.check_seed(-2**63)
  with pytest.raises(ValueError, match=r"from -2\*\*63 to 2\*\*63 - 1, got 9223372036854775808"):
    cli.check_seed(2**63)
  with pytest.raises(ValueError, match=r"from 0 to 2\*\*63 - 1, got -1"):
    cli.check_seed(-1, low=0)
  # bench runs seeds seed .. seed + runs - 1.
  cli.check_seed(2**63 - 3, count=3)
  with pytest.raises(ValueError, match=r"to 2\*\*63 - 3 \(its 3 runs use seeds --seed to "
                     r"--seed \+ 2\), got 9223372036854775806"):
    cli.check_seed(2**63 - 2, count=3)


def test_bench_rejects_seeds_past_the_range(capsys):
  err = _error(capsys, ["bench", "macro", "--strategy", "random", "--runs", "3",
                        "--seed", str(2**63 - 2)])
  assert err.startswith("nasjax bench: error: --seed must be an integer from -2**63 to "
                        "2**63 - 3")
  assert _error(capsys, ["bench", "macro", "--strategy", "random", "--runs", "0"]) == (
      "nasjax bench: error: --runs must be a positive count, got 0")


@pytest.mark.parametrize("family_args, message", [
    ('{"nope": 1}', "--family-args key 'nope' is not an option of family 'plain_cnn'; it "
                    "takes ['blocks', 'dense', 'kernel']"),
    ('{"input_shape": [8, 8, 1]}', "--family-args key 'input_shape' comes from --dataset; "
                                   "leave it out"),
    ('{"num_classes": 3}', "--family-args key 'num_classes' comes from --dataset; leave it "
                           "out"),
    ('[1, 2]', "--family-args must be a JSON object, got '[1, 2]'"),
])
def test_train_family_args_name_the_bad_key(capsys, family_args, message):
  # These raised TypeError tracebacks.
  err = _error(capsys, ["train", "--family", "plain_cnn", "--family-args", family_args,
                        "--dataset", "synthetic"])
  assert err == f"nasjax train: error: {message}"


def test_train_argument_errors_exit_2_like_the_other_commands(tmp_path, capsys):
  # nasjax train used to exit 1 (SystemExit with a message) for these.
  assert _error(capsys, ["train", "--family", "nope"]).startswith(
      "nasjax train: error: unknown --family 'nope'; choose from ['darts_cell', ")
  missing = tmp_path / "missing.json"
  assert _error(capsys, ["train", "--arch", str(missing), "--dataset", "synthetic"]) == (
      f"nasjax train: error: {missing}: No such file or directory")
  bad = tmp_path / "bad.json"
  bad.write_text("{")
  assert _error(capsys, ["train", "--arch", str(bad), "--dataset", "synthetic"]).startswith(
      f"nasjax train: error: --arch {str(bad)!r}: architecture JSON does not parse")
  assert _error(capsys, ["train", "--family", "plain_cnn", "--dataset", "synthetic",
                         "--limit", "0"]) == (
      "nasjax train: error: limit must be a positive number of examples, got 0")


def test_main_prints_bad_input_and_lets_bugs_propagate(capsys, monkeypatch):
  def bad_input(args):
    raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y")

  monkeypatch.setattr(cli, "cmd_info", bad_input)
  assert _error(capsys, ["info"]) == "nasjax info: error: /x/y: No such file or directory"

  def full_disk(args):
    raise OSError(errno.ENOSPC, "cannot write /x/y: No space left on device")

  monkeypatch.setattr(cli, "cmd_info", full_disk)
  assert _error(capsys, ["info"]) == (
      "nasjax info: error: cannot write /x/y: No space left on device")

  def multi_line(args):
    raise ValueError("first\nsecond")

  monkeypatch.setattr(cli, "cmd_info", multi_line)
  assert _error(capsys, ["info"]) == "nasjax info: error: first second"

  def bug(args):
    raise KeyError("a bug")

  monkeypatch.setattr(cli, "cmd_info", bug)
  with pytest.raises(KeyError, match="a bug"):
    cli.main(["info"])


def test_warnings_are_one_line(capsys, monkeypatch):
  import warnings

  def warns(args):
    warnings.warn("W/checkpoint.npz is damaged;\nreading W/checkpoint.prev.npz instead")
    return 0

  monkeypatch.setattr(cli, "cmd_info", warns)
  assert cli.main(["info"]) == 0
  assert capsys.readouterr().err == (
      "nasjax info: warning: W/checkpoint.npz is damaged; reading W/checkpoint.prev.npz "
      "instead\n")


# ------------------------------------------------------------------ MnasNet reward
def _mnas(accuracy: float, cost: float, target: float, alpha=-0.07, beta=-0.07) -> float:
  """MnasNet's reward ACC * (COST / T) ** w, in float64."""
  return accuracy * (cost / target) ** (alpha if cost <= target else beta)


@needs_tables
@pytest.mark.parametrize("strategy", ["rea", "random"])
@pytest.mark.parametrize("mode, exponents", [("soft", (-0.07, -0.07)), ("hard", (0.0, -1.0))])
def test_any_strategy_searches_the_mnas_reward_of_macro(tmp_path, capsys, strategy, mode,
                                                        exponents):
  workdir = tmp_path / "run"
  target = 1.0e6
  assert cli.main(["search", "--strategy", strategy, "--benchmark", "macro", "--reward",
                   "mnas", "--target-params", str(target), "--reward-mode", mode,
                   "--max-evals", "12", "--quiet", "--json", "--workdir", str(workdir)]) == 0
  out = json.loads(capsys.readouterr().out)
  history = read_history(workdir)
  assert len(history) == 12 and _config(workdir)["objectives"] == ["neg_reward"]
  for h in history:
    m = h["metrics"]
    expected = _mnas(m["mean_acc"] / 100, m["params"], target, *exponents)
    assert h["objectives"]["neg_reward"] == pytest.approx(-expected, abs=1e-6)
    assert m["reward"] == pytest.approx(expected, abs=1e-6)
  best = min(h["objectives"]["neg_reward"] for h in history)
  assert out["best"]["objectives"]["neg_reward"] == pytest.approx(best, abs=0)
  # The run resumes with the same reward.
  ev = make_evaluator(_config(workdir)["evaluator"])
  assert ev.objectives == ("neg_reward",) and ev.reward_objective.mode == mode


@pytest.mark.parametrize("strategy", ["rea", "random"])
def test_any_strategy_searches_the_mnas_reward_of_trained_networks(tmp_path, capsys,
                                                                   strategy):
  workdir = tmp_path / "run"
  target = 1.0e-3
  assert cli.main(["search", "--strategy", strategy, *TINY_SPACE, "--dataset", "synthetic",
                   *TINY_TRAIN, "--config", '{"population_size": 2, "sample_size": 2}'
                   if strategy == "rea" else '{"batch_size": 2}', "--reward", "mnas",
                   "--target-latency", str(target), "--objectives", "neg_reward,params",
                   "--max-evals", "2", "--quiet", "--workdir", str(workdir)]) == 0
  history = read_history(workdir)
  assert len(history) == 2
  for h in history:
    m = h["metrics"]
    assert h["status"] == "ok" and m["latency"] > 0
    expected = _mnas(m["val_accuracy"], m["latency"], target)
    assert h["objectives"]["neg_reward"] == pytest.approx(-expected, abs=1e-6)
    assert h["objectives"]["params"] == m["params"]


def test_reward_options_are_checked(tmp_path, capsys):
  base = ["search", "--strategy", "rea", "--max-evals", "2", "--workdir", str(tmp_path / "w")]
  assert _error(capsys, [*base, "--benchmark", "macro", "--target-params", "1e6"]) == (
      "nasjax search: error: --target-params applies to --reward mnas; give it too")
  assert _error(capsys, [*base, "--benchmark", "macro", "--reward", "mnas"]).startswith(
      "nasjax search: error: --reward mnas needs a target cost: --target-latency SECONDS")
  assert _error(capsys, [*base, "--benchmark", "macro", "--reward", "mnas",
                         "--target-latency", "0.01"]) == (
      "nasjax search: error: --target-latency: NAS-Bench-Macro has no latency; give "
      "--target-params or --target-flops")
  assert _error(capsys, [*base, "--benchmark", "nb201", "--reward", "mnas",
                         "--target-params", "1e6"]).startswith(
      "nasjax search: error: --reward needs a cost, and NAS-Bench-201's table has none")
  assert _error(capsys, [*base, *TINY_SPACE, "--dataset", "synthetic", "--reward", "mnas",
                         "--target-latency", "-1"]) == (
      "nasjax search: error: target must be a positive cost, got -1.0")
  assert not (tmp_path / "w").exists()


def test_reward_objective_needs_its_config_and_round_trips():
  space = PlainCNNSpace(num_blocks=1, max_layers=1, filters=(4,), kernels=(3,))
  with pytest.raises(ValueError, match="objective 'neg_reward' needs a reward config"):
    TrainingEvaluator(space, dataset="synthetic", objectives=("neg_reward",))
  reward = {"target": 0.01, "cost": "flops", "mode": "hard"}
  with pytest.raises(ValueError, match=r"its objective 'neg_reward' is not among the "
                     r"objectives \['val_error'\]"):
    TrainingEvaluator(space, dataset="synthetic", objectives=("val_error",), reward=reward)
  with pytest.raises(ValueError, match="the reward's cost must be one of"):
    TrainingEvaluator(space, dataset="synthetic", reward={"target": 1.0, "cost": "energy"})
  with pytest.raises(ValueError, match=r"unknown reward option\(s\) \['cost_objective'\]"):
    hardware.make_objective({"target": 1.0, "cost_objective": 1})
  ev = TrainingEvaluator(space, dataset="synthetic", reward=reward)
  assert ev.objectives == ("neg_reward",)
  again = make_evaluator(ev.config())
  assert again.objectives == ("neg_reward",)
  assert again.reward_objective == hardware.MnasObjective(0.01, "flops", "hard")
  # Without a reward, the default objectives stay as they were.
  assert TrainingEvaluator(space, dataset="synthetic").objectives == ("val_error",)
  assert make_evaluator(TrainingEvaluator(space, dataset="synthetic").config()).objectives == (
      "val_error",)


@needs_tables
def test_macro_reward_fitness_table_matches_its_records():
  ev = MacroEvaluator(reward={"target": 5.0e8, "cost": "flops"})
  F, _ = ev.arrays()
  assert F.shape == (6561, 1)
  codes = np.stack([ev.space.encode(k) for k in ("00000000", "12121212", "22222222")])
  for code, rec in zip(codes, ev.evaluate(codes)):
    r = ev.space.hash(code)
    assert rec.objectives[0] == F[r, 0]
    assert math.isclose(-F[r, 0], _mnas(ev.table.mean_acc[r] / 100, ev.table.flops[r], 5.0e8),
                        abs_tol=1e-6)
  assert MacroEvaluator().objectives == ("error", "params")
