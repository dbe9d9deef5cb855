"""benchmarks/gpu_check.py --quick runs end to end and writes every section.

The GPU check is meant for a machine the test suite never sees; running its reduced mode
here keeps it from going stale as nasjax changes (a renamed function, a new signature).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # one subprocess of about a minute

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ("environment", "train_throughput", "compile", "search_speed", "packing",
            "supernet")


def _numbers(tree, path=""):
  """Every int and float in ``tree`` (not bools), with where it sits."""
  if isinstance(tree, bool) or tree is None or isinstance(tree, str):
    return
  if isinstance(tree, (int, float)):
    yield path, tree
  elif isinstance(tree, dict):
    for k, v in tree.items():
      yield from _numbers(v, f"{path}.{k}")
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      yield from _numbers(v, f"{path}[{i}]")


def _positive(value, what):
  assert isinstance(value, (int, float)) and not isinstance(value, bool), (what, value)
  assert math.isfinite(value) and value > 0, (what, value)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  out = tmp_path_factory.mktemp("gpu_check") / "quick.json"
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
  proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "## goals" in proc.stdout  # the table was printed
  return json.loads(out.read_text())


def test_every_section_ran_without_error(result):
  assert result["mode"] == "quick"
  for name in SECTIONS:
    assert name in result, name
    assert "error" not in result[name], (name, result[name].get("error"),
                                         result[name].get("traceback"))
  for path, value in _numbers({k: result[k] for k in SECTIONS}):
    assert math.isfinite(value), (path, value)


def test_environment_records_devices_and_settings(result):
  env = result["environment"]
  assert env["versions"]["jax"] and env["versions"]["jaxlib"]
  _positive(env["device_count"], "device_count")
  assert env["platform"] in ("cpu", "gpu", "tpu")
  assert set(env["runtime"]) >= {"cpu_devices", "compiler_options", "cache_dir"}
  if env["platform"] == "cpu":
    assert env["gpu_device_count_unchanged"] == "n/a (CPU)"


def test_train_throughput_rows_have_rates(result):
  tp = result["train_throughput"]
  assert tp["rows"] and not tp["skipped_for_time"]
  assert {r["dtype"] for r in tp["rows"]} == {"float32", "bfloat16"}
  for row in tp["rows"]:
    for run in ("jax_step", "jax_fit") + (("torch_eager",) if tp["torch_device"] else ()):
      for key in ("ms_per_step", "images_per_s", "tflops_per_s"):
        _positive(row[run][key], f"{row['model']} {run} {key}")
    if tp["torch_device"]:
      _positive(row["step_ratio_jax_over_torch"], "step ratio")
      # The same weights on the same batch give the same first loss (bfloat16 loosely).
      tol = 1e-4 if row["dtype"] == "float32" else 2e-2
      assert row["first_loss"]["rel_diff"] <= tol, row["first_loss"]
    else:
      assert tp["torch_skipped"]


def test_compile_section_measures_cold_and_warm_cache(result):
  cp = result["compile"]
  for run in ("cold_cache", "warm_cache"):
    _positive(cp[run]["median"], run)
    _positive(cp[run]["step_ms_last"], run)
    assert len(cp[run]["seconds"]) == len(cp["widths"])
  if result["environment"]["platform"] == "cpu":
    assert cp["autotune_off_cold_cache"] == "n/a (CPU)"


def test_search_speed_rows(result):
  rows = result["search_speed"]["rows"]
  assert rows
  for name, row in rows.items():
    assert row["evals"] == result["search_speed"]["evals"], name
    _positive(row["candidates_per_hour"], name)
    assert 0 < row["compile_share"] <= 1.5, (name, row["compile_share"])


def test_packing_rows(result):
  pk = result["packing"]
  assert [r["n"] for r in pk["rows"]] == [1, 4]
  for row in pk["rows"]:
    for key in ("one_at_a_time_images_per_s", "packed_images_per_s", "speedup",
                "speedup_vs_queued"):
      _positive(row[key], f"n={row['n']} {key}")
  _positive(pk["two_archs"]["speedup"], "two archs")


def test_supernet_rows(result):
  rows = result["supernet"]["rows"]
  assert {r["variant"] for r in rows} == {"spos_switch", "spos_onehot", "darts_mixed",
                                          "darts_mixed_remat"}
  timed = [r for r in rows if "ms_per_step" in r]
  assert timed
  for row in timed:
    _positive(row["ms_per_step"], row["variant"])
    _positive(row["planned_peak_bytes"], row["variant"])
  for row in rows:
    assert "ms_per_step" in row or row.get("lowered_only"), row


def test_goals_are_judged(result):
  goals = result["goals"]
  assert len(goals) == 4
  cpu = result["environment"]["platform"] == "cpu"
  for g in goals:
    assert g["status"] in (("n/a (CPU)",) if cpu else ("met", "not met", "not measured"))
