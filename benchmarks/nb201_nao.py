"""NAO against random search and REA under NAS-Bench-201's protocol.

Every strategy runs ``--runs`` independent searches (seeds ``seed .. seed + runs - 1``)
on ``--dataset`` with the 12,000 s simulated budget; the table shows the mean and std of
the 200-epoch test accuracy of the best-by-validation architecture, on the searched data
set and (as NB201's Table 5 reports a search on CIFAR-10) on all three data sets. The
query that crosses the budget counts as each strategy declares
(``nasjax.search.bench.charged_prefix``). ``--preset paper`` runs NAO with its paper's
rules instead of the registered defaults. Random search and REA run
vectorised (:func:`nasjax.search.bench.bench_nb201`); so does NAO
(:func:`nasjax.search.bench.query_sequences`, all seeds in one program, or one seed after
another with ``--loop``), keeping each run's final state, from which it also reports the
NAO model's quality on architectures the run never evaluated:

- ``tau``: Kendall's tau between the predictor's scores and the 12-epoch validation
  accuracy of ``--held-out`` random architectures;
- ``reconstruction``: the fraction of those architectures the decoder reproduces exactly
  from their own encoding, and the same fraction on the run's evaluated architectures;
- how many NAO proposals gradient steps found and how many were random fallbacks;
- Welch's t of NAO's mean test accuracy against each baseline's.

    python benchmarks/nb201_nao.py --runs 60 --loop
    python benchmarks/nb201_nao.py --runs 60 --loop --preset paper --baselines ''
    python benchmarks/nb201_nao.py --runs 60 --loop --dataset imagenet16-120
    python benchmarks/nb201_nao.py --runs 4 --nao-config '{"epochs": 50}' --json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _welch_t(a: dict, b: dict) -> float:
  """Welch's t of the mean test accuracy of result ``a`` against ``b`` (their ``std`` is
  the population std over ``runs``)."""
  var = lambda r: r["std"] ** 2 / (r["runs"] - 1) if r["runs"] > 1 else float("nan")
  return (a["mean"] - b["mean"]) / np.sqrt(var(a) + var(b))


def nao_runs(config: dict, seeds, time_budget: float, held_out: int,
             vectorize: bool = True, dataset: str = "cifar10",
             preset: str | None = None) -> dict:
  """NAO's query sequences and per-run model diagnostics (options: ``config`` over
  ``preset``'s, or over the registered defaults)."""
  import jax

  from nasjax.search import bench
  from nasjax.search.base import make_strategy, strategy_config
  from nasjax.search.evaluators import NB201Evaluator
  from nasjax.search.options import preset_config
  from nasjax.stats import kendall_tau

  if preset is not None:
    config = preset_config("nao", preset, config)
  evaluator = NB201Evaluator(dataset)
  space = evaluator.space
  strategy = make_strategy("nao", space, config)
  val = evaluator.table.val(evaluator.dataset)
  start = time.perf_counter()
  seqs, states = bench.query_sequences(strategy, evaluator, seeds, time_budget=time_budget,
                                       vectorize=vectorize, final_states=True)
  wall = time.perf_counter() - start
  # Held-out architectures: uniform over the cells each run never queried.
  held = np.stack([np.random.default_rng(int(seed) + 10_000).choice(
      np.setdiff1d(np.arange(space.size), row[row >= 0]), held_out, replace=False)
      for seed, row in zip(seeds, seqs)])
  held_codes = np.stack([space.from_index(int(i)) for i in held.ravel()]).reshape(
      held.shape + (space.length,))
  model = strategy.model
  over_runs = lambda f, *a: np.asarray(jax.jit(jax.vmap(f))(*a))
  pred = over_runs(model.predict, states.params, held_codes)
  rec = over_runs(model.reconstruct, states.params, held_codes)
  told = np.asarray(states.codes)
  rec_told = over_runs(model.reconstruct, states.params, told)
  kept = np.arange(told.shape[1])[None, :] < np.asarray(states.count)[:, None]
  hit_told = np.all(rec_told == told, axis=2)
  diag = {"tau": np.array([kendall_tau(p, val[h]) for p, h in zip(pred, held)]),
          "reconstruction_held_out": np.mean(np.all(rec == held_codes, axis=2), axis=1),
          "reconstruction_evaluated": np.sum(hit_told & kept, axis=1) / kept.sum(axis=1),
          "stepped": np.asarray(states.stepped), "fallback": np.asarray(states.fallback)}
  res = bench.nb201_results(seqs, evaluator, time_budget, bench.crossing_rule(strategy))
  mean = lambda k: float(np.mean(diag[k]))
  return {"benchmark": "nb201", "strategy": "nao", "preset": preset,
          "dataset": evaluator.dataset, "runs": len(seeds), "time_budget": time_budget,
          "seed": int(seeds[0]), "crossing": bench.crossing_rule(strategy),
          "test_by_dataset": bench.accuracy_by_dataset(res),
          "mean": float(np.mean(res["test"])), "std": float(np.std(res["test"])),
          "min": float(np.min(res["test"])), "max": float(np.max(res["test"])),
          "mean_queries": float(np.mean(res["queries"])), "wall_seconds": wall,
          "max_told": int(np.max(states.count)), "config": strategy_config(strategy),
          "tau_mean": mean("tau"), "tau_std": float(np.std(diag["tau"])),
          "reconstruction_held_out": mean("reconstruction_held_out"),
          "reconstruction_evaluated": mean("reconstruction_evaluated"),
          "stepped_mean": mean("stepped"), "fallback_mean": mean("fallback")}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=60)
  parser.add_argument("--time-budget", type=float, default=12000.0)
  parser.add_argument("--seed", "--seed-offset", type=int, default=0,
                      help="first seed: runs use seeds seed .. seed + runs - 1, for every "
                           "strategy")
  parser.add_argument("--baselines", default="random,rea",
                      help="comma-separated strategies run next to NAO ('' for none)")
  parser.add_argument("--dataset", default="cifar10",
                      help="the data set searched: cifar10|cifar100|imagenet16-120")
  parser.add_argument("--preset", default=None,
                      help="NAO's options preset (paper: the paper's rules); --nao-config "
                           "applies on top")
  parser.add_argument("--nao-config", default="{}", help="JSON options for NAO")
  parser.add_argument("--held-out", type=int, default=500,
                      help="architectures per run for the predictor's tau and reconstruction")
  parser.add_argument("--loop", action="store_true",
                      help="run NAO's seeds one after another instead of vectorised")
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
    rows.append(bench.bench_nb201(name, args.dataset, args.runs, args.time_budget,
                                  args.seed))
    if args.json:
      print(json.dumps(rows[-1]), flush=True)
  seeds = np.arange(args.seed, args.seed + args.runs)
  rows.append(nao_runs(json.loads(args.nao_config), seeds, args.time_budget, args.held_out,
                       vectorize=not args.loop, dataset=args.dataset, preset=args.preset))
  if args.json:
    print(json.dumps(rows[-1]), flush=True)
  else:
    print(f"searched on {args.dataset}\n")
    print("| strategy | runs | test accuracy, mean ± std (%) | min | max | queries/run | "
          "seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
      print(f"| {r['strategy']} | {r['runs']} | {r['mean']:.2f} ± {r['std']:.2f} | "
            f"{r['min']:.2f} | {r['max']:.2f} | {r['mean_queries']:.1f} | "
            f"{r['wall_seconds']:.1f} |")
    print("\nthe same cells on every data set (test accuracy, mean ± std, %)\n")
    names = list(rows[0]["test_by_dataset"])
    print("| strategy | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for r in rows:
      by = r["test_by_dataset"]
      print(f"| {r['strategy']} | " + " | ".join(
          f"{by[d]['mean']:.2f} ± {by[d]['std']:.2f}" for d in names) + " |")
    nao = rows[-1]
    print(f"\nNAO model on {args.held_out} held-out architectures per run: Kendall tau "
          f"{nao['tau_mean']:.3f} ± {nao['tau_std']:.3f}; exact reconstruction "
          f"{nao['reconstruction_held_out']:.3f} (held-out), "
          f"{nao['reconstruction_evaluated']:.3f} (evaluated); proposals per run by "
          f"gradient steps {nao['stepped_mean']:.1f}, random fallbacks "
          f"{nao['fallback_mean']:.1f}")
    print(f"NAO config: {json.dumps(nao['config'])}; most candidates told in a run "
          f"{nao['max_told']} (capacity {nao['config']['capacity']})")
    for r in rows[:-1]:
      print(f"NAO vs {r['strategy']}: Welch t = {_welch_t(nao, r):.2f}")
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
