"""EAS on Fashion-MNIST (or CIFAR-10 / SVHN with their configs), with its ablations.

    python experiments/eas_fmnist.py [--config experiments/configs/eas_fmnist.py]
        [--variant default|paper_budget|tiny] [--preset paper] [--workdir DIR]
        [--seeds 0,1,2] [--data-dir D] [--json PATH]

The variant sets the data, the trainings and the budget; its ``eas`` options are the
strategy's, with ``--preset NAME`` (e.g. ``paper``,
:data:`nasjax.search.strategies.eas.PAPER`) applied on top.

Per seed (``--seeds``: several in one command, each in ``DIR/seed<S>``):

1. Start network: the family's start net (``eas.start``), trained from scratch for
   ``pretrain`` epochs and saved (``DIR/seed<S>/start.npz``); every arm starts from it.
2. Searches (``arms``), each in its own run directory with the same budget of
   ``max_evals`` evaluations (the start network's first one included), children trained
   with ``train`` from their inherited weights:

   - ``eas``: the learned meta-controller (:mod:`nasjax.search.strategies.eas`);
   - ``random``: the same episodes with uniformly random transformations (the
     controller never learns): what the controller adds.

   Started again with the same ``--workdir``, an interrupted search resumes.
3. Baselines, with the budget of the EAS best network: its weights were trained for
   ``pretrain + depth * train`` epochs along its lineage (``depth`` evaluations):

   - ``start + same training``: the start network trained further for
     ``depth * train.epochs`` epochs without any transformation: what growing adds
     beyond the extra training;
   - ``EAS arch from scratch``: the best architecture, initialised at random, trained
     for the lineage's total epochs in one schedule (at the pretraining learning rate):
     what reusing the weights adds.

Every network is scored on the test split. Each seed's results go to
``DIR/seed<S>/results.json`` as they come (a seed started again skips what it holds; a
seed directory made with other strategy options is refused). Prints a table of the mean
± sample standard deviation over the seeds and each seed's test errors, then the paired
difference of the two arms' best networks, and writes everything to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

import nasjax
from nasjax import configs
from nasjax import data as data_lib
from nasjax import train as train_lib
from nasjax.search import runner
from nasjax.search.strategies import eas
from nasjax.search.evaluators import TrainingEvaluator
from nasjax.search.spaces import PlainCNNSpace

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "eas_fmnist.py"
POLICIES = {"eas": "controller", "random": "random"}


def load_variants(path: str | Path = DEFAULT_CONFIG) -> dict:
  """The ``VARIANTS`` dict of a config file."""
  return configs.load_variants(path)


def _devices(value):
  return len(jax.local_devices()) if value == "all" else value


def _test_error(net, data) -> float:
  return 100.0 * (1.0 - train_lib.evaluate(net, data.x_test, data.y_test)["accuracy"])


def _val_error(net, data) -> float:
  return 100.0 * (1.0 - train_lib.evaluate(net, data.x_val, data.y_val)["accuracy"])


def _row(name: str, net, data, epochs: float, **extra) -> dict:
  return {"name": name, "params": nasjax.count_params(net.arch),
          "convs": len(net.arch.nodes_of("conv")), "epochs": epochs,
          "val_error": _val_error(net, data), "test_error": _test_error(net, data), **extra}


def pretrain(cfg: dict, data, seed: int, path: Path, options: dict | None = None):
  """The trained start network of ``seed`` (trained once, then read from ``path``)."""
  if path.exists():
    return nasjax.load(path)
  strategy = eas.EAS(PlainCNNSpace(),
                     eas.EasConfig(**(cfg["eas"] if options is None else options)))
  arch = strategy.start_arch(data.input_shape, data.num_classes)
  net = nasjax.init(arch, jax.random.key(seed))
  net, hist = train_lib.fit(net, data, train_lib.TrainConfig(**cfg["pretrain"]),
                            jax.random.key(seed + 1000))
  if hist.status != "ok":
    raise RuntimeError(f"the start network diverged in pretraining (seed {seed})")
  path.parent.mkdir(parents=True, exist_ok=True)
  nasjax.save(net, path, metadata={"epochs": cfg["pretrain"]["epochs"]})
  return net


def strategy_options(cfg: dict, preset: str | None = None) -> dict:
  """The EAS options of variant ``cfg`` with preset ``preset``'s on top, as JSON data.

  Raises:
    ValueError: for an unknown preset, naming the presets there are.
  """
  options = dict(cfg["eas"])
  if preset is not None:
    eas.EasConfig.preset(preset)  # checks the name
    options.update(eas.EasConfig.presets[preset])
  return json.loads(json.dumps(options))


def search(cfg: dict, arm: str, seed: int, start_path: Path, workdir: Path,
           data_dir: str | None, verbose: bool, options: dict | None = None
           ) -> runner.RunResult:
  """Run (or resume) one arm's search with EAS ``options`` (default: the variant's)."""
  if (workdir / runner.CONFIG_FILE).exists():
    return runner.resume(workdir, quiet=not verbose)
  evaluator = TrainingEvaluator(PlainCNNSpace(), dataset=cfg["dataset"],
                                train=dict(cfg["train"]), data_limit=cfg["data_limit"],
                                val_fraction=cfg["val_fraction"], data_dir=data_dir,
                                devices=_devices(cfg.get("devices")))
  config = {**(cfg["eas"] if options is None else options), "policy": POLICIES[arm],
            "start_weights": str(start_path.resolve())}
  return runner.run("eas", evaluator, {"max_evals": cfg["max_evals"]}, workdir, seed, config,
                    quiet=not verbose)


def run_seed(cfg: dict, seed: int, workdir: Path, data, data_dir, verbose: bool,
             options: dict | None = None) -> dict:
  """Every arm and baseline of one seed, with EAS ``options`` (default: the variant's);
  results cached in ``workdir/results.json``.

  Raises:
    ValueError: if ``workdir`` holds results of other options.
  """
  options = strategy_options(cfg) if options is None else options
  out_path = workdir / "results.json"
  done = json.loads(out_path.read_text()) if out_path.exists() else {}
  if done.setdefault("options", options) != options:
    raise ValueError(f"{workdir} holds results of other EAS options "
                     f"({done['options']}); use another --workdir")

  def keep(key, fn):
    if key not in done:
      t = time.perf_counter()
      done[key] = {**fn(), "seconds": time.perf_counter() - t}
      runner.atomic_write(out_path, json.dumps(done, indent=1).encode())
      print(f"seed {seed} {key}: " + json.dumps({k: v for k, v in done[key].items()
                                                 if k != "arch"}), flush=True)
    return done[key]

  pre = float(cfg["pretrain"]["epochs"])
  child = float(cfg["train"]["epochs"])
  start = pretrain(cfg, data, seed, workdir / "start.npz", options)
  keep("start", lambda: _row("start net", start, data, pre))
  for arm in cfg["arms"]:
    def arm_row(arm=arm):
      result = search(cfg, arm, seed, workdir / "start.npz", workdir / arm, data_dir, verbose,
                      options)
      state = runner.load_checkpoint(workdir / arm)["state"]
      rewards = [e["mean_reward"] for e in state.log]
      return _row(f"{arm} best", state.seed, data, pre + state.seed_depth * child,
                  depth=state.seed_depth, evals=result.evals, episodes=state.episode,
                  search_val_error=state.seed_fitness, mean_rewards=rewards,
                  arch=state.seed.arch.to_dict(),
                  children_trained=len(state.cache))
    keep(arm, arm_row)
  best = done[cfg["arms"][0]]
  depth = best["depth"]

  def continued():
    tc = train_lib.TrainConfig(**{**cfg["train"], "epochs": depth * child, "max_steps": None})
    net, _ = train_lib.fit(start, data, tc, jax.random.key(seed + 2000))
    return _row("start + same training", net, data, pre + depth * child)

  def scratch():
    arch = nasjax.Arch.from_dict(best["arch"])
    tc = train_lib.TrainConfig(**{**cfg["pretrain"], "epochs": pre + depth * child,
                                  "max_steps": None})
    net, _ = train_lib.fit(nasjax.init(arch, jax.random.key(seed + 3000)), data, tc,
                           jax.random.key(seed + 4000))
    return _row(f"{cfg['arms'][0]} arch from scratch", net, data, pre + depth * child)

  keep("continued", continued)
  keep("scratch", scratch)
  return done


def mean_std(values) -> str:
  """``"mean ± sample std"`` of ``values`` (just the mean for one value)."""
  v = np.asarray(values, np.float64)
  return f"{v.mean():.2f}" + (f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else "")


def format_table(results: dict[int, dict], order: list[str]) -> str:
  """Every row's mean (± sample std over the seeds) and each seed's test error, then the
  paired test-error difference of the first two arms' best networks."""
  seeds = list(results)
  lines = ["| network | params | convs | epochs trained | val error % | test error % | "
           "test error % per seed |", "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
  for key in order:
    rows = [results[s][key] for s in seeds if key in results[s]]
    if not rows:
      continue
    per_seed = ", ".join(f"{r['test_error']:.2f}" for r in rows)
    lines.append(f"| {rows[0]['name']} | {np.mean([r['params'] for r in rows]):,.0f} | "
                 f"{np.mean([r['convs'] for r in rows]):.1f} | "
                 f"{np.mean([r['epochs'] for r in rows]):g} | "
                 f"{mean_std([r['val_error'] for r in rows])} | "
                 f"{mean_std([r['test_error'] for r in rows])} | {per_seed} |")
  arms = [k for k in order if k in ("eas", "random")]
  pairs = [results[s] for s in seeds if all(a in results[s] for a in arms)]
  if len(arms) == 2 and pairs:
    diff = [r[arms[0]]["test_error"] - r[arms[1]]["test_error"] for r in pairs]
    lines.append(f"\n{arms[0]} best minus {arms[1]} best, test error (points), per seed "
                 f"{', '.join(f'{d:+.2f}' for d in diff)}: {mean_std(diff)}")
  return "\n".join(lines)


def _parse_seeds(text: str) -> list[int]:
  try:
    seeds = [int(s) for s in text.split(",")]
  except ValueError:
    raise ValueError(f"--seeds must be integers separated by commas, got {text!r}") from None
  return list(dict.fromkeys(seeds))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=str(DEFAULT_CONFIG))
  parser.add_argument("--variant", default="default")
  parser.add_argument("--preset", default=None,
                      help="a preset of the strategy's options (paper) over the variant's")
  parser.add_argument("--workdir", default="runs/eas_fmnist")
  parser.add_argument("--seeds", help="comma-separated seeds (default: the config's)")
  parser.add_argument("--data-dir", default=None, help="data set folder (TFDS for CIFAR-10)")
  parser.add_argument("--json", help="write all results to this file")
  parser.add_argument("--verbose", action="store_true", help="show the searches' progress")
  args = parser.parse_args(argv)
  variants = load_variants(args.config)
  if args.variant not in variants:
    raise ValueError(f"unknown variant {args.variant!r}; choose from {sorted(variants)}")
  cfg = variants[args.variant]
  options = strategy_options(cfg, args.preset)
  seeds = _parse_seeds(args.seeds) if args.seeds else list(cfg["seeds"])
  data = data_lib.load(cfg["dataset"], val_fraction=cfg["val_fraction"],
                       limit=cfg["data_limit"], data_dir=args.data_dir)
  t0 = time.perf_counter()
  results = {}
  for seed in seeds:
    seed_dir = Path(args.workdir) / f"seed{seed}"
    results[seed] = run_seed(cfg, seed, seed_dir, data, args.data_dir, args.verbose,
                             options)
    print(f"seed {seed}: {seed_dir / 'results.json'}", flush=True)
  order = ["start", "continued", *cfg["arms"], "scratch"]
  table = format_table(results, order)
  print(table, flush=True)
  print(f"total {time.perf_counter() - t0:.0f} s wall", flush=True)
  if args.json:
    Path(args.json).write_text(json.dumps({"variant": args.variant, "preset": args.preset,
                                           "config": cfg, "options": options,
                                           "seeds": seeds, "results": results,
                                           "table": table}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
