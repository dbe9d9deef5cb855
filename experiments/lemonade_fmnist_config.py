"""Configs of ``experiments/lemonade_fmnist.py``: LEMONADE on Fashion-MNIST, and its
hand-designed baselines.

``default`` is the measured run (fits a one-hour search on a 2-core CPU): 30,000 of
Fashion-MNIST's training images (a stratified subset) to train, 6,000 held out to
validate, each child trained for one epoch (234 steps of 128) from its inherited weights,
so that training rather than compiling takes the time (docs/results/lemonade.md).
LEMONADE's Algorithm 1 as published (children accepted by the population's density
alone, the paper's network operators, none of the options this package adds) is the
strategy's preset ``paper``: ``experiments/lemonade_fmnist.py --preset paper`` applies it
over a variant's options, on the same data and budget. ``tiny`` runs the same pipeline
on the synthetic data set in seconds (the test suite runs it end to end).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Config:
  """One variant.

  Attributes:
    dataset, data_limit, val_fraction: the data (:func:`nasjax.data.load`).
    train: :class:`nasjax.train.TrainConfig` fields of one child's training (and, per
      epoch of budget, of every training from scratch: the baselines', and the front
      members' architectures' with ``--scratch``).
    search_train: overrides of ``train`` for the search's children only (e.g. a lower
      peak rate); the trainings from scratch keep ``train``.
    objectives: what the evaluator records (the search's front uses ``front_objectives``).
    lemonade: LEMONADE options (fields of
      :class:`nasjax.search.strategies.lemonade.LemonadeConfig`); distillation runs with
      the search's training settings (``train`` and ``search_train``).
    search_seconds: the search's budget of charged (training) seconds.
    max_evals: optional cap on evaluations.
    baselines: hand-designed plain CNNs (:func:`nasjax.models.plain_cnn` block lists),
      the comparison for front members of similar size.
    baseline_max_epochs: optional cap on a baseline's training epochs (``None``: a
      baseline trains exactly as many epochs as the member's lineage did).
    seed: the seed of the data split and of every training from scratch, and the
      search's seed unless ``search_seed`` is given.
    search_seed: optional seed of the search alone (its sampling, morphisms and children's
      training), so that repeated searches share one data split and one set of baselines.
  """

  dataset: str = "fashion_mnist"
  data_limit: int | None = 30000
  val_fraction: float = 0.1
  train: dict[str, Any] = dataclasses.field(default_factory=lambda: {
      "epochs": 1.0, "batch_size": 128, "optimizer": "sgd", "learning_rate": 0.1,
      "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"})
  search_train: dict[str, Any] = dataclasses.field(default_factory=dict)
  objectives: tuple[str, ...] = ("val_error", "params", "latency")
  lemonade: dict[str, Any] = dataclasses.field(default_factory=lambda: {
      # Many proposals (they cost no training), few accepted: the acceptance by density
      # then finds the rare children that reach past the ends of the front.
      "n_pc": 64, "n_ac": 3, "front_objectives": [0, 1], "cheap_objectives": ["params"],
      # Plain CNNs with one conv per block, 5k to 372k parameters. The widest was meant
      # to give the top of the range a lineage from the start; in the measured run it
      # was dominated after its first epoch (smaller starts were more accurate), so it
      # never became a parent, and the top grew out of the 94k start's lineage
      # (docs/results/lemonade.md). Children outside 4k..2M parameters are not
      # proposed, so no training goes to networks below the range the front is wanted
      # over.
      "initial": [[[16], [32]], [[16], [32], [64]], [[32], [64], [128]],
                  [[64], [128], [256]]],
      "max_morphisms": 2, "min_params": 4000, "max_params": 2_000_000, "distill_steps": 20,
      "distill_learning_rate": 0.02})
  search_seconds: float = 3200.0
  max_evals: int | None = None
  # Every front member is compared with the closest of these on a log scale: at most
  # about 1.5x apart from 5k to 1M parameters.
  baselines: tuple = (
      ((8,), (16,)),
      ((16,), (32,)),
      ((8,), (16,), (32,)),
      ((12,), (24,), (32,)),
      ((12,), (24,), (48,)),
      ((16,), (32,), (48,)),
      ((16,), (32,), (64,)),
      ((24,), (48,), (64,)),
      ((24,), (48,), (96,)),
      ((16, 16), (32, 32), (64, 64)),
      ((32,), (64,), (128,)),
      ((48,), (96,), (128,)),
      ((48,), (96,), (192,)),
      ((32,), (64,), (128, 128)),
      ((64,), (128,), (256,)),
      ((64,), (128,), (192, 192)),
      ((64,), (128,), (256, 256)),
  )
  baseline_max_epochs: float | None = None
  seed: int = 0
  search_seed: int | None = None


VARIANTS = {
    "default": Config(),
    "tiny": Config(
        dataset="synthetic", data_limit=None, val_fraction=0.1,
        train={"epochs": 1.0, "batch_size": 32, "max_steps": 2, "learning_rate": 0.05},
        objectives=("val_error", "params"),
        lemonade={"n_pc": 4, "n_ac": 2, "initial": [[[4]], [[4], [8]]], "distill_steps": 2},
        search_seconds=600.0, max_evals=4,
        baselines=(((4,),), ((4,), (8,)), ((8,), (16,))), baseline_max_epochs=2.0),
}
