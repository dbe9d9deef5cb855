"""Population-parallel evaluation on several devices, multi-process search, and the
compile share in reports."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import nasjax
from nasjax.search import (Budget, NB201Evaluator, PlainCNNSpace, TrainingEvaluator,
                           read_history, report, run, tabular)

REPO = Path(nasjax.__file__).resolve().parents[1]
HAS_NB201 = (tabular.data_dir() / tabular.NB201_FILE).is_file()
TINY = PlainCNNSpace(num_blocks=1, max_layers=2, filters=(4, 8), kernels=(1, 3))
TINY_TRAIN = {"max_steps": 2, "batch_size": 32}
TRAIN_REA = {"population_size": 4, "sample_size": 2, "batch_size": 2}
NB201_REA = {"population_size": 8, "sample_size": 2, "batch_size": 4}
# Metrics that measure this run's clock or placement rather than the candidate.
CLOCK_METRICS = ("compile_seconds", "train_seconds", "device")


def _python(script: str, env_extra: dict, timeout: float = 240) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **env_extra}
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_population_parallel_equals_sequential():
  script = textwrap.dedent("""
      import json, jax, numpy as np
      from nasjax.search import PlainCNNSpace, TrainingEvaluator
      space = PlainCNNSpace(num_blocks=1, max_layers=2, filters=(4, 8), kernels=(1, 3))
      codes = np.stack([space.encode(s) for s in ("4k3", "8k1,4k3", "8k3", "4k3")])
      out = {}
      for mode in ("sequential", "devices", "auto"):
        ev = TrainingEvaluator(space, dataset="synthetic", parallel=mode,
                               train={"max_steps": 2, "batch_size": 32})
        recs = ev.evaluate(codes, jax.random.key(5))
        one = ev.evaluate(codes[:1], jax.random.key(5))
        out[mode] = {"lanes": [ev.lanes(4), ev.lanes(1)],
                     "records": [[r.arch, r.code, r.status, r.objectives, r.cost, r.metrics]
                                 for r in recs],
                     "single_device": one[0].metrics["device"]}
      out["explicit"] = TrainingEvaluator(space, dataset="synthetic", devices=3).lanes(4)
      print(json.dumps(out))
  """)
  out = _python(script, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  # Devices asked for explicitly are used, CPU devices included.
  assert out["explicit"] == 3
  assert out["sequential"]["lanes"] == [1, 1]
  assert out["devices"]["lanes"] == [4, 1]
  # All local devices are CPU devices, which share the cores: "auto" evaluates one
  # candidate after another.
  assert out["auto"]["lanes"] == [1, 1]
  seq = out["sequential"]["records"]
  assert [r[5]["device"] for r in seq] == ["cpu:0"] * 4
  assert [r[5]["device"] for r in out["auto"]["records"]] == ["cpu:0"] * 4
  assert all(r[2] == "ok" for r in seq)
  # One candidate per device, in batch order.
  assert [r[5]["device"] for r in out["devices"]["records"]] == [f"cpu:{d}" for d in range(4)]
  for mode in ("devices", "auto"):
    par = out[mode]["records"]
    assert out[mode]["single_device"] == "cpu:0"
    for s, p in zip(seq, par):
      assert s[:3] == p[:3]
      np.testing.assert_allclose(p[3], s[3], rtol=0, atol=1e-9)
      assert s[5].keys() == p[5].keys()
      for k in s[5].keys() - set(CLOCK_METRICS):
        np.testing.assert_allclose(p[5][k], s[5][k], rtol=1e-6, atol=0)
      assert p[4] > 0 and p[5]["compile_seconds"] >= 0 and p[5]["train_seconds"] > 0


def test_parallel_mode_is_validated_and_kept_in_the_config():
  with pytest.raises(ValueError, match="parallel must be one of"):
    TrainingEvaluator(TINY, dataset="synthetic", parallel="threads")
  ev = TrainingEvaluator(TINY, dataset="synthetic", parallel="sequential")
  assert ev.config()["parallel"] == "sequential"
  assert ev.lanes(8) == 1

  class Accelerator:
    platform = "gpu"

  # "auto" spreads a batch over accelerators (not over CPU devices, which share cores).
  ev = TrainingEvaluator(TINY, dataset="synthetic", devices=[Accelerator(), Accelerator()])
  assert [ev.lanes(b) for b in (1, 2, 5)] == [1, 2, 2]
  assert ev.config()["devices"] == 2 and ev.config()["parallel"] == "auto"


# ------------------------------------------------------------------------ multi-host
MULTI_PROCESS = f"TRAIN_REA = {TRAIN_REA!r}\nNB201_REA = {NB201_REA!r}\n" + textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, workdir, with_tables = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    from nasjax.search import (Budget, NB201Evaluator, PlainCNNSpace, TrainingEvaluator,
                               run)

    evaluated = []

    def counting(evaluator):
      inner = evaluator.evaluate

      def evaluate(candidates, key=None, **kw):
        evaluated.append(len(candidates))
        return inner(candidates, key, **kw)

      object.__setattr__(evaluator, "evaluate", evaluate)
      return evaluator

    out = {"process_count": jax.process_count(), "process_index": jax.process_index()}
    space = PlainCNNSpace(num_blocks=1, max_layers=2, filters=(4, 8), kernels=(1, 3))
    ev = counting(TrainingEvaluator(space, dataset="synthetic",
                                    train={"max_steps": 2, "batch_size": 32}))
    res = run("rea", ev, Budget(max_evals=6), workdir + "/train", 0,
              TRAIN_REA, quiet=True)
    out["train"] = {"history": res.history, "evaluated": sum(evaluated)}
    if with_tables == "1":
      evaluated.clear()
      res = run("rea", counting(NB201Evaluator("cifar10")), Budget(max_evals=24),
                workdir + "/nb201", 0, NB201_REA, quiet=True)
      out["nb201"] = {"history": res.history, "evaluated": sum(evaluated),
                      "summary": res.summary}
    print(json.dumps(out))
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _comparable(history, clock_free: bool):
  out = []
  for h in history:
    h = {k: v for k, v in h.items() if k not in ("wall", "compile")}
    if clock_free:
      h = {k: v for k, v in h.items() if k not in ("cost", "elapsed")}
      h["metrics"] = {k: v for k, v in h["metrics"].items() if k not in CLOCK_METRICS}
    out.append(h)
  return out


def test_two_processes_share_the_evaluations_and_see_all_results(tmp_path):
  port = _free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  procs = [subprocess.Popen(
      [sys.executable, "-c", MULTI_PROCESS, str(port), str(p), str(tmp_path / f"p{p}"),
       "1" if HAS_NB201 else "0"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for p in (0, 1)]
  try:
    results = [proc.communicate(timeout=150) for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  outs = []
  for proc, (stdout, stderr) in zip(procs, results):
    assert proc.returncode == 0, stderr[-3000:]
    outs.append(json.loads(stdout.strip().splitlines()[-1]))
  assert [o["process_index"] for o in outs] == [0, 1]
  assert all(o["process_count"] == 2 for o in outs)
  # Only process 0 wrote a run directory.
  assert (tmp_path / "p0" / "train" / "history.jsonl").is_file()
  assert (tmp_path / "p0" / "train" / "best_net.npz").is_file()
  assert not (tmp_path / "p1").exists()

  train = TrainingEvaluator(TINY, dataset="synthetic", train=TINY_TRAIN)
  single = run("rea", train, Budget(max_evals=6), tmp_path / "single-train", 0,
               TRAIN_REA, quiet=True)
  h0, h1 = outs[0]["train"]["history"], outs[1]["train"]["history"]
  assert len(h0) == 6 and all(h["status"] == "ok" for h in h0)
  # Every process sees every result, as measured by the process that trained it.
  assert _comparable(h0, False) == _comparable(h1, False)
  assert _comparable(read_history(tmp_path / "p0" / "train"), False) == _comparable(h0, False)
  # ... and the same search as one process (training times aside).
  single_h = _comparable(single.history, True)
  for a, b in zip(_comparable(h0, True), single_h):
    assert a["arch"] == b["arch"] and a["code"] == b["code"] and a["status"] == b["status"]
    assert a["metrics"].keys() == b["metrics"].keys()
    assert a["objectives"]["val_error"] == pytest.approx(b["objectives"]["val_error"],
                                                         abs=1e-6)
  assert len(h0) == len(single_h)
  # Each candidate was trained once, by one of the two processes.
  fresh = sum(not h["metrics"].get("cached") for h in h0)
  assert outs[0]["train"]["evaluated"] + outs[1]["train"]["evaluated"] == fresh
  assert min(outs[0]["train"]["evaluated"], outs[1]["train"]["evaluated"]) >= 1

  if not HAS_NB201:
    return
  single = run("rea", NB201Evaluator("cifar10"), Budget(max_evals=24),
               tmp_path / "single-nb201", 0, NB201_REA, quiet=True)
  for o in outs:
    assert _comparable(o["nb201"]["history"], False) == _comparable(single.history, False)
    assert o["nb201"]["summary"] == single.summary
  # Six batches of four: each process looked up its half of every batch.
  assert [o["nb201"]["evaluated"] for o in outs] == [12, 12]


# ------------------------------------------------------------------------ reports
def test_history_records_compile_seconds_and_report_shows_the_share(tmp_path):
  ev = TrainingEvaluator(TINY, dataset="synthetic", train=TINY_TRAIN)
  codes = [TINY.encode(s) for s in ("4k3", "4k3", "8k1")]

  class Fixed:
    """Asks for the same three codes every generation."""

    name = "random"

    def config(self):
      return {"batch_size": 3}

    def init(self, key):
      return 0

    def ask(self, key, state):
      return np.stack(codes), None

    def tell(self, key, asked, cands, fitness):
      return 0

  result = run(Fixed(), ev, Budget(max_evals=6), tmp_path, 0, quiet=True)
  history = read_history(tmp_path)
  assert len(history) == 6
  fresh = [h for h in history if not h["metrics"].get("cached")]
  # The second generation repeats the first: its records reuse the first results.
  assert [bool(h["metrics"].get("cached")) for h in history] == [False] * 3 + [True] * 3
  assert all(h["metrics"]["compile_seconds"] > 0 for h in fresh)
  summary = report.summarize(tmp_path)
  expected = sum(h["metrics"]["compile_seconds"] for h in fresh)
  assert summary["candidate_compile_seconds"] == pytest.approx(expected, rel=1e-12)
  # The process clock counts the train and eval steps and every other program compiled
  # during the run; it rises monotonically along the history.
  clocks = [h["compile"] for h in history]
  assert clocks == sorted(clocks)
  assert summary["compile_seconds"] == pytest.approx(history[-1]["compile"], rel=1e-12)
  # The first evaluation compiled its steps, so the clock had started by then. (No bound
  # against the candidates' own figures: theirs also time the eval step's first run, which
  # a loaded machine stretches while the process clock counts compiling only.)
  assert clocks[0] > 0.0
  assert summary["lanes"] == 1
  assert summary["compile_share"] == pytest.approx(
      summary["compile_seconds"] / history[-1]["wall"], rel=1e-12)
  assert 0 < summary["compile_share"] < 1
  assert "compile_share" in report.format_summary(summary)
  assert result.evals == 6


def test_compile_share_counts_concurrent_lanes():
  history = [{"wall": 10.0, "metrics": {"compile_seconds": 3.0, "device": "a"}},
             {"wall": 10.0, "metrics": {"compile_seconds": 5.0, "device": "b"}},
             {"wall": 10.0, "metrics": {"compile_seconds": 5.0, "device": "b",
                                        "cached": True}},
             {"wall": 10.0, "metrics": {}}]
  out = report.compile_time(history)
  assert out == {"compile_seconds": 8.0, "candidate_compile_seconds": 8.0,
                 "compile_share": pytest.approx(0.4, abs=1e-12), "lanes": 2}
  history[-1]["compile"] = 12.0  # the run's process clock, when recorded, is the total
  out = report.compile_time(history)
  assert out["compile_seconds"] == 12.0 and out["candidate_compile_seconds"] == 8.0
  assert out["compile_share"] == pytest.approx(0.6, abs=1e-12)
  assert report.compile_time([{"wall": 1.0, "metrics": {"val_accuracy": 0.5}}]) == {}
