"""LEMONADE on Fashion-MNIST: a Pareto front of error against size, from trivial networks.

    python experiments/lemonade_fmnist.py [--variant NAME (default or tiny)]
        [--preset paper] [--workdir DIR] [--search-seconds S] [--search-seed N]
        [--plots DIR] [--json PATH] [--no-search]
        [--search-only] [--scratch] [--scratch-epochs E] [--shard I/N]
        [--spread-seeds S,S,... --members P,P,...]
    python experiments/lemonade_fmnist.py --seeds S,S,... [--preset paper]
        [--scratch-epochs E] [--search-only] ...
    python experiments/lemonade_fmnist.py --pool JSON,JSON,... [--json PATH]
    python experiments/lemonade_fmnist.py --ladder EPOCHS [--ladder-min-params N]

The variant sets the data, the trainings, the budget and LEMONADE's options;
``--preset NAME`` (``paper``: Algorithm 1 as published,
:data:`nasjax.search.strategies.lemonade.PAPER`) applies the strategy's preset over
those options. A run directory searched with other options or another search seed is
refused rather than resumed.

1. Search: LEMONADE (:mod:`nasjax.search.strategies.lemonade`) in the run directory ``DIR/search``
   with a training evaluator (validation error, parameters and batch-1 latency recorded;
   the front is taken over error and parameters), until ``search_seconds`` of training
   are charged. Started again with the same ``--workdir`` it resumes the search.
   ``--search-seed N`` repeats the search with another seed, on the same data split and
   against the same baselines (the config's ``seed``).
2. Report: the front after each generation (error against parameters and against
   latency) as PNGs, and the final front's networks with their weights
   (:func:`nasjax.search.strategies.lemonade.report_run`); the seconds and share of wall time the
   search spent compiling. ``--search-only`` stops here.
3. Comparison: every front member is scored on the test set as found (weights inherited
   and trained along its lineage, ``depth`` trainings of ``train.epochs`` each), and so
   is the hand-designed plain CNN closest to it in size (log parameters), trained from
   scratch with the same budget: ``depth * train.epochs`` epochs (capped at
   ``baseline_max_epochs`` if set), one cosine schedule, the same other hyperparameters.
   ``--scratch`` also trains each member's architecture from a fresh initialisation for
   the same epochs (what the architecture is worth without its inherited weights).
   ``--scratch-epochs E`` gives every member and every baseline the same budget of E
   epochs from scratch (the protocol of the LEMONADE paper, which retrains the front's
   architectures: the comparison is then of architectures, each trained the same way).
   Results of training from scratch are cached in ``DIR/baselines.json``; ``--shard
   I/N`` trains only a share of those the cache lacks (the split saved in
   ``DIR/shards.json`` by the first shard), so that N processes fill the cache side by
   side (after a ``--search-only`` run has exported the front), and a last run without
   ``--shard`` prints the table.

``--seeds S,S,...`` runs steps 1-3 once per search seed, each in ``DIR/seed<S>`` (its
search, report and ``result.json``: the comparison's rows and the front's summary), on
one data split against one set of baselines, whose trainings from scratch all seeds share
(``DIR/baselines.json``); then prints per seed and pooled over the seeds the front's span
(smallest and largest member), its members under 20k and over 500k parameters, and how
many are as accurate on the test set as their baseline as found and, with ``--scratch``
or ``--scratch-epochs E``, retrained; the mean ± sample standard deviation of those
counts over the seeds; and writes them all to ``--json``.

``--pool JSON,JSON,...`` prints that table for seeds run separately (on other machines, or
one ``--seeds S`` process per core): it reads the ``--json`` files those runs wrote and
pools their seeds, refusing files of another variant or preset, another budget from
scratch, or a seed already read.

``--spread-seeds S,S,... --members P,P,...`` (with ``--scratch-epochs E``, after a
``--search-only`` run) measures how much of a comparison is seed noise: the front members
with those parameter counts and their baselines are trained from scratch for E epochs with
the config's seed and each listed one (initialisation and data order; the data split
stays), and each network's errors and mean are printed.

``--ladder EPOCHS`` instead trains the config's hand-designed networks (from
``--ladder-min-params`` parameters up) from scratch for ``EPOCHS`` epochs, sharing the
cache: how accuracy grows with size at a fixed training budget.

Prints a table (and writes ``--json``): per member its parameters, depth, validation and
test error; the baseline's size and test error (and the member's from-scratch test error).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np

import nasjax
from nasjax import configs
from nasjax import data as data_lib
from nasjax import models
from nasjax import train as train_lib
from nasjax.search import runner
from nasjax.search.strategies import lemonade
from nasjax.search import report as report_lib
from nasjax.search.evaluators import TrainingEvaluator
from nasjax.search.spaces import PlainCNNSpace


def load_variants() -> dict:
  """The ``VARIANTS`` of ``lemonade_fmnist_config.py`` next to this file."""
  return configs.load_variants(Path(__file__).with_name("lemonade_fmnist_config.py"))


def with_preset(cfg, preset: str | None):
  """``cfg`` with LEMONADE's preset ``preset`` applied over its options (None: as is).

  Raises:
    ValueError: for an unknown preset, naming the presets there are.
  """
  if preset is None:
    return cfg
  lemonade.LemonadeConfig.preset(preset)  # checks the name
  return dataclasses.replace(cfg, lemonade={**cfg.lemonade,
                                            **lemonade.LemonadeConfig.presets[preset]})


def _check_same_search(cfg, workdir: Path, seed: int) -> None:
  """Refuse to resume ``workdir`` if it was searched with other options or seed."""
  saved = runner.read_config(workdir)
  want = lemonade.LemonadeConfig(num_objectives=len(cfg.objectives), **cfg.lemonade).to_dict()
  have = saved.get("strategy_config") or {}
  other = sorted(k for k in want if k in have and have[k] != want[k])
  if other or saved.get("seed") != seed:
    what = (f"options {other}" if other else
            f"search seed {saved.get('seed')} (now {seed})")
    raise ValueError(f"{workdir} was searched with other {what}; use another --workdir")


def search(cfg, workdir: Path, quiet: bool = True) -> runner.RunResult:
  """Run (or resume) the search in ``workdir``.

  Raises:
    ValueError: if ``workdir`` holds a search with other LEMONADE options or seed.
  """
  seed = cfg.seed if cfg.search_seed is None else cfg.search_seed
  if (workdir / runner.CONFIG_FILE).exists():
    _check_same_search(cfg, workdir, seed)
    return runner.resume(workdir, quiet=quiet)
  evaluator = TrainingEvaluator(PlainCNNSpace(), dataset=cfg.dataset,
                                train={**cfg.train, **cfg.search_train},
                                objectives=tuple(cfg.objectives), data_limit=cfg.data_limit,
                                val_fraction=cfg.val_fraction, data_seed=cfg.seed)
  budget = {"time_budget": cfg.search_seconds, "max_evals": cfg.max_evals}
  return runner.run("lemonade", evaluator, budget, workdir, seed, dict(cfg.lemonade),
                    quiet=quiet)


def _test_error(net, data) -> float:
  return 100.0 * (1.0 - train_lib.evaluate(net, data.x_test, data.y_test)["accuracy"])


def baseline_for(cfg, params: int, input_shape, num_classes) -> tuple[list, int]:
  """The hand-designed network closest to ``params`` on a log scale."""
  best = None
  for blocks in cfg.baselines:
    arch = models.plain_cnn([list(b) for b in blocks], input_shape=input_shape,
                            num_classes=num_classes)
    n = nasjax.count_params(arch)
    gap = abs(math.log(n) - math.log(params))
    if best is None or gap < best[0]:
      best = (gap, [list(b) for b in blocks], n)
  return best[1], best[2]


def _cache_key(cfg, name, epochs: float, seed: int | None = None) -> str:
  """The cache entry of ``name`` trained from scratch for ``epochs`` with ``cfg.train``
  (and with ``seed`` for initialisation and data order, where it is not the config's)."""
  key = [name, epochs, {k: v for k, v in sorted(cfg.train.items())
                        if k not in ("epochs", "max_steps")}]
  if seed is not None and seed != cfg.seed:
    key.append({"seed": seed})
  return json.dumps(key)


@contextlib.contextmanager
def _locked(cache: dict, cache_path: Path):
  """Hold the cache's lock, with ``cache`` updated from its file: what other processes
  (other ``--shard``s) saved meanwhile is kept."""
  with open(cache_path.with_name(cache_path.name + ".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if cache_path.exists():
      cache.update(json.loads(cache_path.read_text()))
    yield


def _store(cache: dict, cache_path: Path, key: str, entry: dict) -> None:
  """Add ``entry`` to the cache file under its lock: nothing already saved is lost."""
  with _locked(cache, cache_path):
    cache[key] = entry
    runner.atomic_write(cache_path, json.dumps(cache, indent=1).encode())


def _shares(todo: list, n: int, cache: dict, cache_path: Path) -> dict[str, int]:
  """Which of ``n`` shards trains each of ``todo``'s trainings.

  A greedy longest-first split, by FLOPs times epochs, of the trainings the cache lacks.
  The first shard to start decides it and saves it to ``DIR/shards.json``; the others
  (started together or later, when the cache already holds the first ones' results) read
  it, so that the shares never overlap nor leave a training out. A saved split for other
  trainings or another ``n`` is replaced.
  """
  plan_path = cache_path.with_name("shards.json")
  keys = sorted(key for key, _ in todo)
  with _locked(cache, cache_path):
    if plan_path.exists():
      plan = json.loads(plan_path.read_text())
      if plan.get("n") == n and plan.get("keys") == keys:
        return plan["owner"]
    cost = {key: nasjax.flops(arch) * epochs for key, (arch, _, epochs) in todo}
    loads, owner = [0.0] * n, {}
    for key in sorted((k for k in keys if k not in cache), key=lambda k: (-cost[k], k)):
      k = loads.index(min(loads))
      loads[k] += cost[key]
      owner[key] = k
    runner.atomic_write(plan_path, json.dumps({"n": n, "keys": keys, "owner": owner},
                                              indent=1).encode())
  return owner


def train_baseline(cfg, blocks, epochs: float, data, cache: dict, cache_path: Path) -> dict:
  """Train baseline ``blocks`` from scratch for ``epochs`` (cached by both and the
  training settings)."""
  arch = models.plain_cnn(blocks, input_shape=data.input_shape, num_classes=data.num_classes)
  return train_from_scratch(cfg, arch, blocks, epochs, data, cache, cache_path)


def train_from_scratch(cfg, arch, name, epochs: float, data, cache: dict,
                       cache_path: Path, seed: int | None = None) -> dict:
  """Train ``arch`` from a fresh initialisation for ``epochs`` with ``cfg.train`` (cached
  by ``name``, the epochs and the training settings). ``seed`` (default: the config's)
  draws the initialisation and the data order; the data split is ``data``'s."""
  key = _cache_key(cfg, name, epochs, seed)
  if key in cache:
    return cache[key]
  seed = cfg.seed if seed is None else seed
  net = nasjax.init(arch, jax.random.key(seed))
  tc = train_lib.TrainConfig(**{**cfg.train, "epochs": epochs, "max_steps": None})
  start = time.perf_counter()
  net, hist = train_lib.fit(net, data, tc, jax.random.key(seed + 1))
  _store(cache, cache_path, key, {
      "blocks": name, "params": nasjax.count_params(arch), "epochs": epochs, "seed": seed,
      "val_error": 100.0 * (1.0 - hist.val_accuracy[-1]), "test_error": _test_error(net, data),
      "status": hist.status, "seconds": time.perf_counter() - start})
  return cache[key]


def _data_and_cache(cfg, workdir: Path):
  """The config's data, and the cache of from-scratch trainings (``DIR/baselines.json``)
  with its path."""
  data = data_lib.load(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.seed,
                       limit=cfg.data_limit)
  workdir.mkdir(parents=True, exist_ok=True)
  cache_path = workdir / "baselines.json"
  cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
  return data, cache, cache_path


def parse_shard(text: str) -> tuple[int, int]:
  """``"I/N"`` (0 <= I < N) as ``(I, N)``."""
  try:
    i, n = (int(x) for x in text.split("/"))
  except ValueError:
    raise ValueError(f"--shard must be I/N with integers, got {text!r}") from None
  if not (n >= 1 and 0 <= i < n):
    raise ValueError(f"--shard I/N needs 0 <= I < N, got {text!r}")
  return i, n


def _check_scratch_epochs(epochs: float) -> None:
  if not epochs > 0:
    raise ValueError(f"--scratch-epochs must be positive, got {epochs}")


def _exported_front(workdir: Path, flag: str) -> list[dict]:
  """The front a ``--search-only`` run exported to ``DIR/report/front/front.json``."""
  front_json = workdir / "report" / "front" / "front.json"
  if not front_json.exists():
    raise ValueError(f"{flag} needs the exported front {front_json}: run with "
                     "--search-only first")
  return json.loads(front_json.read_text())


def _member_name(rec: dict, net) -> str:
  """A front member's name in the cache: by uid and architecture (a uid alone names
  different networks in different runs, and a cache may be carried over from another
  run)."""
  digest = hashlib.sha256(net.arch.to_json().encode()).hexdigest()[:12]
  return f"member {rec['uid']} {digest}"


def parse_ints(text: str, flag: str) -> list[int]:
  """``"1,2"`` as ``[1, 2]`` (for ``flag``'s error message)."""
  try:
    values = [int(x) for x in text.split(",")]
  except ValueError:
    raise ValueError(f"{flag} must be integers separated by commas, got {text!r}") from None
  return list(dict.fromkeys(values))


def seed_spread(cfg, workdir: Path, front: list[dict], epochs: float, seeds: list[int],
                members: list[int]) -> list[dict]:
  """How much of a member's gain over its baseline is seed noise: the front members with
  ``members`` parameters and their baselines, each trained from scratch for ``epochs``
  with the config's seed and every one of ``seeds`` (initialisation and data order; the
  data split stays the config's), cached with the comparison's trainings.

  Returns one row per network (members first, in the order asked, then their baselines):
  its name, parameters, test error per seed and their mean; a member's row also names its
  baseline and that baseline's mean.
  """
  _check_scratch_epochs(epochs)
  data, cache, cache_path = _data_and_cache(cfg, workdir)
  seeds = list(dict.fromkeys([cfg.seed, *seeds]))
  chosen = []
  for params in members:
    found = [rec for rec in front if rec["params"] == params]
    if len(found) != 1:
      sizes = ", ".join(f"{rec['params']}" for rec in sorted(front, key=lambda r: r["params"]))
      raise ValueError(f"--members {params}: {len(found)} front members have {params} "
                       f"parameters, need exactly one (the front: {sizes})")
    chosen.append(found[0])

  def errors(arch, name):
    out = {}
    for seed in seeds:
      r = train_from_scratch(cfg, arch, name, epochs, data, cache, cache_path, seed=seed)
      out[seed] = r["test_error"]
    return out

  rows, base_rows = [], {}
  for rec in chosen:
    net = nasjax.load(rec["network"])
    blocks, base_params = baseline_for(cfg, rec["params"], data.input_shape,
                                       data.num_classes)
    key = _blocks_str(blocks)
    if key not in base_rows:
      arch = models.plain_cnn(blocks, input_shape=data.input_shape,
                              num_classes=data.num_classes)
      errs = errors(arch, blocks)
      base_rows[key] = {"network": key, "params": base_params,
                        "errors": errs, "mean": sum(errs.values()) / len(errs)}
    errs = errors(net.arch, _member_name(rec, net))
    rows.append({"network": f"member {rec['uid']}", "params": rec["params"],
                 "errors": errs, "mean": sum(errs.values()) / len(errs),
                 "baseline": key, "baseline_mean": base_rows[key]["mean"]})
  return rows + list(base_rows.values())


def format_spread(rows: list[dict]) -> str:
  """:func:`seed_spread`'s rows as a Markdown table, then a verdict line per member."""
  seeds = list(rows[0]["errors"])
  lines = ["| network | params | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
           "| --- | ---: | " + " | ".join("---:" for _ in seeds) + " | ---: |"]
  for r in rows:
    name = r["network"].replace("|", "\\|")  # a Markdown cell
    lines.append(f"| {name} | {r['params']:,} | "
                 + " | ".join(f"{r['errors'][s]:.2f}" for s in seeds)
                 + f" | {r['mean']:.2f} |")
  for r in rows:
    if "baseline" in r:
      gap = r["baseline_mean"] - r["mean"]
      lines.append(f"{r['network']} ({r['params']:,} params): mean {r['mean']:.2f} % "
                   f"against {r['baseline_mean']:.2f} % for {r['baseline']}: "
                   + ("as accurate or better" if gap >= 0 else "less accurate")
                   + f" ({gap:+.2f} points)")
  return "\n".join(lines)


def compare(cfg, workdir: Path, report: dict, scratch: bool = False,
            scratch_epochs: float | None = None, shard: tuple[int, int] = (0, 1),
            cache_dir: Path | None = None) -> list[dict] | None:
  """Test errors of the front members and of their same-budget baselines (and, with
  ``scratch``, of each member's architecture trained from scratch as long).

  The budget of a member is its lineage's epochs (``depth * train.epochs``, capped at
  ``baseline_max_epochs``), or ``scratch_epochs`` for every member (which implies
  ``scratch``: then the member's architecture and its baseline are both trained from
  scratch for that many epochs). With ``shard=(i, n)``, ``n > 1``, this process only
  trains the ``i``-th of ``n`` shares of the trainings the cache lacks (split by FLOPs
  times epochs, :func:`_shares`) into the shared cache and returns ``None``; a run
  without ``shard`` then makes the table from the cache (training whatever is still
  missing). The trainings from scratch are cached in ``cache_dir`` (default ``workdir``).
  """
  if scratch_epochs is not None:
    _check_scratch_epochs(scratch_epochs)
  scratch = scratch or scratch_epochs is not None
  data, cache, cache_path = _data_and_cache(cfg, workdir if cache_dir is None else cache_dir)
  plan, jobs = [], {}
  for rec in sorted(report["front"], key=lambda r: r["params"]):
    net = nasjax.load(rec["network"])
    if scratch_epochs is not None:
      epochs = float(scratch_epochs)
    else:
      epochs = rec["depth"] * float(cfg.train["epochs"])
      if cfg.baseline_max_epochs is not None:
        epochs = min(epochs, cfg.baseline_max_epochs)
    blocks, _ = baseline_for(cfg, rec["params"], data.input_shape, data.num_classes)
    base_arch = models.plain_cnn(blocks, input_shape=data.input_shape,
                                 num_classes=data.num_classes)
    jobs.setdefault(_cache_key(cfg, blocks, epochs), (base_arch, blocks, epochs))
    name = _member_name(rec, net)
    if scratch:
      jobs.setdefault(_cache_key(cfg, name, epochs), (net.arch, name, epochs))
    plan.append((rec, net, blocks, epochs, name))
  i, n = shard
  todo = list(jobs.items())
  if n > 1:
    owner = _shares(todo, n, cache, cache_path)
    todo = [(key, job) for key, job in todo if owner.get(key) == i]
  for key, (arch, name, epochs) in todo:
    if key in cache:
      continue
    r = train_from_scratch(cfg, arch, name, epochs, data, cache, cache_path)
    print(f"trained {name if isinstance(name, str) else _blocks_str(name)} from scratch: "
          f"{r['params']:,} parameters, {epochs:g} epochs, test error "
          f"{r['test_error']:.2f} % ({r['seconds']:.0f} s)", flush=True)
  if n > 1:
    return None
  rows = []
  for rec, net, blocks, epochs, name in plan:
    base = cache[_cache_key(cfg, blocks, epochs)]
    fitness = rec["fitness"]
    rows.append({"uid": rec["uid"], "params": rec["params"], "depth": rec["depth"],
                 "ops": rec["ops"], "val_error": fitness["val_error"],
                 "latency": fitness.get("latency"), "test_error": _test_error(net, data),
                 "baseline_blocks": blocks, "baseline_params": base["params"],
                 "baseline_epochs": base["epochs"], "baseline_test_error": base["test_error"]})
    if scratch:
      rows[-1]["scratch_test_error"] = cache[_cache_key(cfg, name, epochs)]["test_error"]
  return rows


def ladder(cfg, workdir: Path, epochs: float, min_params: int = 0) -> list[dict]:
  """Every hand-designed network of the config with at least ``min_params`` parameters,
  trained from scratch for ``epochs`` (cached with the comparison's baselines): how test
  error falls with size at a fixed training budget."""
  if not epochs > 0:
    raise ValueError(f"--ladder epochs must be positive, got {epochs}")
  data, cache, cache_path = _data_and_cache(cfg, workdir)
  rows = []
  for blocks in cfg.baselines:
    blocks = [list(b) for b in blocks]
    arch = models.plain_cnn(blocks, input_shape=data.input_shape, num_classes=data.num_classes)
    if nasjax.count_params(arch) >= min_params:
      rows.append(train_baseline(cfg, blocks, float(epochs), data, cache, cache_path))
      r = rows[-1]
      print(f"{_blocks_str(blocks)}: {r['params']:,} parameters, {r['epochs']:g} epochs, "
            f"val error {r['val_error']:.2f} %, test error {r['test_error']:.2f} % "
            f"({r['seconds']:.0f} s)", flush=True)
  return sorted(rows, key=lambda r: r["params"])


def _blocks_str(blocks) -> str:
  return "|".join(",".join(str(c) for c in b) for b in blocks)


def format_table(rows: list[dict]) -> str:
  scratch = all("scratch_test_error" in r for r in rows)
  lines = ["| params | depth | val error % | test error % | baseline (blocks) | baseline "
           "params | baseline epochs | baseline test error % |"
           + (" from scratch test error % |" if scratch else ""),
           "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |" + (" ---: |" if scratch
                                                                      else "")]
  for r in rows:
    blocks = _blocks_str(r["baseline_blocks"]).replace("|", "\\|")  # a Markdown cell
    lines.append(f"| {r['params']:,} | {r['depth']} | {r['val_error']:.2f} | "
                 f"{r['test_error']:.2f} | {blocks} | {r['baseline_params']:,} | "
                 f"{r['baseline_epochs']:g} | {r['baseline_test_error']:.2f} |"
                 + (f" {r['scratch_test_error']:.2f} |" if scratch else ""))
  return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="default")
  parser.add_argument("--preset", default=None,
                      help="a preset of LEMONADE's options (paper) over the variant's")
  parser.add_argument("--workdir", default="runs/lemonade_fmnist")
  parser.add_argument("--search-seconds", type=float, default=None,
                      help="override the config's search budget (charged seconds)")
  parser.add_argument("--search-seed", type=int, default=None,
                      help="override the search's seed (the data split and the trainings "
                      "from scratch keep the config's seed)")
  parser.add_argument("--plots", help="also copy the front plots into this directory")
  parser.add_argument("--json", help="write the comparison rows to this file")
  parser.add_argument("--verbose", action="store_true", help="show the search's progress")
  parser.add_argument("--search-only", action="store_true",
                      help="search and draw the fronts, without the baseline comparison")
  parser.add_argument("--scratch", action="store_true",
                      help="also train each front member's architecture from scratch for "
                      "as many epochs as its baseline (the architecture alone, without the "
                      "inherited weights)")
  parser.add_argument("--scratch-epochs", type=float, metavar="E",
                      help="judge the front by retraining: every member's architecture and "
                      "its baseline are trained from scratch for E epochs (implies "
                      "--scratch; without it a member's budget is its lineage's epochs)")
  parser.add_argument("--shard", metavar="I/N",
                      help="only train the I-th of N shares of the comparison's trainings "
                      "from scratch that the cache lacks, into the shared cache (N "
                      "processes side by side, the split saved in DIR/shards.json; needs "
                      "the report of an earlier run with --search-only), then run without "
                      "--shard for the table")
  parser.add_argument("--no-search", action="store_true",
                      help="report and compare what the run directory holds, without "
                      "searching further (e.g. after a search was stopped by a time cap)")
  parser.add_argument("--seeds", metavar="S,S,...",
                      help="search seeds: search, report and compare once per seed (in "
                      "DIR/seed<S>), then print the fronts' spans and counts per seed, "
                      "mean ± std and pooled")
  parser.add_argument("--pool", metavar="JSON,JSON,...",
                      help="pool the seeds of --seeds runs' --json files into one table")
  parser.add_argument("--spread-seeds", metavar="S,S,...",
                      help="seed spread: train the --members and their baselines from "
                      "scratch for --scratch-epochs with the config's seed and these "
                      "(initialisation and data order; same data split), print each "
                      "network's errors and mean; needs an exported front")
  parser.add_argument("--members", metavar="P,P,...",
                      help="with --spread-seeds: the front members, by parameter count")
  parser.add_argument("--ladder", type=float, metavar="EPOCHS",
                      help="only train the config's hand-designed networks (those with at "
                      "least --ladder-min-params parameters) from scratch for EPOCHS "
                      "epochs and print their errors: no search")
  parser.add_argument("--ladder-min-params", type=int, default=0)
  return parser


def _config(args):
  """The variant ``args.variant`` with the command line's overrides."""
  variants = load_variants()
  if args.variant not in variants:
    raise ValueError(f"unknown variant {args.variant!r}; choose from {sorted(variants)}")
  cfg = with_preset(variants[args.variant], args.preset)
  if args.search_seconds is not None:
    cfg = dataclasses.replace(cfg, search_seconds=args.search_seconds)
  if args.search_seed is not None:
    cfg = dataclasses.replace(cfg, search_seed=args.search_seed)
  return cfg


def _write_json(args, **fields) -> None:
  if args.json:
    Path(args.json).write_text(json.dumps({"variant": args.variant, "preset": args.preset,
                                           **fields}, indent=1))


def _spread_main(cfg, args, workdir: Path) -> int:
  if args.spread_seeds is None or args.members is None or args.scratch_epochs is None:
    raise ValueError("--spread-seeds and --members go together, with --scratch-epochs")
  rows = seed_spread(cfg, workdir, _exported_front(workdir, "--spread-seeds"),
                     args.scratch_epochs, parse_ints(args.spread_seeds, "--spread-seeds"),
                     parse_ints(args.members, "--members"))
  print(format_spread(rows), flush=True)
  _write_json(args, spread=rows)
  return 0


def _ladder_main(cfg, args, workdir: Path) -> int:
  rows = ladder(cfg, workdir, args.ladder, args.ladder_min_params)
  print("| blocks | params | epochs | val error % | test error % |\n"
        "| --- | ---: | ---: | ---: | ---: |", flush=True)
  for r in rows:
    print(f"| {_blocks_str(r['blocks'])} | {r['params']:,} | {r['epochs']:g} | "
          f"{r['val_error']:.2f} | {r['test_error']:.2f} |", flush=True)
  _write_json(args, ladder=rows)
  return 0


def _search_and_report(cfg, args, workdir: Path, start: float, tag: str = ""
                       ) -> tuple[dict, int]:
  """Search (unless ``--no-search``), then report: ``(report, evaluations)``; the plots
  copied to ``--plots`` are named ``lemonade_fmnist<tag>_...``."""
  if args.no_search:
    history = runner.read_history(workdir / "search")
    print(f"search (as found): {len(history)} evaluations, "
          f"{history[-1]['elapsed'] if history else 0:.0f} charged seconds", flush=True)
    evals = len(history)
  else:
    result = search(cfg, workdir / "search", quiet=not args.verbose)
    evals = result.evals
    print(f"search: {result.evals} evaluations, {result.elapsed:.0f} charged seconds, "
          f"{time.perf_counter() - start:.0f} s wall this session", flush=True)
  report = lemonade.report_run(workdir / "search", workdir / "report")
  if args.plots:
    Path(args.plots).mkdir(parents=True, exist_ok=True)
    for p in report["plots"]:
      shutil.copy(p, Path(args.plots) / f"lemonade_fmnist{tag}_{Path(p).name}")
  summary = report_lib.summarize(workdir / "search")
  if summary.get("compile_share") is not None:
    print(f"compiling: {summary['compile_seconds']:.0f} s of {summary['wall_seconds']:.0f} s "
          f"wall ({100 * summary['compile_share']:.1f} %), the candidates' train and eval "
          f"steps {summary['candidate_compile_seconds']:.0f} s", flush=True)
  return report, evals


def _print_comparison(rows: list[dict], args, start: float) -> None:
  print(format_table(rows), flush=True)
  wins = sum(r["test_error"] <= r["baseline_test_error"] for r in rows)
  print(f"front: {len(rows)} networks, {min(r['params'] for r in rows):,} to "
        f"{max(r['params'] for r in rows):,} parameters; as found (inherited weights) "
        f"{wins} as accurate as their baseline or better; total "
        f"{time.perf_counter() - start:.0f} s wall", flush=True)
  if args.scratch or args.scratch_epochs is not None:
    own = sum(r["scratch_test_error"] <= r["baseline_test_error"] for r in rows)
    print(f"trained from scratch as long: {own} of {len(rows)} front architectures as "
          f"accurate as their baseline or better", flush=True)


# The ends of the size range the fronts are judged on (parameters).
SMALL, LARGE = 20_000, 500_000


def front_summary(front: list[dict], rows: list[dict] | None, retrained: bool) -> dict:
  """One front in numbers: its members, span and members under :data:`SMALL` and over
  :data:`LARGE` parameters (``front``: the exported member records); with the
  comparison's ``rows``, how many members are as accurate on the test set as their
  baseline as found (``as_found``) and, with ``retrained``, retrained (``retrained``),
  out of ``compared``."""
  params = sorted(int(r["params"]) for r in front)
  out = {"members": len(params), "min_params": params[0] if params else None,
         "max_params": params[-1] if params else None,
         "under_20k": sum(p < SMALL for p in params),
         "over_500k": sum(p > LARGE for p in params)}
  if rows is not None:
    out["compared"] = len(rows)
    out["as_found"] = sum(r["test_error"] <= r["baseline_test_error"] for r in rows)
    if retrained:
      out["retrained"] = sum(r["scratch_test_error"] <= r["baseline_test_error"]
                             for r in rows)
  return out


COUNTS = ("evaluations", "members", "under_20k", "over_500k", "compared", "as_found",
          "retrained")


def pooled_summary(summaries: list[dict]) -> dict:
  """The summaries of several fronts pooled: counts summed, the span over all."""
  out = {k: sum(s[k] for s in summaries) for k in COUNTS if all(k in s for s in summaries)}
  lows = [s["min_params"] for s in summaries if s["min_params"] is not None]
  highs = [s["max_params"] for s in summaries if s["max_params"] is not None]
  return {**out, "min_params": min(lows, default=None), "max_params": max(highs, default=None)}


def mean_std(values) -> str:
  """``"mean ± sample std"`` of ``values`` (just the mean for one value)."""
  v = np.asarray(values, np.float64)
  return f"{v.mean():.2f}" + (f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else "")


def format_seeds(summaries: dict, pooled: dict) -> str:
  """Per seed, their mean ± sample std, and pooled: the fronts' numbers as a table."""
  def span(s):
    if s["min_params"] is None:
      return "empty"
    return f"{s['min_params']:,} to {s['max_params']:,}"

  def of(s, key):
    return f"{s[key]} of {s['compared']}" if key in s else ""

  rows = list(summaries.values())
  lines = ["| seed | evaluations | members | span (params) | under 20k | over 500k | as "
           "accurate as found | as accurate retrained |",
           "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
  for seed, s in summaries.items():
    lines.append(f"| {seed} | {s['evaluations']} | {s['members']} | {span(s)} | "
                 f"{s['under_20k']} | {s['over_500k']} | {of(s, 'as_found')} | "
                 f"{of(s, 'retrained')} |")
  cells = {k: mean_std([s[k] for s in rows]) if k in pooled else "" for k in COUNTS}
  lines.append(f"| mean ± std | {cells['evaluations']} | {cells['members']} | | "
               f"{cells['under_20k']} | {cells['over_500k']} | {cells['as_found']} | "
               f"{cells['retrained']} |")
  lines.append(f"| pooled | {pooled['evaluations']} | {pooled['members']} | {span(pooled)} | "
               f"{pooled['under_20k']} | {pooled['over_500k']} | {of(pooled, 'as_found')} | "
               f"{of(pooled, 'retrained')} |")
  return "\n".join(lines)


def _budget(result: dict) -> tuple:
  """What must agree for seeds to be pooled: whether the front was retrained, and the
  epochs from scratch when every member had the same (``--scratch-epochs``; None when
  each had its lineage's)."""
  epochs = {r["baseline_epochs"] for r in result.get("rows") or []}
  return ("retrained" in result["summary"], epochs.pop() if len(epochs) == 1 else None)


def pool_files(paths: list[Path]) -> dict:
  """The seeds of several ``--seeds`` runs' ``--json`` files, pooled: ``{"variant",
  "preset", "seeds", "pooled", "table"}``.

  Raises:
    ValueError: naming the file, for one that is not a ``--seeds`` output, or whose
      variant, preset or budget from scratch differ from the first file's, or that holds
      a seed already read.
  """
  if not paths:
    raise ValueError("--pool needs at least one --json file of a --seeds run")
  first, seeds, origin = None, {}, {}
  for path in paths:
    try:
      saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
      raise ValueError(f"--pool: cannot read {path}: {e}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("seeds"), dict):
      raise ValueError(f"--pool: {path} is not the --json output of a --seeds run")
    for seed, result in saved["seeds"].items():
      mine = (saved.get("variant"), saved.get("preset"), *_budget(result))
      if first is None:
        first = (path, mine)
      elif mine != first[1]:
        def what(v):
          return f"variant {v[0]!r}, preset {v[1]!r}, retrained {v[2]}, epochs {v[3]}"
        raise ValueError(f"--pool: seed {seed} of {path} was run with {what(mine)}; "
                         f"{first[0]} with {what(first[1])}")
      if seed in seeds:
        raise ValueError(f"--pool: seed {seed} of {path} is already in {origin[seed]}")
      seeds[seed], origin[seed] = result, path
  seeds = {s: seeds[s] for s in sorted(seeds, key=int)}
  pooled, table = _pool_results(seeds)
  return {"variant": first[1][0], "preset": first[1][1], "seeds": seeds, "pooled": pooled,
          "table": table}


def _pool_results(results: dict) -> tuple[dict, str]:
  """The pooled summary of per-seed ``results`` and their table."""
  summaries = {int(seed): r["summary"] for seed, r in results.items()}
  pooled = pooled_summary(list(summaries.values()))
  return pooled, format_seeds(summaries, pooled)


def _pool_main(args) -> int:
  pooled = pool_files([Path(p) for p in args.pool.split(",") if p])
  print(pooled["table"], flush=True)
  if args.json:
    Path(args.json).write_text(json.dumps(pooled, indent=1))
  return 0


def _seeds_main(cfg, args, workdir: Path) -> int:
  """``--seeds``: search, report and compare per search seed, then the table."""
  clash = [flag for flag, value in (("--shard", args.shard), ("--ladder", args.ladder),
                                    ("--spread-seeds", args.spread_seeds),
                                    ("--members", args.members),
                                    ("--search-seed", args.search_seed)) if value is not None]
  if clash:
    raise ValueError(f"--seeds runs whole searches; it does not go with {', '.join(clash)}")
  retrained = args.scratch or args.scratch_epochs is not None
  start, results = time.perf_counter(), {}
  for seed in parse_ints(args.seeds, "--seeds"):
    seed_cfg, seed_dir = dataclasses.replace(cfg, search_seed=seed), workdir / f"seed{seed}"
    report, evals = _search_and_report(seed_cfg, args, seed_dir, start, f"_seed{seed}")
    rows = None if args.search_only else compare(
        seed_cfg, seed_dir, report, scratch=args.scratch, scratch_epochs=args.scratch_epochs,
        cache_dir=workdir)
    summary = {"evaluations": evals, **front_summary(report["front"], rows, retrained)}
    results[seed] = {"variant": args.variant, "preset": args.preset, "search_seed": seed,
                     "summary": summary, "rows": rows}
    (seed_dir / "result.json").write_text(json.dumps(results[seed], indent=1))
    print(f"seed {seed}: {seed_dir / 'result.json'}", flush=True)
  pooled, table = _pool_results(results)
  print(table, flush=True)
  print(f"total {time.perf_counter() - start:.0f} s wall", flush=True)
  _write_json(args, seeds=results, pooled=pooled, table=table)
  return 0


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  if args.pool is not None:
    return _pool_main(args)
  cfg = _config(args)
  workdir = Path(args.workdir)
  shard = parse_shard(args.shard) if args.shard else (0, 1)
  start = time.perf_counter()
  if shard[1] > 1:
    compare(cfg, workdir, {"front": _exported_front(workdir, f"--shard {args.shard}")},
            scratch=args.scratch, scratch_epochs=args.scratch_epochs, shard=shard)
    print(f"shard {args.shard}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0
  if args.seeds is not None:
    return _seeds_main(cfg, args, workdir)
  if args.spread_seeds is not None or args.members is not None:
    return _spread_main(cfg, args, workdir)
  if args.ladder is not None:
    return _ladder_main(cfg, args, workdir)
  report, evals = _search_and_report(cfg, args, workdir, start)
  if args.search_only:
    return 0
  rows = compare(cfg, workdir, report, scratch=args.scratch,
                 scratch_epochs=args.scratch_epochs)
  if not rows:
    print("front: no network within the search's constraints", flush=True)
    return 0
  _print_comparison(rows, args, start)
  _write_json(args, rows=rows, evaluations=evals)
  return 0


if __name__ == "__main__":
  sys.exit(main())
