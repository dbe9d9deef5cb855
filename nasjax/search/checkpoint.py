"""The pickle format of search checkpoints, and a loader that runs no code from the file.

A checkpoint (and what the processes of a multi-host run send each other) is plain
data: dicts, lists, tuples and numbers, NumPy and JAX arrays (typed PRNG keys
included), state classes (nasjax's and optax's dataclasses and NamedTuples) and
architectures, which :func:`dumps` writes through their JSON form. A pickle names every
function it calls on loading, so :func:`loads` resolves only the globals that such
data references (:class:`SafeUnpickler`); any other one (``os.system``,
``builtins.eval``, a nasjax function that is not a state class) is refused with a
:class:`RefusedGlobal` error naming the file and the global, before anything from the
file is called.
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import enum
import functools
import importlib
import io
import pickle
import sys

import numpy as np

# Packages whose state classes (dataclasses, NamedTuples, enums) a checkpoint may hold:
# nasjax's own, and optax's optimiser states inside strategies' states.
STATE_PACKAGES = ("nasjax", "optax")
# Builtins that build plain data and run nothing given to them.
_DATA_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "complex", "slice", "range",
                  "bytes", "bytearray", "int", "float", "str", "bool")


class RefusedGlobal(ValueError):
  """A pickle references a global that nasjax never writes."""


def _arch(text: str):
  """An :class:`~nasjax.arch.Arch` from its JSON form (the reducer :func:`dumps` writes)."""
  from nasjax.arch import Arch

  return Arch.from_json(text)


def _node(d: dict):
  """A :class:`~nasjax.arch.Node` from its dict form (the reducer :func:`dumps` writes)."""
  from nasjax.arch import Node

  return Node.from_dict(d)


class _Pickler(pickle.Pickler):
  """Pickles architectures through their JSON form (they are immutable, slot-based).

  JAX arrays, typed PRNG keys included, pickle as themselves (with their dtype and weak
  type), so a restored state traces exactly like the original.
  """

  def reducer_override(self, obj):
    from nasjax.arch import Arch, Node

    # Module-level reducers: a bound ``Arch.from_json`` would pickle as a getattr call.
    if isinstance(obj, Arch):
      return _arch, (obj.to_json(),)
    if isinstance(obj, Node):
      return _node, (obj.to_dict(),)
    return NotImplemented


def dumps(obj) -> bytes:
  """``obj`` as pickle bytes that :func:`loads` reads back."""
  buf = io.BytesIO()
  _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
  return buf.getvalue()


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


def _module(module: str):
  """The module ``module`` of one of :data:`STATE_PACKAGES`, or None if there is none.

  The package is imported (which imports its private modules, e.g. optax's
  ``optax._src.base``), and ``module`` itself if it has no private component: a
  ``__main__`` module would run a command when imported.
  """
  package = module.split(".")[0]
  if package not in STATE_PACKAGES:
    return None
  try:
    importlib.import_module(package)
    if module not in sys.modules and not any(p.startswith("_") for p in module.split(".")):
      importlib.import_module(module)
  except ImportError:
    return None
  return sys.modules.get(module)


def _state_class(module: str, name: str):
  """The class ``module.name`` if it is a state class of :data:`STATE_PACKAGES`."""
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
  """An unpickler that resolves only the globals nasjax's data pickles to.

  Admitted: builtins that build plain data, ``ValueError``/``OSError`` and their
  builtin subclasses (errors sent between processes), ``collections.OrderedDict``, the
  reconstructors of NumPy arrays, scalars and dtypes (``ml_dtypes`` scalar types
  included) and of JAX arrays and typed PRNG keys (with the functions of the
  registered PRNG implementations), the state classes of :data:`STATE_PACKAGES`
  (dataclasses, NamedTuples and enums defined there, and ``ValueError``/``OSError``
  subclasses) and the architecture reducers of :func:`dumps`. Anything else raises
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


def loads(data: bytes, source: str):
  """Unpickle ``data`` with :class:`SafeUnpickler`.

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
