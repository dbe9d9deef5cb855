"""Candidates evaluated per hour by every registered strategy, on one Fashion-MNIST budget.

    python benchmarks/strategy_speed.py [--json PATH] [--evals 8] [--limit 4000]
        [--epochs 1.0] [--strategies a,b,...]

Every strategy in the registry (all modules of :mod:`nasjax.search` imported, so a new
strategy is included, and a strategy this file has no plan for is an error) runs a
search of ``--evals`` evaluations with a :class:`nasjax.search.TrainingEvaluator` on the
same data: ``--limit`` images of the full Fashion-MNIST (10% for validation), every
candidate trained for ``--epochs`` (SGD, batch 128, cosine) from its initial or
inherited weights. Strategies that search a cell space (one-shot supernets, PNAS,
SMASH) train their own supernet or hypernetwork on the same images for one epoch first;
that time is part of their wall time.

Each strategy runs in its own process with a fresh, empty persistent compilation cache,
so no strategy reuses another's compiled programs: each pays the compile cost a new
search pays. The figures per strategy:

- ``candidates_per_hour``: evaluations over the run's wall time (from the strategy's
  first ``init`` to the last record), times 3,600;
- ``train_share``: the share of wall time spent in the evaluator's training of the
  candidates (the charged seconds); the rest is the strategy's own work (sampling,
  morphisms, distillation, controllers, surrogate models, supernets) and compiling;
- ``compile_share``: the share of wall time the process spent compiling (all programs,
  :func:`nasjax.runtime.compile_seconds`);
- ``ratio_vs_random``: candidates per hour over random search's in the same search
  space, measured in the same command (random search is the cheapest possible
  strategy: its overhead is only the evaluation itself).

Spaces differ in candidate cost (a plain CNN, an NB-201 cell network, a PNAS cell
network, a SMASH network), so compare rates within a space, or the shares across spaces.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

# The search space of each strategy, with its constructor options.
SPACES = {
    "plain_cnn": {"num_blocks": 3, "max_layers": 2, "filters": [16, 32, 64],
                  "kernels": [3, 5]},
    "nb201": {"C": 8, "N": 1},
    "pnas_cell": {"max_blocks": 3, "C": 8, "layers": 3},
    "smash": {"num_blocks": 2, "max_banks": 2, "bank_widths": [8, 16], "max_ops": 2,
              "max_convs": 2, "kernels": [3, 5], "dilations": [1, 2], "groups": [1, 2],
              "width_factors": [1, 2], "stem_stride": 2, "unit": 8},
}


def _supernet(steps: int, **extra) -> dict:
  """Options of a weight-sharing strategy: ``steps`` shared-weight steps of batch 64."""
  return {"steps": steps, "batch_size": 64, **extra}


def plans(limit: int, evals: int) -> dict:
  """``{strategy: (space, strategy config)}``: the configuration each strategy runs."""
  proposals = max(2 * evals, 16)
  steps = max(1, int(0.9 * limit) // 64)  # one epoch of the training split
  return {
      "random": ("plain_cnn", {}),
      "rea": ("plain_cnn", {"population_size": 6, "sample_size": 3}),
      "reinforce": ("plain_cnn", {}),
      "rl_nas": ("plain_cnn", {}),
      "nsga2": ("plain_cnn", {"population_size": 6}),
      "nao": ("plain_cnn", {"seed_size": max(evals // 2, 2), "top_k": 3, "epochs": 50}),
      "lemonade": ("plain_cnn", {"n_pc": 8, "n_ac": 3, "distill_steps": 20}),
      "eas": ("plain_cnn", {"start": {"variant": "tiny", "num_blocks": 2},
                            "num_children": 4}),
      "pnas": ("pnas_cell", {"beam": 4, "first_level": 4, "members": 3, "fit_steps": 50}),
      "spos": ("nb201", _supernet(steps, cycles=10, population_size=8, sample_size=3,
                                  proposals=proposals)),
      "darts": ("nb201", _supernet(steps, proposals=proposals)),
      "enas": ("nb201", _supernet(steps, derive_samples=proposals)),
      "nao_ws": ("nb201", _supernet(steps, pool_size=16, nao_top_k=3, nao_epochs=50)),
      "smash": ("smash", _supernet(steps, num_samples=proposals, proposals=proposals,
                                   eval_examples=500)),
  }


def registered() -> list[str]:
  """Every registered strategy (after importing all of :mod:`nasjax.search`)."""
  from nasjax.search.base import load_strategies

  return sorted(load_strategies())


def worker(name: str, args) -> dict:
  """Run strategy ``name``'s search in this process (in ``args.space`` if given, else
  its plan's space) and time it."""
  import numpy as np

  from nasjax import runtime
  from nasjax.search import runner
  from nasjax.search.evaluators import TrainingEvaluator
  from nasjax.search.spaces import make_space

  registered()  # strategies' modules register their spaces (e.g. pnas_cell) too
  space_name, config = plans(args.limit, args.evals)[name]
  if args.space:
    space_name = args.space
  evaluator = TrainingEvaluator(
      make_space(space_name, **SPACES[space_name]), dataset="fashion_mnist",
      data_limit=args.limit, val_fraction=0.1,
      train={"epochs": args.epochs, "batch_size": 128, "learning_rate": 0.05})
  _ = evaluator.data  # loading the images is not the strategy's cost
  compile0 = runtime.compile_seconds()
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    result = runner.run(name, evaluator, runner.Budget(max_evals=args.evals), workdir,
                        seed=0, config=config, quiet=True)
    wall = time.perf_counter() - start
  history = result.history
  ok = [h for h in history if h["status"] == "ok"]
  return {"strategy": name, "space": space_name, "evals": len(history), "ok": len(ok),
          "wall_seconds": wall, "charged_seconds": result.elapsed,
          "compile_seconds": runtime.compile_seconds() - compile0,
          "candidates_per_hour": 3600.0 * len(history) / wall,
          "train_share": result.elapsed / wall,
          "compile_share": (runtime.compile_seconds() - compile0) / wall,
          "best_val_error": min((h["objectives"]["val_error"] for h in ok), default=None),
          # What the candidates cost: their size and training time, and repeats the
          # runner answered from its cache without training.
          "cached": sum(bool(h["metrics"].get("cached")) for h in history),
          "mean_params": float(np.mean([h["metrics"]["params"] for h in ok
                                        if "params" in h["metrics"]] or [np.nan])),
          "train_seconds_per_candidate": result.elapsed / max(1, len(history))}


def run_one(name: str, args, space: str | None = None) -> dict:
  """Strategy ``name`` (in ``space``, default its plan's) in a fresh process."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
  with tempfile.TemporaryDirectory() as cache:
    env = {**os.environ, "NASJAX_CACHE_DIR": cache, "PYTHONPATH": path}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--evals",
           str(args.evals), "--limit", str(args.limit), "--epochs", str(args.epochs)]
    if space:
      cmd += ["--space", space]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if proc.returncode:  # reported in the table; the other strategies still run
    print(proc.stderr[-3000:], file=sys.stderr)
    space = space or plans(args.limit, args.evals)[name][0]
    return {"strategy": name, "space": space, "error": proc.stderr.strip().splitlines()[-1]
            if proc.stderr.strip() else f"exit status {proc.returncode}"}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--evals", type=int, default=8, help="evaluations per strategy")
  parser.add_argument("--limit", type=int, default=4000, help="Fashion-MNIST images used")
  parser.add_argument("--epochs", type=float, default=1.0, help="training per candidate")
  parser.add_argument("--strategies", help="comma-separated subset (default: all)")
  parser.add_argument("--json", help="also write the rows to this file")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--space", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.evals < 2 or args.limit < 1000 or not args.epochs > 0:
    raise SystemExit(f"need --evals >= 2, --limit >= 1000 and --epochs > 0, got "
                     f"{args.evals}, {args.limit}, {args.epochs}")
  if args.worker:
    print(json.dumps(worker(args.worker, args)))
    return 0
  names = registered()
  missing = sorted(set(names) - set(plans(args.limit, args.evals)))
  if missing:
    raise SystemExit(f"no benchmark plan for registered strategies {missing}")
  if args.strategies:
    chosen = args.strategies.split(",")
    unknown = sorted(set(chosen) - set(names))
    if unknown:
      raise SystemExit(f"unknown strategies {unknown}; registered: {names}")
    names = chosen
  load = os.getloadavg()[0]
  rows = []
  for name in names:
    rows.append(run_one(name, args))
    print(f"{name}: {rows[-1].get('candidates_per_hour', 0):.0f} candidates/h",
          file=sys.stderr, flush=True)
  failed = [r for r in rows if "error" in r]
  rows = [r for r in rows if "error" not in r]
  base = {}
  for space in sorted({r["space"] for r in rows}):
    if "random" in names and not any(r["strategy"] == "random" and r["space"] == space
                                     for r in rows):
      base[space] = run_one("random", args, space)  # the baseline of its ratios
  for r in rows:
    ref = next((x for x in rows if x["strategy"] == "random" and x["space"] == r["space"]),
               base.get(r["space"]))
    r["ratio_vs_random"] = (r["candidates_per_hour"] / ref["candidates_per_hour"]
                            if ref and "error" not in ref else None)
  out = {"benchmark": "strategy_speed", "evals": args.evals, "limit": args.limit,
         "epochs": args.epochs, "rows": rows, "failed": failed, "random_baselines": base,
         "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
         "cpus": os.cpu_count(), "python": platform.python_version()}
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)
  print("| strategy | space | evals | wall s | candidates/h | vs random | train share | "
        "compile share | mean params | train s per candidate | best val error % |")
  print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  for r in rows:
    ratio = "" if r["ratio_vs_random"] is None else f"{r['ratio_vs_random']:.2f}"
    best = "" if r["best_val_error"] is None else f"{r['best_val_error']:.2f}"
    print(f"| {r['strategy']} | {r['space']} | {r['evals']} | {r['wall_seconds']:.0f} | "
          f"{r['candidates_per_hour']:.0f} | {ratio} | {r['train_share']:.2f} | "
          f"{r['compile_share']:.2f} | {r.get('mean_params', math.nan):,.0f} | "
          f"{r.get('train_seconds_per_candidate', math.nan):.1f} | {best} |")
  for r in failed:
    print(f"| {r['strategy']} | failed: {r['error']} |")
  print(f"load average {out['load_average'][0]} -> {out['load_average'][1]} on "
        f"{out['cpus']} CPUs")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
