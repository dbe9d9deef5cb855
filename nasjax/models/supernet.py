"""Weight-sharing supernets of the NB201 and DARTS cell spaces.

A supernet holds every candidate op on every edge of a cell, with its own weights, so
that every architecture of the space is a sub-network that inherits weights instead of
being trained alone (the one-shot model of SMASH, ENAS, DARTS and SPOS). An edge is
applied in one of two ways, both data rather than structure, so one compiled program
serves every architecture:

- mixing weights ``weights``, shape ``(T, E, K)`` for ``T`` cell types (NB201: 1; DARTS:
  normal and reduction), ``E`` edges per cell and ``K`` ops: an edge outputs
  ``sum_k weights[t, e, k] * op_k(x)`` (DARTS's mixed op; a one-hot row selects one op
  and the others are multiplied by zero);
- a path, an int array: an NB201 code ``(6,)`` picks one op per edge (the
  :class:`~nasjax.search.spaces.NB201Space` code), applied either through its one-hot
  weights (``impl="onehot"``: every op is computed) or with ``jax.lax.switch`` per edge
  (``impl="switch"``: only the chosen op runs). A DARTS path is a
  :class:`~nasjax.search.spaces.DartsCellSpace` code (two ``(input, op)`` pairs per
  node); it becomes multi-hot weights (two ops on one input add up, as in the
  stand-alone cell).

Ops are not re-implemented: the edge ops, the stem, reductions, cell preprocessing and
head are the very :class:`~nasjax.Node` s that :func:`nasjax.models.nb201` and
:func:`nasjax.models.darts_cell` build, run through :data:`nasjax.layers.OPS`. So a path
computes exactly what the stand-alone network of that architecture computes with the
same weights, and :func:`to_network` copies a path's weights into that network.

Batch norm: every op on an edge has its own batch norm (and running statistics),
updated only when that op runs with a nonzero weight. ``affine=False`` (the default,
as in NB201's and DARTS's search supernets) gives the batch norms inside cells no scale
and bias (fixed at 1 and 0; :func:`to_network` writes those values); the stem,
reduction blocks and final batch norm keep theirs. The running statistics of a
supernet describe no particular path, so :func:`score_paths` by default recalibrates
them for each path on training batches before measuring its accuracy (as SPOS does).

Parameter names: shared nodes keep the stand-alone names (``stem_conv``, ``r1_conv_a``,
``c3_pre0_conv``, ``logits``, ...); op ``op`` on an edge is named like the stand-alone
node with the op inserted::

    s{s}_c{k}_e{j}{i}_{op}_conv            # NB201 edge j <- i of stage s, cell k
    c{k}_n{i}_i{j}_{op}_sep1               # DARTS cell k, node i (from 2), input j
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import re
import zlib
from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from nasjax import data as data_lib
from nasjax import layers
from nasjax.arch import Node
from nasjax.models.darts_cell import DARTS_OPS, Genotype, cell, darts_cell
from nasjax.models.nb201 import (
  DEFAULT_ARCH_STR,
  NB201_EDGES,
  NB201_OPS,
  nb201,
  nb201_cell,
  nb201_str,
)
from nasjax.network import Network, key_seed

IMPLS = ("switch", "onehot")
BN_MODES = ("recalibrate", "batch", "running")
_SRC = "SRC"  # the edge input's name inside an edge template
_F32 = jnp.float32


# ------------------------------------------------------------------------------ plan
@dataclasses.dataclass(frozen=True)
class EdgeOp:
  """One candidate op of one edge.

  Attributes:
    op: the op's name in the space (e.g. ``"nor_conv_3x3"``).
    nodes: the op's nodes, named as in the supernet; the edge input is ``"SRC"``.
    output: the node holding the op's output; ``"SRC"`` for the identity and ``""`` for
      the zero op.
  """

  op: str
  nodes: tuple[Node, ...]
  output: str


@dataclasses.dataclass(frozen=True)
class Edge:
  """An edge ``dst <- src`` of a cell: row ``index`` of the weights, all candidate ops."""

  index: int
  src: int
  dst: int
  ops: tuple[EdgeOp, ...]


@dataclasses.dataclass(frozen=True)
class CellPlan:
  """One cell of the supernet.

  Attributes:
    prefix: name prefix of the cell (``s0_c1``, ``c4``).
    kind: its cell type, the first index of the weights (0 normal, 1 reduction).
    inputs: names of the values the cell reads.
    pre: preprocessing nodes (DARTS), which read ``inputs``.
    states: names of the cell's first states (its inputs or the preprocessing outputs).
    edges: the cell's edges; edge ``e`` feeds node ``edges[e].dst``.
    num_nodes: intermediate nodes, numbered after the first states.
    node_shape: ``(H, W, C)`` of every intermediate node.
    output: name of the cell's output value.
    concat: output = concatenation of the intermediate nodes (DARTS) instead of the last
      one (NB201).
  """

  prefix: str
  kind: int
  inputs: tuple[str, ...]
  pre: tuple[Node, ...]
  states: tuple[str, ...]
  edges: tuple[Edge, ...]
  num_nodes: int
  node_shape: tuple[int, ...]
  output: str
  concat: bool

  @property
  def nodes(self) -> tuple[Node, ...]:
    """Every node that may own parameters or state (preprocessing and edge ops)."""
    return self.pre + tuple(n for e in self.edges for o in e.ops for n in o.nodes)


@dataclasses.dataclass(frozen=True)
class Plan:
  """The forward program of a supernet: shared nodes and cells in execution order."""

  items: tuple[Node | CellPlan, ...]
  input: str
  output: str
  # {name: in_shapes} of every node, for initialisation.
  shapes: dict = dataclasses.field(hash=False, compare=False)

  def cells(self) -> list[CellPlan]:
    return [it for it in self.items if isinstance(it, CellPlan)]


def _infer(nodes: Sequence[Node], shapes: dict) -> dict:
  """``{node: in_shapes}`` of ``nodes`` given the shapes of their outside inputs."""
  in_shapes = {}
  for n in nodes:
    ins = [shapes[i] for i in n.inputs]
    in_shapes[n.name] = tuple(ins)
    shapes[n.name] = layers.OPS[n.op].shape(n.attr_dict, ins)
  return in_shapes


def _template(nodes: Sequence[Node], prefix: str, new_prefix: str,
              output: str) -> tuple[tuple[Node, ...], str]:
  """Rename the nodes of one edge op from ``prefix*`` to ``new_prefix*``; outside inputs
  become ``"SRC"``. ``output`` is the name (old) of the op's output."""
  names = {n.name for n in nodes}

  def rename(name):
    if name in names:
      return new_prefix + name[len(prefix):]
    return _SRC

  out = tuple(n.replace(name=rename(n.name), inputs=[rename(i) for i in n.inputs])
              for n in nodes)
  return out, rename(output)


def _check_size(value, what):
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{what} must be a positive int, got {value!r}")


# ------------------------------------------------------------------------------ specs
class SupernetSpec(abc.ABC):
  """What every supernet description provides (see :class:`NB201Supernet`)."""

  ops: tuple[str, ...]
  num_kinds: int
  affine: bool
  remat: bool

  @property
  def plan(self) -> Plan:
    return _plan(self)

  @property
  def num_edges(self) -> int:
    return len(self.plan.cells()[0].edges)

  @property
  def weights_shape(self) -> tuple[int, int, int]:
    """``(T, E, K)``: cell types, edges per cell, ops per edge."""
    return (self.num_kinds, self.num_edges, len(self.ops))

  @property
  def supports_switch(self) -> bool:
    return False

  def init(self, key) -> "Supernet":
    """Fresh weights: He-normal conv kernels, LeCun-normal dense, BN 1/0 (host NumPy).

    Each node's arrays are drawn from a generator seeded by ``key`` and the node's name.
    """
    plan = self.plan
    seed = key_seed(key)
    params, state = {}, {}
    cell_bn = {n.name for c in plan.cells() for n in c.nodes if n.op == "batchnorm"}
    for node in _all_nodes(plan):
      spec = layers.OPS[node.op]
      ins = plan.shapes[node.name]
      p = spec.params(node.attr_dict, ins)
      if node.name in cell_bn and not self.affine:
        p = {}
      rng = np.random.default_rng(seed + [zlib.crc32(node.name.encode())])
      if p:
        params[node.name] = {k: _init_array(node.op, k, s, rng) for k, s in p.items()}
      s = spec.state(node.attr_dict, ins)
      if s:
        state[node.name] = {k: _init_array(node.op, k, v, rng) for k, v in s.items()}
    return Supernet(self, jax.device_put(params), jax.device_put(state))

  @abc.abstractmethod
  def path_weights(self, path) -> jax.Array:
    """The mixing weights ``(T, E, K)`` that select ``path``."""

  @abc.abstractmethod
  def derive(self, alphas) -> np.ndarray:
    """The discrete architecture (a space code) that ``alphas`` select."""

  @abc.abstractmethod
  def stand_alone_name(self, name: str, path) -> str | None:
    """The stand-alone network's name for the supernet array ``name`` on ``path`` (None:
    not part of that network)."""


def _init_array(op: str, name: str, shape, rng: np.random.Generator) -> np.ndarray:
  if name in ("bias", "mean"):
    return np.zeros(shape, np.float32)
  if name in ("scale", "var"):
    return np.ones(shape, np.float32)
  fan_in = shape[0] if op == "dense" else int(np.prod(shape[:-1]))
  gain = 1.0 if op == "dense" else 2.0
  return (rng.standard_normal(shape, dtype=np.float32) *
          np.float32(np.sqrt(gain / max(fan_in, 1))))


def _all_nodes(plan: Plan):
  for item in plan.items:
    if isinstance(item, CellPlan):
      yield from item.nodes
    else:
      yield item


@dataclasses.dataclass(frozen=True)
class NB201Supernet(SupernetSpec):
  """The NB201 network (:func:`nasjax.models.nb201`) with all five ops on every edge.

  Attributes:
    C: channels of the first stage.
    N: cells per stage.
    input_shape: ``(H, W, C)`` of one image.
    num_classes: classifier width.
    affine: scale and bias in the batch norms of the edge ops.
    remat: rematerialise each cell in the backward pass (``jax.checkpoint``): less
      memory, one more forward pass.
  """

  C: int = 16
  N: int = 5
  input_shape: tuple[int, ...] = (32, 32, 3)
  num_classes: int = 10
  affine: bool = False
  remat: bool = False
  ops = NB201_OPS
  num_kinds = 1

  def __post_init__(self):
    object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
    _check_size(self.C, "C")
    _check_size(self.N, "N")

  @property
  def supports_switch(self) -> bool:
    return True

  @property
  def space(self):
    """The :class:`~nasjax.search.spaces.NB201Space` whose codes are this supernet's paths."""
    from nasjax.search.spaces import NB201Space

    return NB201Space(C=self.C, N=self.N)

  def check_path(self, path) -> np.ndarray:
    p = np.asarray(path)
    if p.shape != (6,) or not np.issubdtype(p.dtype, np.integer) or p.min() < 0 or p.max() > 4:
      raise ValueError(f"an NB201 path is 6 op indices in [0, 5), got {path!r}")
    return p

  def path_weights(self, path) -> jax.Array:
    """``(1, 6, 5)`` one-hot weights of a ``(6,)`` path (jittable; batched ``(..., 6)``)."""
    return jax.nn.one_hot(jnp.asarray(path, jnp.int32), len(NB201_OPS), dtype=_F32)[..., None,
                                                                                   :, :]

  def derive(self, alphas) -> np.ndarray:
    """The path of the largest architecture weight on each edge (``none`` included, as in
    NB201's search code). ``alphas``: ``(6, 5)`` or ``(1, 6, 5)``."""
    a = np.asarray(alphas).reshape(6, len(NB201_OPS))
    return np.argmax(a, axis=-1).astype(np.int32)

  def arch_str(self, path) -> str:
    return nb201_str([NB201_OPS[int(i)] for i in self.check_path(path)])

  def build(self, path):
    """The stand-alone :class:`~nasjax.Arch` of ``path``."""
    return nb201(self.arch_str(path), C=self.C, N=self.N, input_shape=self.input_shape,
                 num_classes=self.num_classes)

  def stand_alone_name(self, name: str, path) -> str | None:
    m = re.fullmatch(r"(s\d+_c\d+)_e(\d)(\d)(_.+)", name)
    if not m:
      return name
    prefix, j, i, suffix = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    op = NB201_OPS[int(path[NB201_EDGES.index((j, i))])]
    return f"{prefix}_e{j}{i}_{op}{suffix}"


_DARTS_SEARCH_OPS = DARTS_OPS[1:]
if DARTS_OPS[0] != "none":
  raise ImportError("the DARTS supernet expects 'none' to be the first of DARTS_OPS")


@dataclasses.dataclass(frozen=True)
class DartsSupernet(SupernetSpec):
  """The DARTS network (:func:`nasjax.models.darts_cell`) with all eight ops
  (:data:`~nasjax.models.DARTS_OPS`, ``none`` first) on every edge of every cell.

  Node ``i`` of a cell sums a mixed op on each of the ``i`` earlier states (two cell
  inputs and the earlier nodes): ``E = 2 + 3 + ... + (steps + 1)`` edges; the cell
  outputs the concatenation of its ``steps`` nodes. Weights have two cell types:
  normal (0) and reduction (1). DARTS adds a batch norm after the pooling ops of its
  supernet; here pooling is exactly the stand-alone op, so paths equal their networks.

  Attributes:
    C, layers, steps, stem_multiplier: as in :func:`nasjax.models.darts_cell`.
    input_shape, num_classes, affine, remat: as in :class:`NB201Supernet`.
  """

  C: int = 16
  layers: int = 8
  steps: int = 4
  stem_multiplier: int = 3
  input_shape: tuple[int, ...] = (32, 32, 3)
  num_classes: int = 10
  affine: bool = False
  remat: bool = False
  ops = DARTS_OPS
  num_kinds = 2

  def __post_init__(self):
    object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
    for what in ("C", "layers", "steps", "stem_multiplier"):
      _check_size(getattr(self, what), what)

  @property
  def space(self):
    """The :class:`~nasjax.search.spaces.DartsCellSpace` whose codes are paths here."""
    from nasjax.search.spaces import DartsCellSpace

    if self.stem_multiplier != 3:
      raise ValueError("DartsCellSpace builds networks with stem_multiplier=3, this supernet "
                       f"has {self.stem_multiplier}")
    return DartsCellSpace(steps=self.steps, C=self.C, layers=self.layers)

  def edge_index(self, node: int, src: int) -> int:
    """Row of edge ``node <- src`` (node from 2)."""
    return sum(range(2, node)) + src

  def _slots(self):
    """``(node, slot)`` of each of the ``2 * steps`` pairs of a genotype."""
    return [(2 + s // 2, s % 2) for s in range(2 * self.steps)]

  def check_path(self, path) -> np.ndarray:
    p = np.asarray(path)
    n = 8 * self.steps
    if p.shape != (n,) or not np.issubdtype(p.dtype, np.integer):
      raise ValueError(f"a DARTS path is a DartsCellSpace code of {n} ints, got {path!r}")
    return self.space.check(p)

  def path_weights(self, path) -> jax.Array:
    """``(2, E, 8)`` multi-hot weights of a DartsCellSpace code (jittable)."""
    code = jnp.asarray(path, jnp.int32).reshape(2, 2 * self.steps, 2)
    offset = jnp.asarray([self.edge_index(n, 0) for n, _ in self._slots()], jnp.int32)
    w = jnp.zeros(self.weights_shape, _F32)
    for t in range(2):
      rows = offset + code[t, :, 0]
      cols = code[t, :, 1] + 1  # the space's ops leave out 'none'
      w = w.at[t, rows, cols].add(1.0)
    return w

  def derive(self, alphas) -> np.ndarray:
    """DARTS's discretisation: per node the two inputs with the strongest non-``none`` op,
    each with that op. ``alphas``: ``(2, E, 8)``. Returns a DartsCellSpace code."""
    a = np.asarray(alphas, np.float64).reshape(self.weights_shape)
    code = []
    for t in range(2):
      w = np.exp(a[t] - a[t].max(-1, keepdims=True))
      w /= w.sum(-1, keepdims=True)
      for node in range(2, 2 + self.steps):
        rows = w[self.edge_index(node, 0):self.edge_index(node, 0) + node, 1:]
        strength = rows.max(-1)
        top = sorted(np.argsort(-strength, kind="stable")[:2])
        for src in top:
          code += [int(src), int(np.argmax(rows[src]))]
    return np.asarray(code, np.int32)

  def genotype(self, path) -> Genotype:
    return self.space.decode(self.check_path(path))

  def build(self, path):
    return darts_cell(self.genotype(path), C=self.C, layers=self.layers, steps=self.steps,
                      stem_multiplier=self.stem_multiplier, input_shape=self.input_shape,
                      num_classes=self.num_classes)

  def stand_alone_name(self, name: str, path) -> str | None:
    m = re.fullmatch(r"c(\d+)_n(\d+)_e([01])(_.+)", name)
    if not m:
      return name
    k, node, slot, suffix = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
    g = self.genotype(path)
    reductions = {self.layers // 3, 2 * self.layers // 3}
    pairs = g.reduce if k in reductions else g.normal
    op, src = pairs[2 * (node - 2) + slot]
    return f"c{k}_n{node}_i{src}_{op}{suffix}"


@functools.lru_cache(maxsize=32)
def _plan(spec: SupernetSpec) -> Plan:
  if isinstance(spec, NB201Supernet):
    return _nb201_plan(spec)
  if isinstance(spec, DartsSupernet):
    return _darts_plan(spec)
  raise ValueError(f"unknown supernet description {spec!r}")


def _split_cells(arch, pattern: str):
  """Skeleton nodes and cells (prefix -> nodes) of a stand-alone arch, in topo order."""
  items, cells = [], {}
  for name in arch.topo_order:
    m = re.match(pattern, name)
    if m:
      if m.group(1) not in cells:
        cells[m.group(1)] = []
        items.append(m.group(1))
      cells[m.group(1)].append(arch[name])
    else:
      items.append(arch[name])
  return items, cells


def _nb201_plan(spec: NB201Supernet) -> Plan:
  arch = nb201(DEFAULT_ARCH_STR, C=spec.C, N=spec.N, input_shape=spec.input_shape,
               num_classes=spec.num_classes)
  skeleton, cells = _split_cells(arch, r"(s\d+_c\d+)_")
  shapes = {n: arch.shape(n) for n in arch.topo_order}
  in_shapes = {n: tuple(arch.in_shapes(n)) for n in arch.topo_order}
  items = []
  for item in skeleton:
    if isinstance(item, Node):
      items.append(item)
      continue
    prefix, nodes = item, cells[item]
    inside = {n.name for n in nodes}
    (src,) = {i for n in nodes for i in n.inputs if i not in inside}
    channels = shapes[src][-1]
    edges = []
    for e, (j, i) in enumerate(NB201_EDGES):
      ops = []
      for op in NB201_OPS:
        if op == "none":
          ops.append(EdgeOp(op, (), ""))
          continue
        if op == "skip_connect":
          ops.append(EdgeOp(op, (), _SRC))
          continue
        only = ["none"] * 6
        only[e] = op
        tag = f"X_e{j}{i}"
        op_nodes = [n for n in nb201_cell("X", _SRC, only, channels) if
                    n.name.startswith(tag + "_")]
        consumed = {x for n in op_nodes for x in n.inputs}
        (out,) = [n.name for n in op_nodes if n.name not in consumed]
        renamed, output = _template(op_nodes, tag, f"{prefix}_e{j}{i}_{op}", out)
        shp = {_SRC: shapes[src]}
        in_shapes.update(_infer(renamed, shp))
        ops.append(EdgeOp(op, renamed, output))
      edges.append(Edge(e, i, j, tuple(ops)))
    items.append(CellPlan(prefix, 0, (src,), (), (src,), tuple(edges), 3, shapes[src],
                          f"{prefix}_n3", False))
  return Plan(tuple(items), "input", arch.output, in_shapes)


def _darts_plan(spec: DartsSupernet) -> Plan:
  steps = spec.steps
  both = tuple((op, src) for _ in range(steps) for op, src in
               (("sep_conv_3x3", 0), ("sep_conv_3x3", 1)))
  concat = tuple(range(2, 2 + steps))
  g = Genotype(both, concat, both, concat)
  arch = darts_cell(g, C=spec.C, layers=spec.layers, steps=steps,
                    stem_multiplier=spec.stem_multiplier, input_shape=spec.input_shape,
                    num_classes=spec.num_classes)
  skeleton, cells = _split_cells(arch, r"(c\d+)_")
  shapes = {n: arch.shape(n) for n in arch.topo_order}
  in_shapes = {n: tuple(arch.in_shapes(n)) for n in arch.topo_order}
  reductions = {spec.layers // 3, 2 * spec.layers // 3}
  items = []
  for item in skeleton:
    if isinstance(item, Node):
      items.append(item)
      continue
    prefix, nodes = item, cells[item]
    k = int(prefix[1:])
    reduction, reduction_prev = k in reductions, (k - 1) in reductions
    pre, states, inputs = [], [], []
    for which in ("pre0", "pre1"):
      group = [n for n in nodes if n.name.startswith(f"{prefix}_{which}_")]
      inside = {n.name for n in group}
      (src,) = {i for n in group for i in n.inputs if i not in inside}
      consumed = {x for n in group for x in n.inputs}
      (out,) = [n.name for n in group if n.name not in consumed]
      pre += group
      inputs.append(src)
      states.append(out)
    channels = shapes[states[1]][-1]
    node_shape = shapes[f"{prefix}_n2"]
    edges = []
    for node in range(2, 2 + steps):
      for src in range(node):
        ops = []
        for op in DARTS_OPS:
          if op == "none":
            ops.append(EdgeOp(op, (), ""))
            continue
          pairs = [("none", 0)] * (2 * steps)
          pairs[2 * (node - 2)] = (op, src)
          pairs[2 * (node - 2) + 1] = ("none", src)
          built = cell("X", "S0", "S1", tuple(pairs), (node,), channels, reduction,
                       reduction_prev)
          tag = f"X_n{node}_e0"
          op_nodes = [n for n in built if n.name.startswith(tag + "_")]
          (out,) = [n.inputs[0] for n in built if n.name == f"X_n{node}"]
          renamed, output = _template(op_nodes, tag, f"{prefix}_n{node}_i{src}_{op}", out)
          shp = {_SRC: shapes[states[src]] if src < 2 else node_shape}
          in_shapes.update(_infer(renamed, shp))
          ops.append(EdgeOp(op, renamed, output))
        edges.append(Edge(spec.edge_index(node, src), src, node, tuple(ops)))
    items.append(CellPlan(prefix, int(reduction), tuple(inputs), tuple(pre), tuple(states),
                          tuple(edges), steps, node_shape, f"{prefix}_out", True))
  return Plan(tuple(items), "input", arch.output, in_shapes)


# ---------------------------------------------------------------------------- network
@flax.struct.dataclass
class Supernet:
  """A supernet: its description (static) with parameter and state pytrees.

  Attributes:
    spec: :class:`NB201Supernet` or :class:`DartsSupernet` (static).
    params: ``{node: {name: array}}`` trainable arrays.
    state: ``{node: {name: array}}`` batch-norm running statistics.
  """

  spec: SupernetSpec = flax.struct.field(pytree_node=False)
  params: dict
  state: dict

  @property
  def num_params(self) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.params))


def _apply_nodes(nodes, env: dict, params, state, ctx, calibrate: bool, new_state: dict):
  for n in nodes:
    attrs = n.attr_dict
    p = params.get(n.name)
    if n.op == "batchnorm":
      if calibrate:
        attrs["momentum"] = 0.0  # the new state is this batch's statistics
      if p is None:  # affine=False: fixed scale 1 and bias 0
        p = {"scale": jnp.ones((), _F32), "bias": jnp.zeros((), _F32)}
    out, st = layers.OPS[n.op].apply(attrs, [env[i] for i in n.inputs], p or {},
                                     state.get(n.name, {}), ctx)
    env[n.name] = out
    if st is not None:
      new_state[n.name] = st


def _run_op(eop: EdgeOp, x, params, state, ctx, calibrate):
  """``(output, {node: new_state})`` of one edge op on ``x``."""
  if eop.output == "":
    return jnp.zeros_like(x), {}
  env, new = {_SRC: x}, {}
  _apply_nodes(eop.nodes, env, params, state, ctx, calibrate, new)
  return env[eop.output], new


def _cell_states(cell: CellPlan, inputs, params, state, ctx, calibrate, new_state):
  env = dict(zip(cell.inputs, inputs))
  _apply_nodes(cell.pre, env, params, state, ctx, calibrate, new_state)
  return [env[s] for s in cell.states]


def _cell_output(cell: CellPlan, states):
  if cell.concat:
    nodes = states[len(cell.states):]
    return nodes[0] if len(nodes) == 1 else jnp.concatenate(nodes, axis=-1)
  return states[-1]


def _cell_mixed(cell: CellPlan, inputs, params, state, weights, *, ctx, calibrate):
  """A cell under mixing weights ``(E, K)``; an op's state changes only where its weight
  is nonzero."""
  new_state = {}
  states = _cell_states(cell, inputs, params, state, ctx, calibrate, new_state)
  for d in range(len(cell.states), len(cell.states) + cell.num_nodes):
    acc = None
    for edge in cell.edges:
      if edge.dst != d:
        continue
      x = states[edge.src]
      for k, eop in enumerate(edge.ops):
        if eop.output == "":
          continue  # the zero op adds nothing (its weight still counts in a softmax)
        w = weights[edge.index, k]
        y, st = _run_op(eop, x, params, state, ctx, calibrate)
        term = w * y
        acc = term if acc is None else acc + term
        for name, s in st.items():
          new_state[name] = jax.tree_util.tree_map(lambda a, b: jnp.where(w != 0, a, b), s,
                                                   state[name])
    if acc is None:
      acc = jnp.zeros(states[0].shape[:1] + tuple(cell.node_shape), _F32)
    states.append(acc)
  return _cell_output(cell, states), new_state


def _cell_switch(cell: CellPlan, inputs, params, state, path, *, ctx, calibrate):
  """A cell under a path ``(E,)``: ``lax.switch`` runs only the chosen op of each edge."""
  new_state = {}
  states = _cell_states(cell, inputs, params, state, ctx, calibrate, new_state)
  for d in range(len(cell.states), len(cell.states) + cell.num_nodes):
    acc = None
    for edge in cell.edges:
      if edge.dst != d:
        continue
      names = [n.name for eop in edge.ops for n in eop.nodes]
      e_params = {n: params[n] for n in names if n in params}
      e_state = {n: state[n] for n in names if n in state}

      def branch(eop, x, p, s):
        y, st = _run_op(eop, x, p, s, ctx, calibrate)
        return y, {**s, **st} if ctx.train else s

      branches = [functools.partial(branch, eop) for eop in edge.ops]
      y, st = jax.lax.switch(path[edge.index], branches, states[edge.src], e_params, e_state)
      if ctx.train:
        new_state.update(st)
      acc = y if acc is None else acc + y
    states.append(acc)
  return _cell_output(cell, states), new_state


def _cell_names(cell: CellPlan) -> list[str]:
  return [n.name for n in cell.nodes]


def forward(sn: Supernet, x: jax.Array, weights: jax.Array | None = None, *,
            path: jax.Array | None = None, impl: str = "switch", train: bool = False,
            calibrate: bool = False, dtype: Any = "float32"):
  """Run the supernet on a batch (not jitted by itself; call it inside ``jax.jit``).

  Args:
    sn: the supernet.
    x: ``(B, H, W, C)`` images.
    weights: ``(T, E, K)`` mixing weights (``(E, K)`` for one cell type).
    path: instead of ``weights``, an int path (an NB201 code ``(6,)`` or a DartsCellSpace
      code).
    impl: how an NB201 path is applied: ``"switch"`` (only the chosen ops run) or
      ``"onehot"`` (every op runs and is weighted by the path's one-hot weights). DARTS
      paths always go through their weights.
    train: batch statistics in batch norm; returns the new running statistics.
    calibrate: batch statistics, and the returned state holds this batch's statistics
      (``mean`` and biased ``var``) of every batch norm that ran.
    dtype: compute dtype of convolutions and dense layers.

  Returns:
    ``(B, num_classes)`` logits, and with ``train`` or ``calibrate`` the new state.
  """
  spec = sn.spec
  plan = spec.plan
  if impl not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
  if (weights is None) == (path is None):
    raise ValueError("pass exactly one of weights and path")
  if tuple(x.shape[1:]) != spec.input_shape:
    raise ValueError(f"input of shape {tuple(x.shape)} does not match the supernet's input "
                     f"shape (B, {', '.join(map(str, spec.input_shape))})")
  use_switch = path is not None and impl == "switch" and spec.supports_switch
  if use_switch:
    arch = jnp.asarray(path, jnp.int32).reshape(1, -1)
  else:
    arch = spec.path_weights(path) if path is not None else jnp.asarray(weights, _F32)
    if arch.ndim == 2:
      arch = arch[None]
    if arch.shape != spec.weights_shape:
      raise ValueError(f"weights must have shape {spec.weights_shape}, got {arch.shape}")
  ctx = layers.ApplyContext(train=train or calibrate, dtype=jnp.dtype(dtype))
  env = {plan.input: jnp.asarray(x, _F32)}
  new_state = dict(sn.state)
  for item in plan.items:
    if isinstance(item, Node):
      if item.op == "input":
        continue
      _apply_nodes([item], env, sn.params, sn.state, ctx, calibrate, new_state)
      continue
    body = _cell_switch if use_switch else _cell_mixed
    fn = functools.partial(body, item, ctx=ctx, calibrate=calibrate)
    if spec.remat:
      fn = jax.checkpoint(fn)
    names = _cell_names(item)
    c_params = {n: sn.params[n] for n in names if n in sn.params}
    c_state = {n: sn.state[n] for n in names if n in sn.state}
    out, st = fn(tuple(env[i] for i in item.inputs), c_params, c_state, arch[item.kind])
    env[item.output] = out
    new_state.update(st)
  logits = env[plan.output]
  return (logits, new_state) if (train or calibrate) else logits


# ------------------------------------------------------------------------------ scoring
@functools.partial(jax.jit, static_argnames=("impl", "dtype"))
def _calibrate(sn: Supernet, path, xs, impl, dtype):
  """Batch-norm statistics of ``path`` pooled over the ``K`` batches ``xs (K, B, ...)``."""

  def body(acc, x):
    _, st = forward(sn, x, path=path, impl=impl, calibrate=True, dtype=dtype)
    st = {n: {"mean": s["mean"], "sq": s["var"] + jnp.square(s["mean"])}
          for n, s in st.items() if "mean" in s}
    return jax.tree_util.tree_map(jnp.add, acc, st), None

  zero = {n: {"mean": jnp.zeros_like(s["mean"]), "sq": jnp.zeros_like(s["var"])}
          for n, s in sn.state.items()}
  total, _ = jax.lax.scan(body, zero, xs)
  k = xs.shape[0]
  out = {}
  for n, s in total.items():
    mean = s["mean"] / k
    out[n] = {"mean": mean, "var": jnp.maximum(s["sq"] / k - jnp.square(mean), 0.0)}
  return out


def recalibrate(sn: Supernet, path, xs, *, impl: str = "switch",
                dtype: str = "float32") -> Supernet:
  """``sn`` with batch-norm statistics recomputed for ``path`` on training batches.

  Each batch runs the path with batch statistics (as in training); the new mean and
  variance of each batch norm are those of all ``K * B`` examples pooled (the mean of the
  batch means, and the mean second moment minus the squared mean). Batch norms the path
  does not use keep their statistics.

  Args:
    sn: the supernet.
    path: an int path.
    xs: ``(K, B, H, W, C)`` training batches.
    impl: see :func:`forward`.

  Returns:
    The supernet with the new ``state``; its ``params`` are ``sn.params``.
  """
  xs = jnp.asarray(xs, _F32)
  if xs.ndim != 5:
    raise ValueError(f"xs must be (K, B, H, W, C) batches, got shape {xs.shape}")
  st = _calibrate(sn, jnp.asarray(path, jnp.int32), xs, impl, dtype)
  # Ops off the path ran with zero weight (or not at all): restore their statistics
  # exactly rather than through the pooled-moment arithmetic.
  keep = _unused_nodes(sn.spec, np.asarray(sn.spec.path_weights(path)))
  st = {n: (sn.state[n] if n in keep else s) for n, s in st.items()}
  return sn.replace(state=st)


def _unused_nodes(spec: SupernetSpec, weights: np.ndarray) -> set[str]:
  """Names of the edge-op nodes whose weight is zero (their statistics must not change)."""
  out = set()
  for c in spec.plan.cells():
    for e in c.edges:
      for k, eop in enumerate(e.ops):
        if weights[c.kind, e.index, k] == 0:
          out.update(n.name for n in eop.nodes)
  return out


@functools.partial(jax.jit, static_argnames=("impl", "batch_stats", "dtype"))
def correct_count(sn: Supernet, path, x, y, mask, impl: str = "switch",
                  batch_stats: bool = False, dtype: str = "float32") -> jax.Array:
  """``()`` int: how many of the examples of ``x (B, ...)`` where ``mask (B,)`` holds the
  path classifies as ``y`` (jitted; one program for every path)."""
  if batch_stats:
    logits, _ = forward(sn, x, path=path, impl=impl, train=True, dtype=dtype)
  else:
    logits = forward(sn, x, path=path, impl=impl, dtype=dtype)
  return jnp.sum((jnp.argmax(logits, -1) == y) & mask)


def calibration_batches(x_train: np.ndarray, num_batches: int, batch_size: int,
                        seed: int = 0) -> np.ndarray:
  """``(K, B, H, W, C)`` training images drawn without replacement with ``seed``."""
  n = num_batches * batch_size
  if n > len(x_train):
    raise ValueError(f"{num_batches} calibration batches of {batch_size} need {n} training "
                     f"images, the data has {len(x_train)}")
  idx = np.random.default_rng(seed).permutation(len(x_train))[:n]
  return np.asarray(x_train[idx], np.float32).reshape((num_batches, batch_size) +
                                                       x_train.shape[1:])


def accuracy(sn: Supernet, path, x, y, *, batch_size: int = 256, batch_stats: bool = False,
             impl: str = "switch", dtype: str = "float32") -> float:
  """Accuracy of ``path`` with the supernet's weights on ``(x, y)``.

  With ``batch_stats`` the batch norms use each batch's statistics (no running
  statistics, NB201's ``track_running_stats=False``); then only full batches are scored.
  Otherwise the last batch is zero-padded and masked.
  """
  x = np.asarray(x, np.float32)
  y = np.asarray(y, np.int32)
  n = len(x)
  bs = min(batch_size, n)
  stop = n - n % bs if batch_stats else n
  if stop == 0:
    raise ValueError(f"no full batch of {bs} in {n} examples")
  path = jnp.asarray(path, jnp.int32)
  counts = []
  for xb, yb, mask in data_lib.padded_batches(x, y, bs, stop):
    counts.append(correct_count(sn, path, xb, yb, mask, impl, batch_stats, dtype))
  return float(sum(int(c) for c in counts)) / stop


def score_paths(sn: Supernet, paths, data, *, bn: str = "recalibrate",
                calib_batches: int = 8, calib_batch_size: int = 128, batch_size: int = 256,
                max_examples: int | None = None, split: str = "val", seed: int = 0,
                impl: str = "switch", dtype: str = "float32") -> np.ndarray:
  """Validation accuracy of each path with the supernet's (inherited) weights.

  Args:
    sn: a (trained) supernet.
    paths: ``(P, L)`` int paths (NB201 codes, or DartsCellSpace codes).
    data: a :class:`nasjax.data.Dataset` (calibration uses ``x_train``).
    bn: ``"recalibrate"`` (default: per path, batch-norm statistics recomputed on
      ``calib_batches`` training batches, the same batches for every path),
      ``"batch"`` (each evaluation batch normalised by its own statistics) or
      ``"running"`` (the supernet's running statistics as they are).
    calib_batches, calib_batch_size: the calibration batches.
    batch_size: evaluation batch size.
    max_examples: score on the first this many examples of the split only.
    split: ``"val"``, ``"test"`` or ``"train"``.
    seed: which training images calibrate.
    impl: see :func:`forward`.

  Returns:
    ``(P,)`` float64 accuracies in [0, 1]. One compiled program serves every path.
  """
  if bn not in BN_MODES:
    raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
  if split not in ("val", "test", "train"):
    raise ValueError(f"split must be 'val', 'test' or 'train', got {split!r}")
  x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
  if max_examples is not None:
    x, y = x[:max_examples], y[:max_examples]
  if len(x) == 0:
    raise ValueError(f"the {split!r} split of {getattr(data, 'name', 'the data')} is empty")
  paths = np.asarray(paths)
  if paths.ndim != 2:
    raise ValueError(f"paths must be a (P, L) int array, got shape {paths.shape}")
  xs = None
  if bn == "recalibrate":
    xs = jnp.asarray(calibration_batches(data.x_train, calib_batches, calib_batch_size, seed))
  out = []
  for p in paths:
    net = sn
    if bn == "recalibrate":
      net = recalibrate(sn, p, xs, impl=impl, dtype=dtype)
    out.append(accuracy(net, p, x, y, batch_size=batch_size, batch_stats=bn == "batch",
                        impl=impl, dtype=dtype))
  return np.asarray(out, np.float64)


# ----------------------------------------------------------------------------- transfer
def to_network(sn: Supernet, path) -> Network:
  """The stand-alone network of ``path`` with the supernet's weights and statistics.

  The architecture is the one :func:`nasjax.models.nb201` (or
  :func:`nasjax.models.darts_cell`) builds for the path; every array is copied from the
  supernet node that computes the same thing (batch norms without affine parameters get
  scale 1 and bias 0). :func:`nasjax.forward` of the result equals :func:`forward` of the
  supernet on ``path``.

  Raises:
    ValueError: for a bad path.
  """
  spec = sn.spec
  path = spec.check_path(path)
  arch = spec.build(path)
  params, state = {}, {}
  for name in arch.topo_order:
    node = arch[name]
    op = layers.OPS[node.op]
    ins = arch.in_shapes(name)
    p_shapes, s_shapes = op.params(node.attr_dict, ins), op.state(node.attr_dict, ins)
    if not p_shapes and not s_shapes:
      continue
    src = spec.stand_alone_name(name, path)
    if p_shapes:
      if src in sn.params:
        params[name] = dict(sn.params[src])
      elif node.op == "batchnorm":
        c = p_shapes["scale"]
        params[name] = {"scale": jnp.ones(c, _F32), "bias": jnp.zeros(c, _F32)}
      else:
        raise ValueError(f"the supernet has no weights {src!r} for node {name!r}")
    if s_shapes:
      state[name] = dict(sn.state[src])
    for k, shp in p_shapes.items():
      if tuple(params[name][k].shape) != tuple(shp):
        raise ValueError(f"weights {src!r}/{k} have shape {params[name][k].shape}, node "
                         f"{name!r} needs {shp}")
  return Network(arch, params, state)


def supernet_for_space(space, input_shape: Sequence[int], num_classes: int, *,
                       affine: bool = False, remat: bool = False) -> SupernetSpec:
  """The supernet whose paths are the codes of ``space`` (``nb201`` or ``darts``)."""
  name = getattr(space, "name", space)
  if name == "nb201":
    return NB201Supernet(C=space.C, N=space.N, input_shape=tuple(input_shape),
                         num_classes=num_classes, affine=affine, remat=remat)
  if name == "darts":
    return DartsSupernet(C=space.C, layers=space.layers, steps=space.steps,
                         input_shape=tuple(input_shape), num_classes=num_classes,
                         affine=affine, remat=remat)
  raise ValueError(f"no supernet for search space {name!r}; one-shot search supports "
                   "'nb201' and 'darts'")


def init(spec: SupernetSpec, key) -> Supernet:
  """``spec.init(key)``: a freshly initialised supernet."""
  return spec.init(key)


__all__ = ["NB201Supernet", "DartsSupernet", "Supernet", "SupernetSpec", "forward", "init",
           "recalibrate", "score_paths", "accuracy", "correct_count", "calibration_batches",
           "to_network", "supernet_for_space", "IMPLS", "BN_MODES"]
