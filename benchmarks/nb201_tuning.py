"""Choosing the tuned defaults of NAO, RL-NAS and PNAS on NAS-Bench-201 CIFAR-100 alone.

Each strategy has a small, fixed set of candidate settings (:data:`CANDIDATES`, its
paper's settings among them; every candidate names all the options that were tuned, so
its results do not depend on the registered defaults). Each candidate runs ``--runs``
searches on cifar100 under NB201's protocol (seeds ``seed .. seed + runs - 1``, by
default 1000 and up, disjoint from the seeds the results pages report); the registered
default is the candidate with the highest mean 200-epoch test accuracy on cifar100.
CIFAR-10 and ImageNet16-120 are not looked at.

    python benchmarks/nb201_tuning.py --strategy rl_nas --runs 300
    python benchmarks/nb201_tuning.py --strategy pnas --runs 40 --candidates 0,1
    python benchmarks/nb201_tuning.py --strategy nao --runs 60 --candidates 2 --json

A strategy whose seeds run vectorised (``rl_nas``) runs them in one program; NAO's run
one after another (the same searches as ``nasjax search --seed``), PNAS's always do.
"""

from __future__ import annotations

import argparse
import json
import math
import time

# The candidates of each strategy, in the order they are numbered on the command line.
CANDIDATES = {
    "nao": [
        ("paper: first, random fallback, minmax, top_k 10, 100 epochs",
         {"select": "first", "pool_seeds": 0, "fallback": "random", "target": "minmax",
          "top_k": 10, "epochs": 100}),
        ("pool", {"select": "pool", "pool_seeds": 0, "fallback": "random",
                  "target": "minmax", "top_k": 10, "epochs": 100}),
        ("pool + predicted fallback", {"select": "pool", "pool_seeds": 0,
                                       "fallback": "predicted", "target": "minmax",
                                       "top_k": 10, "epochs": 100}),
        ("pool + predicted + rank", {"select": "pool", "pool_seeds": 0,
                                     "fallback": "predicted", "target": "rank",
                                     "top_k": 10, "epochs": 100}),
        ("pool + predicted + rank, top_k 5, 50 epochs",
         {"select": "pool", "pool_seeds": 0, "fallback": "predicted", "target": "rank",
          "top_k": 5, "epochs": 50}),
    ],
    "rl_nas": [
        ("paper: batch 8, lr 0.0006, no entropy bonus",
         {"batch_size": 8, "learning_rate": 0.0006, "entropy_weight": 0.0,
          "baseline_decay": 0.9}),
        ("batch 1, lr 0.0025", {"batch_size": 1, "learning_rate": 0.0025,
                                "entropy_weight": 0.001, "baseline_decay": 0.9}),
        ("batch 1, lr 0.005", {"batch_size": 1, "learning_rate": 0.005,
                               "entropy_weight": 0.001, "baseline_decay": 0.9}),
        ("batch 1, lr 0.01", {"batch_size": 1, "learning_rate": 0.01,
                              "entropy_weight": 0.001, "baseline_decay": 0.9}),
        ("batch 4, lr 0.005", {"batch_size": 4, "learning_rate": 0.005,
                               "entropy_weight": 0.001, "baseline_decay": 0.9}),
        ("batch 1, lr 0.005, no entropy bonus",
         {"batch_size": 1, "learning_rate": 0.005, "entropy_weight": 0.0,
          "baseline_decay": 0.9}),
    ],
    "pnas": [
        ("paper: K 256, LSTM ensemble", {"beam": 256, "predictor": "lstm"}),
        ("K 8, LSTM + MLP", {"beam": 8, "predictor": "both"}),
        ("K 16, LSTM + MLP", {"beam": 16, "predictor": "both"}),
        ("K 32, LSTM + MLP", {"beam": 32, "predictor": "both"}),
        ("K 16, MLP ensemble", {"beam": 16, "predictor": "mlp"}),
        ("K 16, LSTM ensemble", {"beam": 16, "predictor": "lstm"}),
    ],
}
TUNING_DATASET = "cifar100"


def run_candidate(strategy: str, index: int, runs: int, seed: int,
                  time_budget: float) -> dict:
  """``bench_nb201`` of candidate ``index`` of ``strategy`` on the tuning data set."""
  from nasjax.search import bench

  label, config = CANDIDATES[strategy][index]
  out = bench.bench_nb201(strategy, TUNING_DATASET, runs, time_budget, seed, config,
                          vectorize=strategy != "nao")
  out.update(candidate=index, label=label, config=config)
  # Only the tuning data set's result is used; the other data sets are left out.
  del out["test_by_dataset"]
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--strategy", required=True, choices=sorted(CANDIDATES))
  parser.add_argument("--candidates", default=None,
                      help="comma-separated candidate numbers (default: all)")
  parser.add_argument("--runs", type=int, default=40)
  parser.add_argument("--seed", type=int, default=1000,
                      help="first seed (the results pages report seeds from 0)")
  parser.add_argument("--time-budget", type=float, default=12000.0)
  parser.add_argument("--json", action="store_true", help="one JSON object per line")
  args = parser.parse_args(argv)
  if args.runs < 2:
    raise ValueError(f"--runs must be at least 2, got {args.runs}")
  count = len(CANDIDATES[args.strategy])
  chosen = (range(count) if args.candidates is None
            else [int(c) for c in args.candidates.split(",")])
  for c in chosen:
    if not 0 <= c < count:
      raise ValueError(f"--candidates: {args.strategy} has candidates 0..{count - 1}, got {c}")

  from nasjax import runtime

  runtime.enable_compilation_cache()
  start = time.perf_counter()
  rows = []
  for c in chosen:
    rows.append(run_candidate(args.strategy, c, args.runs, args.seed, args.time_budget))
    if args.json:
      print(json.dumps(rows[-1]), flush=True)
  if not args.json:
    print(f"| # | {args.strategy} candidate | runs | {TUNING_DATASET} test acc. mean ± std (%) "
          "| s.e.m. | queries/run | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
      sem = r["std"] * math.sqrt(r["runs"] / (r["runs"] - 1)) / math.sqrt(r["runs"])
      print(f"| {r['candidate']} | {r['label']} | {r['runs']} | {r['mean']:.2f} ± "
            f"{r['std']:.2f} | {sem:.3f} | {r['mean_queries']:.1f} | "
            f"{r['wall_seconds']:.0f} |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
