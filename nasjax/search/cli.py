"""The search commands: ``search``, ``resume``, ``report`` and ``bench``.

:func:`register` adds them to the ``nasjax`` command's subparsers; ``python -m
nasjax.search.cli`` runs them on their own. Examples::

    nasjax search --strategy rea --benchmark nb201 --dataset cifar10 --time-budget 12000 \\
        --seed 0 --workdir runs/rea
    nasjax search --strategy random --dataset fashion_mnist_small --space plain_cnn \\
        --max-evals 20 --workdir runs/random
    nasjax search --strategy rea --preset smoke
    nasjax search ... --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
    nasjax resume runs/rea
    nasjax report runs/rea
    nasjax bench nb201 --strategy rea --dataset cifar10 --runs 500 --time-budget 12000 --json
    nasjax bench macro --strategy random --evals 100 --runs 20 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

# Small networks and short training for ``--preset smoke`` (sizes of the built networks).
SMOKE_SPACE_CONFIGS = {
    "plain_cnn": {"num_blocks": 2, "max_layers": 2, "filters": [8, 16], "kernels": [1, 3, 5]},
    "nb201": {"C": 8, "N": 1},
    "macro": {"init_channels": 8, "head_channels": 32},
    "darts": {"C": 4, "layers": 3},
}
SMOKE_TRAIN = {"epochs": 1.0, "max_steps": 15, "batch_size": 64, "eval_batch_size": 256}
SMOKE_DATASET = "fashion_mnist_small"
SMOKE_LIMIT = 1024
TRAINABLE_SPACES = ("plain_cnn", "nb201", "macro", "darts")


def _json_arg(text: str | None, what: str) -> dict:
  if not text:
    return {}
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{what} is not valid JSON ({e}): {text!r}") from None
  if not isinstance(value, dict):
    raise ValueError(f"{what} must be a JSON object, got {text!r}")
  return value


def _smoke_plan(name: str, args) -> tuple[object, dict, object]:
  """``(evaluator, strategy config, budget)`` of the smoke preset of strategy ``name``."""
  from nasjax.search.base import strategy_entry
  from nasjax.search.evaluators import TrainingEvaluator, make_evaluator
  from nasjax.search.runner import Budget
  from nasjax.search.spaces import make_space

  entry = strategy_entry(name)
  smoke = dict(entry.smoke)
  budget = Budget(max_evals=int(smoke.get("max_evals", 4)))
  if "evaluator" in smoke:
    return make_evaluator(smoke["evaluator"]), dict(smoke.get("config", {})), budget
  space_name = smoke.get("space")
  if space_name is None:
    space_name = next((s for s in TRAINABLE_SPACES if entry.supports(s)), None)
  if space_name is None:
    raise ValueError(f"strategy {name!r} supports none of the trainable spaces "
                     f"{list(TRAINABLE_SPACES)}; give its smoke preset an 'evaluator'")
  space = make_space(space_name, **{**SMOKE_SPACE_CONFIGS.get(space_name, {}),
                                    **smoke.get("space_config", {})})
  evaluator = TrainingEvaluator(space, dataset=SMOKE_DATASET,
                                train={**SMOKE_TRAIN, **smoke.get("train", {})},
                                data_limit=SMOKE_LIMIT, devices=args.devices,
                                parallel=getattr(args, "parallel", "auto"))
  return evaluator, dict(smoke.get("config", {})), budget


def _plan(args) -> tuple[object, dict, object]:
  """``(evaluator, strategy config, budget)`` from the command-line options."""
  from nasjax.search.evaluators import MacroEvaluator, NB201Evaluator, TrainingEvaluator
  from nasjax.search.runner import Budget
  from nasjax.search.spaces import make_space

  config = _json_arg(args.config, "--config")
  objectives = tuple(args.objectives.split(",")) if args.objectives else None
  if args.benchmark == "nb201":
    if args.space:
      raise ValueError("--space does not apply to --benchmark nb201 (its space is nb201)")
    if objectives and objectives != ("val_error",):
      raise ValueError(f"NB201's protocol has the single objective val_error, got "
                       f"--objectives {args.objectives!r}")
    evaluator = NB201Evaluator(args.dataset or "cifar10", data_dir=args.data_dir)
  elif args.benchmark == "macro":
    if args.dataset not in (None, "cifar10"):
      raise ValueError(f"NAS-Bench-Macro has only cifar10, got --dataset {args.dataset!r}")
    evaluator = MacroEvaluator(objectives or ("error", "params"), data_dir=args.data_dir)
  else:
    if not args.dataset or not args.space:
      raise ValueError("give --benchmark nb201|macro, or --dataset and --space (training)")
    space = make_space(args.space, **_json_arg(args.space_config, "--space-config"))
    evaluator = TrainingEvaluator(space, dataset=args.dataset,
                                  train=_json_arg(args.train, "--train"),
                                  objectives=objectives or ("val_error",),
                                  devices=args.devices, parallel=args.parallel,
                                  data_limit=args.limit,
                                  data_dir=args.data_dir)
  if args.max_evals is None and args.time_budget is None:
    if args.benchmark == "nb201":
      args.time_budget = 12000.0
    else:
      raise ValueError("give --max-evals or --time-budget")
  if args.benchmark == "macro" and args.max_evals is None:
    raise ValueError("NAS-Bench-Macro queries cost no time; give --max-evals")
  return evaluator, config, Budget(args.max_evals, args.time_budget)


def _print_result(result, as_json: bool) -> None:
  out = {"workdir": str(result.workdir), "evaluations": result.evals,
         "charged_seconds": result.elapsed,
         "best": None if result.best is None else {
             k: result.best[k] for k in ("eval", "arch", "objectives", "status")},
         "pareto_size": len(result.pareto), "summary": result.summary}
  if as_json:
    print(json.dumps(out))
    return
  from nasjax.search.report import format_summary

  print(format_summary(out))


def _distributed(args) -> None:
  """``jax.distributed.initialize`` from ``--coordinator/--num-processes/--process-id``.

  Every process runs the same command; each evaluates its share of every batch and
  process 0 writes the run directory (see :mod:`nasjax.search.runner`).
  """
  given = [args.coordinator, args.num_processes, args.process_id]
  if all(v is None for v in given):
    return
  if any(v is None for v in given):
    raise ValueError("a multi-process run needs all of --coordinator, --num-processes and "
                     "--process-id")
  import jax

  jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def cmd_search(args) -> int:
  from nasjax.search.runner import run

  _distributed(args)
  if args.preset == "smoke":
    evaluator, config, budget = _smoke_plan(args.strategy, args)
    config.update(_json_arg(args.config, "--config"))
    workdir = args.workdir or tempfile.mkdtemp(prefix=f"nasjax-smoke-{args.strategy}-")
  else:
    if not args.workdir:
      raise ValueError("give --workdir (the run directory)")
    evaluator, config, budget = _plan(args)
    workdir = args.workdir
  result = run(args.strategy, evaluator, budget, workdir, args.seed, config, quiet=args.quiet,
               metadata={"argv": sys.argv[1:]})
  _print_result(result, args.json)
  return 0


def cmd_resume(args) -> int:
  from nasjax.search.runner import resume

  _distributed(args)
  _print_result(resume(args.workdir, quiet=args.quiet), args.json)
  return 0


def cmd_report(args) -> int:
  from nasjax.search.report import format_summary, report

  summary = report(args.workdir, args.out)
  if args.json:
    print(json.dumps(summary))
  else:
    print(format_summary(summary))
  return 0


def cmd_bench(args) -> int:
  from nasjax.search import bench

  config = _json_arg(args.config, "--config")
  if args.benchmark == "nb201":
    out = bench.bench_nb201(args.strategy, args.dataset or "cifar10", args.runs,
                            args.time_budget, args.seed, config, args.data_dir)
  else:
    if args.dataset not in (None, "cifar10"):
      raise ValueError(f"NAS-Bench-Macro has only cifar10, got --dataset {args.dataset!r}")
    objectives = tuple(args.objectives.split(",")) if args.objectives else ("error", "params")
    out = bench.bench_macro(args.strategy, args.evals, args.runs, args.seed, config,
                            args.data_dir, objectives)
  if args.json:
    print(json.dumps(out))
  else:
    for k, v in out.items():
      print(f"{k:<20} {v:.6g}" if isinstance(v, float) else f"{k:<20} {v}")
  return 0


def _distributed_args(p) -> None:
  p.add_argument("--coordinator", help="multi-process run: address:port of process 0 "
                 "(jax.distributed.initialize)")
  p.add_argument("--num-processes", type=int, help="multi-process run: number of processes")
  p.add_argument("--process-id", type=int, help="multi-process run: this process's index")


def register(subparsers) -> None:
  """Add ``search``, ``resume``, ``report`` and ``bench`` to ``subparsers``."""
  p = subparsers.add_parser("search", help="run an architecture search in a run directory")
  p.add_argument("--strategy", required=True, help="a registered strategy (random, rea, ...)")
  p.add_argument("--benchmark", choices=["nb201", "macro"],
                 help="search a tabular benchmark instead of training")
  p.add_argument("--dataset", help="nb201: cifar10|cifar100|imagenet16-120; training: a "
                 "nasjax.data name")
  p.add_argument("--space", help="search space to train (plain_cnn, nb201, macro, darts)")
  p.add_argument("--space-config", help="JSON options of the space, e.g. '{\"C\": 8}'")
  p.add_argument("--config", help="JSON options of the strategy, e.g. "
                 "'{\"population_size\": 20}'")
  p.add_argument("--train", help="JSON TrainConfig fields, e.g. '{\"epochs\": 2}'")
  p.add_argument("--objectives", help="comma-separated objectives, e.g. val_error,params")
  p.add_argument("--max-evals", type=int, help="stop after this many evaluations")
  p.add_argument("--time-budget", type=float,
                 help="stop after this many charged seconds (simulated for benchmarks)")
  p.add_argument("--devices", type=int, default=None,
                 help="spread candidates over this many local devices (default all)")
  p.add_argument("--parallel", choices=["auto", "devices", "sequential"], default="auto",
                 help="train a batch's candidates at once, one per device (auto: over "
                 "--devices, or without it over accelerators, not CPU devices, which "
                 "share the cores)")
  p.add_argument("--limit", type=int, default=None, help="use at most this many training "
                 "images")
  p.add_argument("--data-dir", default=None, help="benchmark tables or data set directory")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--workdir", help="run directory (required unless --preset smoke)")
  p.add_argument("--preset", choices=["smoke"], help="smoke: a tiny end-to-end run on "
                 f"{SMOKE_DATASET}")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.add_argument("--json", action="store_true", help="print the result as one JSON object")
  _distributed_args(p)
  p.set_defaults(func=cmd_search)

  p = subparsers.add_parser("resume", help="continue an interrupted search")
  p.add_argument("workdir")
  p.add_argument("--quiet", action="store_true")
  p.add_argument("--json", action="store_true")
  _distributed_args(p)
  p.set_defaults(func=cmd_resume)

  p = subparsers.add_parser("report", help="summary table and plots of a search")
  p.add_argument("workdir")
  p.add_argument("--out", help="directory for the plots (default: the run directory)")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=cmd_report)

  p = subparsers.add_parser("bench", help="many independent searches on a tabular benchmark")
  p.add_argument("benchmark", choices=["nb201", "macro"])
  p.add_argument("--strategy", required=True)
  p.add_argument("--dataset", help="nb201: cifar10|cifar100|imagenet16-120")
  p.add_argument("--runs", type=int, default=100)
  p.add_argument("--time-budget", type=float, default=12000.0, help="nb201: simulated seconds")
  p.add_argument("--evals", type=int, default=100, help="macro: evaluations per run")
  p.add_argument("--objectives", help="macro: comma-separated, default error,params")
  p.add_argument("--config", help="JSON options of the strategy")
  p.add_argument("--seed", type=int, default=0, help="run i uses seed + i")
  p.add_argument("--data-dir", default=None)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="nasjax", description="nasjax search commands")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True
  register(sub)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return int(args.func(args) or 0)
  except (ValueError, FileNotFoundError) as e:
    print(f"nasjax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
