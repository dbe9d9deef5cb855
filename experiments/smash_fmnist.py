"""SMASH on Fashion-MNIST: does the score with generated weights rank architectures?

    python experiments/smash_fmnist.py [--variant default|tiny] [--workdir DIR]
        [--json PATH]

1. One-shot search (:mod:`nasjax.search.strategies.smash`): train the hypernetwork and
   the shared weights, one uniformly sampled memory-bank architecture per step; then
   score ``num_samples`` fresh random architectures by validation accuracy with
   generated weights.
2. Ground truth: the first ``num_correlation`` of those samples (random, in sampling
   order) are trained alone from scratch (:meth:`SmashSpace.build` +
   :func:`nasjax.train.fit`, the same fixed short budget for all); the Pearson and
   Kendall (tau-b) correlations between SMASH score and stand-alone validation accuracy
   measure the ranking.
3. Selection: the ``top_k`` best-scored architectures are trained alone too; the best of
   them (by validation accuracy) is compared with the best of the first ``top_k`` random
   samples, on the test set.

Results go to ``DIR/results.json`` as they come (a second run with the same ``--workdir``
skips what is done) and are printed as Markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np

import nasjax
from nasjax import configs
from nasjax import data as data_lib
from nasjax import train as train_lib
from nasjax.search import make_strategy, work
from nasjax.search.evaluators import run_shared
from nasjax.search.strategies import smash as smash_search
from nasjax.stats import kendall_tau, pearson


def load_variants() -> dict:
  """The ``VARIANTS`` of ``smash_fmnist_config.py`` next to this file."""
  return configs.load_variants(Path(__file__).with_name("smash_fmnist_config.py"))


def _save(path: Path, results: dict) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(results, indent=1))
  tmp.replace(path)


def one_shot(cfg, space, data, results: dict, path: Path) -> dict:
  """Train SMASH and score ``num_samples`` random architectures (cached in results).

  The strategy asks for its training chunks and its scoring; they run here on ``data``
  (:func:`nasjax.search.evaluators.run_shared`), as a search's evaluator runs them.
  """
  if "one_shot" in results:
    return results["one_shot"]
  strategy = make_strategy("smash", space, cfg.smash, problem=work.Problem.of(data))
  state = strategy.init(jax.random.key(cfg.seed))
  seconds = {work.TrainShared: 0.0, work.ScoreShared: 0.0}
  codes = scores = None
  while True:
    request, state = strategy.ask(jax.random.key(cfg.seed), state)
    if not work.is_shared(request):  # the ranking is done: the first proposal
      break
    result = run_shared(request, data)
    seconds[type(request)] += result.seconds
    if isinstance(request, work.ScoreShared):
      codes, scores = request.codes, result.scores
    state = strategy.tell(jax.random.key(cfg.seed), state, request, result)
  out = {"steps": int(state.step), "train_loss": float(state.log.train_loss[-1]),
         "train_accuracy": float(state.log.train_accuracy[-1]),
         "train_seconds": seconds[work.TrainShared],
         "score_seconds": seconds[work.ScoreShared],
         "codes": np.asarray(codes).tolist(), "scores": np.asarray(scores).tolist()}
  results["one_shot"] = out
  _save(path, results)
  return out


def train_alone(cfg, space, data, code, results: dict, path: Path, test: bool = False) -> dict:
  """Train the architecture of ``code`` from scratch (cached in results by its hash)."""
  key = str(space.hash(code))
  done = results.setdefault("standalone", {})
  if key in done and (not test or "test_accuracy" in done[key]):
    return done[key]
  arch = space.build(np.asarray(code), data.input_shape, data.num_classes)
  if key not in done:
    net = nasjax.init(arch, jax.random.key(cfg.seed))
    net, hist = train_lib.fit(net, data, train_lib.TrainConfig(**cfg.train),
                              jax.random.key(cfg.seed + 1))
    done[key] = {"arch": space.describe(code), "params": nasjax.count_params(arch),
                 "flops": nasjax.flops(arch), "status": hist.status,
                 "val_accuracy": float(hist.val_accuracy[-1]), "seconds": hist.seconds}
    if test:
      done[key]["test_accuracy"] = train_lib.evaluate(net, data.x_test, data.y_test)["accuracy"]
  else:
    # The network was not kept; retrain it the same way (deterministic) for the test set.
    net = nasjax.init(arch, jax.random.key(cfg.seed))
    net, _ = train_lib.fit(net, data, train_lib.TrainConfig(**cfg.train),
                           jax.random.key(cfg.seed + 1))
    done[key]["test_accuracy"] = train_lib.evaluate(net, data.x_test, data.y_test)["accuracy"]
  _save(path, results)
  return done[key]


def run(cfg, workdir: Path, log=print) -> dict:
  """The whole experiment (see the module docstring); returns the summary."""
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "results.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  results["config"] = dataclasses.asdict(cfg)
  space = smash_search.SmashSpace(**cfg.space)
  data = data_lib.load(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.data_seed,
                       limit=cfg.data_limit)
  log(f"data {data.name}: {len(data.y_train)} train, {len(data.y_val)} val, "
      f"{len(data.y_test)} test")
  shot = one_shot(cfg, space, data, results, path)
  log(f"one-shot: {shot['steps']} steps in {shot['train_seconds']:.0f}s (loss "
      f"{shot['train_loss']:.3f}), {len(shot['scores'])} scored in "
      f"{shot['score_seconds']:.0f}s")
  codes, scores = np.asarray(shot["codes"]), np.asarray(shot["scores"])
  corr_idx = list(range(min(cfg.num_correlation, len(codes))))
  order = np.argsort(-scores, kind="stable")
  top_idx = [int(i) for i in order[:cfg.top_k]]
  rand_idx = corr_idx[:cfg.top_k]
  for n, i in enumerate(corr_idx + [i for i in top_idx if i not in corr_idx]):
    r = train_alone(cfg, space, data, codes[i], results, path)
    log(f"[{n + 1}] sample {i}: score {scores[i]:.4f} alone {r['val_accuracy']:.4f} "
        f"({r['seconds']:.0f}s)")

  def alone(i):
    return results["standalone"][str(space.hash(codes[i]))]

  corr_scores = [scores[i] for i in corr_idx]
  corr_acc = [alone(i)["val_accuracy"] for i in corr_idx]
  best_smash = max(top_idx, key=lambda i: alone(i)["val_accuracy"])
  best_rand = max(rand_idx, key=lambda i: alone(i)["val_accuracy"])
  for i in (best_smash, best_rand):
    train_alone(cfg, space, data, codes[i], results, path, test=True)
  summary = {
      "pearson": pearson(corr_scores, corr_acc), "kendall": kendall_tau(corr_scores, corr_acc),
      "num_correlation": len(corr_idx),
      "score_range": [float(min(corr_scores)), float(max(corr_scores))],
      "alone_range": [float(min(corr_acc)), float(max(corr_acc))],
      "smash_best": {"sample": best_smash, "score": float(scores[best_smash]),
                     **alone(best_smash)},
      "random_best": {"sample": best_rand, "score": float(scores[best_rand]),
                      **alone(best_rand)},
      "top_k_alone": [alone(i)["val_accuracy"] for i in top_idx],
      "random_k_alone": [alone(i)["val_accuracy"] for i in rand_idx],
  }
  results["summary"] = summary
  _save(path, results)
  return summary


def format_tables(summary: dict, results: dict, space) -> str:
  """Markdown: the correlation, the selection and every architecture trained alone."""
  s = summary
  lines = ["| architectures trained alone | Pearson r | Kendall tau |", "|---|---|---|",
           f"| {s['num_correlation']} random | {s['pearson']:.3f} | {s['kendall']:.3f} |", "",
           "| pick | SMASH score | val acc alone | test acc alone | params |",
           "|---|---|---|---|---|"]
  for name, key in ((f"best of SMASH top {len(s['top_k_alone'])}", "smash_best"),
                    (f"best of {len(s['random_k_alone'])} random", "random_best")):
    r = s[key]
    lines.append(f"| {name} | {r['score']:.4f} | {r['val_accuracy']:.4f} | "
                 f"{r['test_accuracy']:.4f} | {r['params']:,} |")
  shot = results["one_shot"]
  lines += ["", "| sample | SMASH score | val acc alone | params | architecture |",
            "|---|---|---|---|---|"]
  for i, (code, score) in enumerate(zip(shot["codes"], shot["scores"])):
    r = results["standalone"].get(str(space.hash(np.asarray(code))))
    if r is not None:
      lines.append(f"| {i} | {score:.4f} | {r['val_accuracy']:.4f} | {r['params']:,} | "
                   f"`{r['arch']}` |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variant", default="default", choices=sorted(load_variants()))
  parser.add_argument("--workdir", default="runs/smash_fmnist")
  parser.add_argument("--json", help="write the summary here too")
  args = parser.parse_args(argv)
  cfg = load_variants()[args.variant]
  workdir = Path(args.workdir)
  summary = run(cfg, workdir, log=lambda m: print(m, flush=True))
  results = json.loads((workdir / "results.json").read_text())
  print(format_tables(summary, results, smash_search.SmashSpace(**cfg.space)))
  if args.json:
    Path(args.json).write_text(json.dumps(summary, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
