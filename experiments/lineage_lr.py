"""What a LEMONADE lineage's one-epoch trainings cost, at a few peak learning rates.

    python experiments/lineage_lr.py [--lrs 0.03 0.1] [--generations 6] [--decay D]
        [--reference] [--tiny] [--json PATH]

A network that is trained by ``generations`` successive :func:`nasjax.train.fit` calls of
one epoch each (a fresh optimiser and a cosine from the peak rate to zero every time,
warm-started from the previous call's weights) is what a LEMONADE lineage trains like,
without the morphisms. Prints the validation and test error after each call, per
learning rate; compare with the same network trained once for ``generations`` epochs
(one cosine), which is what ``experiments/lemonade_fmnist.py`` trains its baselines
with (``--reference`` trains it too, one row with ``generation`` 0). ``--decay D`` lowers
the peak rate of call ``g`` to ``lr * D ** (g - 1)``: a lineage whose later, warm-started
trainings restart lower.

Default: the plain CNN (32|64|128) with the data and training settings of the
``default`` variant of ``lemonade_fmnist_config.py`` (30,000 Fashion-MNIST training
images, 6,000 held out; batch 128, SGD momentum 0.9, weight decay 5e-4), the peak rate
replaced. ``--tiny``: a small CNN with the ``tiny`` variant's settings (synthetic data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

import nasjax
from nasjax import configs
from nasjax import data as data_lib
from nasjax import models
from nasjax import train as train_lib


def _row(net, hist, data, start: float, **fields) -> dict:
  """``fields`` with the validation and test error (%) of ``net`` after a training whose
  history is ``hist``, and the seconds since ``start``."""
  test = train_lib.evaluate(net, data.x_test, data.y_test)["accuracy"]
  return {**fields, "val_error": 100.0 * (1.0 - hist.val_accuracy[-1]),
          "test_error": 100.0 * (1.0 - test), "seconds": time.perf_counter() - start}


def run(lrs, generations: int, tiny: bool = False, decay: float = 1.0,
        reference: bool = False) -> list[dict]:
  """One row per (learning rate, generation): ``lr, generation, peak_lr, val_error,
  test_error`` (and with ``reference`` one per learning rate with ``generation`` 0: one
  training of ``generations`` epochs)."""
  if not 0 < decay <= 1:
    raise ValueError(f"decay must be in (0, 1], got {decay}")
  variants = configs.load_variants(Path(__file__).with_name("lemonade_fmnist_config.py"))
  cfg = variants["tiny" if tiny else "default"]
  blocks = [[4], [8]] if tiny else [[32], [64], [128]]
  data = data_lib.load(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.seed,
                       limit=cfg.data_limit)
  arch = models.plain_cnn(blocks, input_shape=data.input_shape, num_classes=data.num_classes)
  rows = []
  for lr in lrs:
    if not lr > 0:
      raise ValueError(f"learning rates must be positive, got {lr}")
    if reference:
      start = time.perf_counter()
      steps = cfg.train.get("max_steps")  # as many steps as the lineage's calls together
      config = train_lib.TrainConfig(**{
          **cfg.train, "learning_rate": lr, "epochs": generations * cfg.train["epochs"],
          "max_steps": None if steps is None else generations * steps})
      net, hist = train_lib.fit(nasjax.init(arch, jax.random.key(0)), data, config,
                                jax.random.key(100))
      rows.append(_row(net, hist, data, start, lr=lr, generation=0, peak_lr=lr))
      print(f"lr {lr:g}, one training of {generations} epochs: val error "
            f"{rows[-1]['val_error']:.2f} %, test error {rows[-1]['test_error']:.2f} %",
            flush=True)
    net = nasjax.init(arch, jax.random.key(0))
    start = time.perf_counter()
    for g in range(generations):
      peak = lr * decay ** g
      config = train_lib.TrainConfig(**{**cfg.train, "learning_rate": peak})
      net, hist = train_lib.fit(net, data, config, jax.random.key(100 + g))
      rows.append(_row(net, hist, data, start, lr=lr, generation=g + 1, peak_lr=peak))
      r = rows[-1]
      print(f"lr {lr:g} generation {g + 1}: val error {r['val_error']:.2f} %, test error "
            f"{r['test_error']:.2f} % ({r['seconds']:.0f} s)", flush=True)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lrs", type=float, nargs="+", default=[0.03, 0.1])
  parser.add_argument("--generations", type=int, default=6)
  parser.add_argument("--decay", type=float, default=1.0,
                      help="peak rate of call g: lr * decay ** (g - 1)")
  parser.add_argument("--reference", action="store_true",
                      help="also train the network once for --generations epochs per rate")
  parser.add_argument("--tiny", action="store_true")
  parser.add_argument("--json", help="write the rows to this file")
  args = parser.parse_args(argv)
  if args.generations < 1:
    raise ValueError(f"--generations must be at least 1, got {args.generations}")
  rows = run(args.lrs, args.generations, tiny=args.tiny, decay=args.decay,
             reference=args.reference)
  if args.json:
    Path(args.json).write_text(json.dumps(rows, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
