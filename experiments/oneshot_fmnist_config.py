"""Configs of ``experiments/oneshot_fmnist.py``: SPOS, DARTS and ENAS on Fashion-MNIST in
the NB201 cell space.

``default`` is the measured run, sized for a shared 2-core CPU: an NB201 network with
``C=8, N=1`` (three cells) on the embedded Fashion-MNIST subset (7,200 training, 800
validation and 2,000 test images, 28x28), supernets trained for 6 epochs of 64 images
with each method, and 30 distinct random architectures plus each method's choice
trained alone for 2 epochs. DARTS's architecture learning rate is 3e-3, ten times the
paper's, because the search is about ten times shorter than NB201's 50 epochs.
``paper`` is the same study with the methods' published search settings as NB201 runs
them (50 supernet epochs, DARTS's architecture learning rate 3e-4, SPOS's evolution of
1,000 paths with population 50 and tournaments of 10). ``tiny`` runs the same pipeline
on a few hundred images in seconds per stage (the test suite runs it end to end).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Config:
  """One variant.

  Attributes:
    dataset, data_limit, val_fraction, data_seed: the data (:func:`nasjax.data.load`).
    space: :class:`nasjax.search.spaces.NB201Space` fields.
    methods: strategy name -> options (``spos``, ``darts``, ``enas``; the fields of
      their options classes, e.g. :class:`~nasjax.search.strategies.spos.SposConfig`),
      where ``epochs`` may stand for ``steps``: that many passes over the training split
      at the method's ``batch_size``.
    train: :class:`nasjax.train.TrainConfig` fields of every stand-alone training.
    num_sample: distinct random architectures trained alone (the ground truth ranking).
    score: :func:`nasjax.models.supernet.score_paths` options used to score the sample.
    costs: measure step time and compiled memory of the supernet steps.
    seed: seed of the searches, the sample and every stand-alone training.
  """

  dataset: str = "fashion_mnist_small"
  data_limit: int | None = None
  val_fraction: float = 0.1
  data_seed: int = 0
  space: dict[str, Any] = dataclasses.field(default_factory=lambda: {"C": 8, "N": 1})
  methods: dict[str, dict[str, Any]] = dataclasses.field(default_factory=lambda: {
      "spos": {"epochs": 6.0, "batch_size": 64, "cycles": 100, "population_size": 20,
               "sample_size": 5, "calib_batches": 8, "calib_batch_size": 64},
      "enas": {"epochs": 6.0, "batch_size": 64, "child_steps": 112, "controller_steps": 20,
               "controller_batch": 10, "derive_samples": 100},
      "darts": {"epochs": 6.0, "batch_size": 64, "order": "first",
                "arch_learning_rate": 3e-3, "chunk_steps": 56},
  })
  train: dict[str, Any] = dataclasses.field(default_factory=lambda: {
      "epochs": 2.0, "batch_size": 64, "optimizer": "sgd", "learning_rate": 0.05,
      "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"})
  num_sample: int = 30
  score: dict[str, Any] = dataclasses.field(default_factory=lambda: {
      "calib_batches": 8, "calib_batch_size": 64})
  costs: bool = True
  seed: int = 0


VARIANTS = {
    "default": Config(),
    "paper": Config(methods={
        "spos": {"epochs": 50.0, "batch_size": 64, "cycles": 1000, "population_size": 50,
                 "sample_size": 10, "calib_batches": 8, "calib_batch_size": 64},
        "enas": {"epochs": 50.0, "batch_size": 64, "child_steps": 112,
                 "controller_steps": 50, "controller_batch": 10, "derive_samples": 100},
        "darts": {"epochs": 50.0, "batch_size": 64, "order": "first",
                  "arch_learning_rate": 3e-4, "chunk_steps": 112},
    }),
    "tiny": Config(
        data_limit=256, space={"C": 2, "N": 1},
        methods={
            "spos": {"steps": 4, "batch_size": 16, "cycles": 4, "population_size": 2,
                     "sample_size": 2, "calib_batches": 2, "calib_batch_size": 16,
                     "eval_examples": 64},
            "enas": {"steps": 4, "batch_size": 16, "child_steps": 2, "controller_steps": 2,
                     "controller_batch": 2, "hidden": 8, "derive_samples": 4,
                     "eval_examples": 64},
            "darts": {"steps": 3, "batch_size": 16, "chunk_steps": 1},
        },
        train={"epochs": 1.0, "max_steps": 3, "batch_size": 32},
        num_sample=2, score={"calib_batches": 2, "calib_batch_size": 16,
                             "max_examples": 64},
        costs=False),
}
