"""The command line: info and train (search commands are tested in test_search_*)."""

import json

import pytest

import nasjax
from nasjax import cli


def test_info_json(capsys):
  assert cli.main(["info", "--json"]) == 0
  info = json.loads(capsys.readouterr().out)
  assert info["nasjax"] == nasjax.__version__
  assert info["local_device_count"] >= 1 and len(info["devices"]) == info["local_device_count"]


def test_train_family_then_arch_file(tmp_path, capsys):
  args = ["train", "--family", "plain_cnn", "--family-args", '{"blocks": [[8], [8]]}',
          "--limit", "1024", "--epochs", "3", "--batch-size", "64", "--optimizer", "adam",
          "--lr", "0.01",
          "--json", "--out", str(tmp_path)]
  assert cli.main(args) == 0
  res = json.loads(capsys.readouterr().out)
  arch = nasjax.Arch.from_json((tmp_path / "arch.json").read_text())
  assert res["params"] == nasjax.count_params(arch) and res["flops"] == nasjax.flops(arch)
  assert res["status"] == "ok" and res["latency_ms"] > 0
  # Three epochs on 1024 images of 10 balanced classes: well above chance (10%).
  assert res["val_accuracy"] > 0.3 and res["test_accuracy"] > 0.3
  net = nasjax.load(tmp_path / "net.npz")
  assert net.arch == arch
  # The saved architecture trains again from its JSON file.
  assert cli.main(["train", "--arch", str(tmp_path / "arch.json"), "--limit", "256",
                   "--epochs", "1", "--batch-size", "64", "--json"]) == 0
  again = json.loads(capsys.readouterr().out)
  assert again["params"] == res["params"]


def test_train_bad_family_names_it(capsys):
  # Exit status 2 and one line, as for the other commands' bad arguments (it was 1).
  assert cli.main(["train", "--family", "nope", "--limit", "64"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("nasjax train: error: unknown --family 'nope'; choose from ")
  assert err.count("\n") == 1


def test_config_files_load_their_variants_and_bad_paths_are_named(tmp_path):
  from nasjax import configs

  path = tmp_path / "cfg.py"
  path.write_text("import dataclasses\n@dataclasses.dataclass\nclass C:\n  x: int = 3\n"
                  "VARIANTS = {'default': C()}\n")
  assert configs.load_variants(path)["default"].x == 3
  with pytest.raises(ValueError, match="no config file at .*missing.py"):
    configs.load_variants(tmp_path / "missing.py")
  (tmp_path / "empty.py").write_text("X = 1\n")
  with pytest.raises(ValueError, match="defines no VARIANTS"):
    configs.load_variants(tmp_path / "empty.py")


def test_a_training_search_ends_with_its_best_networks_and_how_to_use_them(tmp_path, capsys):
  import re

  import numpy as np

  from nasjax.search import read_history

  workdir = tmp_path / "run"
  args = ["search", "--strategy", "random", "--space", "plain_cnn", "--space-config",
          '{"num_blocks": 1, "max_layers": 1, "filters": [4, 8], "kernels": [3]}',
          "--dataset", "synthetic", "--max-evals", "3", "--train",
          '{"epochs": 1, "batch_size": 32}', "--seed", "0", "--quiet", "--workdir",
          str(workdir)]
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  history = read_history(workdir)
  # rank, architecture, params, val acc, test acc (the saved best only), seconds
  rows = re.findall(r"^ +(\d) +\S+ +([\d,]+) +([\d.]+) +([\d.]*) +([\d.]+)$", out, re.M)
  best = min(history, key=lambda e: e["objectives"]["val_error"])
  assert len(rows) == 3 and rows[0][0] == "1"
  assert float(rows[0][2]) == pytest.approx(100 - best["objectives"]["val_error"], abs=0.01)
  assert int(rows[0][1].replace(",", "")) == best["metrics"]["params"]
  assert float(rows[0][4]) == pytest.approx(best["cost"], abs=0.05)
  assert rows[1][3] == rows[2][3] == ""
  assert f"saved in {workdir / 'best_net.npz'}" in out
  test_acc = float(rows[0][3])
  # The printed line of Python runs and classifies the first test image.
  line = re.search(r'python3 -c "(.*)"$', out, re.M).group(1)
  namespace = {}
  exec(line.replace("print(", "result = ("), namespace)  # noqa: S102
  assert np.asarray(namespace["result"]).shape == (1,)
  net = nasjax.load(workdir / "best_net.npz")
  from nasjax import data, train
  ds = data.load("synthetic")
  assert test_acc == pytest.approx(100 * train.evaluate(net, ds.x_test, ds.y_test)["accuracy"],
                                   abs=0.01)


def test_the_readme_first_command_runs_shrunk(tmp_path, capsys):
  """README's first command, with its training shrunk: its options stay valid."""
  import pathlib
  import re
  import shlex

  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  line = re.search(r"^ *python3 -m pip install -e \. && (nasjax search .*)$", readme, re.M)
  search_cmd, report_cmd = line.group(1).split(" && ")
  args = shlex.split(search_cmd)[1:]
  args[args.index("--time-budget"):args.index("--time-budget") + 2] = ["--max-evals", "1"]
  train = json.loads(args[args.index("--train") + 1])
  args[args.index("--train") + 1] = json.dumps({**train, "epochs": 0.1})
  args[args.index("--workdir") + 1] = str(tmp_path / "run")
  assert cli.main([*args, "--limit", "320", "--quiet"]) == 0
  assert "test acc %" in capsys.readouterr().out
  assert shlex.split(report_cmd)[:2] == ["nasjax", "report"]
  assert cli.main(["report", str(tmp_path / "run")]) == 0
  assert (tmp_path / "run" / "report.html").is_file()


# ------------------------------------------------------------------------- --preset paper
def _needs_nb201():
  from nasjax.search import tabular

  if not (tabular.data_dir() / tabular.NB201_FILE).is_file():
    pytest.skip(f"NB201's table not found under {tabular.data_dir()}")


def _preset_search(workdir, *extra):
  return ["search", "--strategy", "rl_nas", "--benchmark", "nb201", "--dataset", "cifar10",
          "--preset", "paper", "--config", '{"batch_size": 2}', "--max-evals", "6",
          "--seed", "4", "--quiet", "--json", "--workdir", str(workdir), *extra]


def test_search_preset_paper_is_recorded_and_a_resumed_run_keeps_it(tmp_path, capsys,
                                                                   monkeypatch):
  from nasjax.search import read_config, read_history
  from nasjax.search.evaluators import NB201Evaluator

  _needs_nb201()
  ref = tmp_path / "ref"
  assert cli.main(_preset_search(ref)) == 0
  capsys.readouterr()
  cfg = read_config(ref)
  # Zoph & Le's Adam step 0.0006 and no entropy bonus from the preset; --config's two
  # children per update over the preset's eight.
  options = cfg["strategy_config"]
  assert options["learning_rate"] == pytest.approx(0.0006, abs=1e-12)
  assert options["entropy_weight"] == 0.0 and options["batch_size"] == 2
  assert cfg["metadata"]["preset"] == "paper"
  history = read_history(ref)
  assert len(history) == 6

  # Killed in the third generation (after two checkpointed ones), then resumed: the run
  # keeps the preset's options and ends with the uninterrupted run's history.
  calls, evaluate = [], NB201Evaluator.evaluate

  def failing(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise RuntimeError("killed")
    return evaluate(self, *args, **kwargs)

  killed = tmp_path / "killed"
  monkeypatch.setattr(NB201Evaluator, "evaluate", failing)
  with pytest.raises(RuntimeError, match="killed"):
    cli.main(_preset_search(killed))
  monkeypatch.setattr(NB201Evaluator, "evaluate", evaluate)
  assert len(read_history(killed)) == 4
  assert cli.main(["resume", str(killed), "--quiet", "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["evaluations"] == 6
  again = read_config(killed)
  assert again["metadata"]["preset"] == "paper" and again["strategy_config"] == options
  strip = lambda h: [{k: v for k, v in e.items() if k not in ("wall", "compile")} for e in h]
  assert strip(read_history(killed)) == strip(history)

  # Without --preset the registered defaults run (Adam 0.005, an entropy bonus 0.001).
  plain = tmp_path / "plain"
  args = _preset_search(plain)
  del args[args.index("--preset"):args.index("--preset") + 2]
  assert cli.main(args) == 0
  cfg = read_config(plain)
  assert cfg["metadata"]["preset"] is None
  assert cfg["strategy_config"]["learning_rate"] == pytest.approx(0.005, abs=1e-12)
  assert cfg["strategy_config"]["entropy_weight"] == pytest.approx(0.001, abs=1e-12)


def test_bench_preset_paper_equals_the_presets_options_given_as_config(capsys):
  from nasjax.search import bench
  from nasjax.search.options import preset_config

  _needs_nb201()
  args = ["bench", "nb201", "--strategy", "rl_nas", "--preset", "paper", "--config",
          '{"batch_size": 2}', "--runs", "2", "--time-budget", "1500", "--seed", "5",
          "--json"]
  assert cli.main(args) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["preset"] == "paper" and out["runs"] == 2 and out["mean_queries"] > 5
  options = preset_config("rl_nas", "paper", {"batch_size": 2})
  assert options["learning_rate"] == pytest.approx(0.0006, abs=1e-12)
  same = bench.bench_nb201("rl_nas", "cifar10", 2, 1500.0, 5, options)
  for k in ("mean", "std", "min", "max", "mean_queries"):
    assert out[k] == pytest.approx(same[k], abs=1e-9), k


@pytest.mark.parametrize("argv,message", [
    (["search", "--strategy", "rea", "--benchmark", "nb201", "--preset", "paper"],
     "--preset 'paper': strategy 'rea' has no such preset for nasjax search; it has "
     "['smoke']"),
    (["search", "--strategy", "pnas", "--benchmark", "nb201", "--preset", "fast"],
     "--preset 'fast': strategy 'pnas' has no such preset for nasjax search; it has "
     "['smoke', 'paper']"),
    (["bench", "nb201", "--strategy", "nao", "--preset", "smoke"],
     "--preset 'smoke': strategy 'nao' has no such preset for nasjax bench; it has "
     "['paper']"),
    (["bench", "nb201", "--strategy", "random", "--preset", "paper"],
     "--preset 'paper': strategy 'random' has no such preset for nasjax bench; it has none"),
])
def test_an_unknown_preset_names_the_strategys_presets(tmp_path, capsys, argv, message):
  workdir = tmp_path / "run"
  if argv[0] == "search":
    argv = [*argv, "--workdir", str(workdir)]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err == f"nasjax {argv[0]}: error: {message}\n"
  assert not workdir.exists()
  # A named preset is not a smoke run: it needs a run directory.
  assert cli.main(["search", "--strategy", "nao", "--benchmark", "nb201", "--preset",
                   "paper"]) == 2
  assert "give --workdir" in capsys.readouterr().err
