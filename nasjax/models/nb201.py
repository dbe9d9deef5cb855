"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020), as an :class:`~nasjax.Arch`.

A cell is a DAG of 4 nodes: node 0 is the cell input and node ``j`` (1..3) is the sum of
one op applied to each earlier node, six edges in all. An edge's op is one of
:data:`NB201_OPS`. The official string lists, node by node, ``op~i`` for each input ``i``::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

and the cell's output is node 3. The network is NB201's macro skeleton: a 3x3 conv-BN
stem with ``C`` channels, three stages of ``N`` cells with ``C``, ``2C`` and ``4C``
channels, a residual reduction block between stages, then BN-ReLU, global pooling and
the classifier.

Ops: ``nor_conv_kxk`` is ReLU-conv(k x k, no bias)-BN; ``avg_pool_3x3`` is a 3x3 stride-1
average that excludes the padding; ``skip_connect`` is the identity; ``none`` is the
zero map, which contributes nothing to a sum and so has no node. A node whose edges are
all ``none`` is a ``zero`` node (its value is zeros, which later convs and BNs still
see, as in NB201). A node that no path reaches the output from still runs in NB201 and
its weights count in NB201's parameter numbers; by default it is kept alive here by a
``zero`` edge into node 3 (``prune_dead=False``), so parameter counts agree with NB201's.

Node names, for stage ``s`` (0..2), cell ``k`` (0..N-1) and edge ``j <- i``::

    stem_conv, stem_bn
    s{s}_c{k}_e{j}{i}_relu, _conv, _bn       # nor_conv_1x1 / nor_conv_3x3
    s{s}_c{k}_e{j}{i}_pool                   # avg_pool_3x3
    s{s}_c{k}_e{j}{i}_zero                   # keep-alive edge of a dead node
    s{s}_c{k}_n{j}                           # node j: add / identity / zero
    r{s}_relu_a, r{s}_conv_a, r{s}_bn_a, r{s}_relu_b, r{s}_conv_b, r{s}_bn_b,
    r{s}_pool, r{s}_proj, r{s}_add           # reduction block before stage s (1, 2)
    final_bn, final_relu, gap, logits

The cell input of stage ``s``, cell ``k`` is the previous cell's ``_n3``, the reduction
block's ``r{s}_add`` or ``stem_bn``.
"""

from __future__ import annotations

from typing import Sequence

from nasjax.arch import Arch, Node
from nasjax.models._checks import check_io, is_count

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (node, input) of the six edges, in the order of the official string.
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NB201_BEST_C10 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                  "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
DEFAULT_ARCH_STR = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
                    "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


def parse_nb201(arch_str: str) -> tuple[str, ...]:
  """The six edge ops of an official NB201 cell string.

  Args:
    arch_str: e.g. ``"|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...~0|...~1|...~2|"``.

  Returns:
    Op names in edge order (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2).

  Raises:
    ValueError: naming the bad token or part: an unknown op, a missing or repeated
      input, a malformed ``op~i`` or a wrong number of nodes.
  """
  if not isinstance(arch_str, str):
    raise ValueError(f"an NB201 cell string must be a str, got {arch_str!r}")
  parts = arch_str.strip().split("+")
  if len(parts) != 3:
    raise ValueError(f"an NB201 cell string has 3 '+'-separated nodes, got {len(parts)} in "
                     f"{arch_str!r}")
  ops = {}
  for j, part in enumerate(parts, start=1):
    if len(part) < 2 or not (part.startswith("|") and part.endswith("|")):
      raise ValueError(f"node {j} of {arch_str!r}: {part!r} is not of the form '|op~i|...|'")
    tokens = part[1:-1].split("|")
    if len(tokens) != j:
      raise ValueError(f"node {j} of {arch_str!r} needs {j} inputs, got {len(tokens)} in "
                       f"{part!r}")
    for token in tokens:
      op, sep, src = token.partition("~")
      if not sep or not src.isdigit():
        raise ValueError(f"bad token {token!r} in {arch_str!r}: expected 'op~input'")
      if op not in NB201_OPS:
        raise ValueError(f"bad token {token!r} in {arch_str!r}: unknown op {op!r}; "
                         f"known: {list(NB201_OPS)}")
      i = int(src)
      if i >= j:
        raise ValueError(f"bad token {token!r} in {arch_str!r}: node {j} reads node {i}, "
                         f"which is not earlier")
      if (j, i) in ops:
        raise ValueError(f"bad token {token!r} in {arch_str!r}: node {j} reads node {i} "
                         "twice")
      ops[(j, i)] = op
  return tuple(ops[e] for e in NB201_EDGES)


def nb201_str(ops: Sequence[str]) -> str:
  """The official NB201 string of six edge ops given in :data:`NB201_EDGES` order."""
  ops = tuple(ops)
  if len(ops) != 6:
    raise ValueError(f"an NB201 cell has 6 edges, got {len(ops)} ops: {ops!r}")
  for op in ops:
    if op not in NB201_OPS:
      raise ValueError(f"unknown NB201 op {op!r}; known: {list(NB201_OPS)}")
  cells = {}
  for (j, i), op in zip(NB201_EDGES, ops):
    cells.setdefault(j, []).append(f"{op}~{i}")
  return "+".join("|" + "|".join(cells[j]) + "|" for j in (1, 2, 3))


def _live_nodes(edges: dict[tuple[int, int], str]) -> set[int]:
  """Cell nodes from which node 3 is reached along edges that are not ``none``."""
  live = {3}
  for j in (3, 2, 1):
    if j in live:
      live.update(i for (jj, i), op in edges.items() if jj == j and op != "none")
  return live


def nb201_cell(prefix: str, src: str, ops: Sequence[str], channels: int,
               prune_dead: bool = False) -> list[Node]:
  """The nodes of one NB201 cell reading ``src``; its output node is ``{prefix}_n3``.

  Args:
    prefix: name prefix of the cell's nodes.
    src: the cell input, ``(H, W, channels)``.
    ops: the six edge ops (see :func:`parse_nb201`).
    channels: channels of ``src`` and of every conv in the cell.
    prune_dead: drop nodes that cannot reach node 3 instead of keeping them alive.

  Returns:
    The cell's nodes, output ``(H, W, channels)``.
  """
  edges = dict(zip(NB201_EDGES, ops))
  if not prune_dead:
    for i in (2, 1):
      has_content = any(op != "none" for (j, _), op in edges.items() if j == i)
      if has_content and i not in _live_nodes(edges):
        edges[(3, i)] = "keep"  # edge (3 <- i) is "none", else node i would be live
  live = _live_nodes(edges)
  name = {0: src}
  nodes = []
  for j in (1, 2, 3):
    if j not in live:
      continue
    terms = []
    for i in range(j):
      op, e = edges[(j, i)], f"{prefix}_e{j}{i}"
      if op == "none":
        continue
      if op == "keep":
        nodes.append(Node(f"{e}_zero", "zero", [name[i]]))
        terms.append(f"{e}_zero")
      elif op == "skip_connect":
        terms.append(name[i])
      elif op == "avg_pool_3x3":
        nodes.append(Node(f"{e}_pool", "avg_pool", [name[i]], window=3, stride=1,
                          padding="SAME"))
        terms.append(f"{e}_pool")
      else:
        k = 1 if op == "nor_conv_1x1" else 3
        nodes += [Node(f"{e}_relu", "relu", [name[i]]),
                  Node(f"{e}_conv", "conv", [f"{e}_relu"], features=channels, kernel=k),
                  Node(f"{e}_bn", "batchnorm", [f"{e}_conv"])]
        terms.append(f"{e}_bn")
    out = f"{prefix}_n{j}"
    if not terms:
      nodes.append(Node(out, "zero", [src]))
    elif len(terms) == 1:
      nodes.append(Node(out, "identity", terms))
    else:
      nodes.append(Node(out, "add", terms))
    name[j] = out
  return nodes


def _reduction(prefix: str, src: str, features: int) -> list[Node]:
  """NB201's residual reduction block (ResNet basic block, stride 2, no final ReLU)."""
  return [
      Node(f"{prefix}_relu_a", "relu", [src]),
      Node(f"{prefix}_conv_a", "conv", [f"{prefix}_relu_a"], features=features, kernel=3,
           stride=2),
      Node(f"{prefix}_bn_a", "batchnorm", [f"{prefix}_conv_a"]),
      Node(f"{prefix}_relu_b", "relu", [f"{prefix}_bn_a"]),
      Node(f"{prefix}_conv_b", "conv", [f"{prefix}_relu_b"], features=features, kernel=3),
      Node(f"{prefix}_bn_b", "batchnorm", [f"{prefix}_conv_b"]),
      # SAME pooling rounds up like the strided conv, so odd sizes still line up.
      Node(f"{prefix}_pool", "avg_pool", [src], window=2, stride=2, padding="SAME"),
      Node(f"{prefix}_proj", "conv", [f"{prefix}_pool"], features=features, kernel=1),
      Node(f"{prefix}_add", "add", [f"{prefix}_bn_b", f"{prefix}_proj"]),
  ]


def nb201(arch_str: str | Sequence[str] = DEFAULT_ARCH_STR, C: int = 16, N: int = 5, *,
          prune_dead: bool = False, input_shape: Sequence[int] = (32, 32, 3),
          num_classes: int = 10) -> Arch:
  """An NB201 network: stem, 3 stages of ``N`` cells (C, 2C, 4C), reductions, head.

  Args:
    arch_str: the official cell string, or the six edge ops in :data:`NB201_EDGES` order.
    C: channels of the first stage (NB201: 16).
    N: cells per stage (NB201: 5).
    prune_dead: drop cell nodes that cannot reach the cell output (fewer FLOPs and
      parameters than NB201 counts; same function).
    input_shape: ``(H, W, C)`` of one input image.
    num_classes: width of the ``logits`` output.

  Returns:
    The architecture; output ``logits`` of shape ``(num_classes,)``.

  Raises:
    ValueError: for a bad cell string (naming the token) or a non-positive ``C``/``N``.
  """
  shape = check_io(input_shape, num_classes)
  ops = parse_nb201(arch_str) if isinstance(arch_str, str) else parse_nb201(
      nb201_str(arch_str))
  for value, what in ((C, "C"), (N, "N")):
    if not is_count(value):
      raise ValueError(f"{what} must be a positive int, got {value!r}")
  nodes = [Node("input", "input", shape=shape),
           Node("stem_conv", "conv", ["input"], features=C, kernel=3),
           Node("stem_bn", "batchnorm", ["stem_conv"])]
  prev = "stem_bn"
  for s in range(3):
    channels = C * 2 ** s
    if s > 0:
      nodes += _reduction(f"r{s}", prev, channels)
      prev = f"r{s}_add"
    for k in range(N):
      nodes += nb201_cell(f"s{s}_c{k}", prev, ops, channels, prune_dead)
      prev = f"s{s}_c{k}_n3"
  nodes += [Node("final_bn", "batchnorm", [prev]),
            Node("final_relu", "relu", ["final_bn"]),
            Node("gap", "gap", ["final_relu"]),
            Node("logits", "dense", ["gap"], features=num_classes)]
  return Arch(nodes, output="logits")


__all__ = ["nb201", "nb201_cell", "parse_nb201", "nb201_str", "NB201_OPS", "NB201_EDGES",
           "NB201_BEST_C10"]
