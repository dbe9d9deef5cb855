"""One-shot search on CIFAR-10 in the NB201 space, scored by the NAS-Bench-201 table.

    python experiments/oneshot_cifar10_nb201.py [--variant default|tiny] [--workdir DIR]
        [--only spos,darts,darts2,enas] [--data-dir DIR]
    python experiments/oneshot_cifar10_nb201.py --lookup '|nor_conv_3x3~0|+|...|'

Each method (:mod:`nasjax.search.strategies.spos`, :mod:`~nasjax.search.strategies.darts`,
:mod:`~nasjax.search.strategies.enas`; ``darts2`` is second-order DARTS) searches once per
seed on the experiment's data (its requests on the shared weights run here,
:func:`~nasjax.search.strategies.oneshot.run_until_proposal`) and returns a cell; nothing
is trained alone: the cell's row of
``shared/data/nb201/nb201.csv`` gives its 200-epoch test accuracy (and 12-epoch
validation accuracy), and its rank among the 15,625 cells. NB201 reports these methods
the same way (their test accuracy from the benchmark, mean and std over runs).
``--lookup`` only prints the table's row of a cell string.

Results go to ``DIR/results.json`` as they come (a method and seed already there is
skipped) and are printed as a Markdown table. ``--data-dir`` locates the table
(default: ``$NASJAX_DATA_DIR`` or ``shared/data`` next to the repository).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from nasjax import configs
from nasjax import data as data_lib
from nasjax.search import make_strategy, tabular, work
from nasjax.search.spaces import NB201Space
from nasjax.search.strategies import oneshot

# The strategy each method runs (``darts2``: second-order DARTS).
STRATEGIES = {"spos": "spos", "darts": "darts", "darts2": "darts", "enas": "enas"}


def load_variants(name: str = "oneshot_cifar10_nb201_config") -> dict:
  """The ``VARIANTS`` of a config file next to this one."""
  return configs.load_variants(Path(__file__).with_name(f"{name}.py"))


def lookup(arch_str: str, dataset: str = "cifar10", data_dir=None) -> dict:
  """The NB201 table's numbers for one cell string.

  Returns:
    ``{"arch", "index" (official), "test_accuracy" (200 epochs, %), "val_accuracy"
    (12 epochs, %), "rank" (1 = best test accuracy of the 15,625), "optimum" (%)}``.

  Raises:
    ValueError: for a string that is not an NB201 cell.
  """
  table = tabular.load_nb201(data_dir)
  space = NB201Space()
  r = space.hash(space.encode(arch_str))
  test, val = table.test(dataset), table.val(dataset)
  return {"arch": table.arch_str[r], "index": int(table.official_index[r]),
          "test_accuracy": float(test[r]), "val_accuracy": float(val[r]),
          "rank": int(np.sum(test > test[r])) + 1, "optimum": float(test.max())}


def make_method(name: str, options: dict, space, data):
  """The strategy of method ``name`` with ``options`` (``epochs`` turned into ``steps``
  on ``data``'s training split), for ``data``'s input shape and classes."""
  options = dict(options)
  epochs = options.pop("epochs", None)
  if epochs is not None:
    options["steps"] = oneshot.steps_for_epochs(epochs, len(data.y_train),
                                                options.get("batch_size", 64))
  return make_strategy(STRATEGIES[name], space, options, problem=work.Problem.of(data))


def _save(path: Path, results: dict) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(results, indent=1))
  tmp.replace(path)


def train_and_evaluate(cfg, workdir, only=None, data_dir=None) -> dict:
  """Every method and seed; returns (and writes) the results dict."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "results.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  data = data_lib.load(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.data_seed,
                       limit=cfg.data_limit)
  space = NB201Space(**cfg.space)
  runs = results.setdefault("runs", {})
  for name in (only or cfg.methods):
    for seed in cfg.seeds:
      key = f"{name}/{seed}"
      if key in runs:
        continue
      strat = make_method(name, cfg.methods[name], space, data)
      start = time.perf_counter()
      state = strat.init(jax.random.key(seed))
      codes, state, _ = oneshot.run_until_proposal(strat, state, jax.random.key(seed + 1),
                                                   data)
      seconds = time.perf_counter() - start
      row = lookup(space.describe(np.asarray(codes[0])), cfg.table_dataset, data_dir)
      runs[key] = {**row, "method": name, "seed": seed, "search_seconds": seconds,
                   "steps": int(state.step), "log": state.log.rows(),
                   "phase_log": state.phase_log.rows()}
      _save(path, results)
      print(f"{key}: {row['arch']} test {row['test_accuracy']:.2f}% rank {row['rank']} "
            f"({seconds:.0f}s)", flush=True)
  summary = {}
  for name in (only or cfg.methods):
    acc = [r["test_accuracy"] for r in runs.values() if r["method"] == name]
    if acc:
      summary[name] = {"mean": float(np.mean(acc)), "std": float(np.std(acc)),
                       "runs": len(acc)}
  results["summary"] = summary
  _save(path, results)
  return results


def markdown(results: dict) -> str:
  lines = ["| method | seed | cell | NB201 test acc. (%) | rank of 15,625 | search s |",
           "|---|---|---|---|---|---|"]
  for r in results.get("runs", {}).values():
    lines.append(f"| {r['method']} | {r['seed']} | `{r['arch']}` | {r['test_accuracy']:.2f} | "
                 f"{r['rank']} | {r['search_seconds']:.0f} |")
  lines += ["", "| method | mean +- std (%) | runs |", "|---|---|---|"]
  for name, s in results.get("summary", {}).items():
    lines.append(f"| {name} | {s['mean']:.2f} +- {s['std']:.2f} | {s['runs']} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variant", default="default", choices=sorted(load_variants()))
  p.add_argument("--workdir", default="runs/oneshot_cifar10_nb201")
  p.add_argument("--only", help="comma-separated methods (default: all of the variant)")
  p.add_argument("--data-dir", help="reference data directory holding nb201/nb201.csv")
  p.add_argument("--lookup", metavar="ARCH_STR", help="print the table's row of a cell")
  args = p.parse_args(argv)
  if args.lookup:
    print(json.dumps(lookup(args.lookup, data_dir=args.data_dir), indent=1))
    return 0
  cfg = load_variants()[args.variant]
  only = args.only.split(",") if args.only else None
  print(markdown(train_and_evaluate(cfg, args.workdir, only, args.data_dir)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
