"""Search checkpoints as data: a ``.npz`` file that NumPy and a JSON parser read alone.

:func:`dumps` writes a tree of Python data (what a search checkpoint holds: the strategy
state, the PRNG key, counters, the evaluation cache; or what the processes of a
multi-host run send each other) as the bytes of an uncompressed ``.npz`` archive:

* ``__structure__``: a ``uint8`` array, the UTF-8 JSON document
  ``{"format": "nasjax.tree/1", "tree": NODE}``;
* ``a0``, ``a1``, ...: one array per array leaf of the tree, in the order the tree
  names them.

A NODE is a JSON ``null``, ``true``/``false``, string, number (an int or a float that
round-trips; ints of magnitude ``2**53`` or more are written as ``{"t": "int", "v":
"<decimal>"}``, NaN and infinities as ``{"t": "float", "v": "nan" | "inf" | "-inf"}``)
or list (a Python list), or an object whose ``"t"`` says what it is:

* ``"dict"``: ``"map"``, an object of value NODEs, if every key is a string, else
  ``"items"``, a list of ``[key NODE, value NODE]`` pairs; ``"frozendict"``: flax's
  ``FrozenDict``, the same; ``"tuple"``, ``"set"``, ``"frozenset"``: ``"items"``, a
  list of NODEs;
* ``"ndarray"`` (a NumPy array), ``"scalar"`` (a NumPy scalar, stored as a 0-d array)
  and ``"jax"`` (a JAX array, with its ``"weak_type"``): ``"member"`` (the archive
  member holding it), ``"dtype"`` (its NumPy name: ``"float32"``, ``"bfloat16"``) and
  ``"shape"``. Arrays hold numbers or booleans, in the machine's byte order; those of
  JAX's extra dtypes (``ml_dtypes``: bfloat16, the float8s, int4) are stored as a view
  of the unsigned integers of their width;
* ``"key"``: a typed PRNG key, ``"impl"`` (``jax.random.key_impl``'s name) and
  ``"data"`` (an ``"ndarray"`` NODE of ``jax.random.key_data``);
* ``"arch"`` and ``"node"``: an :class:`~nasjax.arch.Arch` or
  :class:`~nasjax.arch.Node`, ``"value"`` its dict form (``Arch.to_dict``);
* ``"dataclass"``, ``"namedtuple"``: an instance of a state class, ``"module"``,
  ``"qualname"`` and ``"fields"`` (an object of field NODEs); ``"enum"``: ``"module"``,
  ``"qualname"`` and the member's ``"name"``;
* ``"error"``: a ``ValueError`` or ``OSError`` (sent between processes): ``"type"``,
  the builtin exception class it is or derives from, and ``"args"``.

State classes are the dataclasses, NamedTuples and enums defined in
:data:`STATE_PACKAGES` (nasjax's strategy states, supernets and networks, optax's
optimiser states) and in the modules that define registered strategies
(:func:`strategy_modules`: a strategy written in a user's own module, which is imported
before its runs are resumed; such a module is never imported by a checkpoint). Anything
else (a function, an instance of another class) is refused
by :func:`dumps` with a ``TypeError`` naming where it is in the tree.

:func:`loads` runs no code from the data: it resolves only state classes (looking them
up in their modules' namespaces, importing nothing outside :data:`STATE_PACKAGES`;
any other name is refused with :class:`RefusedGlobal`) and builds their instances
without calling their ``__init__`` (``object.__new__`` and ``object.__setattr__``;
``_make`` for NamedTuples). What it reads is bounded before it is read: the structure
may take :data:`MAX_STRUCTURE_BYTES`, and all members together, by the sizes the
archive declares, :data:`MAX_INFLATION` times the data's size. Data cut short, garbled
or inconsistent (a missing member, a shape that disagrees with the structure) raises
:class:`DamagedData`.

Checkpoints of earlier versions are pickles; :func:`loads_pickle` reads them with
:class:`SafeUnpickler`, which resolves only the globals such checkpoints reference.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import enum
import functools
import importlib
import io
import json
import math
import pickle
import sys
import zipfile

import numpy as np

# All members may take at most MAX_INFLATION times the data's size in memory (or
# MIN_INFLATE_BYTES), as in a network file: a few KB of compressed zeros must not claim
# gigabytes.
from nasjax.network import MAX_INFLATION, MIN_INFLATE_BYTES, npy_header

FORMAT = "nasjax.tree/1"
STRUCTURE = "__structure__"
# The JSON structure is read whole: refuse a larger one before reading it (a LEMONADE
# population of DARTS-sized architectures takes a few MB).
MAX_STRUCTURE_BYTES = 256 << 20
# Ints beyond this magnitude are written as decimal strings: JSON readers other than
# Python's hold numbers as doubles.
_EXACT_INT = 2**53


class DamagedData(ValueError):
  """Data that cannot be read back: cut short, garbled, or not written by :func:`dumps`."""


class OtherFields(ValueError):
  """Data holding a state class with other fields than the class has (another version)."""


def _is_extra_dtype(dtype: np.dtype) -> bool:
  """Whether ``dtype`` is one of JAX's extra dtypes (bfloat16, float8_*, int4, ...)."""
  return dtype.kind == "V" and dtype.type.__module__ == "ml_dtypes"


def _storage_dtype(dtype: np.dtype) -> np.dtype | None:
  """The dtype a ``dtype`` array is stored as (None: such arrays are not stored)."""
  if _is_extra_dtype(dtype):
    return np.dtype(f"uint{8 * dtype.itemsize}")
  if dtype.kind in "biufc":
    return dtype.newbyteorder("=")
  return None


def _qualified(cls: type) -> str:
  return f"{cls.__module__}.{cls.__qualname__}"


def _is_named_tuple(cls: type) -> bool:
  return issubclass(cls, tuple) and hasattr(cls, "_fields")


def _is_frozen_dict(obj) -> bool:
  cls = type(obj)
  return cls.__module__ == "flax.core.frozen_dict" and cls.__qualname__ == "FrozenDict"


# Values that are their own JSON NODE.
_PLAIN = frozenset({str, bool, type(None)})


class _Unstorable(TypeError):
  """A value :func:`dumps` cannot store; ``steps`` lead to it, innermost first."""

  def __init__(self, what: str):
    super().__init__(what)
    self.what, self.steps = what, []

  def where(self) -> str:
    out = ""
    for kind, step in reversed(self.steps):
      if kind == "field":
        out += f".{step}"
      elif kind == "key" and not out and isinstance(step, str) and step.isidentifier():
        out = step  # a name at the top: ``state.population[3]``
      else:
        out += f"[{step!r}]"
    return out or "the tree"


class _Writer:
  """Encodes a tree as a JSON NODE, collecting its arrays.

  Where a value is in the tree is worked out only for an error (from the steps that the
  containers add to it on its way up), so that the common case builds no paths.
  """

  def __init__(self):
    import jax

    from nasjax.arch import Arch, Node

    self.jax, self.arch_types = jax, (Arch, Node)
    self.arrays: dict[str, np.ndarray] = {}

  def array(self, a: np.ndarray) -> dict:
    storage = _storage_dtype(a.dtype)
    if storage is None:
      raise _Unstorable(f"an array of dtype {a.dtype} (a checkpoint holds arrays of "
                        "numbers and booleans)")
    member = f"a{len(self.arrays)}"
    self.arrays[member] = (a.view(storage) if _is_extra_dtype(a.dtype)
                           else a.astype(storage, copy=False))
    return {"member": member, "dtype": a.dtype.name, "shape": list(a.shape)}

  def each(self, values, kind: str = "index") -> list:
    out = []
    for i, v in enumerate(values):
      try:
        out.append(v if type(v) in _PLAIN else self.encode(v))
      except _Unstorable as e:
        e.steps.append((kind, i))
        raise
    return out

  def mapping(self, x) -> dict:
    """A dict NODE: a JSON object where every key is a string (as most are), else pairs."""
    if all(type(k) is str for k in x):
      out = {}
      for k, v in x.items():
        try:
          out[k] = v if type(v) in _PLAIN else self.encode(v)
        except _Unstorable as e:
          e.steps.append(("key", k))
          raise
      return {"map": out}
    out = []
    for k, v in x.items():
      try:
        out.append([self.encode(k), self.encode(v)])
      except _Unstorable as e:
        e.steps.append(("key", k))
        raise
    return {"items": out}

  def fields(self, names, values) -> dict:
    out = {}
    for f, v in zip(names, values):
      try:
        out[f] = self.encode(v)
      except _Unstorable as e:
        e.steps.append(("field", f))
        raise
    return out

  def encode(self, x):  # noqa: C901 (one branch per kind of node)
    cls = type(x)
    if cls is str or cls is bool or x is None:
      return x
    if cls is int:
      return x if -_EXACT_INT < x < _EXACT_INT else {"t": "int", "v": str(x)}
    if cls is float:
      return x if math.isfinite(x) else {"t": "float", "v": repr(x)}
    if cls is dict:
      return {"t": "dict", **self.mapping(x)}
    if cls is list:
      return self.each(x)
    if cls is tuple:
      return {"t": "tuple", "items": self.each(x)}
    if cls in (set, frozenset):  # in a fixed order: a set's own depends on PYTHONHASHSEED
      return {"t": cls.__name__,
              "items": self.each(sorted(x, key=lambda v: (type(v).__name__, repr(v))))}
    jax = self.jax
    if isinstance(x, jax.Array):
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(x))
        return {"t": "key", "impl": str(jax.random.key_impl(x)),
                "data": {"t": "ndarray", **self.array(data)}}
      return {"t": "jax", **self.array(np.asarray(x)), "weak_type": bool(x.weak_type)}
    if cls is np.ndarray:  # not its subclasses (a masked array would lose its mask)
      return {"t": "ndarray", **self.array(x)}
    if isinstance(x, np.generic):
      return {"t": "scalar", **self.array(np.asarray(x))}
    if cls in self.arch_types:
      return {"t": cls.__name__.lower(), "value": x.to_dict()}
    if _is_frozen_dict(x):
      return {"t": "frozendict", **self.mapping(x)}
    if isinstance(x, (ValueError, OSError)):
      base = next(c for c in cls.__mro__ if c.__module__ == "builtins")
      args = list(x.args)
      if isinstance(x, OSError) and x.filename is not None:  # not among its args
        args = [x.errno, x.strerror, x.filename, None, x.filename2]
      return {"t": "error", "type": base.__name__, "args": self.each(args, "args")}
    if _state_class(cls.__module__, cls.__qualname__) is cls:
      head = {"module": cls.__module__, "qualname": cls.__qualname__}
      if issubclass(cls, enum.Enum):
        return {"t": "enum", **head, "name": x.name}
      if _is_named_tuple(cls):
        return {"t": "namedtuple", **head, "fields": self.fields(cls._fields, x)}
      if dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls)]
        return {"t": "dataclass", **head,
                "fields": self.fields(names, [getattr(x, f) for f in names])}
    raise _Unstorable(f"{_short_repr(x)} (of type {_qualified(cls)}): a checkpoint holds "
                      "plain data, arrays, architectures and the dataclasses, NamedTuples "
                      f"and enums of {' and '.join(STATE_PACKAGES)} and of the modules of "
                      "registered strategies")


def _short_repr(x) -> str:
  text = repr(x)
  return text if len(text) <= 80 else text[:77] + "..."


def dumps(tree) -> bytes:
  """``tree`` as the bytes of a ``.npz`` archive that :func:`loads` reads back.

  Raises:
    TypeError: naming the place in the tree (``state.population[3].foo``) of a value
      that cannot be stored (a function, an instance of a class that is not a state
      class).
  """
  writer = _Writer()
  try:
    doc = {"format": FORMAT, "tree": writer.encode(tree)}
  except _Unstorable as e:
    raise TypeError(f"{e.where()}: cannot store {e.what}") from None
  text = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
  buf = io.BytesIO()
  np.savez(buf, **{STRUCTURE: np.frombuffer(text, np.uint8)}, **writer.arrays)
  return buf.getvalue()


_CONTAINERS = {"tuple": tuple, "set": set, "frozenset": frozenset}


class _Reader:
  """Decodes a JSON NODE with the arrays read from the archive."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    self.arrays, self.used = arrays, set()

  def array(self, node: dict) -> np.ndarray:
    member, name, shape = node["member"], node["dtype"], node["shape"]
    if not isinstance(name, str) or not isinstance(member, str):
      raise DamagedData("an array without a dtype name or member")
    try:
      dtype = np.dtype(name)
    except TypeError:
      raise DamagedData(f"unknown dtype {name!r}") from None
    storage = _storage_dtype(dtype)
    if storage is None:
      raise DamagedData(f"an array of dtype {dtype}, which is never stored")
    if member in self.used or member not in self.arrays:
      raise DamagedData(f"member {member!r} is missing or named twice")
    self.used.add(member)
    a = self.arrays[member]
    if a.dtype != storage or list(a.shape) != shape:
      raise DamagedData(f"member {member!r} is a {a.dtype} array of shape "
                        f"{list(a.shape)}, not the {storage} array of shape {shape} that "
                        "the structure says")
    return a.view(dtype) if _is_extra_dtype(dtype) else a

  def state_class(self, node: dict) -> type:
    module, name = node["module"], node["qualname"]
    cls = (_state_class(module, name) if isinstance(module, str) and isinstance(name, str)
           else None)
    kind = node["t"]
    if cls is None or not {"enum": lambda c: issubclass(c, enum.Enum),
                           "namedtuple": _is_named_tuple,
                           "dataclass": dataclasses.is_dataclass}[kind](cls):
      raise RefusedGlobal(f"{module}.{name}" if cls is None else
                          f"{module}.{name} as a {kind}")
    return cls

  def fields(self, cls: type, node: dict, names: list[str]) -> dict:
    fields = node["fields"]
    if not isinstance(fields, dict) or sorted(fields) != sorted(names):
      got = sorted(fields) if isinstance(fields, dict) else fields
      raise OtherFields(f"it holds a {_qualified(cls)} with the fields {got!r}; the class "
                        f"has {sorted(names)} (the data was written by another version)")
    return {f: self.decode(fields[f]) for f in names}

  def mapping(self, node: dict) -> dict:
    if "map" in node:
      return {k: self.decode(v) for k, v in node["map"].items()}
    return {self.decode(k): self.decode(v) for k, v in node["items"]}

  def decode(self, node):  # noqa: C901 (one branch per kind of node)
    if node is None or isinstance(node, (str, bool, int, float)):
      return node
    if isinstance(node, list):
      return [self.decode(v) for v in node]
    if not isinstance(node, dict) or not isinstance(node.get("t"), str):
      raise DamagedData(f"not a node: {_short_repr(node)}")
    kind = node["t"]
    if kind == "dict":
      return self.mapping(node)
    if kind in _CONTAINERS:
      return _CONTAINERS[kind](self.decode(v) for v in node["items"])
    if kind == "int":
      return int(node["v"])
    if kind == "float":
      if node["v"] not in ("nan", "inf", "-inf"):
        raise DamagedData(f"a float written as {node['v']!r}")
      return float(node["v"])
    if kind == "ndarray":
      return self.array(node)
    if kind == "scalar":
      return self.array(node)[()]
    if kind == "jax":
      import jax

      x = jax.device_put(self.array(node))
      if node["weak_type"] is True:
        # What JAX's own unpickling does: device arrays from NumPy are never weak.
        x.aval = x.aval.update(weak_type=True)
      return x
    if kind == "key":
      import jax

      return jax.random.wrap_key_data(self.array(node["data"]), impl=node["impl"])
    if kind in ("arch", "node"):
      from nasjax.arch import Arch, Node

      return (Arch if kind == "arch" else Node).from_dict(node["value"])
    if kind == "frozendict":
      from flax.core import FrozenDict

      return FrozenDict(self.mapping(node))
    if kind == "error":
      cls = vars(builtins).get(node["type"])
      if not (isinstance(cls, type) and issubclass(cls, (ValueError, OSError))):
        raise RefusedGlobal(f"builtins.{node['type']}")
      return cls(*self.decode(node["args"]))
    if kind in ("enum", "namedtuple", "dataclass"):
      cls = self.state_class(node)
      if kind == "enum":
        return cls.__members__[node["name"]]
      if kind == "namedtuple":
        values = self.fields(cls, node, list(cls._fields))
        return cls._make(values[f] for f in cls._fields)
      values = self.fields(cls, node, [f.name for f in dataclasses.fields(cls)])
      # Built as pickle builds objects: no __init__ or __post_init__ from the class runs.
      obj = object.__new__(cls)
      for f, v in values.items():
        object.__setattr__(obj, f, v)
      return obj
    raise DamagedData(f"a node of unknown kind {kind!r}")


def _read_arrays(data: bytes) -> dict[str, np.ndarray]:
  """Every member of the ``.npz`` archive ``data``, the sizes checked before reading."""
  with zipfile.ZipFile(io.BytesIO(data)) as zf:
    infos = zf.infolist()
    names = [info.filename for info in infos]
    if f"{STRUCTURE}.npy" not in names:
      raise DamagedData(f"it has no {STRUCTURE} member")
    if len(set(names)) != len(names) or not all(n.endswith(".npy") for n in names):
      raise DamagedData("it holds members that are not arrays, or one twice")
    total, limit = 0, max(MIN_INFLATE_BYTES, MAX_INFLATION * len(data))
    for info in infos:
      try:
        shape, dtype, size = npy_header(zf, info)
      except ValueError as e:
        raise DamagedData(f"member {info.filename}: {e}") from None
      if dtype.hasobject:
        raise DamagedData(f"member {info.filename} holds Python objects (dtype {dtype})")
      nbytes = math.prod(shape) * dtype.itemsize
      if size != nbytes:
        raise DamagedData(f"member {info.filename} holds {size} bytes of data; its shape "
                          f"{shape} and dtype {dtype} take {nbytes}")
      if info.filename == f"{STRUCTURE}.npy" and (
          dtype != np.uint8 or len(shape) != 1 or nbytes > MAX_STRUCTURE_BYTES):
        raise DamagedData(f"the structure is a {dtype} array of shape {shape}, not at most "
                          f"{MAX_STRUCTURE_BYTES} bytes")
      total += nbytes
    if total > limit:
      raise DamagedData(f"its members claim {total} bytes, more than {limit} "
                        f"({MAX_INFLATION} times its size)")
    # zf.read checks each member's CRC, and reads no more than the size checked above.
    return {name[:-len(".npy")]: np.lib.format.read_array(
        io.BytesIO(zf.read(name)), allow_pickle=False) for name in names}


def loads(data: bytes, source: str):
  """The tree that :func:`dumps` wrote as ``data``; no code from ``data`` runs.

  Args:
    data: the bytes of the ``.npz`` archive.
    source: what the bytes are, for errors (a file name, "the data of process 0").

  Raises:
    RefusedGlobal: (a ``ValueError``) the data names a class that is not a state class;
      nothing was built from it.
    DamagedData: (a ``ValueError``) the data is cut short, garbled or inconsistent.
    OtherFields: (a ``ValueError``) the data holds an instance of a state class with
      other fields than the class has now (written by another version).
  """
  try:
    arrays = _read_arrays(data)
    doc = json.loads(arrays.pop(STRUCTURE).tobytes().decode())
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "tree" not in doc:
      raise DamagedData(f"its structure is not a tree of format {FORMAT!r}")
    reader = _Reader(arrays)
    tree = reader.decode(doc["tree"])
    unused = sorted(set(arrays) - reader.used)
    if unused:
      raise DamagedData(f"it holds members {unused[:5]} that its structure does not name")
    return tree
  except RefusedGlobal as e:
    raise RefusedGlobal(f"refusing to load {source}: it names {e}, which is not a state "
                        f"class of {' or '.join(STATE_PACKAGES)}; nothing was built "
                        "from it") from None
  except DamagedData as e:
    raise DamagedData(f"{source} is damaged ({e})") from None
  except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError,
          RuntimeError, KeyError, IndexError, TypeError, AttributeError,
          UnicodeDecodeError, json.JSONDecodeError) as e:
    # RuntimeError: an encrypted member, or the recursion of a structure nested too deep.
    raise DamagedData(f"{source} is damaged ({type(e).__name__}: {e})") from None
  except OtherFields as e:
    raise OtherFields(f"{source}: {e}") from None
  except ValueError as e:
    # np.lib.format, np.dtype, int(), Arch.from_dict and wrap_key_data on garbled input.
    raise DamagedData(f"{source} is damaged (ValueError: {e})") from None


# ------------------------------------------------------------------ the pickle format
# Packages whose state classes (dataclasses, NamedTuples, enums) a checkpoint may hold:
# nasjax's own, and optax's optimiser states inside strategies' states.
STATE_PACKAGES = ("nasjax", "optax")
# Builtins that build plain data and run nothing given to them.
_DATA_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "complex", "slice", "range",
                  "bytes", "bytearray", "int", "float", "str", "bool")


class RefusedGlobal(ValueError):
  """A pickle references a global that nasjax never writes."""


def _arch(text: str):
  """An :class:`~nasjax.arch.Arch` from its JSON form (a reducer of pickled checkpoints)."""
  from nasjax.arch import Arch

  return Arch.from_json(text)


def _node(d: dict):
  """A :class:`~nasjax.arch.Node` from its dict form (a reducer of pickled checkpoints)."""
  from nasjax.arch import Node

  return Node.from_dict(d)


def _name(obj) -> str:
  return f"{obj.__module__}.{obj.__qualname__}"


@functools.cache
def _allowed() -> dict[tuple[str, str], object]:
  """``{(module, qualname): object}`` of every global that nasjax's data pickles to.

  Taken from the live objects (what this NumPy and JAX pickle to), so that it follows
  their versions; NumPy 1's ``numpy.core`` spelling of ``numpy._core`` is accepted too.
  """
  import jax
  from jax._src.random import prng

  from nasjax.arch import Arch, Node

  objs = [getattr(builtins, n) for n in _DATA_BUILTINS]
  # Arch and Node themselves: earlier versions' checkpoints name them in their
  # getattr(Arch, "from_json") reducers (see _legacy_getattr).
  objs += [collections.OrderedDict, _arch, _node, Arch, Node]
  # NumPy arrays (both protocols' reconstructors), scalars and dtypes.
  a = np.arange(2)
  objs += [np.ndarray, np.dtype, a.__reduce__()[0], a.__reduce_ex__(5)[0],
           np.float32(0).__reduce__()[0]]
  # JAX arrays and typed PRNG keys (a key pickles with its implementation's functions).
  objs += [jax.numpy.zeros(1).__reduce__()[0], type(jax.random.key(0)), prng.PRNGImpl]
  for impl in prng.prngs.values():
    objs += [impl.seed, impl.split, impl.random_bits, impl.fold_in]
  out = {}
  for obj in objs:
    out[(obj.__module__, obj.__qualname__)] = obj
    if obj.__module__.startswith("numpy._core"):
      out[("numpy.core" + obj.__module__[len("numpy._core"):], obj.__qualname__)] = obj
  return out


def _legacy_getattr(obj, name):
  """``getattr`` restricted to the reducers that checkpoints of earlier versions hold.

  They pickled ``Arch.from_json`` and ``Node.from_dict`` as ``getattr(cls, name)``.
  """
  from nasjax.arch import Arch, Node

  # Identity, not ==: an object array's == would answer for its elements.
  if (obj is Arch and name == "from_json") or (obj is Node and name == "from_dict"):
    return getattr(obj, name)
  what = _name(obj) if isinstance(obj, type) else type(obj).__name__
  raise RefusedGlobal(f"getattr({what}, {name!r})")


def strategy_modules() -> frozenset[str]:
  """The modules that define the registered strategies outside :data:`STATE_PACKAGES`
  (their factories and options classes): a strategy written in a user's own module keeps
  its state classes there. They are looked up only if already imported, never imported
  here."""
  from nasjax.search.base import STRATEGIES

  out = set()
  for entry in dict.values(STRATEGIES):  # the registered ones, importing nothing
    for obj in (entry.factory, entry.options):
      module = getattr(obj, "__module__", None)
      if isinstance(module, str) and module.split(".")[0] not in STATE_PACKAGES:
        out.add(module)
  return frozenset(out)


def _module(module: str):
  """The module ``module`` of one of :data:`STATE_PACKAGES` or of a registered strategy
  (:func:`strategy_modules`), or None if there is none.

  The package is imported (which imports its private modules, e.g. optax's
  ``optax._src.base``), and ``module`` itself if it has no private component: a
  ``__main__`` module would run a command when imported.
  """
  package = module.split(".")[0]
  if package not in STATE_PACKAGES:
    return sys.modules.get(module) if module in strategy_modules() else None
  try:
    importlib.import_module(package)
    if module not in sys.modules and not any(p.startswith("_") for p in module.split(".")):
      importlib.import_module(module)
  except ImportError:
    return None
  return sys.modules.get(module)


# Modules that moved to nasjax.search.strategies: checkpoints written before name them by
# their old paths.
_MOVED = frozenset(("random_search", "evolution", "reinforce", "nsga2", "lemonade", "kde",
                    "eas", "eas_controller", "pnas", "nao", "nao_model", "rl_nas", "controller",
                    "smash", "spos", "darts", "enas", "oneshot"))


def _current_module(module: str) -> str:
  head, _, last = module.rpartition(".")
  return f"nasjax.search.strategies.{last}" if head == "nasjax.search" and last in _MOVED \
      else module


def _state_class(module: str, name: str):
  """The class ``module.name`` if it is a state class of :data:`STATE_PACKAGES` or of a
  registered strategy's module."""
  module = _current_module(module)
  if module.split(".")[0] in STATE_PACKAGES:
    return _package_state_class(module, name)
  return _find_state_class(module, name)


@functools.lru_cache(maxsize=1024)
def _package_state_class(module: str, name: str):
  return _find_state_class(module, name)


def _find_state_class(module: str, name: str):
  parts = name.split(".")
  obj = _module(module)
  # Walk the namespaces with vars(), never getattr (which could run a __getattr__).
  for i, part in enumerate(parts):
    if obj is None or (i > 0 and not isinstance(obj, type)):
      return None
    obj = vars(obj).get(part)
  if not (isinstance(obj, type) and obj.__module__ == module and obj.__qualname__ == name):
    return None
  is_named_tuple = issubclass(obj, tuple) and hasattr(obj, "_fields")
  if (dataclasses.is_dataclass(obj) or is_named_tuple or issubclass(obj, enum.Enum) or
      issubclass(obj, (ValueError, OSError))):
    return obj
  return None


class SafeUnpickler(pickle.Unpickler):
  """An unpickler that resolves only the globals that pickled checkpoints reference.

  Admitted: builtins that build plain data, ``ValueError``/``OSError`` and their
  builtin subclasses (errors sent between processes), ``collections.OrderedDict``, the
  reconstructors of NumPy arrays, scalars and dtypes (``ml_dtypes`` scalar types
  included) and of JAX arrays and typed PRNG keys (with the functions of the
  registered PRNG implementations), the state classes of :data:`STATE_PACKAGES`
  (dataclasses, NamedTuples and enums defined there, and ``ValueError``/``OSError``
  subclasses) and the architecture reducers. Anything else raises
  :class:`RefusedGlobal`.
  """

  def find_class(self, module: str, name: str):
    obj = _allowed().get((module, name))
    if obj is not None:
      return obj
    if module == "builtins":
      if name == "getattr":
        return _legacy_getattr
      obj = vars(builtins).get(name)
      if isinstance(obj, type) and issubclass(obj, (ValueError, OSError)):
        return obj
    elif module == "ml_dtypes":  # JAX's extra dtypes (bfloat16, float8_*)
      obj = vars(importlib.import_module(module)).get(name)
      if isinstance(obj, type) and issubclass(obj, np.generic):
        return obj
    else:
      obj = _state_class(module, name)
      if obj is not None:
        return obj
    raise RefusedGlobal(f"{module}.{name}")


def loads_pickle(data: bytes, source: str):
  """Unpickle ``data`` (a checkpoint of the earlier pickle format) with
  :class:`SafeUnpickler`.

  Args:
    data: pickle bytes.
    source: what the bytes are, for errors (a file name, "data from process 0").

  Raises:
    RefusedGlobal: (a ``ValueError``) the data references a global nasjax never
      writes; nothing from it was called.
    Exception: whatever unpickling damaged data raises (``pickle.UnpicklingError``,
      ``EOFError``, ...).
  """
  try:
    return SafeUnpickler(io.BytesIO(data)).load()
  except RefusedGlobal as e:
    raise RefusedGlobal(f"refusing to load {source}: it references {e}, which nasjax never "
                        "writes") from None
