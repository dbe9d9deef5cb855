"""Searches on Ray workers (``--backend ray``): driver overhead, asynchronous against
synchronous regularized evolution, and a real training search on this machine.

    python benchmarks/scale_out.py [--part overhead|rea|training|all] [--json]
        [--workers 1,2,4,8,16,32] [--seconds 1.0] [--rounds 10]
        [--rea-workers 1,4,16] [--seeds 5] [--evals 100] [--seconds-per-cost 0.003]
        [--train-evals 8] [--train-workers 1,2] [--compilation-cache] [--out results.json]

One local Ray instance (``ray.init`` with as many logical CPUs as the most workers asked
for, a 200 MB object store, no dashboard) serves every part; each configuration starts
its own :class:`~nasjax.search.ray_backend.WorkerPool`, whose start-up is reported apart
from the search.

- ``overhead``: random search (asynchronous) with an evaluator that sleeps ``--seconds``
  (T) per candidate and does nothing else but an NAS-Bench-201 lookup
  (``SimulatedTime(NB201Evaluator(), 0, seconds=T)``), so the machine's cores do not
  limit it; N
  workers, N in flight, ``N * --rounds`` evaluations. From the history's worker
  records: evaluations per second over the span from the first evaluation's start to
  the last one's end (the steady state: every worker had started before the search),
  against the ideal N / T, and the overhead per evaluation, the mean time a worker waited
  between the end of one evaluation and the start of its next (the driver's telling,
  recording, checkpointing, asking and Ray's round trip), in ms.
- ``rea``: regularized evolution on NAS-Bench-201 (CIFAR-10) with each query lasting its
  table's training seconds times ``--seconds-per-cost``
  (:class:`~nasjax.search.ray_backend.SimulatedTime`), ``--evals`` evaluations, with N
  workers: asynchronous (told as results arrive, N in flight) against synchronous
  (generations of N children, ``batch_size=N``, told when the whole generation is in),
  ``--seeds`` seeds each. Reports the final test accuracy of the best architecture by
  validation at equal evaluations, and the wall time until a result with a validation
  accuracy in the table's top 1 % (at least 83.57 %) was told.
- ``training``: regularized evolution training tiny CNNs on the embedded Fashion-MNIST
  subset, on 1 and 2 workers, and the same search without Ray; evaluations per hour and
  the workers' utilisation. The persistent compilation cache is off (unless
  ``--compilation-cache``), so that each configuration compiles what it trains.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The NB201 validation accuracy that the best 1 % of the table's 15,625 cells reach
# (12-epoch schedule, CIFAR-10): np.percentile(table.val("cifar10"), 99).
TOP_PERCENT_VAL = 83.572


def _history(workdir) -> list[dict]:
  from nasjax.search import read_history

  return read_history(workdir)


def _steady(history: list[dict]) -> dict:
  """Throughput and per-evaluation overhead from the history's worker records."""
  workers = [h["worker"] for h in history]
  start, end = min(w["start"] for w in workers), max(w["end"] for w in workers)
  gaps = []
  by_worker: dict = {}
  for w in workers:
    by_worker.setdefault(w["id"], []).append((w["start"], w["end"]))
  for spans in by_worker.values():
    spans.sort()
    gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
  busy = sum(w["end"] - w["start"] for w in workers)
  return {"evals": len(history), "span_seconds": end - start,
          "evals_per_second": len(history) / (end - start),
          "overhead_ms_mean": 1000 * float(np.mean(gaps)) if gaps else None,
          "overhead_ms_median": 1000 * float(np.median(gaps)) if gaps else None,
          "overhead_ms_p90": 1000 * float(np.percentile(gaps, 90)) if gaps else None,
          "busy_seconds_per_eval": busy / len(history)}


def part_overhead(workers: list[int], seconds: float, rounds: int, tmp: Path) -> list[dict]:
  from nasjax.search import NB201Evaluator, run
  from nasjax.search.ray_backend import RayBackend, SimulatedTime, WorkerPool

  rows = []
  evaluator = SimulatedTime(NB201Evaluator(), 0.0, seconds)
  for n in workers:
    t = time.perf_counter()
    with WorkerPool(evaluator, RayBackend(workers=n)) as pool:
      started = time.perf_counter() - t
      t = time.perf_counter()
      run("random", evaluator, n * rounds, tmp / f"overhead{n}", 0, quiet=True, backend=pool)
      total = time.perf_counter() - t
    row = {"workers": n, "T": seconds, "pool_start_seconds": started,
           "search_seconds": total, **_steady(_history(tmp / f"overhead{n}"))}
    row["ideal_evals_per_second"] = n / seconds
    row["fraction_of_ideal"] = row["evals_per_second"] / row["ideal_evals_per_second"]
    rows.append(row)
    print(json.dumps(row), file=sys.stderr)
  return rows


def _time_to(history: list[dict], target: float) -> float | None:
  """Seconds from the first evaluation's start until a result with validation accuracy
  at least ``target`` ended (None: none did)."""
  t0 = min(h["worker"]["start"] for h in history)
  for h in history:  # in the order told
    if h["metrics"]["val_accuracy"] >= target:
      return h["worker"]["end"] - t0
  return None


def part_rea(workers: list[int], seeds: int, evals: int, scale: float, tmp: Path
             ) -> list[dict]:
  from nasjax.search import NB201Evaluator, run
  from nasjax.search.ray_backend import RayBackend, SimulatedTime, WorkerPool

  evaluator = SimulatedTime(NB201Evaluator("cifar10"), scale)
  rows = []
  for n in workers:
    with WorkerPool(evaluator, RayBackend(workers=n)) as pool:
      modes = [("asynchronous", True)] + ([("synchronous", False)] if n > 1 else [])
      for mode, asynchronous in modes:
        pool.options = dataclasses.replace(pool.options, asynchronous=asynchronous)
        for seed in range(seeds):
          workdir = tmp / f"rea{n}-{mode}-{seed}"
          t = time.perf_counter()
          result = run("rea", evaluator, evals, workdir, seed, {"batch_size": n}
                       if not asynchronous else None, quiet=True, backend=pool)
          history = _history(workdir)
          row = {"workers": n, "mode": mode, "seed": seed,
                 "test_accuracy": result.summary["test_accuracy"],
                 "val_accuracy": result.summary["val_accuracy"],
                 "search_seconds": time.perf_counter() - t,
                 "seconds_to_top_percent": _time_to(history, TOP_PERCENT_VAL),
                 **_steady(history)}
          rows.append(row)
          print(json.dumps(row), file=sys.stderr)
  return rows


def _rea_table(rows: list[dict]) -> list[dict]:
  out = []
  keys = sorted({(r["workers"], r["mode"]) for r in rows})
  for n, mode in keys:
    rs = [r for r in rows if (r["workers"], r["mode"]) == (n, mode)]
    times = [r["seconds_to_top_percent"] for r in rs if r["seconds_to_top_percent"] is not None]
    acc = [r["test_accuracy"] for r in rs]
    out.append({"workers": n, "mode": mode, "runs": len(rs),
                "test_accuracy_mean": statistics.mean(acc),
                "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "reached_top_percent": len(times),
                "seconds_to_top_percent_median": statistics.median(times) if times else None,
                "search_seconds_median": statistics.median(r["search_seconds"] for r in rs),
                "evals_per_second_median": statistics.median(r["evals_per_second"]
                                                             for r in rs)})
  return out


def part_training(workers: list[int], evals: int, tmp: Path) -> list[dict]:
  from nasjax.search import PlainCNNSpace, TrainingEvaluator, run
  from nasjax.search.ray_backend import RayBackend, WorkerPool
  from nasjax.search.report import summarize

  space = PlainCNNSpace(num_blocks=2, max_layers=2, filters=(8, 16), kernels=(1, 3, 5))
  evaluator = TrainingEvaluator(space, dataset="fashion_mnist_small", data_limit=2048,
                                train={"epochs": 1.0, "batch_size": 64})
  config = {"population_size": 4, "sample_size": 2}
  rows = []
  t = time.perf_counter()
  local = run("rea", evaluator, evals, tmp / "train-local", 0, config, quiet=True)
  rows.append({"workers": 0, "backend": "local", "search_seconds": time.perf_counter() - t,
               "evals": local.evals,
               "evals_per_hour": 3600 * local.evals / (time.perf_counter() - t),
               "best_val_error": local.best["objectives"]["val_error"]})
  print(json.dumps(rows[-1]), file=sys.stderr)
  for n in workers:
    t = time.perf_counter()
    with WorkerPool(evaluator, RayBackend(workers=n)) as pool:
      started = time.perf_counter() - t
      t = time.perf_counter()
      result = run("rea", evaluator, evals, tmp / f"train{n}", 0, config, quiet=True,
                   backend=pool)
      seconds = time.perf_counter() - t
    s = summarize(tmp / f"train{n}")
    rows.append({"workers": n, "backend": "ray", "pool_start_seconds": started,
                 "search_seconds": seconds, "evals": result.evals,
                 "evals_per_hour": 3600 * result.evals / seconds,
                 "evals_per_hour_workers": s["workers"]["evaluations_per_hour"],
                 "utilisation": s["worker_utilisation"],
                 "best_val_error": result.best["objectives"]["val_error"],
                 "compile_seconds_sum": sum(h["metrics"].get("compile_seconds", 0.0)
                                            for h in result.history)})
    print(json.dumps(rows[-1]), file=sys.stderr)
  return rows


def _ints(text: str) -> list[int]:
  return [int(v) for v in text.split(",") if v]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--part", choices=["overhead", "rea", "training", "all"], default="all")
  p.add_argument("--workers", type=_ints, default=[1, 2, 4, 8, 16, 32])
  p.add_argument("--seconds", type=float, default=1.0, help="overhead: T, s per evaluation")
  p.add_argument("--rounds", type=int, default=10, help="overhead: evaluations per worker")
  p.add_argument("--rea-workers", type=_ints, default=[1, 4, 16])
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--evals", type=int, default=100)
  p.add_argument("--seconds-per-cost", type=float, default=0.003)
  p.add_argument("--train-evals", type=int, default=8)
  p.add_argument("--train-workers", type=_ints, default=[1, 2])
  p.add_argument("--compilation-cache", action="store_true", help="training: keep nasjax's "
                 "persistent compilation cache on (off by default, so that no configuration "
                 "reuses another's compilations)")
  p.add_argument("--json", action="store_true")
  p.add_argument("--out", help="also write the results to this JSON file")
  args = p.parse_args(argv)

  if not args.compilation_cache:  # before nasjax is imported here or in the workers
    os.environ["NASJAX_CACHE_DIR"] = "off"
  import ray

  cpus = max(args.workers + args.rea_workers + args.train_workers)
  temp = tempfile.mkdtemp(prefix="nasjax-bench-")
  ray.init(num_cpus=cpus, object_store_memory=200 << 20, include_dashboard=False,
           log_to_driver=False, logging_level="error", _temp_dir=temp)
  out = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                     "ray": ray.__version__, "load_before": os.getloadavg()}}
  tmp = Path(tempfile.mkdtemp(prefix="nasjax-scale-out-"))
  try:
    if args.part in ("overhead", "all"):
      out["overhead"] = part_overhead(args.workers, args.seconds, args.rounds, tmp)
    if args.part in ("rea", "all"):
      rows = part_rea(args.rea_workers, args.seeds, args.evals, args.seconds_per_cost, tmp)
      out["rea"] = {"runs": rows, "table": _rea_table(rows),
                    "target_val_accuracy": TOP_PERCENT_VAL}
    if args.part in ("training", "all"):
      out["training"] = part_training(args.train_workers, args.train_evals, tmp)
  finally:
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
  out["machine"]["load_after"] = os.getloadavg()
  text = json.dumps(out, indent=1)
  if args.out:
    Path(args.out).write_text(text)
  print(text if args.json else json.dumps({k: v for k, v in out.items() if k != "rea"} | (
      {"rea": out["rea"]["table"]} if "rea" in out else {}), indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
