"""Run directories (history, checkpoints, resume after SIGKILL), reports, the training
evaluator and the search commands."""

import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

import nasjax
from nasjax.search import (Budget, MacroEvaluator, NB201Evaluator, PlainCNNSpace,
                           TrainingEvaluator, cli, pareto, read_history, resume, run, runner,
                           tabular)

REPO = Path(nasjax.__file__).resolve().parents[1]
DATA = tabular.data_dir()
needs_tables = pytest.mark.skipif(
    not (DATA / tabular.NB201_FILE).is_file() or not (DATA / tabular.MACRO_FILE).is_file(),
    reason=f"reference tables not found under {DATA}")


def _without_wall(history):
  return [{k: v for k, v in h.items() if k not in ("wall", "compile")} for h in history]


@needs_tables
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
  killed = tmp_path / "killed"
  args = ["--strategy", "rea", "--benchmark", "nb201", "--dataset", "cifar10",
          "--max-evals", "200", "--seed", "3", "--quiet"]
  proc = subprocess.Popen([sys.executable, "-m", "nasjax.search.cli", "search", *args,
                           "--workdir", str(killed)], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.monotonic() + 120
  try:
    while time.monotonic() < deadline and proc.poll() is None:
      ckpt = runner.load_checkpoint(killed) if (killed / "checkpoint.npz").exists() else None
      if ckpt is not None and ckpt["evals"] >= 15:
        os.kill(proc.pid, signal.SIGKILL)
        break
      time.sleep(0.005)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
  ckpt = runner.load_checkpoint(killed)
  assert 15 <= ckpt["evals"] < 200 and not ckpt["finished"]
  # A kill in the middle of a history write leaves a partial line behind.
  with open(killed / "history.jsonl", "a") as f:
    f.write('{"eval": 99999, "arch": "|none~0|+|no')
  resumed = resume(killed, quiet=True)
  reference = run("rea", NB201Evaluator("cifar10"), Budget(max_evals=200), tmp_path / "ref", 3,
                  quiet=True)
  assert resumed.evals == reference.evals == 200
  assert _without_wall(read_history(killed)) == _without_wall(read_history(tmp_path / "ref"))
  assert _without_wall([resumed.best]) == _without_wall([reference.best])
  # A finished run resumes to itself.
  again = resume(killed, quiet=True)
  assert again.evals == 200 and len(read_history(killed)) == 200


@needs_tables
def test_a_generation_cut_by_the_budget_is_told_what_it_recorded(tmp_path):
  # LEMONADE (4 initial codes, then up to 4 children a generation): the budget of 10
  # evaluations ends two children into the third generation.
  ev = MacroEvaluator()
  run("lemonade", ev, Budget(max_evals=10), tmp_path, 0, {"n_pc": 8, "n_ac": 4}, quiet=True)
  history = read_history(tmp_path)
  assert [e["generation"] for e in history] == [0] * 4 + [1] * 4 + [2] * 2
  state = runner.load_checkpoint(tmp_path)["state"]
  F = np.array([[e["objectives"][k] for k in ev.objectives] for e in history])
  front = sorted(tuple(ind.fitness) for ind in state.population)
  # The final front is the front of every recorded evaluation, the cut generation's too
  # (both of its children are on it), and nothing the budget cut off.
  assert front == sorted(map(tuple, pareto.pareto_front(F)))
  cut = {tuple(e["code"]) for e in history[8:]}
  assert sum(tuple(ind.genome) in cut for ind in state.population) == 2


@needs_tables
def test_workdir_holding_a_run_is_not_overwritten(tmp_path):
  run("random", NB201Evaluator(), Budget(max_evals=3), tmp_path, 0, quiet=True)
  with pytest.raises(ValueError, match="already holds a search run"):
    run("random", NB201Evaluator(), Budget(max_evals=3), tmp_path, 0, quiet=True)
  with pytest.raises(FileNotFoundError, match="no search run"):
    resume(tmp_path / "nothing")


@needs_tables
def test_report_writes_plots_for_single_and_multi_objective_runs(tmp_path):
  run("rea", NB201Evaluator(), Budget(time_budget=3000.0), tmp_path / "nb", 0, quiet=True)
  run("rea", MacroEvaluator(), Budget(max_evals=30), tmp_path / "macro", 0, quiet=True)
  from nasjax.search.report import report

  single = report(tmp_path / "nb")
  multi = report(tmp_path / "macro")
  assert sorted(Path(p).name for p in single["plots"]) == ["best_vs_evals.png",
                                                          "best_vs_time.png"]
  assert sorted(Path(p).name for p in multi["plots"]) == ["best_vs_evals.png",
                                                         "best_vs_time.png", "pareto.png"]
  for p in single["plots"] + multi["plots"]:
    data = Path(p).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
  assert single["result"]["test_accuracy"] > 80.0
  assert 1 <= multi["pareto_size"] <= 30
  assert (tmp_path / "nb" / "report.txt").read_text().startswith("workdir")
  best = json.loads((tmp_path / "macro" / "best.json").read_text())
  errors = [e["objectives"]["error"] for e in best["pareto"]]
  params = [e["objectives"]["params"] for e in best["pareto"]]
  assert errors == sorted(errors) and params == sorted(params, reverse=True)


TINY = PlainCNNSpace(num_blocks=1, max_layers=2, filters=(4, 8), kernels=(1, 3))


def test_training_evaluator_marks_failures_and_never_raises():
  diverging = TrainingEvaluator(TINY, dataset="synthetic", objectives=("val_error", "params"),
                                train={"learning_rate": 1e9, "schedule": "constant",
                                       "max_steps": 4, "batch_size": 32, "momentum": 0.0})
  import jax

  code = TINY.encode("8k3,8k3")
  rec = diverging.evaluate(np.stack([code]), jax.random.key(0))[0]
  assert rec.status == "diverged" and not rec.ok
  assert all(math.isnan(v) for v in rec.objectives)
  # An architecture that does not fit the data raises inside training: a failed record.
  wrong = nasjax.sequential((9, 9, 3), [("gap", {}), ("dense", {"features": 4})])
  rec = diverging.evaluate([wrong], jax.random.key(0))[0]
  assert rec.status.startswith("error: ValueError") and math.isnan(rec.objectives[0])


def test_training_search_writes_the_best_network(tmp_path):
  evaluator = TrainingEvaluator(TINY, dataset="synthetic",
                                objectives=("val_error", "params"),
                                train={"max_steps": 3, "batch_size": 32})
  result = run("random", evaluator, Budget(max_evals=2), tmp_path, 0, {"batch_size": 2},
               quiet=True)
  assert result.evals == 2 and all(h["status"] == "ok" for h in result.history)
  net, meta = nasjax.load(tmp_path / "best_net.npz", with_metadata=True)
  assert meta["eval"] == result.best["eval"]
  assert nasjax.count_params(net.arch) == result.best["objectives"]["params"]
  h = result.history[0]
  assert h["metrics"]["compile_seconds"] > 0 and h["metrics"]["train_seconds"] > 0
  assert h["objectives"]["val_error"] == pytest.approx(
      100 * (1 - h["metrics"]["val_accuracy"]), abs=1e-9)


def test_candidates_spread_over_devices_equal_sequential_evaluation(tmp_path):
  script = textwrap.dedent("""
      import json, jax, numpy as np
      from nasjax.search import PlainCNNSpace, TrainingEvaluator
      space = PlainCNNSpace(num_blocks=1, max_layers=2, filters=(4, 8), kernels=(1, 3))
      codes = np.stack([space.encode(s) for s in ("4k3", "8k1,4k3", "4k3")])
      out = {}
      for n in (1, 2):
        ev = TrainingEvaluator(space, dataset="synthetic", devices=n,
                               train={"max_steps": 3, "batch_size": 32})
        recs = ev.evaluate(codes, jax.random.key(5))
        out[n] = [[r.status, r.objectives, r.metrics["device"]] for r in recs]
      print(json.dumps(out))
  """)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  one, two = out["1"], out["2"]
  assert [r[:2] for r in one] == [r[:2] for r in two]
  assert all(r[0] == "ok" for r in one)
  assert len({r[2] for r in two}) == 2 and len({r[2] for r in one}) == 1


def _cli(argv) -> tuple[int, str]:
  buf = io.StringIO()
  with redirect_stdout(buf):
    code = cli.main(argv)
  return code, buf.getvalue()


@needs_tables
def test_cli_bench_search_report(tmp_path, capsys):
  code, out = _cli(["bench", "nb201", "--strategy", "random", "--dataset", "cifar100",
                    "--runs", "4", "--time-budget", "3000", "--seed", "1", "--json"])
  res = json.loads(out)
  assert code == 0 and res["runs"] == 4 and 0 < res["mean"] < 100 and res["std"] >= 0
  assert res["wall_seconds"] > 0
  code, out = _cli(["bench", "macro", "--strategy", "rea", "--evals", "20", "--runs", "2",
                    "--json"])
  res = json.loads(out)
  assert code == 0 and 0 < res["hv_fraction_mean"] <= 1 and res["true_hypervolume"] > 1
  code, out = _cli(["search", "--strategy", "reinforce", "--benchmark", "nb201",
                    "--dataset", "imagenet16-120", "--time-budget", "2000", "--seed", "2",
                    "--workdir", str(tmp_path / "r"), "--quiet", "--json"])
  res = json.loads(out)
  assert code == 0 and res["evaluations"] == len(read_history(tmp_path / "r"))
  assert res["summary"]["test_accuracy"] > 0
  code, out = _cli(["report", str(tmp_path / "r"), "--json"])
  assert code == 0 and len(json.loads(out)["plots"]) == 2
  code, _ = _cli(["search", "--strategy", "rea", "--benchmark", "macro", "--workdir",
                  str(tmp_path / "m")])
  assert code == 2 and "give --max-evals" in capsys.readouterr().err
  code, _ = _cli(["search", "--strategy", "nope", "--benchmark", "nb201", "--workdir",
                  str(tmp_path / "n")])
  assert code == 2 and "unknown strategy 'nope'" in capsys.readouterr().err
