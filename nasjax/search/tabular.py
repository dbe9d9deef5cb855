"""Tabular benchmarks: NAS-Bench-201 and NAS-Bench-Macro as lookup tables.

The tables are read once from the reference data directory into NumPy arrays indexed
by the search space's code rank (:meth:`SearchSpace.index`), so a query is an array
lookup that also works inside ``jax.jit``. The directory is, in order of precedence,
the ``data_dir`` argument, ``$NASJAX_DATA_DIR``, ``shared/data`` next to a source
checkout (``Path(nasjax.__file__).parents[2] / "shared" / "data"``) when it exists, or
the user data directory that ``nasjax data get`` fills (``~/.local/share/nasjax``).

NAS-Bench-201's search protocol (the one its own baselines use): a query returns the
architecture's validation accuracy after the 12-epoch schedule and charges simulated
time ``12 * train_seconds_per_epoch + valid_seconds_per_epoch``; a search stops once the
charged time reaches the budget (12,000 s); its result is the 200-epoch test accuracy of
the architecture with the best 12-epoch validation accuracy it saw (the first one seen
on a tie). Columns per data set:

=================  ====================  ===================
data set           validation signal     final test accuracy
=================  ====================  ===================
cifar10            c10valid_val_12ep     c10_test_200ep
cifar100           c100_val_12ep         c100_test_200ep
imagenet16-120     in16_val_12ep         in16_test_200ep
=================  ====================  ===================

The table records training times on the cifar10-valid split only
(``c10valid_train_per_epoch_s``, ``c10valid_valid_per_epoch_s``), so those times are
charged for all three data sets; the cost of a query therefore does not depend on the
data set here, while NB201 charged each data set's own times.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import re
from pathlib import Path

import numpy as np

from nasjax.models import NB201_OPS

ENV_VAR = "NASJAX_DATA_DIR"
NB201_FILE = os.path.join("nb201", "nb201.csv")
MACRO_FILE = os.path.join("nas-bench-macro", "cifar10.json")
NB201_DATASETS = {
    "cifar10": ("c10valid_val_12ep", "c10_test_200ep"),
    "cifar100": ("c100_val_12ep", "c100_test_200ep"),
    "imagenet16-120": ("in16_val_12ep", "in16_test_200ep"),
}
NB201_TIME_COLUMNS = ("c10valid_train_per_epoch_s", "c10valid_valid_per_epoch_s")
NB201_EPOCHS = 12  # the schedule whose validation accuracy is the search signal


def user_data_dir() -> Path:
  """Where ``nasjax data get`` puts tables by default: ``$XDG_DATA_HOME/nasjax``
  (``~/.local/share/nasjax``)."""
  base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
  return Path(base) / "nasjax"


def data_dir(path: str | os.PathLike | None = None) -> Path:
  """The reference data directory: ``path``, else ``$NASJAX_DATA_DIR``, else
  ``shared/data`` beside a source checkout when it exists, else :func:`user_data_dir`."""
  if path is not None:
    return Path(path)
  env = os.environ.get(ENV_VAR)
  if env:
    return Path(env)
  import nasjax

  checkout = Path(nasjax.__file__).resolve().parents[2] / "shared" / "data"
  return checkout if checkout.is_dir() else user_data_dir()


def table_path(relative: str, path: str | os.PathLike | None = None) -> Path:
  """Full path of a table file; ``FileNotFoundError`` naming it and the override."""
  full = data_dir(path) / relative
  if not full.is_file():
    name = {NB201_FILE: "nb201", MACRO_FILE: "macro"}.get(relative, "nb201 macro")
    raise FileNotFoundError(
        f"benchmark table not found: {full}. Download and build it with `nasjax data get "
        f"{name} --dir DIR`, then point ${ENV_VAR} (or the data_dir argument / --data-dir) "
        f"at DIR, the directory that holds {relative}")
  return full


def nb201_dataset(name: str) -> str:
  """The canonical NB201 data set name (``ImageNet16-120`` -> ``imagenet16-120``)."""
  key = str(name).lower()
  if key not in NB201_DATASETS:
    raise ValueError(f"unknown NB201 data set {name!r}; choose from {sorted(NB201_DATASETS)}")
  return key


@dataclasses.dataclass(frozen=True, eq=False)
class NB201Table:
  """All 15,625 NB201 cells, row ``i`` = the cell whose code has rank ``i``.

  Attributes:
    arch_str: ``(15625,)`` official cell strings.
    official_index: ``(15625,)`` int, the NB201/NATS-Bench index of each row.
    columns: column name -> ``(15625,)`` float64 values.
  """

  arch_str: tuple[str, ...]
  official_index: np.ndarray
  columns: dict

  def val(self, dataset: str) -> np.ndarray:
    """``(15625,)`` 12-epoch validation accuracy (%), the search signal."""
    return self.columns[NB201_DATASETS[nb201_dataset(dataset)][0]]

  def test(self, dataset: str) -> np.ndarray:
    """``(15625,)`` 200-epoch test accuracy (%), the reported result."""
    return self.columns[NB201_DATASETS[nb201_dataset(dataset)][1]]

  @property
  def cost(self) -> np.ndarray:
    """``(15625,)`` simulated seconds charged per query."""
    train, valid = (self.columns[c] for c in NB201_TIME_COLUMNS)
    return NB201_EPOCHS * train + valid


_CELL = re.compile(r"\|(\w+)~0\|\+\|(\w+)~0\|(\w+)~1\|\+\|(\w+)~0\|(\w+)~1\|(\w+)~2\|")


@functools.lru_cache(maxsize=4)
def _read_nb201(path: str, mtime: float) -> NB201Table:
  del mtime  # part of the cache key only: a changed file is read again
  with open(path, newline="") as f:
    reader = csv.reader(f)
    header = next(reader)
    rows = list(reader)
  need = ["index", "arch_str", *NB201_TIME_COLUMNS,
          *(c for pair in NB201_DATASETS.values() for c in pair)]
  missing = [c for c in need if c not in header]
  if missing:
    raise ValueError(f"{path} lacks the column(s) {missing}")
  col = {name: i for i, name in enumerate(header)}
  op_index = {op: i for i, op in enumerate(NB201_OPS)}
  n = len(NB201_OPS) ** 6
  if len(rows) != n:
    raise ValueError(f"{path} has {len(rows)} rows; NAS-Bench-201 has {n} cells")
  # The row order is the official index; our rows are ordered by code rank. Build the
  # permutation from the strings themselves, so a table in any order maps correctly.
  digits = np.empty((n, 6), np.int64)
  for r, row in enumerate(rows):
    m = _CELL.fullmatch(row[col["arch_str"]])
    if m is None:
      raise ValueError(f"{path} row {r}: {row[col['arch_str']]!r} is not an NB201 cell string")
    try:
      digits[r] = [op_index[op] for op in m.groups()]
    except KeyError as e:
      raise ValueError(f"{path} row {r}: unknown op {e} in {row[col['arch_str']]!r}") from None
  rank = digits @ (len(NB201_OPS) ** np.arange(5, -1, -1))
  if len(np.unique(rank)) != n:
    raise ValueError(f"{path} lists some cells twice; every NB201 cell must appear once")
  order = np.empty(n, np.int64)
  order[rank] = np.arange(n)
  arch_str = tuple(rows[i][col["arch_str"]] for i in order)
  official = np.array([int(row[col["index"]]) for row in rows])[order]
  columns = {}
  for name in sorted(set(need) - {"index", "arch_str"}):
    j = col[name]
    columns[name] = np.array([float(row[j]) for row in rows], np.float64)[order]
  return NB201Table(arch_str, official, columns)


def load_nb201(data_dir: str | os.PathLike | None = None) -> NB201Table:
  """The NAS-Bench-201 table (read once per file; see the module docstring for the path)."""
  path = table_path(NB201_FILE, data_dir)
  return _read_nb201(str(path), path.stat().st_mtime)


@dataclasses.dataclass(frozen=True, eq=False)
class MacroTable:
  """All 6,561 NAS-Bench-Macro networks, row ``i`` = the key whose code has rank ``i``.

  Attributes:
    keys: ``(6561,)`` 8-digit keys.
    mean_acc: ``(6561,)`` float64 mean CIFAR-10 test accuracy (%) of three trainings.
    std: ``(6561,)`` their standard deviation.
    params: ``(6561,)`` int parameter counts.
    flops: ``(6561,)`` int FLOPs.
  """

  keys: tuple[str, ...]
  mean_acc: np.ndarray
  std: np.ndarray
  params: np.ndarray
  flops: np.ndarray

  def objective(self, name: str) -> np.ndarray:
    """``(6561,)`` float64 values of objective ``error`` (100 - mean_acc), ``params`` or
    ``flops``."""
    if name == "error":
      return 100.0 - self.mean_acc
    if name in ("params", "flops"):
      return getattr(self, name).astype(np.float64)
    raise ValueError(f"unknown NAS-Bench-Macro objective {name!r}; choose from "
                     "['error', 'params', 'flops']")


@functools.lru_cache(maxsize=4)
def _read_macro(path: str, mtime: float) -> MacroTable:
  del mtime
  with open(path) as f:
    raw = json.load(f)
  n = 3 ** 8
  if len(raw) != n:
    raise ValueError(f"{path} has {len(raw)} entries; NAS-Bench-Macro has {n}")
  keys = [None] * n
  acc, std, params, flops = (np.empty(n) for _ in range(4))
  for key, v in raw.items():
    if len(key) != 8 or set(key) - set("012"):
      raise ValueError(f"{path}: bad key {key!r}; keys are 8 digits 0/1/2")
    r = int(key, 3)
    if keys[r] is not None:
      raise ValueError(f"{path}: key {key!r} appears twice")
    keys[r] = key
    acc[r], std[r], params[r], flops[r] = v["mean_acc"], v["std"], v["params"], v["flops"]
  return MacroTable(tuple(keys), acc, std, params.astype(np.int64), flops.astype(np.int64))


def load_macro(data_dir: str | os.PathLike | None = None) -> MacroTable:
  """The NAS-Bench-Macro CIFAR-10 table (read once per file)."""
  path = table_path(MACRO_FILE, data_dir)
  return _read_macro(str(path), path.stat().st_mtime)
