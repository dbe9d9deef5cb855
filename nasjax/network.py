"""Networks: an architecture plus its parameter and state pytrees.

A :class:`Network` is a pytree whose only leaves are arrays: ``params`` (trainable) and
``state`` (batch-norm running statistics), both ``{node_name: {array_name: array}}``.
The :class:`~nasjax.arch.Arch` is static (part of the tree structure), so ``jax.jit``
compiles once per architecture and every network of that architecture reuses it.

Initialisation runs on the host with NumPy from shapes inferred by the IR: no tracing,
no compilation, so a search can create thousands of networks cheaply (under a JAX
transformation it draws with ``jax.random`` instead). Each node's
arrays are drawn from a generator seeded by the key *and the node's name*, so adding a
node leaves every other node's initial values unchanged.
"""

from __future__ import annotations

import io
import json
import math
import os
import statistics
import time
import zipfile
import zlib
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from nasjax import layers, runtime
from nasjax.arch import Arch

Params = dict[str, dict[str, jax.Array]]


@flax.struct.dataclass
class Network:
  """An architecture with its parameters and state.

  Attributes:
    arch: the architecture (static: not a pytree leaf).
    params: ``{node: {name: array}}`` trainable arrays.
    state: ``{node: {name: array}}`` non-trainable arrays (BN ``mean`` and ``var``).
  """

  arch: Arch = flax.struct.field(pytree_node=False)
  params: Params
  state: Params

  @property
  def num_params(self) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.params))


# ------------------------------------------------------------------------ shapes
def param_shapes(arch: Arch) -> dict[str, dict[str, tuple[int, ...]]]:
  """``{node: {param: shape}}`` for every node that has parameters."""
  out = {}
  for name in arch.topo_order:
    n = arch[name]
    p = layers.OPS[n.op].params(n.attr_dict, arch.in_shapes(name))
    if p:
      out[name] = p
  return out


def state_shapes(arch: Arch) -> dict[str, dict[str, tuple[int, ...]]]:
  """``{node: {state: shape}}`` for every node that has state."""
  out = {}
  for name in arch.topo_order:
    n = arch[name]
    s = layers.OPS[n.op].state(n.attr_dict, arch.in_shapes(name))
    if s:
      out[name] = s
  return out


def count_params(arch: Arch) -> int:
  """Number of trainable scalars of a network of this architecture."""
  return sum(int(np.prod(s)) for p in param_shapes(arch).values() for s in p.values())


def flops(arch: Arch) -> int:
  """FLOPs of one forward pass at batch size 1 (inference mode).

  XLA's convention: a multiply-add counts 2; element-wise ops (batch norm, ReLU, adds,
  pooling) count one or two per element.
  """
  total = 0
  for name in arch.topo_order:
    n = arch[name]
    total += int(layers.OPS[n.op].flops(n.attr_dict, arch.in_shapes(name),
                                        arch.shape(name)))
  return total


# ------------------------------------------------------------------------ init
def key_seed(key) -> list[int]:
  """The integers of a PRNG key (typed or raw), for seeding host-side generators."""
  key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return [int(v) for v in np.asarray(key, dtype=np.uint32).ravel()]


def node_rng(seed: list[int], name: str) -> np.random.Generator:
  """The host generator of node ``name`` under ``seed`` (stable across insertions)."""
  return np.random.default_rng(seed + [zlib.crc32(name.encode())])


def _init_array(op: str, pname: str, shape, rng: np.random.Generator) -> np.ndarray:
  if pname in ("bias", "mean"):
    return np.zeros(shape, np.float32)
  if pname in ("scale", "var"):
    return np.ones(shape, np.float32)
  return (rng.standard_normal(shape, dtype=np.float32) * _std(op, shape)).astype(np.float32)


def init_numpy(arch: Arch, key) -> tuple[dict, dict]:
  """Host-side initial ``(params, state)`` as NumPy arrays."""
  seed = key_seed(key)
  params, state = {}, {}
  for name, shapes in param_shapes(arch).items():
    rng = node_rng(seed, name)
    params[name] = {p: _init_array(arch[name].op, p, s, rng) for p, s in shapes.items()}
  for name, shapes in state_shapes(arch).items():
    state[name] = {p: _init_array(arch[name].op, p, s, None) for p, s in shapes.items()}
  return params, state


def _std(op: str, shape) -> float:
  """He-normal std for convolution kernels (fan-in of one output unit), LeCun for dense."""
  if op == "dense":
    return float(np.sqrt(1.0 / max(shape[0], 1)))
  return float(np.sqrt(2.0 / max(int(np.prod(shape[:-1])), 1)))


def init_traced(arch: Arch, key) -> tuple[dict, dict]:
  """Initial ``(params, state)`` drawn with ``jax.random``: what :func:`init` uses when
  ``key`` is traced (under ``jit``, ``vmap``, ``scan``).

  The same distributions as the host draw, not the same numbers: node ``name``'s arrays
  come from ``fold_in(key, crc32(name))``, so here too adding a node leaves the others'
  initial values unchanged.
  """
  if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  params, state = {}, {}
  for name, shapes in param_shapes(arch).items():
    node_key = jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)
    params[name] = {}
    for i, (p, shape) in enumerate(sorted(shapes.items())):
      if p in ("bias", "mean", "scale", "var"):
        params[name][p] = jnp.asarray(_init_array(arch[name].op, p, shape, None))
      else:
        draw = jax.random.normal(jax.random.fold_in(node_key, i), shape, jnp.float32)
        params[name][p] = draw * _std(arch[name].op, shape)
  for name, shapes in state_shapes(arch).items():
    state[name] = {p: jnp.asarray(_init_array(arch[name].op, p, s, None))
                   for p, s in shapes.items()}
  return params, state


def init(arch: Arch, key) -> Network:
  """A freshly initialised network of ``arch``.

  Convolutions get He-normal kernels, dense layers LeCun-normal, biases zero, batch
  norm unit scale and running statistics (mean 0, var 1). With a concrete key it runs
  on the host: no compilation, ~milliseconds for small networks. With a traced key
  (inside ``jit``, ``vmap``, ``scan``) it draws with ``jax.random`` instead
  (:func:`init_traced`: the same distributions, other numbers), so
  ``jax.vmap(lambda k: nasjax.init(arch, k))(keys)`` makes an ensemble.

  Args:
    arch: the architecture.
    key: a ``jax.random`` key (typed or raw ``uint32[2]``).
  """
  if isinstance(key, jax.core.Tracer):
    params, state = init_traced(arch, key)
    return Network(arch, params, state)
  params, state = init_numpy(arch, key)
  return Network(arch, jax.device_put(params), jax.device_put(state))


# ------------------------------------------------------------------------ apply
def _dtype(dtype) -> str:
  return jnp.dtype(dtype).name


def forward(net: Network, x: jax.Array, *, train: bool = False,
            axis_name: str | None = None, dtype: Any = "float32"):
  """Run ``net`` on a batch ``x`` of shape ``(N, *arch.input_shape)``.

  Not jit-compiled by itself: call it inside ``jax.jit``/``shard_map`` (as the train
  steps do) or use :func:`apply` / :func:`apply_train`.

  Args:
    net: the network.
    x: input batch, float.
    train: use batch statistics in batch norm and return updated running statistics.
    axis_name: mapped axis over which batch statistics are averaged (data parallel).
    dtype: compute dtype of convolutions and dense layers (e.g. ``"bfloat16"``);
      batch norm and accumulation stay float32.

  Returns:
    ``logits`` of shape ``(N, *arch.output_shape)``, and with ``train`` also the new
    state.
  """
  arch = net.arch
  if tuple(x.shape[1:]) != arch.input_shape:
    raise ValueError(f"input of shape {tuple(x.shape)} does not match the "
                     f"architecture's input shape (N, {', '.join(map(str, arch.input_shape))})")
  ctx = layers.ApplyContext(train=train, axis_name=axis_name, dtype=jnp.dtype(dtype))
  values = {}
  new_state = dict(net.state)
  remaining = {name: len(arch.consumers(name)) for name in arch.topo_order}
  for name in arch.topo_order:
    n = arch[name]
    if n.op == "input":
      values[name] = x.astype(jnp.float32)
      continue
    ins = [values[i] for i in n.inputs]
    out, st = layers.OPS[n.op].apply(n.attr_dict, ins, net.params.get(name, {}),
                                     net.state.get(name, {}), ctx)
    if st is not None:
      new_state[name] = st
    values[name] = out
    for i in set(n.inputs):
      remaining[i] -= 1
      if remaining[i] == 0 and i != arch.output:
        del values[i]
  logits = values[arch.output]
  return (logits, new_state) if train else logits


@runtime.jit(static_argnames=("dtype",))
def _apply(net, x, dtype):
  return forward(net, x, dtype=dtype)


@runtime.jit(static_argnames=("dtype",))
def _apply_train(net, x, dtype):
  return forward(net, x, train=True, dtype=dtype)


def apply(net: Network, x, dtype: Any = "float32") -> jax.Array:
  """Inference-mode outputs (BN uses running statistics). jit-compiled per arch."""
  return _apply(net, jnp.asarray(x), _dtype(dtype))


def apply_train(net: Network, x, dtype: Any = "float32"):
  """Training-mode ``(outputs, new_state)`` (BN uses batch statistics)."""
  return _apply_train(net, jnp.asarray(x), _dtype(dtype))


def latency(net: Network, batch_size: int = 1, repeats: int = 20, warmup: int = 3,
            dtype: Any = "float32") -> float:
  """Median wall time in seconds of one jitted inference call on the current device."""
  x = jnp.zeros((batch_size,) + net.arch.input_shape, jnp.float32)
  for _ in range(warmup):
    apply(net, x, dtype).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    apply(net, x, dtype).block_until_ready()
    times.append(time.perf_counter() - t)
  return float(statistics.median(times))


def xla_flops(net: Network, batch_size: int = 1) -> float:
  """FLOPs of the compiled inference function according to XLA's cost analysis."""
  x = jax.ShapeDtypeStruct((batch_size,) + net.arch.input_shape, jnp.float32)
  compiled = _apply.lower(net, x, "float32").compile()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"])


# ------------------------------------------------------------------------ save / load
def _flatten(tree: Params, prefix: str, arrays: dict, index: list):
  for node, entries in tree.items():
    for name, value in entries.items():
      key = f"a{len(index)}"
      arrays[key] = np.asarray(value)
      index.append([prefix, node, name, key])


def save(net: Network, path: str | os.PathLike, metadata: dict | None = None) -> None:
  """Write ``net`` to ``path`` (a ``.npz`` file), atomically.

  The file holds the architecture's JSON, every array bit for bit and optional
  JSON-serialisable ``metadata``; :func:`load` gives back an equal network.
  """
  arrays, index = {}, []
  _flatten(net.params, "params", arrays, index)
  _flatten(net.state, "state", arrays, index)
  header = {"arch": net.arch.to_dict(), "index": index, "metadata": metadata or {}}
  arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
  path = os.fspath(path)
  tmp = f"{path}.tmp{os.getpid()}"
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  with open(tmp, "wb") as f:
    f.write(buf.getvalue())
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


# A network's JSON header (architecture, array index, metadata) is read whole: refuse one
# larger than this before reading it (DARTS's 20-cell network, 835 nodes, takes 150 KB).
MAX_HEADER_BYTES = 16 << 20
# The arrays of a file may take at most this many times the file's size in memory (or
# MIN_INFLATE_BYTES): a few KB of compressed zeros must not claim gigabytes.
MAX_INFLATION = 64
MIN_INFLATE_BYTES = 64 << 20


def npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype, int]:
  """``(shape, dtype, bytes of data)`` of the ``.npy`` member ``info`` of ``zf``, read from
  its header alone (none of the data is read).

  Raises:
    ValueError: the member is not a ``.npy`` array of format version 1 or 2 (and
      ``zipfile``'s or the OS's errors for a damaged archive).
  """
  with zf.open(info) as fp:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
      shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
      shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
      raise ValueError(f"unsupported .npy format version {version}")
    return tuple(shape), dtype, info.file_size - fp.tell()


def _member_header(zf: zipfile.ZipFile, member: str, path: str, what: str):
  """:func:`npy_header` of ``member``, with errors naming the file ``path`` and ``what``
  the member holds; an array of Python objects is refused."""
  try:
    shape, dtype, size = npy_header(zf, zf.getinfo(member))
  except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path!r}: {what} is not a readable array ({e})") from None
  if dtype.hasobject:
    raise ValueError(f"{path!r}: {what} holds Python objects (dtype {dtype}); a nasjax "
                     "network file holds numbers only and is never unpickled")
  return shape, dtype, size


def _read_header(f, path: str) -> dict:
  """The JSON header of an open ``.npz``, its size checked before it is read."""
  member = "__header__.npy"
  if member not in f.zip.namelist():
    raise ValueError(f"{path!r} is not a nasjax network file (no header)")
  shape, dtype, size = _member_header(f.zip, member, path, "the header")
  if dtype != np.uint8 or len(shape) != 1:
    raise ValueError(f"{path!r}: the header is a {dtype} array of shape {shape}, not bytes")
  if shape[0] > MAX_HEADER_BYTES or size > MAX_HEADER_BYTES:
    raise ValueError(f"{path!r}: the header claims {max(shape[0], size)} bytes, more than "
                     f"the {MAX_HEADER_BYTES} a network file may hold")
  try:
    header = json.loads(bytes(f["__header__"]).decode())
  except (ValueError, RecursionError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path!r}: the header is not valid JSON ({e})") from None
  if (not isinstance(header, dict) or not isinstance(header.get("index"), list)
      or not isinstance(header.get("metadata", {}), dict) or "arch" not in header):
    raise ValueError(f"{path!r}: the header lacks 'arch', an 'index' list or a "
                     "'metadata' dict")
  return header


def _expected_arrays(header: dict, arch: Arch, path: str) -> dict:
  """``{(tree, node, name): (shape, member)}`` of every array of the file, checked
  against the arrays the architecture implies: none missing, none extra."""
  want = {(tree, node, name): shape
          for tree, shapes in (("params", param_shapes(arch)), ("state", state_shapes(arch)))
          for node, entries in shapes.items() for name, shape in entries.items()}
  got = {}
  for entry in header["index"]:
    if (not isinstance(entry, list) or len(entry) != 4
        or not all(isinstance(v, str) for v in entry)):
      raise ValueError(f"{path!r}: bad index entry {str(entry)[:200]}; want "
                       "[tree, node, name, member]")
    tree, node, name, member = entry
    where = f"{tree} of node {node!r}, parameter {name!r}"
    if (tree, node, name) not in want:
      raise ValueError(f"{path!r}: holds {where}, which the architecture does not have")
    if (tree, node, name) in got:
      raise ValueError(f"{path!r}: holds {where} twice")
    got[(tree, node, name)] = (tuple(want[(tree, node, name)]), member)
  missing = sorted(set(want) - set(got))
  if missing:
    tree, node, name = missing[0]
    raise ValueError(f"{path!r}: lacks {tree} of node {node!r}, parameter {name!r} (and "
                     f"{len(missing) - 1} more) that the architecture has")
  return got


def load(path: str | os.PathLike, with_metadata: bool = False):
  """Read a network written by :func:`save` (and its metadata if asked).

  The file is checked before any array is read: the header must be at most
  :data:`MAX_HEADER_BYTES`, its architecture valid, and the file must hold exactly the
  arrays the architecture has, each with the shape it implies and a float dtype, and
  these may take at most :data:`MAX_INFLATION` times the file's size (or
  :data:`MIN_INFLATE_BYTES`): at most as many bytes are read as the architecture's
  arrays take, and a small file never claims gigabytes. Nothing is unpickled.

  Raises:
    FileNotFoundError: there is no file at ``path``.
    ValueError: naming the file (and node and parameter) where the file is not a
      network file or disagrees with its architecture.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no saved network at {path!r}")
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path!r} is not a nasjax network file (not an .npz archive)")
  try:
    with np.load(path, allow_pickle=False) as f:
      header = _read_header(f, path)
      try:
        arch = Arch.from_dict(header["arch"])
      except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{path!r}: bad architecture: {e}") from None
      entries = _expected_arrays(header, arch, path)
      members = {m for m in f.zip.namelist() if m != "__header__.npy"}
      extra = sorted(members - {f"{m}.npy" for _, m in entries.values()})
      if extra:
        raise ValueError(f"{path!r}: holds arrays {extra[:5]} that its index does not name")
      total = 0
      for (tree, node, name), (shape, member) in entries.items():
        where = f"{tree} of node {node!r}, parameter {name!r}"
        got, dtype, size = _member_header(f.zip, f"{member}.npy", path, where)
        if got != shape:
          raise ValueError(f"{path!r}: {where} has shape {got}; the architecture implies "
                           f"{shape}")
        if dtype.kind != "f":
          raise ValueError(f"{path!r}: {where} has dtype {dtype}; want a float dtype")
        nbytes = math.prod(shape) * dtype.itemsize
        if size != nbytes:
          raise ValueError(f"{path!r}: {where} holds {size} bytes of data; its shape "
                           f"{shape} and dtype {dtype} take {nbytes}")
        total += nbytes
      # save() stores arrays uncompressed; a compressed archive may shrink them, but not
      # by the factors of zeros compressed to claim an architecture of huge layers.
      limit = max(MIN_INFLATE_BYTES, MAX_INFLATION * os.path.getsize(path))
      if total > limit:
        raise ValueError(f"{path!r}: its arrays take {total} bytes, more than {limit} "
                         f"({MAX_INFLATION} times the file's size)")
      # Every member is now known to be as large as the architecture says: read them.
      trees = {"params": {}, "state": {}}
      for (tree, node, name), (_, member) in entries.items():
        try:
          trees[tree].setdefault(node, {})[name] = jnp.asarray(f[member])
        except (ValueError, OSError, EOFError) as e:
          raise ValueError(f"{path!r}: {tree} of node {node!r}, parameter {name!r} does "
                           f"not read ({e})") from None
  except zipfile.BadZipFile as e:
    raise ValueError(f"{path!r}: damaged .npz archive ({e})") from None
  net = Network(arch, trees["params"], trees["state"])
  return (net, header.get("metadata", {})) if with_metadata else net
