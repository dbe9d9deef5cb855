"""NAO against random search and REA under NAS-Bench-201's protocol (CIFAR-10).

Every strategy runs ``--runs`` independent searches (seeds ``seed .. seed + runs - 1``)
with the 12,000 s simulated budget; the table shows the mean and std of the 200-epoch
test accuracy of the best-by-validation architecture. Random search and REA run
vectorised (:func:`nasjax.search.bench.bench_nb201`); NAO runs the same ask / evaluate /
tell loop with the same keys as :func:`nasjax.search.bench.query_sequences`, keeping
each run's final state, from which it also reports the NAO model's quality on
architectures the run never evaluated:

- ``tau``: Kendall's tau between the predictor's scores and the 12-epoch validation
  accuracy of ``--held-out`` random architectures;
- ``reconstruction``: the fraction of those architectures the decoder reproduces exactly
  from their own encoding, and the same fraction on the run's evaluated architectures;
- how many NAO proposals gradient steps found and how many were random fallbacks.

    python benchmarks/nb201_nao.py --runs 100
    python benchmarks/nb201_nao.py --runs 4 --nao-config '{"epochs": 50}' --json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
  """Kendall's tau-b of two score vectors."""
  da = np.sign(a[:, None] - a[None, :])
  db = np.sign(b[:, None] - b[None, :])
  iu = np.triu_indices(len(a), 1)
  da, db = da[iu], db[iu]
  denom = np.sqrt(np.sum(da != 0) * np.sum(db != 0))
  return float(np.sum(da * db) / denom) if denom > 0 else float("nan")


def nao_runs(config: dict, seeds, time_budget: float, held_out: int) -> dict:
  """NAO's query sequences and per-run model diagnostics."""
  from nasjax.search import bench
  from nasjax.search.base import generation_keys, init_keys, make_strategy
  from nasjax.search.evaluators import NB201Evaluator

  evaluator = NB201Evaluator("cifar10")
  space = evaluator.space
  strategy = make_strategy("nao", space, config)
  F, cost = evaluator.arrays()
  val = evaluator.table.val("cifar10")
  rows, diag = [], []
  start = time.perf_counter()
  for seed in seeds:
    key, k_init = init_keys(int(seed))
    state = strategy.init(k_init)
    seq, elapsed = [], 0.0
    while elapsed < time_budget:
      key, k_ask, _, k_tell = generation_keys(key)
      cands, state = strategy.ask(k_ask, state)
      idx = [space.hash(c) for c in np.asarray(cands)]
      seq += idx
      elapsed += float(np.sum(cost[idx]))
      state = strategy.tell(k_tell, state, cands, F[idx, 0])
    rows.append(seq)
    # Held-out architectures: uniform over the cells this run never queried.
    rng = np.random.default_rng(int(seed) + 10_000)
    pool = np.setdiff1d(np.arange(space.size), seq)
    held = rng.choice(pool, held_out, replace=False)
    codes = np.stack([space.from_index(int(i)) for i in held])
    model, params = strategy.model, state.params
    pred = np.asarray(model.predict(params, codes))
    rec = np.asarray(model.reconstruct(params, codes))
    told = np.asarray(state.codes)
    rec_told = np.asarray(model.reconstruct(params, told))
    diag.append({"tau": _kendall_tau(pred, val[held]),
                 "reconstruction_held_out": float(np.mean(np.all(rec == codes, axis=1))),
                 "reconstruction_evaluated": float(np.mean(np.all(rec_told == told, axis=1))),
                 "stepped": int(state.stepped), "fallback": int(state.fallback)})
  wall = time.perf_counter() - start
  width = max(len(r) for r in rows)
  seqs = np.array([r + [-1] * (width - len(r)) for r in rows], np.int64)
  res = bench.nb201_results(seqs, evaluator, time_budget)
  mean = lambda k: float(np.mean([d[k] for d in diag]))
  return {"benchmark": "nb201", "strategy": "nao", "dataset": "cifar10", "runs": len(seeds),
          "time_budget": time_budget, "seed": int(seeds[0]),
          "mean": float(np.mean(res["test"])), "std": float(np.std(res["test"])),
          "min": float(np.min(res["test"])), "max": float(np.max(res["test"])),
          "mean_queries": float(np.mean(res["queries"])), "wall_seconds": wall,
          "config": strategy.config(), "tau_mean": mean("tau"),
          "tau_std": float(np.std([d["tau"] for d in diag])),
          "reconstruction_held_out": mean("reconstruction_held_out"),
          "reconstruction_evaluated": mean("reconstruction_evaluated"),
          "stepped_mean": mean("stepped"), "fallback_mean": mean("fallback")}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=100)
  parser.add_argument("--time-budget", type=float, default=12000.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--baselines", default="random,rea",
                      help="comma-separated strategies run next to NAO ('' for none)")
  parser.add_argument("--nao-config", default="{}", help="JSON options for NAO")
  parser.add_argument("--held-out", type=int, default=500,
                      help="architectures per run for the predictor's tau and reconstruction")
  parser.add_argument("--json", action="store_true", help="one JSON object per line")
  args = parser.parse_args(argv)
  if args.runs < 1:
    raise ValueError(f"--runs must be positive, got {args.runs}")

  from nasjax import runtime
  from nasjax.search import bench

  runtime.enable_compilation_cache()
  start = time.perf_counter()
  rows = []
  for name in [s for s in args.baselines.split(",") if s]:
    rows.append(bench.bench_nb201(name, "cifar10", args.runs, args.time_budget, args.seed))
    if args.json:
      print(json.dumps(rows[-1]), flush=True)
  seeds = np.arange(args.seed, args.seed + args.runs)
  rows.append(nao_runs(json.loads(args.nao_config), seeds, args.time_budget, args.held_out))
  if args.json:
    print(json.dumps(rows[-1]), flush=True)
  else:
    print("| strategy | runs | test accuracy, mean ± std (%) | min | max | queries/run | "
          "seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
      print(f"| {r['strategy']} | {r['runs']} | {r['mean']:.2f} ± {r['std']:.2f} | "
            f"{r['min']:.2f} | {r['max']:.2f} | {r['mean_queries']:.1f} | "
            f"{r['wall_seconds']:.1f} |")
    nao = rows[-1]
    print(f"\nNAO model on {args.held_out} held-out architectures per run: Kendall tau "
          f"{nao['tau_mean']:.3f} ± {nao['tau_std']:.3f}; exact reconstruction "
          f"{nao['reconstruction_held_out']:.3f} (held-out), "
          f"{nao['reconstruction_evaluated']:.3f} (evaluated); proposals per run by "
          f"gradient steps {nao['stepped_mean']:.1f}, random fallbacks "
          f"{nao['fallback_mean']:.1f}")
    print(f"NAO config: {json.dumps(nao['config'])}")
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
