"""DARTS-style cell networks (the cell space of NASNet, ENAS, NAO and DARTS).

A cell has two inputs, the outputs of the previous two cells (``s0``, ``s1``), and
``steps`` intermediate nodes; node ``i`` is the sum of two ops, each applied to one of
the cell inputs or an earlier node, and the cell's output concatenates the nodes listed
in ``*_concat``. A :class:`Genotype` holds the ``(op, input)`` pairs of a normal and of a
reduction cell exactly as DARTS writes them (Liu et al., ICLR 2019): the pairs of node
``i`` are entries ``2i`` and ``2i + 1``, inputs 0 and 1 are the cell inputs and ``j >= 2``
is intermediate node ``j - 2``.

Macro skeleton (DARTS's CIFAR network): a 3x3 conv-BN stem with ``stem_multiplier * C``
channels, then ``layers`` cells; the cells at 1/3 and 2/3 of the depth are reduction
cells, which double the channels and apply stride 2 on every edge that reads a cell
input. Each cell first maps its inputs to ``C`` channels: ReLU-1x1 conv-BN, or a
factorized reduce when the previous cell halved the resolution (so ``s0`` is twice the
size of ``s1``). Global average pooling and the classifier follow the last cell.

Ops (:data:`DARTS_OPS`): ``sep_conv_kxk`` is (ReLU-separable conv-BN) twice, the first
with the edge's stride; ``dil_conv_kxk`` is ReLU-separable conv with dilation 2-BN;
``max_pool_3x3`` and ``avg_pool_3x3`` (which excludes the padding) take the edge's
stride; ``skip_connect`` is the identity, or a factorized reduce at stride 2; ``none`` is
the zero map and contributes nothing to a sum.

Factorized reduce is ReLU, then two 1x1 stride-2 convs of half the output channels each,
concatenated, then BN; as in DARTS the second conv reads the input shifted by one pixel
(a ``crop`` of the first row and column).

Node names, for cell ``k``, intermediate node ``i`` (from 2) and edge slot ``e`` (0, 1)::

    stem_conv, stem_bn
    c{k}_pre0_relu, c{k}_pre0_conv, c{k}_pre0_bn            # ReLU-conv-BN preprocessing
    c{k}_pre0_relu, _conv1, _shift, _conv2, _cat, _bn       # ... or factorized reduce
    c{k}_pre1_relu, c{k}_pre1_conv, c{k}_pre1_bn
    c{k}_n{i}_e{e}_relu1, _sep1, _bn1, _relu2, _sep2, _bn2  # sep_conv
    c{k}_n{i}_e{e}_relu, _sep, _bn                          # dil_conv
    c{k}_n{i}_e{e}_pool                                     # max / avg pool
    c{k}_n{i}_e{e}_fr_relu, _fr_conv1, ...                  # skip_connect at stride 2
    c{k}_n{i}                                               # add / identity / zero
    c{k}_out                                                # concat of the nodes
    gap, logits
"""

from __future__ import annotations

import numbers
from typing import NamedTuple, Sequence

from nasjax.arch import Arch, Node
from nasjax.models._checks import check_io, positive

DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
             "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


class Genotype(NamedTuple):
  """A normal and a reduction cell as DARTS writes them.

  Attributes:
    normal: ``2 * steps`` pairs ``(op, input)``; entries ``2i``, ``2i + 1`` feed node ``i``.
    normal_concat: indices of the states (0, 1: cell inputs) the normal cell outputs.
    reduce: the reduction cell's pairs.
    reduce_concat: the reduction cell's output states.
  """

  normal: Sequence[tuple[str, int]]
  normal_concat: Sequence[int]
  reduce: Sequence[tuple[str, int]]
  reduce_concat: Sequence[int]


# The cell DARTS found with second-order search on CIFAR-10 (DARTS paper, Fig. 4-5).
DARTS_V2 = Genotype(
    normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 0),
            ("skip_connect", 0), ("dil_conv_3x3", 2)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2),
            ("max_pool_3x3", 1), ("max_pool_3x3", 0), ("skip_connect", 2),
            ("skip_connect", 2), ("max_pool_3x3", 1)),
    reduce_concat=(2, 3, 4, 5))


def check_genotype(genotype: Genotype, steps: int) -> None:
  """Raise ``ValueError`` naming the first bad entry of ``genotype`` for ``steps`` nodes."""
  for kind in ("normal", "reduce"):
    pairs = getattr(genotype, kind)
    if len(pairs) != 2 * steps:
      raise ValueError(f"genotype.{kind} needs {2 * steps} (op, input) pairs for "
                       f"steps={steps}, got {len(pairs)}")
    for k, pair in enumerate(pairs):
      if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"genotype.{kind}[{k}] must be an (op, input) pair, got {pair!r}")
      op, src = pair
      if op not in DARTS_OPS:
        raise ValueError(f"genotype.{kind}[{k}]: unknown op {op!r}; known: "
                         f"{list(DARTS_OPS)}")
      if not isinstance(src, numbers.Integral) or not 0 <= src < 2 + k // 2:
        raise ValueError(f"genotype.{kind}[{k}]: node {2 + k // 2} cannot read state "
                         f"{src!r}")
    concat = tuple(getattr(genotype, f"{kind}_concat"))
    if not concat or any(not isinstance(i, numbers.Integral) or not 0 <= i < 2 + steps
                         for i in concat):
      raise ValueError(f"genotype.{kind}_concat must list states in [0, {2 + steps}), got "
                       f"{concat!r}")


def _relu_conv_bn(prefix: str, src: str, features: int) -> list[Node]:
  return [Node(f"{prefix}_relu", "relu", [src]),
          Node(f"{prefix}_conv", "conv", [f"{prefix}_relu"], features=features, kernel=1),
          Node(f"{prefix}_bn", "batchnorm", [f"{prefix}_conv"])]


def factorized_reduce(prefix: str, src: str, features: int) -> list[Node]:
  """Halve the resolution of ``src`` into ``features`` channels; output ``{prefix}_bn``."""
  half = features // 2
  return [
      Node(f"{prefix}_relu", "relu", [src]),
      Node(f"{prefix}_conv1", "conv", [f"{prefix}_relu"], features=half, kernel=1, stride=2),
      Node(f"{prefix}_shift", "crop", [f"{prefix}_relu"], top=1, left=1),
      Node(f"{prefix}_conv2", "conv", [f"{prefix}_shift"], features=features - half, kernel=1,
           stride=2),
      Node(f"{prefix}_cat", "concat", [f"{prefix}_conv1", f"{prefix}_conv2"]),
      Node(f"{prefix}_bn", "batchnorm", [f"{prefix}_cat"]),
  ]


def _edge(prefix: str, op: str, src: str, channels: int, stride: int) -> tuple[list[Node], str]:
  """The nodes of one op on ``src`` and the name of its output (``op`` is not none)."""
  if op == "skip_connect":
    if stride == 1:
      return [], src
    nodes = factorized_reduce(f"{prefix}_fr", src, channels)
    return nodes, nodes[-1].name
  if op in ("max_pool_3x3", "avg_pool_3x3"):
    kind = "max_pool" if op == "max_pool_3x3" else "avg_pool"
    return [Node(f"{prefix}_pool", kind, [src], window=3, stride=stride,
                 padding="SAME")], f"{prefix}_pool"
  k = int(op[-1])
  if op.startswith("sep_conv"):
    nodes, prev = [], src
    for r, s in (("1", stride), ("2", 1)):
      nodes += [Node(f"{prefix}_relu{r}", "relu", [prev]),
                Node(f"{prefix}_sep{r}", "sep_conv", [f"{prefix}_relu{r}"],
                     features=channels, kernel=k, stride=s),
                Node(f"{prefix}_bn{r}", "batchnorm", [f"{prefix}_sep{r}"])]
      prev = f"{prefix}_bn{r}"
    return nodes, prev
  return [Node(f"{prefix}_relu", "relu", [src]),
          Node(f"{prefix}_sep", "sep_conv", [f"{prefix}_relu"], features=channels,
               kernel=k, stride=stride, dilation=2),
          Node(f"{prefix}_bn", "batchnorm", [f"{prefix}_sep"])], f"{prefix}_bn"


def cell(prefix: str, s0: str, s1: str, pairs: Sequence[tuple[str, int]],
         concat: Sequence[int], channels: int, reduction: bool,
         reduction_prev: bool) -> list[Node]:
  """The nodes of one cell reading ``s0`` and ``s1``; its output node is ``{prefix}_out``.

  Args:
    prefix: name prefix of the cell's nodes.
    s0: output of the cell before the previous one.
    s1: output of the previous cell.
    pairs: the cell's ``(op, input)`` pairs (see :class:`Genotype`).
    concat: states concatenated into the output.
    channels: channels ``C`` of every op in the cell.
    reduction: apply stride 2 on edges from the cell inputs.
    reduction_prev: ``s0`` has twice the resolution of ``s1``.

  Returns:
    The cell's nodes; output ``(H', W', len(concat) * channels)``.
  """
  steps = len(pairs) // 2
  # Only states that feed the output are built (a state nothing reads would be dead).
  live = set(concat)
  for i in range(steps + 1, 1, -1):
    if i in live:
      edges = pairs[2 * (i - 2):2 * (i - 1)]
      srcs = [src for op, src in edges if op != "none"]
      # An all-none node is zeros shaped like its first input, so that input is needed.
      live.update(srcs or [edges[0][1]])
  nodes, state = [], {}
  if 0 in live:
    pre0 = (factorized_reduce if reduction_prev else _relu_conv_bn)(
        f"{prefix}_pre0", s0, channels)
    nodes += pre0
    state[0] = pre0[-1].name
  if 1 in live:
    nodes += _relu_conv_bn(f"{prefix}_pre1", s1, channels)
    state[1] = f"{prefix}_pre1_bn"
  for i in range(2, steps + 2):
    if i not in live:
      continue
    terms = []
    edges = pairs[2 * (i - 2):2 * (i - 1)]
    for e, (op, src) in enumerate(edges):
      if op == "none":
        continue
      stride = 2 if reduction and src < 2 else 1
      new, out = _edge(f"{prefix}_n{i}_e{e}", op, state[src], channels, stride)
      nodes += new
      terms.append(out)
    name = f"{prefix}_n{i}"
    if not terms:
      # DARTS's zero op at stride 2 zeroes a subsampled input: x[::2, ::2] * 0.
      src = edges[0][1]
      zsrc = state[src]
      if reduction and src < 2:
        nodes.append(Node(f"{name}_sub", "max_pool", [zsrc], window=1, stride=2,
                          padding="SAME"))
        zsrc = f"{name}_sub"
      nodes.append(Node(name, "zero", [zsrc]))
    elif len(terms) == 1:
      nodes.append(Node(name, "identity", terms))
    else:
      nodes.append(Node(name, "add", terms))
    state[i] = name
  outs = [state[i] for i in concat]
  nodes.append(Node(f"{prefix}_out", "concat" if len(outs) > 1 else "identity", outs))
  return nodes


def darts_cell(genotype: Genotype | None = None, C: int = 16, layers: int = 5,
               steps: int = 4, stem_multiplier: int = 3, *,
               input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> Arch:
  """A DARTS CIFAR network of ``layers`` cells of ``genotype``.

  With ``C=36, layers=20`` and :data:`DARTS_V2` this is DARTS's evaluation network
  (without the auxiliary head).

  Args:
    genotype: the cells; defaults to :data:`DARTS_V2`.
    C: channels of the first cells (doubled at each reduction cell).
    layers: number of cells; cells ``layers // 3`` and ``2 * layers // 3`` reduce.
    steps: intermediate nodes per cell (the genotype has ``2 * steps`` pairs per cell).
    stem_multiplier: the stem has ``stem_multiplier * C`` channels.
    input_shape: ``(H, W, C)`` of one input image.
    num_classes: width of the ``logits`` output.

  Returns:
    The architecture; output ``logits`` of shape ``(num_classes,)``.

  Raises:
    ValueError: for a bad genotype (naming the entry) or a non-positive size.
  """
  shape = check_io(input_shape, num_classes)
  genotype = DARTS_V2 if genotype is None else Genotype(*genotype)
  for value, what in ((C, "C"), (layers, "layers"), (steps, "steps"),
                      (stem_multiplier, "stem_multiplier")):
    positive(value, what)
  check_genotype(genotype, steps)
  c_cur = stem_multiplier * C
  nodes = [Node("input", "input", shape=shape),
           Node("stem_conv", "conv", ["input"], features=c_cur, kernel=3),
           Node("stem_bn", "batchnorm", ["stem_conv"])]
  s0 = s1 = "stem_bn"
  c_cur, reduction_prev = C, False
  reductions = {layers // 3, 2 * layers // 3}
  for k in range(layers):
    reduction = k in reductions
    if reduction:
      c_cur *= 2
    pairs, concat = ((genotype.reduce, genotype.reduce_concat) if reduction else
                     (genotype.normal, genotype.normal_concat))
    nodes += cell(f"c{k}", s0, s1, tuple(tuple(p) for p in pairs), tuple(concat), c_cur,
                  reduction, reduction_prev)
    s0, s1, reduction_prev = s1, f"c{k}_out", reduction
  nodes += [Node("gap", "gap", [s1]),
            Node("logits", "dense", ["gap"], features=num_classes)]
  # A cell whose cells read only their first input (two cells back) leaves the cell before
  # it unread: DARTS's network computes it, but it cannot change the logits.
  from nasjax.ops.graph import prune_dead

  return Arch(prune_dead(nodes, "logits"), output="logits")


__all__ = ["darts_cell", "cell", "factorized_reduce", "check_genotype", "Genotype",
           "DARTS_V2", "DARTS_OPS"]
