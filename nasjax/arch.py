"""Architectures as pure, hashable data: a DAG of named nodes.

An :class:`Arch` is a tuple of :class:`Node` s plus the name of the output node. Each
node names its op (see :mod:`nasjax.layers`), its static attributes and its inputs by
*name*, so inserting a node never renumbers the others and parameters stay addressed
by stable names. Construction validates the graph and infers every node's shape;
a bad graph raises ``ValueError`` naming the offending node (and the field, for a bad
attribute). Every attribute is checked for its type and range (see
:mod:`nasjax.layers`); no tensor or parameter array may exceed
:data:`nasjax.layers.MAX_ELEMENTS` elements, and architecture JSON is at most
:data:`MAX_JSON_CHARS` characters, so hostile input fails cleanly.

Example::

    arch = Arch([
        Node("x", "input", shape=(28, 28, 1)),
        Node("c1", "conv", ["x"], features=16),
        Node("bn1", "batchnorm", ["c1"]),
        Node("r1", "relu", ["bn1"]),
        Node("pool", "gap", ["r1"]),
        Node("logits", "dense", ["pool"], features=10),
    ])
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Iterable, Mapping, Sequence

from nasjax import layers

FORMAT = "nasjax.arch/1"
# Far above any real architecture (a 20-cell DARTS network is ~100k characters), so
# that a corrupt or hostile file is refused before parsing rather than exhausting memory.
MAX_JSON_CHARS = 2**26

_short = layers.short_repr


class Node:
  """One named op of an architecture. Immutable and hashable.

  Args:
    name: unique name of the node within its architecture.
    op: an op name from :data:`nasjax.layers.OPS`.
    inputs: names of the nodes whose outputs feed this one, in order.
    **attrs: the op's static attributes; omitted ones take the op's defaults.
  """

  __slots__ = ("name", "op", "inputs", "attrs", "_hash")

  def __init__(self, name: str, op: str, inputs: Sequence[str] = (), **attrs):
    self._set(name, op, inputs, attrs)

  def _set(self, name, op, inputs, attrs: Mapping[str, Any]):
    # Shared by __init__ and from_dict, whose attribute keys may be anything (even
    # "self"), so they are passed as a mapping rather than as keyword arguments.
    if not isinstance(name, str) or not name:
      raise ValueError(f"node 'name' must be a non-empty string, got {_short(name)}")
    if not isinstance(op, str):
      raise ValueError(f"node {name!r}: 'op' must be a string, got {_short(op)}")
    if op not in layers.OPS:
      raise ValueError(f"node {name!r}: unknown op {_short(op)}; known ops: "
                       f"{sorted(layers.OPS)}")
    if isinstance(inputs, str):
      inputs = (inputs,)
    if (not isinstance(inputs, (list, tuple)) or
        not all(isinstance(i, str) and i for i in inputs)):
      raise ValueError(f"node {name!r}: 'inputs' must be a list of node names, got "
                       f"{_short(inputs)}")
    spec = layers.OPS[op]
    unknown = set(attrs) - set(spec.attrs)
    if unknown:
      raise ValueError(f"node {name!r}: unknown attribute(s) "
                       f"{_short(sorted(map(str, unknown)))} for op {op!r}; it takes "
                       f"{sorted(spec.attrs)}")
    full = {}
    for key, default in spec.attrs.items():
      value = attrs.get(key, default)
      if value is layers.REQUIRED:
        raise ValueError(f"node {name!r}: op {op!r} needs attribute {key!r}")
      try:
        full[key] = layers.normalize_attr(op, key, value)
      except ValueError as e:
        raise ValueError(f"node {name!r}: attribute {key!r} {e}") from None
    set_ = object.__setattr__
    set_(self, "name", name)
    set_(self, "op", op)
    set_(self, "inputs", tuple(str(i) for i in inputs))
    set_(self, "attrs", tuple(sorted(full.items())))
    set_(self, "_hash", hash((name, op, self.inputs, self.attrs)))

  def __setattr__(self, key, value):
    raise dataclasses.FrozenInstanceError(f"Node is immutable; use node.replace({key}=...)")

  def __hash__(self):
    return self._hash

  def __eq__(self, other):
    return (isinstance(other, Node) and self._hash == other._hash and
            (self.name, self.op, self.inputs, self.attrs) ==
            (other.name, other.op, other.inputs, other.attrs))

  def __reduce__(self):
    return (Node.from_dict, (self.to_dict(),))

  def __getitem__(self, key: str):
    """The value of attribute ``key``."""
    for k, v in self.attrs:
      if k == key:
        return v
    raise KeyError(f"node {self.name!r} ({self.op}) has no attribute {key!r}")

  def get(self, key: str, default=None):
    try:
      return self[key]
    except KeyError:
      return default

  @property
  def attr_dict(self) -> dict[str, Any]:
    return dict(self.attrs)

  def replace(self, **changes) -> "Node":
    """A copy with ``name``, ``op``, ``inputs`` or attributes changed."""
    name = changes.pop("name", self.name)
    op = changes.pop("op", self.op)
    inputs = changes.pop("inputs", self.inputs)
    attrs = {} if op != self.op else self.attr_dict
    attrs.update(changes)
    return Node(name, op, inputs, **attrs)

  def to_dict(self) -> dict:
    d = {"name": self.name, "op": self.op, "inputs": list(self.inputs)}
    d.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.attrs})
    return d

  @classmethod
  def from_dict(cls, d: Mapping) -> "Node":
    """The node of a :meth:`to_dict` entry.

    Raises:
      ValueError: naming the node and the field, for a missing or bad field.
    """
    if not isinstance(d, Mapping):
      raise ValueError(f"a node entry must be a dict, got {_short(d)}")
    d = dict(d)
    if "name" not in d:
      raise ValueError(f"node entry {_short(d)} lacks 'name'")
    if "op" not in d:
      raise ValueError(f"node {_short(d['name'])} lacks 'op'")
    name, op = d.pop("name"), d.pop("op")
    inputs = d.pop("inputs", [])
    if not isinstance(inputs, (list, tuple)):
      raise ValueError(f"node {_short(name)}: 'inputs' must be a list of node names, got "
                       f"{_short(inputs)}")
    node = cls.__new__(cls)
    node._set(name, op, inputs, d)
    return node

  def __repr__(self):
    attrs = "".join(f", {k}={v!r}" for k, v in self.attrs)
    return f"Node({self.name!r}, {self.op!r}, {list(self.inputs)!r}{attrs})"


class Arch:
  """A validated architecture: a DAG of :class:`Node` s. Immutable and hashable.

  Args:
    nodes: the nodes, in any order; exactly one has op ``input``.
    output: name of the output node; defaults to the last node.

  Raises:
    ValueError: naming the node, for an unknown op, a dangling input, a cycle, a
      duplicate name, a shape mismatch (e.g. at an ``add``), a spatial size below 1,
      a tensor or parameter array over :data:`nasjax.layers.MAX_ELEMENTS` elements,
      or a node with no path to the output.
  """

  __slots__ = ("nodes", "output", "_hash", "_order", "_shapes", "_index", "_consumers")

  def __init__(self, nodes: Iterable[Node], output: str | None = None):
    nodes = tuple(nodes)
    if not nodes:
      raise ValueError("an architecture needs at least an input node")
    for n in nodes:
      if not isinstance(n, Node):
        raise ValueError(f"expected Node, got {_short(n)}")
    if output is not None and not isinstance(output, str):
      raise ValueError(f"architecture 'output' must be a node name (a string), got "
                       f"{_short(output)}")
    set_ = object.__setattr__
    set_(self, "nodes", nodes)
    set_(self, "output", nodes[-1].name if output is None else output)
    self._validate()
    set_(self, "_hash", hash((self.nodes, self.output)))

  # -- immutability and identity ----------------------------------------------------
  def __setattr__(self, key, value):
    raise dataclasses.FrozenInstanceError("Arch is immutable")

  def __hash__(self):
    return self._hash

  def __eq__(self, other):
    return (isinstance(other, Arch) and self._hash == other._hash and
            self.output == other.output and self.nodes == other.nodes)

  def __repr__(self):
    body = ",\n  ".join(repr(n) for n in self.nodes)
    return f"Arch([\n  {body}],\n  output={self.output!r})"

  def __reduce__(self):
    return (Arch.from_json, (self.to_json(),))

  def __len__(self):
    return len(self.nodes)

  def __contains__(self, name: str):
    return name in self._index

  def __getitem__(self, name: str) -> Node:
    try:
      return self.nodes[self._index[name]]
    except KeyError:
      raise KeyError(f"no node named {name!r}") from None

  # -- validation --------------------------------------------------------------------
  def _validate(self):
    index = {}
    for i, n in enumerate(self.nodes):
      if n.name in index:
        raise ValueError(f"duplicate node name {n.name!r}")
      index[n.name] = i
    object.__setattr__(self, "_index", index)
    inputs = [n for n in self.nodes if n.op == "input"]
    if len(inputs) != 1:
      raise ValueError(f"an architecture needs exactly one 'input' node, found "
                       f"{[n.name for n in inputs]}")
    if self.output not in index:
      raise ValueError(f"output node {self.output!r} does not exist")
    for n in self.nodes:
      spec = layers.OPS[n.op]
      lo, hi = spec.arity
      if len(n.inputs) < lo or (hi is not None and len(n.inputs) > hi):
        want = str(lo) if lo == hi else f"{lo}..{hi if hi is not None else 'any'}"
        raise ValueError(f"node {n.name!r}: op {n.op!r} takes {want} inputs, got "
                         f"{len(n.inputs)}")
      for i in n.inputs:
        if i not in index:
          raise ValueError(f"node {n.name!r}: input {i!r} does not exist (dangling "
                           "input)")
    # Topological order (Kahn), stable with respect to the given order.
    indeg = {n.name: len(n.inputs) for n in self.nodes}
    consumers: dict[str, list[str]] = {n.name: [] for n in self.nodes}
    for n in self.nodes:
      for i in n.inputs:
        consumers[i].append(n.name)
    ready = [n.name for n in self.nodes if indeg[n.name] == 0]
    order = []
    while ready:
      name = ready.pop(0)
      order.append(name)
      for c in consumers[name]:
        indeg[c] -= 1
        if indeg[c] == 0:
          ready.append(c)
    if len(order) != len(self.nodes):
      cyclic = sorted(k for k, v in indeg.items() if v > 0)
      raise ValueError(f"cycle through node(s) {cyclic}")
    object.__setattr__(self, "_order", tuple(order))
    rank = {name: k for k, name in enumerate(order)}
    object.__setattr__(self, "_consumers", {
        k: tuple(sorted(set(v), key=rank.__getitem__)) for k, v in consumers.items()})
    # Every node must reach the output; the output must depend on the input.
    live = set()
    stack = [self.output]
    while stack:
      name = stack.pop()
      if name not in live:
        live.add(name)
        stack.extend(self[name].inputs)
    dead = [n.name for n in self.nodes if n.name not in live]
    if dead:
      raise ValueError(f"node {dead[0]!r} has no path to the output {self.output!r}"
                       + (f" (also {dead[1:]})" if len(dead) > 1 else ""))
    if inputs[0].name not in live:
      raise ValueError(f"output {self.output!r} does not depend on the input")
    shapes = {}
    for name in order:
      n = self[name]
      spec, attrs, in_shapes = layers.OPS[n.op], n.attr_dict, [shapes[i] for i in n.inputs]
      try:
        shapes[name] = tuple(int(d) for d in spec.shape(attrs, in_shapes))
      except (layers.ShapeError, ValueError) as e:
        raise ValueError(f"node {name!r} ({n.op}): {e}") from None
      # Sizes are checked here, on shapes, so that nothing downstream (init, FLOPs,
      # compilation) is ever asked for an absurd allocation.
      arrays = [("output", shapes[name])]
      arrays += [(f"parameter {k!r}", v) for k, v in spec.params(attrs, in_shapes).items()]
      arrays += [(f"state {k!r}", v) for k, v in spec.state(attrs, in_shapes).items()]
      for what, shape in arrays:
        size = math.prod(shape)
        if size > layers.MAX_ELEMENTS:
          raise ValueError(f"node {name!r} ({n.op}): {what} of shape {shape} has {size} "
                           "elements, over the limit of 2**40 (layers.MAX_ELEMENTS)")
    object.__setattr__(self, "_shapes", shapes)

  # -- queries -------------------------------------------------------------------------
  @property
  def input(self) -> Node:
    """The input node."""
    return self[self._order[0]]

  @property
  def input_shape(self) -> tuple[int, ...]:
    return self._shapes[self._order[0]]

  @property
  def output_shape(self) -> tuple[int, ...]:
    return self._shapes[self.output]

  @property
  def topo_order(self) -> tuple[str, ...]:
    """Node names in a topological order (inputs before consumers)."""
    return self._order

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(n.name for n in self.nodes)

  def shape(self, name: str) -> tuple[int, ...]:
    """Output shape of node ``name``, without the batch dimension."""
    if name not in self._shapes:
      raise KeyError(f"no node named {name!r}")
    return self._shapes[name]

  @property
  def shapes(self) -> dict[str, tuple[int, ...]]:
    return dict(self._shapes)

  def in_shapes(self, name: str) -> list[tuple[int, ...]]:
    return [self._shapes[i] for i in self[name].inputs]

  def consumers(self, name: str) -> tuple[str, ...]:
    """Names of the nodes that read node ``name``'s output, in topological order."""
    if name not in self._index:
      raise KeyError(f"no node named {name!r}")
    return self._consumers[name]

  def nodes_of(self, *ops: str) -> tuple[Node, ...]:
    """Nodes whose op is one of ``ops``, in topological order."""
    return tuple(self[n] for n in self._order if self[n].op in ops)

  def fresh_name(self, base: str) -> str:
    """A node name starting with ``base`` that is not used yet."""
    if base not in self._index:
      return base
    k = 1
    while f"{base}_{k}" in self._index:
      k += 1
    return f"{base}_{k}"

  # -- functional edits ----------------------------------------------------------------
  def replace_nodes(self, *nodes: Node) -> "Arch":
    """A new Arch with the nodes of the same names replaced."""
    new = {n.name: n for n in nodes}
    missing = set(new) - set(self._index)
    if missing:
      raise ValueError(f"no node named {sorted(missing)[0]!r} to replace")
    return Arch([new.get(n.name, n) for n in self.nodes], self.output)

  def insert_after(self, after: str, *nodes: Node, rewire: bool = True,
                   output: str | None = None) -> "Arch":
    """Insert ``nodes`` (a chain reading ``after``) after node ``after``.

    With ``rewire``, every former consumer of ``after`` reads the last new node instead
    (and the output moves to it if ``after`` was the output).
    """
    if after not in self._index:
      raise ValueError(f"no node named {after!r}")
    last = nodes[-1].name
    out = []
    for n in self.nodes:
      if rewire and after in n.inputs:
        n = n.replace(inputs=tuple(last if i == after else i for i in n.inputs))
      out.append(n)
      if n.name == after:
        out.extend(nodes)
    if output is None:
      output = last if (rewire and self.output == after) else self.output
    return Arch(out, output)

  def remove_nodes(self, *names: str, output: str | None = None) -> "Arch":
    """A new Arch without the named nodes (their consumers must be rewired first)."""
    for name in names:
      if name not in self._index:
        raise ValueError(f"no node named {name!r}")
    return Arch([n for n in self.nodes if n.name not in names],
                self.output if output is None else output)

  # -- serialisation --------------------------------------------------------------------
  def to_dict(self) -> dict:
    return {"format": FORMAT, "output": self.output,
            "nodes": [n.to_dict() for n in self.nodes]}

  def to_json(self, indent: int | None = None) -> str:
    """JSON text that :meth:`from_json` turns back into an equal Arch."""
    return json.dumps(self.to_dict(), indent=indent)

  @classmethod
  def from_dict(cls, d: Mapping) -> "Arch":
    """The architecture of a :meth:`to_dict` dict.

    Raises:
      ValueError: naming the node and the field, for any missing, mistyped or
        out-of-range field, or an invalid graph.
    """
    if not isinstance(d, Mapping) or "nodes" not in d:
      raise ValueError("an architecture dict needs a 'nodes' list")
    fmt = d.get("format", FORMAT)
    if fmt != FORMAT:
      raise ValueError(f"unsupported architecture format {_short(fmt)}; expected "
                       f"{FORMAT!r}")
    nodes = d["nodes"]
    if not isinstance(nodes, (list, tuple)):
      raise ValueError(f"architecture field 'nodes' must be a list of node entries, got "
                       f"{_short(nodes)}")
    for i, n in enumerate(nodes):
      # A node without a usable name can only be located by its position.
      if not isinstance(n, Mapping):
        raise ValueError(f"nodes[{i}] must be a node entry (a dict), got {_short(n)}")
      if not isinstance(n.get("name"), str) or not n.get("name"):
        raise ValueError(f"nodes[{i}]: node 'name' must be a non-empty string, got "
                         f"{_short(n.get('name'))}")
    return cls([Node.from_dict(n) for n in nodes], d.get("output"))

  @classmethod
  def from_json(cls, s: str | bytes) -> "Arch":
    """The architecture of :meth:`to_json` text.

    Raises:
      ValueError: for text over :data:`MAX_JSON_CHARS` characters, text that does not
        parse or nests too deeply, or any error of :meth:`from_dict`.
    """
    if not isinstance(s, (str, bytes, bytearray)):
      raise ValueError(f"architecture JSON must be a string, got {type(s).__name__}")
    if len(s) > MAX_JSON_CHARS:
      raise ValueError(f"architecture JSON of {len(s)} characters is over the limit of "
                       f"{MAX_JSON_CHARS} (MAX_JSON_CHARS)")
    try:
      d = json.loads(s)
    except RecursionError:
      raise ValueError("architecture JSON is nested too deeply to parse") from None
    except ValueError as e:  # JSONDecodeError, bad UTF-8, integers too long to convert
      raise ValueError(f"architecture JSON does not parse: {e}") from None
    return cls.from_dict(d)

  def summary(self) -> str:
    """A one-line-per-node table: name, op, attributes, inputs, output shape."""
    rows = []
    for name in self._order:
      n = self[name]
      attrs = ", ".join(f"{k}={v}" for k, v in n.attrs if k != "shape")
      rows.append(f"{name:<16} {n.op:<10} {attrs:<40} <- {','.join(n.inputs):<20} "
                  f"{self._shapes[name]}")
    return "\n".join(rows)

  def _repr_svg_(self):  # pragma: no cover - notebook display
    from nasjax import viz
    return viz.to_svg(self)


def sequential(input_shape: Sequence[int], layers_: Sequence[tuple[str, dict]] | Sequence,
               prefix: str = "l") -> Arch:
  """A chain architecture from ``(op, attrs)`` pairs, nodes named ``{prefix}{i}_{op}``.

  The input node is named ``input``; the last layer is the output.
  """
  nodes = [Node("input", "input", shape=tuple(input_shape))]
  prev = "input"
  for i, (op, attrs) in enumerate(layers_):
    name = f"{prefix}{i}_{op}"
    nodes.append(Node(name, op, [prev], **attrs))
    prev = name
  return Arch(nodes)
