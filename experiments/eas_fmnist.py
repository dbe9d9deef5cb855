"""EAS on Fashion-MNIST (or CIFAR-10 / SVHN with their configs), with its ablations.

    python experiments/eas_fmnist.py [--config experiments/configs/eas_fmnist.py]
        [--variant default|paper|tiny] [--workdir DIR] [--seeds 0,1] [--data-dir D]
        [--json PATH]

Per seed:

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

Every network is scored on the test split. Prints a table (and writes ``--json``).
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


def pretrain(cfg: dict, data, seed: int, path: Path):
  """The trained start network of ``seed`` (trained once, then read from ``path``)."""
  if path.exists():
    return nasjax.load(path)
  strategy = eas.EAS(PlainCNNSpace(), eas.EasConfig(**cfg["eas"]))
  arch = strategy.start_arch(data.input_shape, data.num_classes)
  net = nasjax.init(arch, jax.random.key(seed))
  net, hist = train_lib.fit(net, data, train_lib.TrainConfig(**cfg["pretrain"]),
                            jax.random.key(seed + 1000))
  if hist.status != "ok":
    raise RuntimeError(f"the start network diverged in pretraining (seed {seed})")
  path.parent.mkdir(parents=True, exist_ok=True)
  nasjax.save(net, path, metadata={"epochs": cfg["pretrain"]["epochs"]})
  return net


def search(cfg: dict, arm: str, seed: int, start_path: Path, workdir: Path,
           data_dir: str | None, verbose: bool) -> runner.RunResult:
  """Run (or resume) one arm's search."""
  if (workdir / runner.CONFIG_FILE).exists():
    return runner.resume(workdir, quiet=not verbose)
  evaluator = TrainingEvaluator(PlainCNNSpace(), dataset=cfg["dataset"],
                                train=dict(cfg["train"]), data_limit=cfg["data_limit"],
                                val_fraction=cfg["val_fraction"], data_dir=data_dir,
                                devices=_devices(cfg.get("devices")))
  config = {**cfg["eas"], "policy": POLICIES[arm], "start_weights": str(start_path.resolve())}
  return runner.run("eas", evaluator, {"max_evals": cfg["max_evals"]}, workdir, seed, config,
                    quiet=not verbose)


def run_seed(cfg: dict, seed: int, workdir: Path, data, data_dir, verbose: bool) -> dict:
  """Every arm and baseline of one seed; results cached in ``workdir/results.json``."""
  out_path = workdir / "results.json"
  done = json.loads(out_path.read_text()) if out_path.exists() else {}

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
  start = pretrain(cfg, data, seed, workdir / "start.npz")
  keep("start", lambda: _row("start net", start, data, pre))
  for arm in cfg["arms"]:
    def arm_row(arm=arm):
      result = search(cfg, arm, seed, workdir / "start.npz", workdir / arm, data_dir, verbose)
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


def format_table(results: dict[int, dict], order: list[str]) -> str:
  """Mean (and per-seed) test errors of every row."""
  lines = ["| network | params | convs | epochs trained | val error % | test error % |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
  for key in order:
    rows = [r[key] for r in results.values() if key in r]
    if not rows:
      continue
    test = [r["test_error"] for r in rows]
    val = [r["val_error"] for r in rows]
    per_seed = " (" + ", ".join(f"{v:.2f}" for v in test) + ")" if len(rows) > 1 else ""
    lines.append(f"| {rows[0]['name']} | {np.mean([r['params'] for r in rows]):,.0f} | "
                 f"{np.mean([r['convs'] for r in rows]):.1f} | "
                 f"{np.mean([r['epochs'] for r in rows]):g} | {np.mean(val):.2f} | "
                 f"{np.mean(test):.2f}{per_seed} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=str(DEFAULT_CONFIG))
  parser.add_argument("--variant", default="default")
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
  seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds else list(cfg["seeds"]))
  data = data_lib.load(cfg["dataset"], val_fraction=cfg["val_fraction"],
                       limit=cfg["data_limit"], data_dir=args.data_dir)
  t0 = time.perf_counter()
  results = {}
  for seed in seeds:
    results[seed] = run_seed(cfg, seed, Path(args.workdir) / f"seed{seed}", data,
                             args.data_dir, args.verbose)
  order = ["start", "continued", *cfg["arms"], "scratch"]
  print(format_table(results, order), flush=True)
  print(f"total {time.perf_counter() - t0:.0f} s wall", flush=True)
  if args.json:
    Path(args.json).write_text(json.dumps({"variant": args.variant, "config": cfg,
                                           "results": results}, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
