"""Population-parallel against sequential evaluation of a batch of candidates.

    python benchmarks/population_parallel.py [--json] [--devices 8] [--steps 15]

Trains the same 8 small plain CNNs (two blocks of conv-BN-ReLU layers with 8 or 16
filters, 1x1 to 5x5 kernels, on 1,024 embedded Fashion-MNIST images) with
:class:`nasjax.search.TrainingEvaluator` twice over:

- ``sequential``: ``parallel="sequential", devices=1``, one candidate after another
  on one device;
- ``data_parallel``: ``parallel="sequential"`` (what ``"auto"`` does on CPU), one
  candidate after another, each batch split over all the devices;
- ``parallel``: ``parallel="devices"``, candidate ``j`` on device ``j``, all at once.

Each mode runs in its own process with ``--devices`` host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count``, set before JAX is imported) and
the persistent compilation cache off, so neither mode reuses the other's compilations.
In each process the batch is evaluated twice: ``cold`` (every train and eval step
compiled, the cost a search pays for new architectures) and ``warm`` (the same
candidates again, compiled steps reused: training alone). Modes alternate over
``--repeats`` rounds; the figures are medians. ``speedup`` is sequential seconds over
parallel seconds (above 1: the parallel evaluation is faster). The validation errors of
the two modes are compared too (``max_objective_diff``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CANDIDATES = ("8k3|16k3", "8k5|16k3", "16k3|16k3", "8k3,8k3|16k3", "8k1|16k5", "16k5|8k3",
              "8k3|16k3,16k3", "16k3,8k1|16k1")
SPACE = {"num_blocks": 2, "max_layers": 2, "filters": (8, 16), "kernels": (1, 3, 5)}
# mode -> (TrainingEvaluator's parallel, devices)
MODES = {"sequential": ("sequential", 1), "data_parallel": ("sequential", None),
         "parallel": ("devices", None)}


def worker(mode: str, steps: int) -> dict:
  """Evaluate the candidates twice in this process (cold, then warm)."""
  import jax
  import numpy as np

  from nasjax.search import PlainCNNSpace, TrainingEvaluator

  space = PlainCNNSpace(**SPACE)
  codes = np.stack([space.encode(c) for c in CANDIDATES])
  ev = TrainingEvaluator(space, dataset="fashion_mnist_small", data_limit=1024,
                         parallel=MODES[mode][0], devices=MODES[mode][1],
                         train={"max_steps": steps, "batch_size": 64, "eval_batch_size": 256})
  _ = ev.data
  out = {"mode": mode, "devices": len(jax.local_devices())}
  for phase in ("cold", "warm"):
    t, c = time.perf_counter(), time.process_time()
    recs = ev.evaluate(codes, jax.random.key(0))
    out[phase] = {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c,
                  "compile_seconds": sum(r.metrics["compile_seconds"] for r in recs),
                  "devices_used": len({r.metrics["device"] for r in recs})}
    out[phase + "_objectives"] = [r.objectives[0] for r in recs]
    out[phase + "_status"] = [r.status for r in recs]
  return out


def run_mode(mode: str, devices: int, steps: int) -> dict:
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "JAX_PLATFORMS": "cpu", "NASJAX_CACHE_DIR": "off", "PYTHONPATH": path}
  proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--steps", str(steps)],
                        env=env, capture_output=True, text=True, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, default=8, help="host devices per process")
  parser.add_argument("--steps", type=int, default=15, help="train steps per candidate")
  parser.add_argument("--repeats", type=int, default=2, help="rounds of the two modes")
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--worker", choices=sorted(MODES), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(args.worker, args.steps)))
    return

  load_before = os.getloadavg()[0]
  runs = {m: [] for m in MODES}
  for _ in range(args.repeats):
    for mode in MODES:
      runs[mode].append(run_mode(mode, args.devices, args.steps))
  for mode, rs in runs.items():
    bad = [s for r in rs for s in r["cold_status"] + r["warm_status"] if s != "ok"]
    if bad:
      raise SystemExit(f"{mode}: failed evaluations {bad}")

  def med(mode, phase, field):
    return statistics.median(r[phase][field] for r in runs[mode])

  out = {"benchmark": "population_parallel", "candidates": len(CANDIDATES),
         "devices": runs["parallel"][0]["devices"], "steps": args.steps,
         "repeats": args.repeats}
  for phase in ("cold", "warm"):
    for mode in MODES:
      for field in ("seconds", "cpu_seconds", "compile_seconds"):
        out[f"{phase}_{mode}_{field}"] = med(mode, phase, field)
      out[f"{phase}_{mode}_devices_used"] = runs[mode][0][phase]["devices_used"]
    out[f"{phase}_speedup"] = (out[f"{phase}_sequential_seconds"] /
                               out[f"{phase}_parallel_seconds"])
    out[f"{phase}_data_parallel_speedup"] = (out[f"{phase}_sequential_seconds"] /
                                             out[f"{phase}_data_parallel_seconds"])
  out["max_objective_diff"] = max(
      abs(a - b) for r in runs["sequential"] + runs["parallel"] + runs["data_parallel"]
      for a, b in zip(r["cold_objectives"] + r["warm_objectives"],
                      runs["sequential"][0]["cold_objectives"] * 2))
  out["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
  out["cpus"] = os.cpu_count()
  out["python"] = platform.python_version()
  if args.json:
    print(json.dumps(out))
    return
  for phase in ("cold", "warm"):
    print(f"{phase}: sequential {out[f'{phase}_sequential_seconds']:.2f} s "
          f"(CPU {out[f'{phase}_sequential_cpu_seconds']:.2f} s, compile "
          f"{out[f'{phase}_sequential_compile_seconds']:.2f} s), parallel on "
          f"{out[f'{phase}_parallel_devices_used']} devices "
          f"{out[f'{phase}_parallel_seconds']:.2f} s (CPU "
          f"{out[f'{phase}_parallel_cpu_seconds']:.2f} s, compile "
          f"{out[f'{phase}_parallel_compile_seconds']:.2f} s): speedup "
          f"{out[f'{phase}_speedup']:.2f}x; data parallel "
          f"{out[f'{phase}_data_parallel_seconds']:.2f} s (CPU "
          f"{out[f'{phase}_data_parallel_cpu_seconds']:.2f} s): speedup "
          f"{out[f'{phase}_data_parallel_speedup']:.2f}x")
  print(f"max objective difference {out['max_objective_diff']:.3g}; load average "
        f"{out['load_average'][0]} -> {out['load_average'][1]} on {out['cpus']} CPUs")


if __name__ == "__main__":
  main()
