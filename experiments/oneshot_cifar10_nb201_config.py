"""Configs of ``experiments/oneshot_cifar10_nb201.py``: SPOS, DARTS and ENAS on CIFAR-10
in the full NB201 space, each returned cell looked up in the NAS-Bench-201 table.

``default`` is NB201's one-shot setting, for a host with an accelerator and CIFAR-10
prepared for TensorFlow Datasets: the NB201 network (``C=16, N=5``), the
``cifar10-valid`` layout (half of the 50,000 training images train the weights, the
other half is the validation split that architecture decisions use), 50 supernet
epochs of 64 images with random crop and flip, SGD 0.025 -> 0.001 cosine, momentum
0.9, weight decay 5e-4 (3e-4 for DARTS), gradient clipping 5, DARTS's architecture
Adam 3e-4. The table's 200-epoch CIFAR-10 test accuracy of each returned cell is the
result (optimum 94.37%). ``tiny`` runs the pipeline on the embedded Fashion-MNIST subset
with a two-channel, one-cell-per-stage network in seconds per method (the test suite
runs it end to end; its cells are looked up in the same table).
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
    methods: name -> options of the strategy (``darts2`` is ``darts``): the fields of
      its options class, where ``epochs`` may stand for ``steps`` (that many passes over
      the training split at the method's ``batch_size``).
    table_dataset: the NB201 table's data set whose accuracies are reported.
    seeds: one search per seed and method.
  """

  dataset: str = "cifar10"
  data_limit: int | None = None
  val_fraction: float = 0.5
  data_seed: int = 0
  space: dict[str, Any] = dataclasses.field(default_factory=lambda: {"C": 16, "N": 5})
  methods: dict[str, dict[str, Any]] = dataclasses.field(default_factory=lambda: {
      "spos": {"epochs": 50.0, "batch_size": 64, "augment": True, "weight_decay": 5e-4,
               "cycles": 1000, "population_size": 50, "sample_size": 10,
               "calib_batches": 20, "calib_batch_size": 256},
      "darts": {"epochs": 50.0, "batch_size": 64, "augment": True, "weight_decay": 3e-4,
                "order": "first", "arch_learning_rate": 3e-4, "chunk_steps": 390},
      "darts2": {"epochs": 50.0, "batch_size": 64, "augment": True, "weight_decay": 3e-4,
                 "order": "second", "arch_learning_rate": 3e-4, "chunk_steps": 390},
      "enas": {"epochs": 50.0, "batch_size": 64, "augment": True, "weight_decay": 5e-4,
               "child_steps": 390, "controller_steps": 50, "controller_batch": 10,
               "derive_samples": 100},
  })
  table_dataset: str = "cifar10"
  seeds: tuple[int, ...] = (0, 1, 2)


VARIANTS = {
    "default": Config(),
    "tiny": Config(
        dataset="fashion_mnist_small", data_limit=256, val_fraction=0.1,
        space={"C": 2, "N": 1},
        methods={
            "spos": {"steps": 4, "batch_size": 16, "cycles": 4, "population_size": 2,
                     "sample_size": 2, "calib_batches": 2, "calib_batch_size": 16,
                     "eval_examples": 64},
            "darts": {"steps": 3, "batch_size": 16, "chunk_steps": 1},
            "enas": {"steps": 4, "batch_size": 16, "child_steps": 2, "controller_steps": 2,
                     "controller_batch": 2, "hidden": 8, "derive_samples": 4,
                     "eval_examples": 64},
        },
        seeds=(0,)),
}
