"""RL-NAS and PNAS against REA and random search on NAS-Bench-201 (NB201's protocol).

Every strategy runs ``--runs`` independent searches (seeds ``seed .. seed + runs - 1``)
with the 12,000 s simulated budget: each query returns the 12-epoch validation accuracy
and charges its simulated training time (the query that crosses the budget counts as the
strategy declares, see ``nasjax.search.bench.charged_prefix``); a run's result is the
200-epoch test accuracy of its best-by-validation cell, on the searched data set and,
as NB201's Table 5 reports a search on CIFAR-10, on all three data sets. The table gives
mean ± std (population std, as NB201), the standard error of the mean, NB201's
published value where it has one (REINFORCE for RL-NAS), and Welch's t statistic of
every strategy against REA measured here (when REA runs) and of RL-NAS against NB201's
published REINFORCE result.
A strategy written ``NAME:PRESET`` runs with that preset's options (``paper``: its
paper's rules, ``nasjax.search.options.preset_config``).

    python benchmarks/nb201_rl_pnas.py --runs 100
    python benchmarks/nb201_rl_pnas.py --strategies rl_nas,rl_nas:paper,rea --runs 500
    python benchmarks/nb201_rl_pnas.py --strategies pnas:paper --runs 50 --json
    python benchmarks/nb201_rl_pnas.py --strategies pnas --config 'pnas={"beam": 8}'

With ``--benchmark macro-mnas`` the same strategies instead search NAS-Bench-Macro for
MnasNet's soft reward ``ACC * (params / T) ** -0.07`` (``--mode hard``: ``alpha = 0,
beta = -1``), ``T`` the table's median parameter count, ``--evals`` queries per run.
RL-NAS and PNAS take the reward as an option; REA and random search get it through
:class:`nasjax.search.hardware.Scalarized`. Per run, the architecture with the best
reward among those queried is scored against the table's exhaustive optimum.

    python benchmarks/nb201_rl_pnas.py --benchmark macro-mnas --runs 100 --evals 100
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

# Dong & Yang, "NAS-Bench-201", ICLR 2020, CIFAR-10 test accuracy over 500 runs. RL-NAS
# is compared with NB201's REINFORCE, the policy-gradient baseline it reports.
PUBLISHED = {"random": ("random", 93.70, 0.36, 500), "rea": ("REA", 93.92, 0.30, 500),
             "rl_nas": ("REINFORCE", 93.85, 0.37, 500)}
COMPARE = {"rl_nas": "published"}  # compared with NB201's published baseline as well
DATASETS = ("cifar10", "cifar100", "imagenet16-120")


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _welch(m1, s1, n1, m2, s2, n2) -> float:
  """Welch's t of mean ``m1`` against ``m2`` (sample stds ``s``, sizes ``n``)."""
  se = math.sqrt(s1 ** 2 / n1 + s2 ** 2 / n2)
  return (m1 - m2) / se if se > 0 else math.nan


def run_strategy(name: str, dataset: str, runs: int, budget: float, seed: int,
                 config: dict, preset: str | None = None) -> dict:
  """Per-run results of ``runs`` searches of strategy ``name`` (options: ``config`` over
  ``preset``'s, or over the registered defaults)."""
  import numpy as np

  from nasjax.search import bench
  from nasjax.search.base import make_strategy, strategy_entry
  from nasjax.search.evaluators import NB201Evaluator
  from nasjax.search.options import preset_config

  wall, cpu = time.perf_counter(), _cpu_seconds()
  if preset is not None:
    config = preset_config(name, preset, config)
  evaluator = NB201Evaluator(dataset)
  strategy = make_strategy(name, evaluator.space, config, num_objectives=1)
  seqs = bench.query_sequences(strategy, evaluator, np.arange(seed, seed + runs),
                               time_budget=budget, jittable=strategy_entry(name).jittable)
  res = bench.nb201_results(seqs, evaluator, budget, bench.crossing_rule(strategy))
  test = res["test"]
  return {"strategy": name, "preset": preset, "dataset": evaluator.dataset, "runs": runs,
          "seed": seed, "time_budget": budget, "config": config,
          "crossing": bench.crossing_rule(strategy),
          "test_by_dataset": bench.accuracy_by_dataset(res), "mean": float(np.mean(test)),
          "std": float(np.std(test)), "sem": float(np.std(test, ddof=1) / math.sqrt(runs)),
          "sample_std": float(np.std(test, ddof=1)), "min": float(np.min(test)),
          "max": float(np.max(test)), "mean_queries": float(np.mean(res["queries"])),
          "best_val_mean": float(np.mean(res["best_val"])),
          "wall_seconds": time.perf_counter() - wall, "cpu_seconds": _cpu_seconds() - cpu}


def run_macro_mnas(name: str, runs: int, evals: int, seed: int, mode: str,
                   config: dict) -> dict:
  """Per-run results of ``runs`` searches for the MnasNet reward on NAS-Bench-Macro."""
  import numpy as np

  from nasjax.search import bench, hardware
  from nasjax.search.base import make_strategy, strategy_entry
  from nasjax.search.evaluators import MacroEvaluator

  wall, cpu = time.perf_counter(), _cpu_seconds()
  evaluator = MacroEvaluator(("error", "params"))
  table = evaluator.table
  target = float(np.median(table.params))
  reward_config = {"kind": "mnas", "target": target, "cost_objective": 1, "mode": mode}
  scalarizer = hardware.make_scalarizer(reward_config, 2)
  reward = np.asarray(scalarizer.reward(np.stack([100.0 - table.mean_acc, table.params], 1)))
  if "reward" in strategy_entry(name).default_config:
    strategy = make_strategy(name, evaluator.space, {**config, "reward": reward_config},
                             num_objectives=2)
  else:
    strategy = hardware.Scalarized(
        make_strategy(name, evaluator.space, config, num_objectives=1), scalarizer)
  seqs = bench.query_sequences(strategy, evaluator, np.arange(seed, seed + runs),
                               max_evals=evals, jittable=strategy_entry(name).jittable)
  best = np.array([s[np.argmax(reward[s])] for s in seqs])
  optimum = int(np.argmax(reward))
  return {"benchmark": "macro-mnas", "strategy": name, "mode": mode, "target_params": target,
          "runs": runs, "evals": evals, "seed": seed, "config": config,
          "reward_mean": float(np.mean(reward[best])), "reward_std": float(np.std(reward[best])),
          "optimum_reward": float(reward[optimum]), "optimum_key": table.keys[optimum],
          "found_optimum": float(np.mean(best == optimum)),
          "acc_mean": float(np.mean(table.mean_acc[best])),
          "params_mean": float(np.mean(table.params[best])),
          "under_target": float(np.mean(table.params[best] <= target)),
          "wall_seconds": time.perf_counter() - wall, "cpu_seconds": _cpu_seconds() - cpu}


def main_macro(args, configs) -> int:
  rows = [run_macro_mnas(name, args.runs, args.evals, args.seed, args.mode,
                         configs.get(name, {})) for name in args.strategies.split(",")]
  if args.json:
    for r in rows:
      print(json.dumps(r), flush=True)
    return 0
  r0 = rows[0]
  print(f"target T = {r0['target_params']:,.0f} params; optimum {r0['optimum_key']} with "
        f"reward {r0['optimum_reward']:.4f}\n")
  print("| strategy | runs | evals | reward of best found (mean ± std) | found optimum | "
        "test acc. (%) | params | params <= T | wall s | CPU s |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['strategy']} | {r['runs']} | {r['evals']} | {r['reward_mean']:.4f} ± "
          f"{r['reward_std']:.4f} | {100 * r['found_optimum']:.0f}% | {r['acc_mean']:.2f} | "
          f"{r['params_mean']:,.0f} | {100 * r['under_target']:.0f}% | "
          f"{r['wall_seconds']:.0f} | {r['cpu_seconds']:.0f} |")
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--strategies", default="rl_nas,pnas,rea,random")
  parser.add_argument("--dataset", default="cifar10")
  parser.add_argument("--runs", type=int, default=100)
  parser.add_argument("--time-budget", type=float, default=12000.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--config", action="append", default=[],
                      help="STRATEGY=JSON options of one strategy (repeatable)")
  parser.add_argument("--json", action="store_true", help="one JSON object per line")
  parser.add_argument("--benchmark", choices=["nb201", "macro-mnas"], default="nb201")
  parser.add_argument("--evals", type=int, default=100, help="macro-mnas: queries per run")
  parser.add_argument("--mode", choices=["soft", "hard"], default="soft",
                      help="macro-mnas: MnasNet's soft or hard constraint")
  args = parser.parse_args(argv)
  configs = {}
  for item in args.config:
    name, _, text = item.partition("=")
    configs[name] = json.loads(text)
  if args.benchmark == "macro-mnas":
    return main_macro(args, configs)

  rows = {}
  start = time.perf_counter()
  for item in args.strategies.split(","):
    name, _, preset = item.partition(":")
    out = run_strategy(name, args.dataset, args.runs, args.time_budget, args.seed,
                       configs.get(name, {}), preset or None)
    pub = PUBLISHED.get(name) if out["dataset"] == "cifar10" else None
    out["published"] = None if pub is None else {"name": pub[0], "mean": pub[1],
                                                 "std": pub[2], "runs": pub[3]}
    rows[item] = out
  compare(rows)
  if args.json:
    for out in rows.values():
      print(json.dumps(out), flush=True)
  else:
    print("\n".join(nb201_table(rows, args.dataset)))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
  return 0


def compare(rows: dict) -> None:
  """Add Welch's t against REA run here (``t_vs_rea``, every row but REA's, when REA
  ran) and against NB201's published baseline (``t_vs_published``, where there is one)."""
  rea = rows.get("rea")
  for item, out in rows.items():
    if rea is not None and item != "rea":
      out["t_vs_rea"] = _welch(out["mean"], out["sample_std"], out["runs"], rea["mean"],
                               rea["sample_std"], rea["runs"])
    p = out["published"]
    if p is not None and COMPARE.get(out["strategy"]) == "published":
      out["t_vs_published"] = _welch(out["mean"], out["sample_std"], out["runs"], p["mean"],
                                     p["std"], p["runs"])


def nb201_table(rows: dict, dataset: str) -> list[str]:
  """Markdown lines: each row's result on ``dataset`` and its cells on every data set."""
  t = lambda r, k: f"{r[k]:+.2f}" if k in r else ""
  lines = [f"searched on {dataset}", "",
           "| strategy | runs | test acc. mean ± std (%) | s.e.m. | Welch t vs rea (here) | "
           "NB201 reports | Welch t vs NB201 | queries/run | wall s | CPU s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for item, r in rows.items():
    p = r["published"]
    pub = f"{p['name']} {p['mean']:.2f} ± {p['std']:.2f}" if p else ""
    lines.append(f"| {item} | {r['runs']} | {r['mean']:.2f} ± {r['std']:.2f} | "
                 f"{r['sem']:.3f} | {t(r, 't_vs_rea')} | {pub} | {t(r, 't_vs_published')} | "
                 f"{r['mean_queries']:.1f} | {r['wall_seconds']:.0f} | {r['cpu_seconds']:.0f} |")
  lines += ["", "the same cells on every data set (test acc. mean ± std, %)", "",
            "| strategy | " + " | ".join(DATASETS) + " |", "| --- |" + " --- |" * len(DATASETS)]
  for item, r in rows.items():
    by = r["test_by_dataset"]
    lines.append(f"| {item} | " + " | ".join(f"{by[d]['mean']:.2f} ± {by[d]['std']:.2f}"
                                             for d in DATASETS) + " |")
  return lines


if __name__ == "__main__":
  raise SystemExit(main())
