"""The search commands: ``search``, ``resume``, ``report`` and ``bench``.

:func:`register` adds them to the ``nasjax`` command's subparsers; ``python -m
nasjax.search.cli`` runs them on their own. Examples::

    nasjax search --strategy rea --benchmark nb201 --dataset cifar10 --time-budget 12000 \\
        --seed 0 --workdir runs/rea
    nasjax search --strategy random --dataset fashion_mnist_small --space plain_cnn \\
        --max-evals 20 --workdir runs/random
    nasjax search --strategy rea --preset smoke
    nasjax search --strategy rea --preset smoke --train '{"max_steps": 5}' --max-evals 3
    nasjax search --strategy nao --benchmark nb201 --preset paper --config '{"epochs": 50}' \\
        --workdir runs/nao-paper
    nasjax search --strategy rea --dataset fashion_mnist_small --space plain_cnn \\
        --reward mnas --target-latency 0.002 --max-evals 20 --workdir runs/rea-mnas
    nasjax search ... --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
    nasjax search ... --backend ray --address 10.0.0.1:6379 --workers 8
    nasjax resume runs/rea
    nasjax report runs/rea
    nasjax bench nb201 --strategy rea --dataset cifar10 --runs 500 --time-budget 12000 --json
    nasjax bench nb201 --strategy nao --preset paper --runs 60 --json
    nasjax bench macro --strategy random --evals 100 --runs 20 --json
"""

from __future__ import annotations

import argparse
import json
import os
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


# ``--target-COST`` flag of each cost of the MnasNet reward (its attribute in the args).
REWARD_TARGETS = {"latency": "target_latency", "params": "target_params",
                  "flops": "target_flops"}


def _reward(args) -> dict | None:
  """The evaluator's reward config from ``--reward``, ``--target-*`` and ``--reward-mode``."""
  targets = {cost: getattr(args, attr) for cost, attr in REWARD_TARGETS.items()
             if getattr(args, attr, None) is not None}
  if getattr(args, "reward", None) is None:
    if targets:
      raise ValueError(f"--target-{next(iter(targets))} applies to --reward mnas; give it too")
    if getattr(args, "reward_mode", None) is not None:
      raise ValueError("--reward-mode applies to --reward mnas; give it too")
    return None
  if not targets:
    raise ValueError(f"--reward {args.reward} needs a target cost: --target-latency SECONDS, "
                     "--target-params N or --target-flops N")
  (cost, target), = targets.items()
  return {"kind": args.reward, "target": target, "cost": cost,
          "mode": args.reward_mode or "soft"}


def _check_preset(strategy: str, preset: str, command: str) -> None:
  """Raise ``ValueError`` naming the presets that ``nasjax COMMAND`` takes for
  ``strategy`` (``smoke`` for ``search``, and the strategy's option presets,
  :attr:`~nasjax.search.options.Options.presets`) unless ``preset`` is one of them."""
  from nasjax.search.options import preset_names

  known = (["smoke"] if command == "search" else []) + list(preset_names(strategy))
  if preset not in known:
    raise ValueError(f"--preset {preset!r}: strategy {strategy!r} has no such preset for "
                     f"nasjax {command}; it has {known or 'none'}")


def _options(args) -> argparse.Namespace:
  """The search options: ``args`` with the JSON options parsed (None where not given);
  under ``--preset smoke``, the preset's choices where the user made none; under another
  ``--preset``, the strategy's options of that preset with ``--config`` on top."""
  o = argparse.Namespace(**vars(args))
  o.config = _json_arg(args.config, "--config")
  o.train = _json_arg(args.train, "--train") if args.train else None
  o.space_config = (_json_arg(args.space_config, "--space-config") if args.space_config
                    else None)
  o.objectives = tuple(args.objectives.split(",")) if args.objectives else None
  o.reward = _reward(args)
  o.benchmark_flag = f"--benchmark {args.benchmark}"
  if args.preset == "smoke":
    _apply_smoke(o)
  elif args.preset is not None:
    from nasjax.search.options import preset_config

    _check_preset(args.strategy, args.preset, "search")
    o.config = preset_config(args.strategy, args.preset, o.config)
  return o


# The evaluator config keys a smoke preset may fix, as search options.
SMOKE_EVALUATOR_KEYS = ("dataset", "data_dir", "objectives", "reward")


def _apply_smoke(o: argparse.Namespace) -> None:
  """Fill in the smoke preset of strategy ``o.strategy`` where the options are not given.

  The options given on the command line apply on top of the preset (``--train`` fields
  over the preset's, ``--max-evals``, ``--time-budget``, ``--limit``, ``--dataset``, ...);
  a choice the preset fixes (the benchmark, the space) cannot be changed.
  """
  from nasjax.search.base import strategy_entry

  entry = strategy_entry(o.strategy)
  smoke = dict(entry.smoke)
  preset = f"--preset smoke of strategy {o.strategy!r}"
  if "evaluator" in smoke:
    ev = dict(smoke["evaluator"])
    kind = ev.pop("kind", None)
    if kind not in ("nb201", "macro"):
      raise ValueError(f"{preset} has evaluator kind {kind!r}; a preset evaluator is a "
                       "benchmark, nb201 or macro")
    if o.benchmark not in (None, kind):
      raise ValueError(f"{preset} searches --benchmark {kind}; it cannot apply --benchmark "
                       f"{o.benchmark} (drop --preset)")
    o.benchmark = kind
    o.benchmark_flag = f"--benchmark {kind} (the benchmark of {preset})"
    for k, v in ev.items():
      if k not in SMOKE_EVALUATOR_KEYS:
        raise ValueError(f"{preset} sets the evaluator option {k!r}; presets set only "
                         f"{list(SMOKE_EVALUATOR_KEYS)}")
      if getattr(o, k) is None:
        setattr(o, k, tuple(v) if k == "objectives" else v)
  else:
    if o.benchmark is not None:
      raise ValueError(f"{preset} trains networks; it cannot apply --benchmark {o.benchmark} "
                       "(drop --preset)")
    space = smoke.get("space")
    if space is None:
      space = next((s for s in TRAINABLE_SPACES if entry.supports(s)), None)
    if space is None:
      raise ValueError(f"strategy {o.strategy!r} supports none of the trainable spaces "
                       f"{list(TRAINABLE_SPACES)}; give its smoke preset an 'evaluator'")
    if o.space not in (None, space):
      raise ValueError(f"{preset} searches --space {space}; it cannot apply --space {o.space} "
                       "(drop --preset)")
    o.space = space
    o.space_config = {**SMOKE_SPACE_CONFIGS.get(space, {}), **smoke.get("space_config", {}),
                      **(o.space_config or {})}
    o.train = {**SMOKE_TRAIN, **smoke.get("train", {}), **(o.train or {})}
    o.dataset = o.dataset or SMOKE_DATASET
    o.limit = SMOKE_LIMIT if o.limit is None else o.limit
  o.config = {**smoke.get("config", {}), **o.config}
  if o.max_evals is None and o.time_budget is None:
    o.max_evals = int(smoke.get("max_evals", 4))


def _plan(o: argparse.Namespace) -> tuple[object, object]:
  """``(evaluator, budget)`` from the search options of :func:`_options`."""
  from nasjax.search.evaluators import MacroEvaluator, NB201Evaluator, TrainingEvaluator
  from nasjax.search.runner import Budget
  from nasjax.search.spaces import make_space

  if o.benchmark is not None:
    for flag, value in (("--space-config", o.space_config), ("--train", o.train),
                        ("--limit", o.limit), ("--devices", o.devices)):
      if value is not None:
        raise ValueError(f"{flag} applies to training searches, not to {o.benchmark_flag}")
  if o.benchmark == "nb201":
    if o.space:
      raise ValueError("--space does not apply to --benchmark nb201 (its space is nb201)")
    if o.objectives and o.objectives != ("val_error",):
      raise ValueError(f"NB201's protocol has the single objective val_error, got "
                       f"--objectives {','.join(o.objectives)!r}")
    if o.reward is not None:
      raise ValueError("--reward needs a cost, and NAS-Bench-201's table has none (no "
                       "latency, params or flops)")
    evaluator = NB201Evaluator(o.dataset or "cifar10", data_dir=o.data_dir)
  elif o.benchmark == "macro":
    if o.space:
      raise ValueError("--space does not apply to --benchmark macro (its space is macro)")
    if o.dataset not in (None, "cifar10"):
      raise ValueError(f"NAS-Bench-Macro has only cifar10, got --dataset {o.dataset!r}")
    if o.reward is not None and o.reward["cost"] == "latency":
      raise ValueError("--target-latency: NAS-Bench-Macro has no latency; give "
                       "--target-params or --target-flops")
    evaluator = MacroEvaluator(o.objectives, data_dir=o.data_dir, reward=o.reward)
  else:
    if not o.dataset or not o.space:
      raise ValueError("give --benchmark nb201|macro, or --dataset and --space (training)")
    space = make_space(o.space, **(o.space_config or {}))
    evaluator = TrainingEvaluator(space, dataset=o.dataset, train=o.train or {},
                                  objectives=o.objectives, devices=o.devices,
                                  parallel=o.parallel, data_limit=o.limit,
                                  data_dir=o.data_dir, reward=o.reward)
  if o.max_evals is None and o.time_budget is None:
    if o.benchmark == "nb201":
      o.time_budget = 12000.0
    else:
      raise ValueError("give --max-evals or --time-budget")
  if o.benchmark == "macro" and o.max_evals is None:
    raise ValueError("NAS-Bench-Macro queries cost no time; give --max-evals")
  return evaluator, Budget(o.max_evals, o.time_budget)


def _smoke_plan(name: str, args=None) -> tuple[object, dict, object]:
  """``(evaluator, strategy config, budget)`` of ``nasjax search --strategy NAME --preset
  smoke``, with the search options that ``args`` has (e.g. ``devices``) applied on top."""
  ns = build_parser().parse_args(["search", "--strategy", name, "--preset", "smoke"])
  for k in vars(ns):
    if k not in ("strategy", "preset") and hasattr(args, k):
      setattr(ns, k, getattr(args, k))
  o = _options(ns)
  evaluator, budget = _plan(o)
  return evaluator, o.config, budget


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
  from nasjax.cli import check_output_dir, check_seed
  from nasjax.search.base import make_strategy
  from nasjax.search.runner import run

  # Checks that need no JAX first: ``jax.distributed.initialize`` must precede the rest.
  check_seed(args.seed)
  if not args.workdir and args.preset != "smoke":
    raise ValueError("give --workdir (the run directory)")
  if args.workdir and args.process_id in (None, 0):  # only process 0 writes it
    check_output_dir(args.workdir, "--workdir")
  backend = _backend(args)
  _distributed(args)
  o = _options(args)
  evaluator, budget = _plan(o)
  strategy = make_strategy(args.strategy, evaluator.space, o.config,
                           num_objectives=len(evaluator.objectives), evaluator=evaluator)
  # Everything is checked: only now is a run directory made.
  workdir = args.workdir or tempfile.mkdtemp(prefix=f"nasjax-smoke-{args.strategy}-")
  # config.json records the preset; a resumed run keeps it (and the options it resolved).
  result = run(strategy, evaluator, budget, workdir, args.seed, quiet=args.quiet,
               metadata={"argv": sys.argv[1:], "preset": args.preset}, backend=backend)
  _print_result(result, args.json)
  if not args.json and getattr(evaluator, "kind", None) == "train":
    print(trained_summary(result, evaluator))
  return 0


def trained_summary(result, evaluator, top: int = 5) -> str:
  """What a training search found, for people: its best ``top`` evaluations by the first
  objective (rank, architecture, parameters, validation accuracy, seconds) and the test
  accuracy of the best, the network the run saved; where it was saved and the line of
  Python that classifies an image with it."""
  from nasjax.search.rundir import BEST_NET_FILE

  ok = sorted((e for e in result.history if e["status"] == "ok"),
              key=lambda e: list(e["objectives"].values())[0])[:top]
  path = os.path.join(str(result.workdir), BEST_NET_FILE)
  test = "-"
  if ok and os.path.exists(path) and len(evaluator.data.y_test):
    import nasjax
    from nasjax import train as train_lib

    acc = train_lib.evaluate(nasjax.load(path), evaluator.data.x_test,
                             evaluator.data.y_test)["accuracy"]
    test = f"{100 * acc:.2f}"
  lines = [f"{'rank':>4}  {'architecture':<40} {'params':>9} {'val acc %':>9} "
           f"{'test acc %':>10} {'seconds':>8}"]
  for i, e in enumerate(ok):
    arch = e["arch"] if isinstance(e["arch"], str) else json.dumps(e["arch"])
    arch = arch if len(arch) <= 40 else arch[:37] + "..."
    m = e["metrics"]
    lines.append(f"{i + 1:>4}  {arch:<40} {m.get('params', 0):>9,} "
                 f"{100 * m.get('val_accuracy', float('nan')):>9.2f} "
                 f"{test if i == 0 else '':>10} {e['cost']:>8.1f}")
  if ok and os.path.exists(path):
    data = evaluator.data
    if test != "-":
      lines.append(f"test accuracy: the best network on the {len(data.y_test):,} test images "
                   f"of {data.name} (the others were not kept)")
    lines.append(f"saved in {path}; classify an image with it:")
    lines.append(f"  python3 -c \"import nasjax; net = nasjax.load('{path}'); "
                 f"x = nasjax.data.load('{evaluator.dataset}').x_test[:1]; "
                 "print(nasjax.apply(net, x).argmax(-1))\"")
  return "\n".join(lines)


def _check_run_dir(workdir: str) -> None:
  """Raise unless ``workdir`` is a directory holding a search run."""
  from nasjax.search.rundir import read_config

  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"{workdir!r} is a file, not a run directory")
  read_config(workdir)  # FileNotFoundError naming the directory when it holds no run


# The options of --backend ray, as (flag, attribute of the parsed arguments).
RAY_FLAGS = (("--address", "address"), ("--workers", "workers"), ("--in-flight", "in_flight"))


def _backend(args, recorded: dict | None = None):
  """The backend of ``--backend`` and the Ray flags: None (evaluate here) or a
  :class:`~nasjax.search.ray_backend.RayBackend`; a resumed run's ``recorded`` backend
  (its ``config.json``'s) unless ``--backend`` says otherwise, the flags given applied
  on top."""
  given = {attr: getattr(args, attr) for _, attr in RAY_FLAGS}
  backend = args.backend or ("ray" if recorded else "local")
  if backend == "local":
    flag = next((f for f, attr in RAY_FLAGS if given[attr] is not None), None)
    if flag:
      raise ValueError(f"{flag} applies to --backend ray")
    return None
  if any(getattr(args, a, None) is not None for a in ("coordinator", "process_id")):
    raise ValueError("--backend ray and --coordinator/--process-id (jax.distributed) are "
                     "alternatives: with Ray, one driver runs the search")
  from nasjax.search.ray_backend import RayBackend

  backend = RayBackend.from_dict(recorded or {}, **given)
  # The driver's JAX runs the strategy's small programs: on a GPU that a worker may share,
  # it takes the memory it uses rather than most of the GPU (read when JAX starts).
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return backend


def cmd_resume(args) -> int:
  from nasjax.search.rundir import read_config
  from nasjax.search.runner import resume

  recorded = None
  if args.coordinator is None and args.process_id is None:  # one process: the run's backend
    _check_run_dir(args.workdir)
    recorded = read_config(args.workdir).get("backend")
  backend = _backend(args, recorded)
  _distributed(args)
  _print_result(resume(args.workdir, quiet=args.quiet, backend=backend or "local"),
                args.json)
  return 0


def cmd_report(args) -> int:
  from nasjax.cli import check_output_dir
  from nasjax.search.report import format_summary, report

  _check_run_dir(args.workdir)
  if args.out:
    check_output_dir(args.out, "--out")
  summary = report(args.workdir, args.out)
  if args.json:
    print(json.dumps(summary))
  else:
    print(format_summary(summary))
  return 0


def cmd_bench(args) -> int:
  from nasjax.cli import check_seed
  from nasjax.search import bench

  for flag, value in (("--runs", args.runs), ("--evals", args.evals)):
    if value < 1:
      raise ValueError(f"{flag} must be a positive count, got {value}")
  check_seed(args.seed, count=args.runs)
  config = _json_arg(args.config, "--config")
  if args.preset is not None:
    _check_preset(args.strategy, args.preset, "bench")
  if args.benchmark == "nb201":
    out = bench.bench_nb201(args.strategy, args.dataset or "cifar10", args.runs,
                            args.time_budget, args.seed, config, args.data_dir,
                            preset=args.preset)
  else:
    if args.dataset not in (None, "cifar10"):
      raise ValueError(f"NAS-Bench-Macro has only cifar10, got --dataset {args.dataset!r}")
    objectives = tuple(args.objectives.split(",")) if args.objectives else ("error", "params")
    out = bench.bench_macro(args.strategy, args.evals, args.runs, args.seed, config,
                            args.data_dir, objectives, preset=args.preset)
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


def _backend_args(p, resuming: bool = False) -> None:
  default = " (default: the run's)" if resuming else " (default: local)"
  p.add_argument("--backend", choices=["local", "ray"], default=None,
                 help="evaluate candidates in this process (local) or on Ray workers, one "
                 "per device, asynchronously for random and rea" + default)
  p.add_argument("--address", help="--backend ray: the Ray cluster, 'auto' or HOST:PORT of "
                 "its head (default: start Ray on this machine)")
  p.add_argument("--workers", type=int, help="--backend ray: worker actors, one per device "
                 "(default: one per GPU of the cluster, else per CPU; up to 4 locally)")
  p.add_argument("--in-flight", type=int, help="--backend ray: evaluations under way at "
                 "once (default: --workers)")


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
  p.add_argument("--objectives", help="comma-separated objectives, e.g. val_error,params "
                 "(with --reward: neg_reward and others)")
  p.add_argument("--reward", choices=["mnas"], help="search MnasNet's reward acc * (cost / T) "
                 "** w (objective neg_reward, its negation) with any strategy: training "
                 "searches (any cost) and --benchmark macro (params or flops)")
  targets = p.add_mutually_exclusive_group()
  targets.add_argument("--target-latency", type=float, metavar="SECONDS",
                       help="--reward's target T: inference latency at batch 1")
  targets.add_argument("--target-params", type=float, metavar="N",
                       help="--reward's target T: parameters")
  targets.add_argument("--target-flops", type=float, metavar="N", help="--reward's target T: FLOPs")
  p.add_argument("--reward-mode", choices=["soft", "hard"], help="--reward's exponents: soft "
                 "(-0.07 both sides of T, the default) or hard (0 below T, -1 above)")
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
  p.add_argument("--preset", help="smoke: a tiny end-to-end run on "
                 f"{SMOKE_DATASET} (or the strategy's benchmark); options given apply on "
                 "top. paper (where the strategy has it): the strategy's options that follow "
                 "its paper, --config applied on top")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  p.add_argument("--json", action="store_true", help="print the result as one JSON object")
  _backend_args(p)
  _distributed_args(p)
  p.set_defaults(func=cmd_search)

  p = subparsers.add_parser("resume", help="continue an interrupted search")
  p.add_argument("workdir")
  p.add_argument("--quiet", action="store_true")
  p.add_argument("--json", action="store_true")
  _backend_args(p, resuming=True)
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
  p.add_argument("--config", help="JSON options of the strategy (over --preset's)")
  p.add_argument("--preset", help="the strategy's named options, e.g. paper (its paper's "
                 "rules where its defaults differ)")
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
  from nasjax.cli import run_command

  return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
