"""LEMONADE against random search and NSGA-II on NAS-Bench-Macro (error and parameters).

    python benchmarks/lemonade_macro.py [--runs 50] [--evals 300] [--json PATH]

Every strategy gets ``--runs`` independent searches (seeds ``0 .. runs-1``) of ``--evals``
table queries each; a run's score is the hypervolume of the (mean test error, params)
front it found, as a fraction of the true front's (objectives normalised to [0, 1] over
the whole table, reference point (1.1, 1.1); :func:`nasjax.search.bench.bench_macro`,
the same as ``nasjax bench macro --strategy NAME --evals 300 --runs 50``). Prints one
line per strategy: mean, population std, min and max of the fraction, and wall seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from nasjax.search import bench
from nasjax.search.base import make_strategy, strategy_entry
from nasjax.search.evaluators import MacroEvaluator

STRATEGIES = {
    "random": {"batch_size": 10},
    "nsga2": {"population_size": 20},
    "lemonade": {"n_pc": 16, "n_ac": 4},
}


def fractions(name: str, config: dict, runs: int, evals: int) -> np.ndarray:
  """Per-run hypervolume fractions of strategy ``name`` (seeds ``0 .. runs-1``), computed
  by the functions behind ``nasjax bench macro``."""
  evaluator = MacroEvaluator(("error", "params"))
  strat = make_strategy(name, evaluator.space, config, num_objectives=2)
  seqs = bench.query_sequences(strat, evaluator, np.arange(runs), max_evals=evals,
                               jittable=strategy_entry(name).jittable)
  hvs, true_hv = bench.macro_hypervolumes(seqs, evaluator)
  return hvs / true_hv


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=50)
  parser.add_argument("--evals", type=int, default=300)
  parser.add_argument("--strategies", default=",".join(STRATEGIES),
                      help="comma-separated subset of " + ",".join(STRATEGIES))
  parser.add_argument("--json", help="also write the results to this file")
  args = parser.parse_args(argv)
  rows = []
  for name in args.strategies.split(","):
    if name not in STRATEGIES:
      raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}")
    start = time.perf_counter()
    frac = fractions(name, STRATEGIES[name], args.runs, args.evals)
    wall = time.perf_counter() - start
    row = {"strategy": name, "config": STRATEGIES[name], "runs": args.runs,
           "evals": args.evals, "hv_fraction_mean": float(frac.mean()),
           "hv_fraction_std": float(frac.std()), "hv_fraction_min": float(frac.min()),
           "hv_fraction_max": float(frac.max()), "wall_seconds": wall}
    rows.append(row)
    print(f"{name:<10} hv fraction {frac.mean():.4f} +- {frac.std():.4f} "
          f"(min {frac.min():.4f}, max {frac.max():.4f}; {args.runs} runs x {args.evals} "
          f"evals, {wall:.0f} s)", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": platform.platform(), "python": sys.version.split()[0],
                 "results": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
