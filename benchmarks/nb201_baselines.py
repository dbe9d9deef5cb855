"""NAS-Bench-201 baselines under NB201's own protocol: random search, REA, REINFORCE.

Each strategy runs ``--runs`` independent searches (seeds ``seed .. seed + runs - 1``) on
each data set with the 12,000 s simulated budget; a run's result is the 200-epoch test
accuracy of its best-by-validation architecture. Two tables:

- as NB201's Table 5: searched on CIFAR-10 (its 12-epoch validation accuracy), the cell
  each run chose looked up on the CIFAR-10, CIFAR-100 and ImageNet16-120 test sets,
  next to the values NB201 reports;
- per data set: searched on each data set's own 12-epoch validation accuracy.

The query whose simulated time crosses the budget counts as each strategy declares
(``budget_crossing``: NB201's scripts of random search and REA drop it, its REINFORCE
script keeps it).

    python benchmarks/nb201_baselines.py --runs 500
    python benchmarks/nb201_baselines.py --runs 100 --datasets cifar10 --json
"""

from __future__ import annotations

import argparse
import json
import time

DATASETS = ("cifar10", "cifar100", "imagenet16-120")
# Dong & Yang, "NAS-Bench-201", ICLR 2020, Table 5: searched on CIFAR-10, test accuracy
# of the chosen cell on each data set, mean and std over 500 runs.
PUBLISHED = {
    "random": {"cifar10": (93.70, 0.36), "cifar100": (71.04, 1.07),
               "imagenet16-120": (44.57, 1.25)},
    "rea": {"cifar10": (93.92, 0.30), "cifar100": (71.84, 0.99),
            "imagenet16-120": (45.54, 1.03)},
    "reinforce": {"cifar10": (93.85, 0.37), "cifar100": (71.71, 1.09),
                  "imagenet16-120": (45.24, 1.18)},
}


def _cell(mean: float, std: float) -> str:
  return f"{mean:.2f} ± {std:.2f}"


def table5(rows: list[dict]) -> list[str]:
  """Markdown lines: the searches on cifar10, looked up on every data set."""
  head = " | ".join(f"{d} test (%) | NB201 reports" for d in DATASETS)
  lines = [f"| strategy | runs | {head} |", "| --- | --- |" + " --- | --- |" * len(DATASETS)]
  for r in rows:
    if r["dataset"] != "cifar10":
      continue
    pub = PUBLISHED.get(r["strategy"], {})
    cells = " | ".join(f"{_cell(**r['test_by_dataset'][d])} | "
                       f"{_cell(*pub[d]) if d in pub else ''}" for d in DATASETS)
    lines.append(f"| {r['strategy']} | {r['runs']} | {cells} |")
  return lines


def per_dataset(rows: list[dict]) -> list[str]:
  """Markdown lines: each search scored on the data set it searched."""
  lines = ["| searched on | strategy | runs | test acc. mean ± std (%) | crossing query | "
           "queries/run | seconds |", "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    lines.append(f"| {r['dataset']} | {r['strategy']} | {r['runs']} | "
                 f"{_cell(r['mean'], r['std'])} | {r['crossing']} | "
                 f"{r['mean_queries']:.1f} | {r['wall_seconds']:.2f} |")
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--strategies", default="random,rea,reinforce")
  parser.add_argument("--datasets", default=",".join(DATASETS))
  parser.add_argument("--runs", type=int, default=500)
  parser.add_argument("--time-budget", type=float, default=12000.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="one JSON object per line")
  args = parser.parse_args(argv)

  from nasjax.search import bench

  rows = []
  start = time.perf_counter()
  for dataset in args.datasets.split(","):
    for strategy in args.strategies.split(","):
      rows.append(bench.bench_nb201(strategy, dataset, args.runs, args.time_budget,
                                    args.seed))
      if args.json:
        print(json.dumps(rows[-1]), flush=True)
  if not args.json:
    print("\n".join(table5(rows) + [""] + per_dataset(rows)))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
