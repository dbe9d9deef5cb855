"""Configs of ``experiments/smash_fmnist.py``: SMASH on Fashion-MNIST.

``default`` is the measured run, sized for about an hour and a half on a shared 2-core
CPU: a three-block memory-bank space at 14x14 and below (the stem halves the image),
1,500 one-shot steps of 32 images, 100 architectures ranked on 1,000 validation images,
and 20 random architectures plus the 5 best-ranked trained alone for 300 steps of 64
images (about a third of an epoch of the 20,000 training images). ``tiny`` runs the same
pipeline on the synthetic data set in seconds (the test suite runs it end to end).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Config:
  """One variant.

  Attributes:
    dataset, data_limit, val_fraction, data_seed: the data (:func:`nasjax.data.load`).
    space: :class:`nasjax.search.strategies.smash.SmashSpace` fields.
    smash: SMASH options (:class:`nasjax.search.strategies.smash.SmashConfig` fields; the
      hypernetwork trains on the data of the fields above).
    train: :class:`nasjax.train.TrainConfig` fields of every stand-alone training.
    num_correlation: random architectures (the first sampled ones, in sampling order)
      trained alone to correlate SMASH's score with.
    top_k: best-scored architectures trained alone; the first ``top_k`` random ones are
      the random picks they are compared with.
    seed: seed of the one-shot search and of every stand-alone training.
  """

  dataset: str = "fashion_mnist"
  data_limit: int | None = 20000
  val_fraction: float = 0.05
  data_seed: int = 0
  space: dict[str, Any] = dataclasses.field(default_factory=lambda: {
      "num_blocks": 3, "max_banks": 3, "bank_widths": (4, 8), "max_ops": 3, "max_convs": 2,
      "kernels": (3, 5), "dilations": (1, 2), "max_span": 5, "groups": (1, 2, 4),
      "width_factors": (1,), "stem_stride": 2, "unit": 4})
  smash: dict[str, Any] = dataclasses.field(default_factory=lambda: {
      "steps": 1500, "batch_size": 32, "optimizer": "sgd",
      "learning_rate": 0.05, "weight_decay": 5e-4, "num_samples": 100, "eval_examples": 1000,
      "eval_batch_size": 500, "proposals": 100, "hyper_hidden": 32})
  train: dict[str, Any] = dataclasses.field(default_factory=lambda: {
      "epochs": 1.0, "max_steps": 300, "batch_size": 64, "optimizer": "sgd",
      "learning_rate": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"})
  num_correlation: int = 20
  top_k: int = 5
  seed: int = 0


VARIANTS = {
    "default": Config(),
    "tiny": Config(
        dataset="synthetic", data_limit=None, val_fraction=0.1,
        space={"num_blocks": 2, "max_banks": 2, "bank_widths": (4, 8), "max_ops": 2,
               "max_convs": 1, "kernels": (3,), "dilations": (1, 2), "groups": (1, 2),
               "width_factors": (1,), "unit": 4},
        smash={"steps": 8, "chunk_steps": 3, "batch_size": 16, "num_samples": 6,
               "eval_examples": 64, "eval_batch_size": 32, "proposals": 6, "hyper_hidden": 8},
        train={"epochs": 1.0, "max_steps": 3, "batch_size": 32},
        num_correlation=3, top_k=2),
}
