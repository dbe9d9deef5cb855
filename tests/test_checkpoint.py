"""The checkpoint format: an ``.npz`` archive of arrays and a JSON structure, written and
read back exactly, readable without nasjax, and loaded without running code from it."""

import dataclasses
import io
import json
import math
import subprocess
import sys
import zipfile

import flax.core
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from optax.microbatching._microbatching import AccumulationType

import nasjax
from nasjax.search import checkpoint as ckpt
from nasjax.search.evaluators import Record
from nasjax.search.runner import Budget


def _network():
  arch = nasjax.sequential((8, 8, 3), [("conv", {"features": 4, "kernel": 3}),
                                       ("batchnorm", {}), ("relu", {}), ("gap", {}),
                                       ("dense", {"features": 5})])
  return nasjax.init(arch, jax.random.key(0))


def _every_kind() -> dict:
  """A tree holding every kind of node the format has."""
  net = _network()
  params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2, jnp.bfloat16)}
  return {
      "none": None, "bools": [True, False], "ints": [0, -7, 2**53 - 1, 2**53, -2**80, 10**40],
      "floats": [1.5, -0.0, 1e-310, math.nan, math.inf, -math.inf, 0.1],
      "str": "é ☃ \x00", "list": [[], [[1]]], "tuple": (1, "a", ()),
      "set": {3, 1, 2}, "frozenset": frozenset({"a", (1, 2)}),
      # Keys that are not strings: ints, tuples, None, bools, frozensets.
      1: "int key", (1, "x"): "tuple key", None: "none key", False: "bool key",
      frozenset({2}): "frozenset key",
      "numpy": [np.arange(6, dtype=np.int64).reshape(2, 3), np.array([np.nan, -0.0, np.inf]),
                np.zeros((0, 4), np.float16), np.array(True), np.array([1 + 2j], np.complex64),
                np.arange(4, dtype=np.uint8)[::2], np.array([1.5, -2], ml_dtypes.bfloat16),
                np.array([0.5], ml_dtypes.float8_e4m3fn), np.array([3, -2], ml_dtypes.int4)],
      "scalars": [np.float32(2.5), np.int64(-3), np.bool_(False), ml_dtypes.bfloat16(1.25),
                  np.float64(np.nan)],
      "jax": [jnp.arange(3), jnp.asarray(2.0), jnp.asarray(3), jnp.ones(2, jnp.bfloat16),
              jnp.asarray([True, False]), jnp.zeros((2, 0))],
      "keys": [jax.random.key(1), jax.random.split(jax.random.key(2), 3),
               jax.random.key(3, impl="rbg"), jax.random.key(4, impl="unsafe_rbg")],
      "arch": net.arch, "node": net.arch.nodes[1], "network": net,
      "optax": optax.adam(1e-3).init(params), "chain": optax.chain(
          optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-4),
          optax.sgd(0.1, momentum=0.9)).init(params),
      "enum": AccumulationType.RUNNING_MEAN,
      "record": Record("|none~0|", [0.5, math.nan], "ok", 1.0, {"acc": np.float32(0.9)},
                       [1, 2], net),
      "budget": Budget(max_evals=3),
      "frozendict": flax.core.FrozenDict({"a": jnp.ones(1), "b": {"c": 2}}),
      "errors": [ValueError("bad", 3), FileNotFoundError(2, "missing", "f.txt")],
  }


def _same(a, b, path="tree"):
  """Asserts that ``b`` is ``a``: same types, dtypes, weak types, key impls and bits."""
  assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
  if isinstance(a, jax.Array):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      assert str(jax.random.key_impl(a)) == str(jax.random.key_impl(b)), path
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    assert (a.dtype, a.shape, a.weak_type) == (b.dtype, b.shape, b.weak_type), path
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path
  elif isinstance(a, (np.ndarray, np.generic)):
    assert (a.dtype, np.shape(a)) == (b.dtype, np.shape(b)), path
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path
  elif isinstance(a, float):  # NaN is NaN, -0.0 is not 0.0
    assert np.array(a).tobytes() == np.array(b).tobytes(), f"{path}: {a} != {b}"
  elif isinstance(a, (dict, flax.core.FrozenDict)):
    assert list(a) == list(b), path
    for k in a:
      _same(a[k], b[k], f"{path}[{k!r}]")
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b), path
    for i, (x, y) in enumerate(zip(a, b)):
      _same(x, y, f"{path}[{i}]")
  elif isinstance(a, BaseException):
    assert a.args == b.args, path
  elif dataclasses.is_dataclass(a):
    for f in dataclasses.fields(a):
      _same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
  else:
    assert a == b, f"{path}: {a!r} != {b!r}"


def test_a_tree_of_every_kind_round_trips_exactly():
  tree = _every_kind()
  back = ckpt.loads(ckpt.dumps(tree), "data")
  _same(tree, back)
  assert back["errors"][1].errno == 2 and back["errors"][1].filename == "f.txt"
  assert back["jax"][1].weak_type and not back["jax"][0].weak_type
  assert back["network"].arch is not tree["network"].arch and back["arch"] == tree["arch"]
  # Arrays are stored in the machine's byte order.
  swapped = ckpt.loads(ckpt.dumps(np.arange(3, dtype=">i4")), "data")
  assert swapped.dtype == np.dtype("int32") and swapped.tolist() == [0, 1, 2]
  # What was loaded is written as it was read: the same structure and arrays.
  again = ckpt.dumps(back)
  with np.load(io.BytesIO(again)) as f, np.load(io.BytesIO(ckpt.dumps(tree))) as g:
    assert f.files == g.files
    assert all(f[k].tobytes() == g[k].tobytes() for k in f.files)


def test_the_file_reads_with_numpy_and_json_alone(tmp_path):
  path = tmp_path / "checkpoint.npz"
  path.write_bytes(ckpt.dumps({"state": {"w": jnp.ones((2, 3), jnp.bfloat16),
                                         "n": np.arange(4)}, "evals": 12, "nan": math.nan}))
  # A fresh interpreter with NumPy and json only: no nasjax, no jax, no pickle.
  code = f"""
import json, sys, numpy as np
with np.load({str(path)!r}, allow_pickle=False) as f:
  doc = json.loads(f["__structure__"].tobytes().decode("utf-8"))
  items = doc["tree"]["map"]
  w, n = items["state"]["map"]["w"], items["state"]["map"]["n"]
  print(json.dumps([doc["format"], items["evals"], items["nan"], w["t"], w["dtype"],
                    w["shape"], str(f[w["member"]].dtype), f[n["member"]].tolist(),
                    sorted(f.files), any(m.startswith(("jax", "nasjax", "ml_dtypes"))
                                         for m in sys.modules)]))
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True).stdout
  assert json.loads(out) == ["nasjax.tree/1", 12, {"t": "float", "v": "nan"}, "jax",
                             "bfloat16", [2, 3], "uint16", [0, 1, 2, 3],
                             ["__structure__", "a0", "a1"], False]
  with zipfile.ZipFile(path) as zf:  # stored, not compressed: arrays are read in place
    assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_the_state_of_a_search_round_trips(tmp_path):
  from nasjax.search.base import make_strategy
  from nasjax.search.evaluators import make_evaluator

  evaluator = make_evaluator({"kind": "macro"})
  strategy = make_strategy("lemonade", evaluator.space, {"n_pc": 8, "n_ac": 4},
                           num_objectives=len(evaluator.objectives))
  state = strategy.init(jax.random.key(0))
  _same(state, ckpt.loads(ckpt.dumps({"state": state}), "data")["state"])


@dataclasses.dataclass
class _Local:  # defined outside nasjax and optax
  x: int = 0


@pytest.mark.parametrize("tree,where,what", [
    ({"state": [Record("a", [1.0]), Record("b", [2.0], metrics={"fn": len})]},
     r"state\[1\]\.metrics\['fn'\]", r"<built-in function len>"),
    ({"state": {"pop": [0, 1, 2, {"foo": lambda: 0}]}}, r"state\['pop'\]\[3\]\['foo'\]",
     r"<function .*<lambda>"),
    ([_Local()], r"\[0\]", r"_Local\(x=0\).*test_checkpoint\._Local"),
    ({"p": nasjax.search.runner.Progress(Budget(3))}, "p", r"nasjax\.search\.runner\.Progress"),
    ({"od": __import__("collections").OrderedDict(a=1)}, "od", r"collections\.OrderedDict"),
    ({"b": b"bytes"}, "b", "builtins.bytes"),
    ({"o": np.array([object()])}, "o", "an array of dtype object"),
    ({"s": np.array(["text"])}, "s", "an array of dtype <U4"),
    ({"err": KeyError("k")}, "err", "builtins.KeyError"),
])
def test_what_cannot_be_stored_is_named_where_it_is(tree, where, what):
  with pytest.raises(TypeError, match=rf"^{where}: cannot store .*{what}"):
    ckpt.dumps(tree)


def _crafted(node, arrays=None, fmt=ckpt.FORMAT) -> bytes:
  doc = json.dumps({"format": fmt, "tree": node}).encode()
  buf = io.BytesIO()
  np.savez(buf, __structure__=np.frombuffer(doc, np.uint8), **(arrays or {}))
  return buf.getvalue()


@pytest.mark.parametrize("kind,module,name", [
    ("dataclass", "os", "system"), ("namedtuple", "posix", "system"),
    ("dataclass", "builtins", "eval"), ("enum", "subprocess", "Popen"),
    ("dataclass", "this", "d"),  # importing `this` prints: nothing is imported
    ("dataclass", "nasjax.search.runner", "atomic_write"),
    ("namedtuple", "nasjax.search.runner", "os.system"),
    ("dataclass", "nasjax.search.runner", "Progress"),  # a nasjax class, no state class
    ("dataclass", "nasjax.__main__", "main"),
    ("enum", "nasjax.search.runner", "Budget"),  # a state class, as another kind
    ("namedtuple", "optax", "adam"),
])
def test_a_crafted_structure_naming_other_code_is_refused(tmp_path, capfd, kind, module,
                                                          name):
  marker = tmp_path / "marker"
  modules = set(sys.modules)
  data = _crafted({"t": "dict", "map": {"x": {
      "t": kind, "module": module, "qualname": name, "name": "MEAN",
      "fields": {"command": f"touch {marker}"}}}})
  with pytest.raises(ckpt.RefusedGlobal, match=rf"^refusing to load crafted: it names "
                     rf"{module}\.{name}.*, which is not a state class of nasjax or optax"):
    ckpt.loads(data, "crafted")
  assert not marker.exists()
  assert capfd.readouterr().out == ""
  assert {m for m in set(sys.modules) - modules if not m.startswith(("nasjax", "optax"))} \
      == set()


def test_errors_refuse_other_builtins():
  data = _crafted({"t": "error", "type": "exec", "args": ["print(1)"]})
  with pytest.raises(ckpt.RefusedGlobal, match="it names builtins.exec"):
    ckpt.loads(data, "crafted")


def test_loading_runs_no_init_of_a_state_class():
  # Budget's __post_init__ refuses a budget without a limit: loading never calls it.
  data = _crafted({"t": "dataclass", "module": "nasjax.search.runner", "qualname": "Budget",
                   "fields": {"max_evals": None, "time_budget": None}})
  budget = ckpt.loads(data, "data")
  assert type(budget) is Budget and budget.max_evals is None
  with pytest.raises(ValueError, match="a budget needs max_evals or time_budget"):
    Budget(None, None)


def test_other_fields_are_an_error_naming_the_class():
  data = _crafted({"t": "dataclass", "module": "nasjax.search.runner", "qualname": "Budget",
                   "fields": {"max_evals": 3}})
  with pytest.raises(ckpt.OtherFields, match=r"^data: it holds a nasjax\.search\.runner\.Budget "
                     r"with the fields \['max_evals'\]; the class has \['max_evals', "
                     r"'time_budget'\] \(the data was written by another version\)"):
    ckpt.loads(data, "data")


def _rewrite(data: bytes, change) -> bytes:
  """``data`` with its members (``{name: array}``) changed by ``change``."""
  with np.load(io.BytesIO(data), allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  change(arrays)
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def _structure(fn):
  def change(arrays):
    doc = json.loads(arrays["__structure__"].tobytes())
    doc = fn(doc)
    arrays["__structure__"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
  return change


def _flip_last_data_byte(data: bytes) -> bytes:
  with zipfile.ZipFile(io.BytesIO(data)) as zf:
    info = zf.infolist()[-1]
  start = info.header_offset + 30 + int.from_bytes(
      data[info.header_offset + 26:info.header_offset + 28], "little") + int.from_bytes(
      data[info.header_offset + 28:info.header_offset + 30], "little")
  at = start + info.compress_size - 1
  return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


def _npy_file() -> bytes:
  buf = io.BytesIO()
  np.save(buf, np.zeros(3))
  return buf.getvalue()


def _node(doc):
  return doc["tree"]["map"]["x"]


DAMAGE = {
    "empty": lambda d: b"",
    "garbage": lambda d: b"\x00\xffnot a checkpoint\n" * 8,
    "a .npy file": lambda d: _npy_file(),
    "flipped data byte": _flip_last_data_byte,
    "no structure": lambda d: _rewrite(d, lambda a: a.pop("__structure__")),
    "missing member": lambda d: _rewrite(d, lambda a: a.pop("a1")),
    "extra member": lambda d: _rewrite(d, lambda a: a.update(a9=np.zeros(1))),
    "other shape": lambda d: _rewrite(d, lambda a: a.update(a0=np.zeros((2, 2)))),
    "other dtype": lambda d: _rewrite(d, lambda a: a.update(a0=np.zeros(3, np.int32))),
    "pickled member": lambda d: _rewrite(d, lambda a: a.update(a0=np.array([None, 1]))),
    "structure not JSON": lambda d: _rewrite(d, lambda a: a.update(
        __structure__=a["__structure__"][:-3])),
    "structure not UTF-8": lambda d: _rewrite(d, lambda a: a.update(
        __structure__=np.frombuffer(b"\xff\xfe{}", np.uint8))),
    "structure of floats": lambda d: _rewrite(d, lambda a: a.update(
        __structure__=a["__structure__"].astype(np.float32))),
    "other format": lambda d: _rewrite(d, _structure(lambda doc: {**doc, "format": "x/9"})),
    "unknown node": lambda d: _rewrite(d, _structure(
        lambda doc: {**doc, "tree": {"t": "pickle", "v": "x"}})),
    "member named twice": lambda d: _rewrite(d, _structure(lambda doc: (
        _node(doc)[1].update(member="a0"), doc)[1])),
    "unknown dtype": lambda d: _rewrite(d, _structure(lambda doc: (
        _node(doc)[0].update(dtype="object"), doc)[1])),
    "bad float": lambda d: _rewrite(d, _structure(
        lambda doc: {**doc, "tree": {"t": "float", "v": "1e400x"}})),
    "unhashable key": lambda d: _rewrite(d, _structure(
        lambda doc: {**doc, "tree": {"t": "dict", "items": [[[1], 2]]}})),
    "bad pairs": lambda d: _rewrite(d, _structure(
        lambda doc: {**doc, "tree": {"t": "dict", "items": [[1, 2, 3]]}})),
    "map not an object": lambda d: _rewrite(d, _structure(
        lambda doc: {**doc, "tree": {"t": "dict", "map": [1]}})),
    "nested too deep": lambda d: _rewrite(d, lambda a: a.update(__structure__=np.frombuffer(
        b'{"format": "nasjax.tree/1", "tree": ' + b"[" * 100000 + b"]" * 100000 + b"}",
        np.uint8))),
    "bad key impl": lambda d: _rewrite(d, _structure(lambda doc: (
        _node(doc)[2].update(impl="os.system"), doc)[1])),
    "bad architecture": lambda d: _rewrite(d, _structure(lambda doc: (
        _node(doc)[3].update(value={"nodes": 7}), doc)[1])),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_data_is_detected(damage):
  tree = {"x": [np.arange(3.0), jnp.ones(2), {"t": jax.random.key(0)}["t"],
                nasjax.sequential((4,), [("dense", {"features": 2})])]}
  data = ckpt.dumps(tree)
  _same(tree, ckpt.loads(data, "data"))
  with pytest.raises(ckpt.DamagedData, match=r"^data is damaged \("):
    ckpt.loads(DAMAGE[damage](data), "data")


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_data_cut_short_is_detected(cut):
  data = ckpt.dumps({"a": np.arange(1000.0), "b": [jnp.ones(100)] * 3})
  with pytest.raises(ckpt.DamagedData, match=r"^data is damaged \("):
    ckpt.loads(data[:int(len(data) * cut)], "data")


def test_sizes_are_checked_before_anything_is_read(monkeypatch):
  data = ckpt.dumps({"a": np.zeros(1000)})
  monkeypatch.setattr(ckpt, "MAX_STRUCTURE_BYTES", 10)
  with pytest.raises(ckpt.DamagedData, match=r"the structure is a uint8 array of shape "
                     r"\(\d+,\), not at most 10 bytes"):
    ckpt.loads(data, "data")
  monkeypatch.undo()
  # Zeros compress to nearly nothing: an archive of them claims far more than its size.
  buf = io.BytesIO()
  np.savez_compressed(buf, __structure__=np.frombuffer(
      b'{"format": "nasjax.tree/1", "tree": null}', np.uint8), a0=np.zeros(1 << 20))
  small = buf.getvalue()
  monkeypatch.setattr(ckpt, "MIN_INFLATE_BYTES", 1 << 10)
  read = []
  monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: read.append(a))
  with pytest.raises(ckpt.DamagedData, match=rf"its members claim {(8 << 20) + 41} bytes, more "
                     rf"than {64 * len(small)} \(64 times its size\)"):
    ckpt.loads(small, "data")
  assert read == []
