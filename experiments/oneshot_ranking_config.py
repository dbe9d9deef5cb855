"""Configs of ``experiments/oneshot_ranking.py``: how well do shared weights rank NB201
cells on Fashion-MNIST, against two independent stand-alone trainings and two free
baselines?

``default`` is the measured run, sized for one CPU core in about an hour: NB201 networks
with ``C=8, N=1`` (three cells) on Fashion-MNIST downsampled to 14x14 (the full set of
the Debian package ``dataset-fashion-mnist``: 4,800 training images, 2,000 validation
images held out of the official training split, the 10,000 official test images), 48
distinct cells with a path from input to output (dead edges removed), each trained alone
with two init keys for 4 epochs; SPOS and ENAS supernets trained for 5, 15 and 40
epochs and first-order DARTS for 5 and 15, each budget its own run with its own cosine
schedule; every supernet score recalibrates batch norm per cell on 2,048 training
images and measures accuracy on the 2,000 validation images. ``tiny`` runs the same
pipeline on the ``synthetic`` data set with a few steps per stage (the test suite runs
it).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Config:
  """One variant.

  Attributes:
    dataset, data_limit, val_fraction, data_seed: the data (:func:`nasjax.data.load`).
    downsample: images are average-pooled by this factor (1: as they are).
    space: :class:`nasjax.search.spaces.NB201Space` fields.
    num_cells: distinct connected cells in the study.
    cell_seed: seed of the cells' draw.
    truth: :class:`nasjax.TrainConfig` fields of every stand-alone training.
    truth_seeds: the init keys of the two stand-alone trainings of each cell.
    methods: strategy name -> ``{"budgets": [epochs, ...], **options}``; each budget is
      a separate supernet training of that many epochs (``steps`` derived from it).
    score: :func:`nasjax.models.supernet.score_paths` options of every supernet score.
    supernet_seed: seed of every supernet training.
    bootstrap: resamples of the cells for the Kendall tau intervals.
    top: k of the top-k regret.
  """

  dataset: str = "fashion_mnist"
  data_limit: int | None = 4800
  val_fraction: float = 2000 / 60000
  data_seed: int = 0
  downsample: int = 2
  space: dict[str, Any] = dataclasses.field(default_factory=lambda: {"C": 8, "N": 1})
  num_cells: int = 48
  cell_seed: int = 0
  truth: dict[str, Any] = dataclasses.field(default_factory=lambda: {
      "epochs": 4.0, "batch_size": 64, "optimizer": "sgd", "learning_rate": 0.05,
      "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine", "eval_batch_size": 1000})
  truth_seeds: tuple[int, int] = (0, 1)
  methods: dict[str, dict[str, Any]] = dataclasses.field(default_factory=lambda: {
      "spos": {"budgets": [5, 15, 40], "batch_size": 64, "chunk_steps": 0},
      "enas": {"budgets": [5, 15, 40], "batch_size": 64, "chunk_steps": 0,
               "child_steps": 75, "controller_steps": 10, "controller_batch": 10},
      "darts": {"budgets": [5, 15], "batch_size": 64, "chunk_steps": 0, "order": "first",
                "arch_learning_rate": 3e-3},
  })
  score: dict[str, Any] = dataclasses.field(default_factory=lambda: {
      "calib_batches": 16, "calib_batch_size": 128, "batch_size": 500})
  supernet_seed: int = 0
  bootstrap: int = 2000
  top: int = 5


VARIANTS = {
    "default": Config(),
    # The methods' options are tests/test_oneshot.py's TINY ones, so that the suite
    # compiles each supernet step once for both.
    "tiny": Config(
        dataset="synthetic", data_limit=None, val_fraction=0.1, downsample=1,
        space={"C": 2, "N": 1}, num_cells=6,
        truth={"epochs": 1.0, "batch_size": 32, "max_steps": 4},
        methods={
            "spos": {"budgets": [0.25], "chunk_steps": 1, "batch_size": 16, "cycles": 3,
                     "population_size": 2, "parents": 2, "sample_size": 2,
                     "calib_batches": 2, "calib_batch_size": 16, "eval_examples": 32},
            "enas": {"budgets": [0.25], "chunk_steps": 1, "batch_size": 16, "child_steps": 2,
                     "controller_steps": 2, "controller_batch": 2, "hidden": 8,
                     "derive_samples": 3, "eval_examples": 32},
            "darts": {"budgets": [0.1875], "chunk_steps": 1, "batch_size": 16,
                      "order": "second"}},
        score={"calib_batches": 2, "calib_batch_size": 16, "batch_size": 32},
        bootstrap=50, top=2),
}
