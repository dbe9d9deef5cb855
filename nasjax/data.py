"""Image classification data sets as NumPy arrays, and host-side batching.

:func:`load` returns a :class:`Dataset`: train, validation and test splits as float32 NHWC
images normalised per channel with the mean and standard deviation of the training
split, and int32 labels. The validation split is a stratified, seeded subset of the
official training split; the test split is the official one.

Sources, by name:

- ``fashion_mnist_small``: 8,000 training and 2,000 test images of Fashion-MNIST
  (800 and 200 per class), shipped inside the package, so it needs neither network nor
  extra packages. ``scripts/make_embedded_dataset.py`` rebuilds it.
- ``fashion_mnist``: the IDX files of Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist``), or any folder holding the four IDX files
  (``data_dir=``); otherwise TensorFlow Datasets.
- ``mnist``, ``cifar10``, ``cifar100``, ``svhn_cropped``: TensorFlow Datasets. A data set
  prepared in the ``array_record`` format is read with ``tfds.data_source``, which needs
  no TensorFlow; otherwise ``tfds.load`` reads (or with ``download=True`` downloads and
  prepares) it, which needs TensorFlow (``pip install nasjax[tf]``). ``mnist`` also reads
  IDX files from ``data_dir``. The ``extra`` split of SVHN is not used.
- ``synthetic``: small learnable data made from a seed (:func:`synthetic`), for tests.

Batching (:func:`batches`) runs on the host in NumPy: a permutation drawn from a JAX key
per epoch and optional random-crop / horizontal-flip augmentation, vectorised over the
batch.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import math
import numbers
import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import jax
import numpy as np

from nasjax.network import key_seed

DATASETS = ("fashion_mnist_small", "fashion_mnist", "mnist", "cifar10", "cifar100",
            "svhn_cropped", "synthetic")
TFDS_DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100", "svhn_cropped")
NUM_CLASSES = {"fashion_mnist_small": 10, "fashion_mnist": 10, "mnist": 10, "cifar10": 10,
               "cifar100": 100, "svhn_cropped": 10}

# Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
EMBEDDED_FILE = "fashion_mnist_small.npz"

# Element types of the IDX format, by the type byte of the magic number.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DatasetNotFoundError(FileNotFoundError):
  """A data set is not on this machine; the message says how to get it."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """Train / validation / test splits of an image classification data set.

  Attributes:
    name: the data set's name.
    x_train: ``(N_train, H, W, C)`` float32 normalised images.
    y_train: ``(N_train,)`` int32 labels in ``[0, num_classes)``.
    x_val, y_val: the validation split, same layout (may be empty).
    x_test, y_test: the test split, same layout.
    num_classes: number of classes.
    mean: ``(C,)`` per-channel mean of the raw training images (pixels in [0, 1]) that
      was subtracted.
    std: ``(C,)`` per-channel standard deviation it was divided by.
  """

  name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  mean: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(1, np.float32))
  std: np.ndarray = dataclasses.field(default_factory=lambda: np.ones(1, np.float32))

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Shape of one image, ``(H, W, C)``."""
    return tuple(int(d) for d in self.x_train.shape[1:])

  def __repr__(self):
    return (f"Dataset({self.name!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, train={len(self.y_train)}, "
            f"val={len(self.y_val)}, test={len(self.y_test)})")


# ----------------------------------------------------------------------------- splits
def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
  """Sorted indices of a class-stratified random subset of ``n`` examples.

  Each class contributes in proportion to its frequency; the rounding remainders go to
  the classes with the largest fractional parts (ties to the lower class), so exactly
  ``n`` indices come back and a balanced input gives a balanced subset.

  Args:
    labels: ``(N,)`` integer labels.
    n: subset size, ``0 <= n <= N``.
    seed: seed of the NumPy generator that picks examples within each class.

  Returns:
    ``(n,)`` int64 indices into ``labels``, ascending.
  """
  labels = np.asarray(labels)
  if not 0 <= n <= len(labels):
    raise ValueError(f"subset size n={n} must lie in [0, {len(labels)}]")
  classes, counts = np.unique(labels, return_counts=True)
  exact = counts * (n / max(len(labels), 1))
  take = np.floor(exact).astype(np.int64)
  order = np.lexsort((classes, -(exact - take)))
  take[order[:n - int(take.sum())]] += 1
  rng = np.random.default_rng(seed)
  chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
  return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def normalize(x_train: np.ndarray, *others: np.ndarray):
  """Scale uint8 images to [0, 1], then standardise with the training split's statistics.

  Args:
    x_train: ``(N, H, W, C)`` images (uint8 in [0, 255], or float in [0, 1]).
    *others: further splits, normalised with ``x_train``'s statistics.

  Returns:
    ``(mean, std, x_train, *others)``: per-channel ``(C,)`` statistics in [0, 1] pixel
    units and the float32 normalised arrays.
  """
  def unit(x):
    x = np.asarray(x)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)

  train = unit(x_train)
  axes = tuple(range(train.ndim - 1))
  mean = train.mean(axes, dtype=np.float64)
  std = np.maximum(train.std(axes, dtype=np.float64), 1e-6)
  mean, std = mean.astype(np.float32), std.astype(np.float32)
  inv = 1.0 / std
  return (mean, std) + tuple((unit(x) - mean) * inv for x in (x_train, *others))


def _assemble(name: str, x_train, y_train, x_test, y_test, num_classes: int,
              val_fraction: float, seed: int, limit: int | None) -> Dataset:
  """Split, cap and normalise raw arrays (uint8 or [0, 1] float images, int labels)."""
  if x_train.ndim == 3:  # grayscale without a channel axis
    x_train, x_test = x_train[..., None], x_test[..., None]
  y_train = np.asarray(y_train).astype(np.int32)
  y_test = np.asarray(y_test).astype(np.int32)
  n_val = int(round(val_fraction * len(y_train)))
  val = stratified_indices(y_train, n_val, seed)
  train = np.setdiff1d(np.arange(len(y_train)), val, assume_unique=True)
  if limit is not None and limit < len(train):
    train = train[stratified_indices(y_train[train], limit, seed + 1)]
  mean, std, xt, xv, xs = normalize(x_train[train], x_train[val], x_test)
  return Dataset(name, xt, y_train[train], xv, y_train[val], xs, y_test,
                 num_classes=num_classes, mean=mean, std=std)


# -------------------------------------------------------------------------- synthetic
def synthetic(num_train: int = 256, num_val: int = 64, num_test: int = 64,
              input_shape: Sequence[int] = (8, 8, 3), num_classes: int = 4,
              seed: int = 0) -> Dataset:
  """A small learnable data set: each class is a noisy, translation-invariant texture.

  Class ``c`` tiles a random 3x3xC patch over the image; each example adds unit
  Gaussian noise to its class's texture (signal-to-noise ratio 1 per pixel), so a small
  CNN separates the classes in a few dozen steps but not in one. Labels are balanced.

  Args:
    num_train, num_val, num_test: split sizes.
    input_shape: ``(H, W, C)``.
    num_classes: number of classes, at least 2.
    seed: seed of everything random.

  Returns:
    A normalised :class:`Dataset` named ``"synthetic"``.
  """
  input_shape = tuple(int(d) for d in input_shape)
  if len(input_shape) != 3 or min(input_shape) < 1:
    raise ValueError(f"input_shape must be (H, W, C) with positive sizes, got {input_shape}")
  if num_classes < 2:
    raise ValueError(f"num_classes must be at least 2, got {num_classes}")
  if min(num_train, num_val, num_test) < 0 or num_train < 1:
    raise ValueError(f"split sizes must be >= 0 (train >= 1), got "
                     f"{(num_train, num_val, num_test)}")
  h, w, c = input_shape
  rng = np.random.default_rng(seed)
  patches = rng.standard_normal((num_classes, 3, 3, c)).astype(np.float32)
  reps = (1, math.ceil(h / 3), math.ceil(w / 3), 1)
  textures = np.tile(patches, reps)[:, :h, :w, :]
  n = num_train + num_val + num_test
  y = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
  x = textures[y] + rng.standard_normal((n, h, w, c)).astype(np.float32)
  a, b = num_train, num_train + num_val
  mean, std, xt, xv, xs = normalize(x[:a], x[a:b], x[b:])
  return Dataset("synthetic", xt, y[:a], xv, y[a:b], xs, y[b:], num_classes=num_classes,
                 mean=mean, std=std)


# -------------------------------------------------------------------------------- IDX
def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Read an IDX file (the MNIST / Fashion-MNIST format), gzip-compressed or not.

  Raises:
    ValueError: if the file is not IDX (bad magic number or size).
  """
  path = Path(path)
  raw = path.read_bytes()
  if raw[:2] == b"\x1f\x8b":
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{str(path)!r} is not an IDX file (magic {raw[:4].hex()})")
  ndim = raw[3]
  dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(np.int64)
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  count = int(np.prod(dims))
  offset = 4 + 4 * ndim
  if len(raw) - offset != count * dtype.itemsize:
    raise ValueError(f"{str(path)!r}: header says {tuple(dims)} but the file holds "
                     f"{len(raw) - offset} bytes of data")
  data = np.frombuffer(raw, dtype, count=count, offset=offset).reshape(tuple(dims))
  return data.astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path | None:
  for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
    if (folder / name).is_file():
      return folder / name
  return None


def read_idx_folder(folder: str | os.PathLike) -> dict[str, np.ndarray] | None:
  """The four MNIST-style IDX arrays in ``folder``, or None if any file is missing.

  Returns:
    ``{"x_train": (N, H, W) uint8, "y_train": (N,), "x_test": ..., "y_test": ...}``.
  """
  folder = Path(folder)
  paths = {k: _find_idx(folder, stem) for k, stem in IDX_FILES.items()}
  if any(p is None for p in paths.values()):
    return None
  return {k: read_idx(p) for k, p in paths.items()}


# ------------------------------------------------------------------------------- tfds
def _tfds_data_source(name: str, data_dir: str | None) -> Mapping[str, Sequence[dict]]:
  """``{split: random-access source of {"image": (H, W, C) uint8, "label": int}}``."""
  import tensorflow_datasets as tfds
  return tfds.data_source(name, data_dir=data_dir, download=False)


def _tfds_load(name: str, data_dir: str | None, download: bool) -> dict[str, dict]:
  """``{split: {"image": (N, H, W, C) uint8, "label": (N,)}}`` through ``tfds.load``."""
  import tensorflow_datasets as tfds
  splits = tfds.load(name, split=["train", "test"], batch_size=-1, data_dir=data_dir,
                     download=download)
  return dict(zip(["train", "test"], tfds.as_numpy(splits)))


def source_to_arrays(source: Sequence[Mapping], chunk: int = 4096):
  """Stack the examples of a random-access source into ``(images uint8, labels int32)``.

  Args:
    source: a sequence (e.g. a ``tfds.data_source`` split) of
      ``{"image": (H, W, C) uint8, "label": int}`` dictionaries.
    chunk: examples fetched per read (through ``__getitems__`` when the source has it).

  Returns:
    ``(images (N, H, W, C) uint8, labels (N,) int32)``.
  """
  n = len(source)
  images, labels = [], []
  get_many = getattr(source, "__getitems__", None)
  for start in range(0, n, chunk):
    idx = list(range(start, min(start + chunk, n)))
    elems = get_many(idx) if get_many is not None else [source[i] for i in idx]
    images.extend(np.asarray(e["image"]) for e in elems)
    labels.extend(int(e["label"]) for e in elems)
  if not images:
    raise ValueError("the data source holds no examples")
  x = np.stack(images)
  if x.ndim == 3:
    x = x[..., None]
  return x.astype(np.uint8), np.asarray(labels, np.int32)


def _how_to_get(name: str, data_dir) -> str:
  where = f"data_dir={str(data_dir)!r}" if data_dir else (
      "the default TFDS folder ($TFDS_DATA_DIR or ~/tensorflow_datasets)")
  lines = [f"data set {name!r} was not found in {where}. To get it:"]
  if name == "fashion_mnist":
    lines.append(f"  - offline: `apt-get install dataset-fashion-mnist` (IDX files in "
                 f"{DEBIAN_FASHION_MNIST}), or pass data_dir= a folder holding "
                 f"{', '.join(s + '.gz' for s in IDX_FILES.values())};")
  if name == "mnist":
    lines.append(f"  - offline: pass data_dir= a folder holding the MNIST IDX files "
                 f"{', '.join(s + '.gz' for s in IDX_FILES.values())};")
  lines.append(f"  - download it: `pip install nasjax[tf]`, then "
               f"nasjax.data.load({name!r}, download=True[, data_dir=...]);")
  lines.append(f"  - or point data_dir= at a TFDS folder where {name!r} is already prepared "
               f"(array_record format needs no TensorFlow).")
  if name == "fashion_mnist":
    lines.append("  - the embedded subset needs nothing: nasjax.data.load("
                 "'fashion_mnist_small').")
  return "\n".join(lines)


def _load_tfds(name: str, data_dir, download: bool):
  """Raw ``(x_train, y_train, x_test, y_test)`` of a TFDS data set."""
  data_dir = None if data_dir is None else os.fspath(data_dir)
  if not download:
    try:
      sources = _tfds_data_source(name, data_dir)
    except Exception:  # noqa: BLE001  # not prepared, or prepared as TFRecord
      sources = {}
    if "train" in sources and "test" in sources:
      x_tr, y_tr = source_to_arrays(sources["train"])
      x_te, y_te = source_to_arrays(sources["test"])
      return x_tr, y_tr, x_te, y_te
  try:
    import tensorflow  # noqa: F401  # tfds.load cannot read or build data without it
  except ImportError:
    raise DatasetNotFoundError(_how_to_get(name, data_dir)) from None
  try:
    arrays = _tfds_load(name, data_dir, download)
  except Exception as e:  # tfds raises several unrelated types for missing data
    raise DatasetNotFoundError(f"{_how_to_get(name, data_dir)}\n(tfds said: {e})") from None
  return (arrays["train"]["image"], arrays["train"]["label"], arrays["test"]["image"],
          arrays["test"]["label"])


# ---------------------------------------------------------------------------- loading
def embedded_path() -> Path:
  """Path of the embedded Fashion-MNIST subset inside the installed package."""
  return Path(str(importlib.resources.files("nasjax").joinpath("datasets", EMBEDDED_FILE)))


def check_options(name: str, *, val_fraction: float = 0.1, limit: int | None = None) -> None:
  """Check the options of :func:`load` without loading anything.

  Raises:
    ValueError: naming the value, for an unknown data set, a ``val_fraction`` outside
      ``[0, 1)`` or a ``limit`` that is not a positive int or None.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
  if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral)
                            or limit < 1):
    raise ValueError(f"limit must be a positive number of examples, got {limit!r}")


def load(name: str = "fashion_mnist_small", *, val_fraction: float = 0.1, seed: int = 0,
         data_dir: str | os.PathLike | None = None, limit: int | None = None,
         download: bool = False) -> Dataset:
  """Load a data set as normalised train / validation / test arrays.

  Args:
    name: one of :data:`DATASETS`.
    val_fraction: fraction of the official training split held out (stratified by
      class) as the validation split, in ``[0, 1)``. (``synthetic`` takes the default
      split sizes of :func:`synthetic` instead.)
    seed: seed of the validation split and of ``limit``'s subset.
    data_dir: for ``fashion_mnist`` / ``mnist``, a folder of IDX files or a TFDS data
      folder; for the other TFDS data sets, the TFDS data folder. Ignored by
      ``fashion_mnist_small`` and ``synthetic``.
    limit: keep at most this many training examples (a stratified subset chosen after
      the validation split); for quick runs.
    download: let ``tfds.load`` download and prepare a missing TFDS data set (needs
      TensorFlow: ``pip install nasjax[tf]``).

  Returns:
    A :class:`Dataset` normalised with the per-channel mean and standard deviation of
    its (possibly limited) training split.

  Raises:
    ValueError: for an unknown name or a bad ``val_fraction`` / ``limit``.
    DatasetNotFoundError: if the data is not on this machine; the message says how to
      get it.
  """
  check_options(name, val_fraction=val_fraction, limit=limit)
  if name == "synthetic":
    data = synthetic(seed=seed)
    if limit is not None and limit < len(data.y_train):
      keep = stratified_indices(data.y_train, limit, seed + 1)
      data = dataclasses.replace(data, x_train=data.x_train[keep],
                                 y_train=data.y_train[keep])
    return data
  if name == "fashion_mnist_small":
    path = embedded_path()
    if not path.is_file():
      raise DatasetNotFoundError(
          f"the embedded data set is missing from the installed package ({path}); "
          "reinstall nasjax or rebuild it with scripts/make_embedded_dataset.py")
    with np.load(path) as f:
      raw = (f["x_train"], f["y_train"], f["x_test"], f["y_test"])
  else:
    raw = None
    if name in ("fashion_mnist", "mnist"):
      folders = [Path(data_dir)] if data_dir is not None else []
      if name == "fashion_mnist" and data_dir is None:
        folders.append(DEBIAN_FASHION_MNIST)
      for folder in folders:
        idx = read_idx_folder(folder)
        if idx is not None:
          raw = (idx["x_train"], idx["y_train"], idx["x_test"], idx["y_test"])
          break
    if raw is None:
      raw = _load_tfds(name, data_dir, download)
  return _assemble(name, *raw, num_classes=NUM_CLASSES[name], val_fraction=val_fraction,
                   seed=seed, limit=limit)


# ---------------------------------------------------------------------------- batching
def random_crop_flip(x: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
  """Random crops from zero-padded images, each mirrored left-right with probability 1/2.

  One gather does both: each image reads an ``H x W`` window at a random offset of its
  padded copy, with the column order reversed for the flipped ones. Zero padding is in
  normalised units, i.e. the padded pixels take the training mean.

  Args:
    x: ``(B, H, W, C)`` images.
    rng: NumPy generator that draws the offsets and flips.
    pad: padding on each side, in pixels.

  Returns:
    ``(B, H, W, C)`` augmented images, same dtype.
  """
  b, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  dy = rng.integers(0, 2 * pad + 1, size=b)
  dx = rng.integers(0, 2 * pad + 1, size=b)
  flip = rng.random(b) < 0.5
  rows = dy[:, None] + np.arange(h)
  cols = np.where(flip[:, None], np.arange(w)[::-1], np.arange(w)) + dx[:, None]
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, key, *, augment: bool = False,
            drop_last: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """One epoch of shuffled mini-batches, made on the host.

  Args:
    x: ``(N, H, W, C)`` images.
    y: ``(N,)`` labels.
    batch_size: examples per batch.
    key: ``jax.random`` key; it alone fixes the order and the augmentation, so pass a
      new key (e.g. ``jax.random.fold_in(key, epoch)``) for each epoch.
    augment: apply :func:`random_crop_flip` (4-pixel padding).
    drop_last: skip the last batch when it is smaller than ``batch_size`` (keeps shapes
      static, so a jitted step compiles once).

  Yields:
    ``(x_batch (B, H, W, C), y_batch (B,))`` NumPy arrays; every example appears once
    per epoch (except the dropped remainder).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if len(x) != len(y):
    raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
  rng = np.random.default_rng(key_seed(key))
  order = rng.permutation(len(x))
  stop = len(x) - len(x) % batch_size if drop_last else len(x)
  for start in range(0, stop, batch_size):
    idx = order[start:start + batch_size]
    xb = x[idx]
    if augment:
      xb = random_crop_flip(xb, rng)
    yield xb, y[idx]


def stream(x: np.ndarray, y: np.ndarray, batch_size: int, key, *, start: int = 0,
           augment: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Endless full mini-batches: epoch ``e`` is :func:`batches` with key ``fold_in(key, e)``.

  ``start`` skips that many batches, so a stream rebuilt at any step continues exactly
  where an earlier one stopped (shared-weight training resumed from a checkpoint).

  Raises:
    ValueError: if ``batch_size`` exceeds the number of examples.
  """
  if batch_size > len(x):
    raise ValueError(f"batch_size {batch_size} exceeds the {len(x)} examples")
  epoch, index = divmod(int(start), len(x) // batch_size)
  while True:
    for i, batch in enumerate(batches(x, y, batch_size, jax.random.fold_in(key, epoch),
                                      augment=augment)):
      if i >= index:
        yield batch
    epoch, index = epoch + 1, 0


def padded_batches(x: np.ndarray, y: np.ndarray, batch_size: int, stop: int | None = None
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """``(x, y, mask)`` batches of exactly ``batch_size`` over the first ``stop`` examples
  (default all), in order, for evaluation: the last batch is zero-padded and ``mask``
  marks its real examples, so one compiled program serves every batch."""
  stop = len(x) if stop is None else stop
  for start in range(0, stop, batch_size):
    xb, yb = x[start:min(start + batch_size, stop)], y[start:min(start + batch_size, stop)]
    m = len(xb)
    mask = np.arange(batch_size) < m
    if m < batch_size:
      xb = np.concatenate([xb, np.zeros((batch_size - m,) + xb.shape[1:], xb.dtype)])
      yb = np.concatenate([yb, np.zeros((batch_size - m,) + yb.shape[1:], yb.dtype)])
    yield xb, yb, mask
