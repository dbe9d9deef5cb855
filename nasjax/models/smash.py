"""SMASH's memory-bank networks, their encoding, the hypernetwork and the one-shot net.

SMASH (Brock et al., "One-Shot Model Architecture Search through HyperNetworks", 2017)
views a feed-forward network as a set of memory banks that ops read from and write to
(§3.1), and trains a hypernetwork that maps an architecture's encoding to the weights
of the sampled network (§3.2), so that many architectures can be ranked by their
validation accuracy with generated weights before only the best are trained.

The network space (:class:`MemoryBankSpace`, architectures :class:`BankNet`):

- A stem conv writes the input into the banks of block 0; ``num_blocks`` blocks follow at
  halving resolutions. Block ``b`` has 1..``max_banks`` banks of ``w`` channels each,
  ``w`` drawn from ``bank_widths`` scaled by ``2 ** b``.
- A block holds 1..``max_ops`` ops in order. An op reads a non-empty subset of the
  banks (concatenated along channels), applies BN-ReLU and a 1x1 conv (whose weights the
  hypernetwork generates), then 1..``max_convs`` BN-ReLU-conv layers, each with its own
  kernel size, dilation, groups and width (the last one's width is the bank width),
  and adds its output to a non-empty subset of the banks.
- Between blocks a transition applies BN-ReLU to all banks, 2x2 average pooling and a
  1x1 conv that initialises every bank of the next block; the head applies BN-ReLU to
  all banks of the last block, global average pooling and a dense classifier.

Every op of a block uses the same ``max_convs`` conv weights (slot ``l`` for its ``l``-th
conv), sliced to the op's kernel size and widths, as SMASH's blocks learn a few convs
that all their ops share. The 1x1 convs are the only weights generated from the encoding.

Architectures are codes too (:meth:`MemoryBankSpace.decode`), so every search strategy
over integer codes can search this space and sampling a code uniformly per position is
SMASH's random choice of depth, widths and connectivity.

The one-shot network (:func:`apply`) is ONE program for every architecture of a space:
tensors are padded to the space's maximum sizes and masked; ops and conv layers beyond an
architecture's depth are skipped with ``lax.cond``; kernel size and dilation pick one of
a few static convolutions with ``lax.switch``. What varies between architectures is data
(:class:`Encoding`), so sampling a new architecture never recompiles, and
:func:`encode_code` computes the encoding of a code inside a program, so a jitted
training step can draw its architecture from its own key.
:func:`to_arch` and :func:`to_network` turn an architecture and the one-shot weights into
an ordinary :class:`~nasjax.Network` that computes the same function.

Channel layout: the banks of block ``b`` live in one tensor of ``max_banks * W_b``
channels (``W_b`` the largest bank width of the block), bank ``m`` in channels
``[m * W_b, m * W_b + w)``; the rest are zero.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from nasjax import layers
from nasjax.arch import Arch, Node
from nasjax.network import Network, key_seed, node_rng

BN_EPS = 1e-5  # equal to the default eps of the IR's batchnorm, so to_network is exact


# ------------------------------------------------------------------------ architectures
@dataclasses.dataclass(frozen=True)
class ConvLayer:
  """One BN-ReLU-conv layer of an op.

  Attributes:
    kernel: square kernel size.
    dilation: dilation factor.
    groups: channel groups.
    width: output channels.
  """

  kernel: int
  dilation: int
  groups: int
  width: int


@dataclasses.dataclass(frozen=True)
class BankOp:
  """One op: read banks, BN-ReLU-1x1 conv, conv layers, add to banks.

  Attributes:
    reads: indices of the banks read, ascending (concatenated in this order).
    writes: indices of the banks the output is added to, ascending.
    width: output channels of the 1x1 conv.
    convs: the conv layers; the last one's width is the bank width.
  """

  reads: tuple[int, ...]
  writes: tuple[int, ...]
  width: int
  convs: tuple[ConvLayer, ...]


@dataclasses.dataclass(frozen=True)
class BankBlock:
  """One block: ``num_banks`` banks of ``width`` channels and its ops, in order."""

  num_banks: int
  width: int
  ops: tuple[BankOp, ...]


@dataclasses.dataclass(frozen=True)
class BankNet:
  """A memory-bank network: its blocks, at halving resolutions. Hashable."""

  blocks: tuple[BankBlock, ...]

  def describe(self) -> str:
    """Compact text: blocks ``|``-separated as ``banks x width:`` then ops ``;``-separated,
    each ``reads>convs>writes`` with convs ``k{kernel}d{dilation}g{groups}w{width}``."""
    out = []
    for b in self.blocks:
      ops = []
      for op in b.ops:
        convs = ",".join(f"k{c.kernel}d{c.dilation}g{c.groups}w{c.width}" for c in op.convs)
        ops.append(f"{''.join(map(str, op.reads))}>{op.width}:{convs}>"
                   f"{''.join(map(str, op.writes))}")
      out.append(f"{b.num_banks}x{b.width}:" + ";".join(ops))
    return "|".join(out)


# ------------------------------------------------------------------------------ space
def _ints(values, what: str) -> tuple[int, ...]:
  try:
    out = tuple(int(v) for v in values)
  except (TypeError, ValueError):
    raise ValueError(f"{what} must be a sequence of ints, got {values!r}") from None
  if not out or min(out) < 1:
    raise ValueError(f"{what} must be a non-empty sequence of positive ints, got {values!r}")
  return out


@dataclasses.dataclass(frozen=True)
class MemoryBankSpace:
  """The memory-bank network space and the sizes of its one-shot network.

  Attributes:
    num_blocks: blocks, each at half the resolution of the previous one.
    max_banks: most banks per block (SMASH's ``M``).
    bank_widths: channels per bank that block 0 chooses from; block ``b`` doubles them
      ``b`` times.
    max_ops: most ops per block.
    max_convs: most conv layers per op (the number of shared conv slots per block).
    kernels: odd kernel sizes of the conv layers.
    dilations: dilation factors of the conv layers (the encoding's one-hot).
    max_span: largest ``dilation * (kernel - 1) + 1``; kernel-dilation pairs beyond are
      not in the space.
    groups: channel groups of the conv layers; each must divide every width.
    width_factors: multiples of the bank width that the 1x1 conv and the inner conv
      layers choose their widths from.
    stem_stride: stride of the stem conv (2 halves the input before block 0).
    unit: channels per cell of the encoding, along input channels and output units
      (SMASH's ``D`` and ``N``); must divide every bank width.
  """

  num_blocks: int = 3
  max_banks: int = 3
  bank_widths: tuple[int, ...] = (8, 16)
  max_ops: int = 4
  max_convs: int = 2
  kernels: tuple[int, ...] = (3, 5)
  dilations: tuple[int, ...] = (1, 2)
  max_span: int = 5
  groups: tuple[int, ...] = (1, 2, 4)
  width_factors: tuple[int, ...] = (1, 2)
  stem_stride: int = 1
  unit: int = 8

  def __post_init__(self):
    for name in ("bank_widths", "kernels", "dilations", "groups", "width_factors"):
      object.__setattr__(self, name, _ints(getattr(self, name), name))
    for name in ("num_blocks", "max_banks", "max_ops", "max_convs", "max_span",
                 "stem_stride", "unit"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
      object.__setattr__(self, name, int(value))
    if any(k % 2 == 0 for k in self.kernels):
      raise ValueError(f"kernels must be odd (they are centre slices of one kernel), got "
                       f"{self.kernels}")
    if not self.conv_kinds:
      raise ValueError(f"no kernel/dilation pair of kernels={self.kernels} and dilations="
                       f"{self.dilations} spans at most max_span={self.max_span}")
    smallest = min(self.bank_widths)
    for g in self.groups:
      if smallest % g:
        raise ValueError(f"groups {g} does not divide the smallest bank width {smallest}")
    for w in self.bank_widths:
      if w % self.unit:
        raise ValueError(f"unit {self.unit} does not divide the bank width {w}")

  # -- sizes ------------------------------------------------------------------------
  @property
  def conv_kinds(self) -> tuple[tuple[int, int], ...]:
    """The ``(kernel, dilation)`` pairs of the space, in code order."""
    return tuple((k, d) for k in self.kernels for d in self.dilations
                 if d * (k - 1) + 1 <= self.max_span)

  @property
  def max_kernel(self) -> int:
    return max(k for k, _ in self.conv_kinds)

  def widths(self, block: int) -> tuple[int, ...]:
    """Bank widths that block ``block`` chooses from."""
    return tuple(w * 2 ** block for w in self.bank_widths)

  def bank_slot(self, block: int) -> int:
    """Channels reserved per bank in block ``block`` (its largest bank width)."""
    return max(self.widths(block))

  def memory_channels(self, block: int) -> int:
    """Channels of the padded memory tensor of block ``block``."""
    return self.max_banks * self.bank_slot(block)

  def hidden_channels(self, block: int) -> int:
    """Channels of the padded op-internal tensors of block ``block``."""
    return max(self.width_factors) * self.bank_slot(block)

  @property
  def condition_shape(self) -> tuple[int, int, int]:
    """``(H, W, C)`` of the conditioning tensor: output-unit cells, input-channel cells
    of every op slot of every block side by side, and ``2 * max_banks + len(dilations)``
    channels."""
    height = max(self.hidden_channels(b) for b in range(self.num_blocks)) // self.unit
    width = sum(self.max_ops * self.memory_channels(b) // self.unit
                for b in range(self.num_blocks))
    return height, width, 2 * self.max_banks + len(self.dilations)

  def condition_offset(self, block: int) -> int:
    """First conditioning column of block ``block``'s op slots."""
    return sum(self.max_ops * self.memory_channels(b) // self.unit for b in range(block))

  # -- codes ------------------------------------------------------------------------
  # Per block: [banks - 1, width index, ops - 1], then per op slot
  # [read bit per bank, write bit per bank, 1x1 width factor, convs - 1,
  #  per conv slot: (kind, groups, width factor)].
  @property
  def _op_len(self) -> int:
    return 2 * self.max_banks + 2 + 3 * self.max_convs

  @property
  def _block_len(self) -> int:
    return 3 + self.max_ops * self._op_len

  @property
  def num_choices(self) -> tuple[int, ...]:
    """Choices per code position."""
    op = ((2,) * (2 * self.max_banks) + (len(self.width_factors), self.max_convs) +
          (len(self.conv_kinds), len(self.groups), len(self.width_factors)) * self.max_convs)
    block = (self.max_banks, len(self.bank_widths), self.max_ops) + op * self.max_ops
    return block * self.num_blocks

  @property
  def length(self) -> int:
    return len(self.num_choices)

  def _split(self, code):
    blocks = code.reshape(self.num_blocks, self._block_len)
    ops = blocks[:, 3:].reshape(self.num_blocks, self.max_ops, self._op_len)
    return blocks[:, :3], ops

  def active(self, code: jax.Array) -> jax.Array:
    """``(L,)`` bool: which positions of ``code`` matter (jittable; NumPy in, NumPy out).

    An op slot matters below the block's op count; read and write bits below its bank
    count; a conv slot below the op's conv count; a conv's width factor unless it is
    the op's last conv (whose width is the bank width).
    """
    xp = np if isinstance(code, np.ndarray) else jnp
    head, ops = self._split(xp.asarray(code))
    M, L = self.max_banks, self.max_convs
    lead = ops.shape[:2]
    op_on = xp.arange(self.max_ops)[None, :] <= head[:, 2:3]  # (B, O)
    bank_on = xp.broadcast_to(xp.arange(M)[None, None, :] <= head[:, None, 0:1], lead + (M,))
    convs = ops[..., 2 * M + 1]  # convs - 1, (B, O)
    conv_on = xp.arange(L)[None, None, :] <= convs[..., None]  # (B, O, L)
    not_last = xp.arange(L)[None, None, :] < convs[..., None]
    per_conv = xp.stack([conv_on, conv_on, conv_on & not_last], axis=-1)  # (B, O, L, 3)
    op_mask = xp.concatenate([bank_on, bank_on, xp.ones(lead + (2,), bool),
                              per_conv.reshape(lead + (3 * L,))], axis=-1) & op_on[..., None]
    mask = xp.concatenate([xp.ones(head.shape, bool), op_mask.reshape(self.num_blocks, -1)],
                          axis=1)
    return mask.reshape(-1)

  def canonical(self, code: jax.Array) -> jax.Array:
    """``code`` with inactive positions 0, and an active op that reads (writes) no bank
    reading (writing) bank 0 (jittable; NumPy in, NumPy out)."""
    xp = np if isinstance(code, np.ndarray) else jnp
    code = xp.asarray(code).astype(xp.int32)
    code = xp.where(self.active(code), code, 0)
    head, ops = self._split(code)
    M = self.max_banks
    op_on = xp.arange(self.max_ops)[None, :] <= head[:, 2:3]
    col = xp.arange(self._op_len)
    for start in (0, M):
      bits = xp.where((col >= start) & (col < start + M), ops, 0)
      empty = op_on & (xp.sum(bits, axis=-1) == 0)
      ops = xp.where(empty[..., None] & (col == start), 1, ops)
    blocks = xp.concatenate([head, ops.reshape(self.num_blocks, -1)], axis=1)
    return blocks.reshape(-1).astype(xp.int32)

  def sample_code(self, key: jax.Array) -> jax.Array:
    """A canonical code drawn uniformly per position, ``(L,)`` int32 (jittable).

    Every bank is read (written) with probability 1/2 given at least one, and depth,
    widths and layer settings are uniform among their choices: SMASH's random sampling.
    """
    n = jnp.asarray(self.num_choices, jnp.int32)
    return self.canonical(jax.random.randint(key, n.shape, 0, n, dtype=jnp.int32))

  def sample_net(self, key: jax.Array) -> BankNet:
    """The architecture of :meth:`sample_code`'s code for ``key``."""
    return self.decode(np.asarray(_sampler(self)(key)))

  def _check_code(self, code) -> np.ndarray:
    c = np.asarray(code)
    if c.shape != (self.length,) or not np.issubdtype(c.dtype, np.integer):
      raise ValueError(f"expected an integer code of shape ({self.length},), got shape "
                       f"{c.shape} and dtype {c.dtype}")
    bad = np.flatnonzero((c < 0) | (c >= np.asarray(self.num_choices)))
    if len(bad):
      i = int(bad[0])
      raise ValueError(f"code position {i} is {c[i]}, outside [0, {self.num_choices[i]})")
    return self.canonical(c.astype(np.int32))

  def decode(self, code) -> BankNet:
    """The architecture of an (``(L,)`` int) code."""
    c = self._check_code(code).reshape(self.num_blocks, self._block_len)
    M, kinds = self.max_banks, self.conv_kinds
    blocks = []
    for b in range(self.num_blocks):
      banks, width, num_ops = int(c[b, 0]) + 1, self.widths(b)[c[b, 1]], int(c[b, 2]) + 1
      ops = []
      for o in range(num_ops):
        g = c[b, 3 + o * self._op_len:3 + (o + 1) * self._op_len]
        reads = tuple(m for m in range(banks) if g[m])
        writes = tuple(m for m in range(banks) if g[M + m])
        n_convs = int(g[2 * M + 1]) + 1
        convs = []
        for l in range(n_convs):
          kind, groups, factor = g[2 * M + 2 + 3 * l:2 * M + 5 + 3 * l]
          k, d = kinds[kind]
          w = width if l == n_convs - 1 else self.width_factors[factor] * width
          convs.append(ConvLayer(k, d, self.groups[groups], w))
        ops.append(BankOp(reads, writes, self.width_factors[g[2 * M]] * width, tuple(convs)))
      blocks.append(BankBlock(banks, width, tuple(ops)))
    return BankNet(tuple(blocks))

  def validate(self, net: BankNet) -> BankNet:
    """``net`` if it lies in this space; ``ValueError`` naming the bad value otherwise."""
    if not isinstance(net, BankNet):
      raise ValueError(f"expected a BankNet, got {type(net).__name__}")
    if len(net.blocks) != self.num_blocks:
      raise ValueError(f"the space has {self.num_blocks} blocks, the network "
                       f"{len(net.blocks)}")
    for b, block in enumerate(net.blocks):
      where = f"block {b}"
      if not 1 <= block.num_banks <= self.max_banks:
        raise ValueError(f"{where}: num_banks {block.num_banks} outside [1, {self.max_banks}]")
      if block.width not in self.widths(b):
        raise ValueError(f"{where}: bank width {block.width} not in {self.widths(b)}")
      if not 1 <= len(block.ops) <= self.max_ops:
        raise ValueError(f"{where}: {len(block.ops)} ops, outside [1, {self.max_ops}]")
      for o, op in enumerate(block.ops):
        where = f"block {b} op {o}"
        for name, banks in (("reads", op.reads), ("writes", op.writes)):
          if (not banks or tuple(sorted(set(banks))) != tuple(banks) or
              min(banks) < 0 or max(banks) >= block.num_banks):
            raise ValueError(f"{where}: {name} {banks} must be distinct ascending banks in "
                             f"[0, {block.num_banks})")
        factors = [f * block.width for f in self.width_factors]
        if op.width not in factors:
          raise ValueError(f"{where}: 1x1 width {op.width} not in {factors}")
        if not 1 <= len(op.convs) <= self.max_convs:
          raise ValueError(f"{where}: {len(op.convs)} convs, outside [1, {self.max_convs}]")
        for l, conv in enumerate(op.convs):
          if (conv.kernel, conv.dilation) not in self.conv_kinds:
            raise ValueError(f"{where} conv {l}: kernel {conv.kernel} with dilation "
                             f"{conv.dilation} is not one of {self.conv_kinds}")
          if conv.groups not in self.groups:
            raise ValueError(f"{where} conv {l}: groups {conv.groups} not in {self.groups}")
          allowed = [block.width] if l == len(op.convs) - 1 else factors
          if conv.width not in allowed:
            raise ValueError(f"{where} conv {l}: width {conv.width} not in {allowed}")
    return net

  def encode(self, net: BankNet) -> np.ndarray:
    """The canonical ``(L,)`` int32 code of an architecture (inverse of :meth:`decode`)."""
    self.validate(net)
    M, kinds = self.max_banks, self.conv_kinds
    code = np.zeros((self.num_blocks, self._block_len), np.int32)
    for b, block in enumerate(net.blocks):
      code[b, :3] = (block.num_banks - 1, self.widths(b).index(block.width), len(block.ops) - 1)
      for o, op in enumerate(block.ops):
        g = np.zeros(self._op_len, np.int32)
        g[list(op.reads)] = 1
        g[[M + m for m in op.writes]] = 1
        g[2 * M] = self.width_factors.index(op.width // block.width)
        g[2 * M + 1] = len(op.convs) - 1
        for l, conv in enumerate(op.convs):
          last = l == len(op.convs) - 1
          g[2 * M + 2 + 3 * l:2 * M + 5 + 3 * l] = (
              kinds.index((conv.kernel, conv.dilation)), self.groups.index(conv.groups),
              0 if last else self.width_factors.index(conv.width // block.width))
        code[b, 3 + o * self._op_len:3 + (o + 1) * self._op_len] = g
    return code.reshape(-1)

  def describe(self, code) -> str:
    """The decoded architecture as compact text (:meth:`BankNet.describe`)."""
    return self.decode(code).describe()

  def build(self, code, input_shape: Sequence[int] = (28, 28, 1),
            num_classes: int = 10) -> Arch:
    """The stand-alone architecture of a code (:func:`to_arch`)."""
    return to_arch(self, self.decode(code), input_shape, num_classes)


@functools.lru_cache(maxsize=32)
def _sampler(space: MemoryBankSpace):
  # One compiled sampler per space: eagerly, the few dozen small ops of a draw would
  # each dispatch on their own.
  return jax.jit(space.sample_code)


# ------------------------------------------------------------------- stand-alone IR
def _check_io(space: MemoryBankSpace, input_shape, num_classes) -> tuple[int, int, int]:
  shape = tuple(int(d) for d in input_shape)
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"input_shape must be (H, W, C) of positive ints, got {input_shape!r}")
  if int(num_classes) < 1:
    raise ValueError(f"num_classes must be positive, got {num_classes!r}")
  return shape


def to_arch(space: MemoryBankSpace, net: BankNet, input_shape: Sequence[int] = (28, 28, 1),
            num_classes: int = 10) -> Arch:
  """The memory-bank network as an ordinary :class:`~nasjax.Arch`.

  Each bank is a node name that moves on with every write: a write is an ``add`` of the
  bank's current node and the op's output; a read of several banks is a ``concat``.

  Node names (block ``b``, bank ``m``, op ``o``, conv layer ``l``)::

      b{b}_init{m}                       # stem conv (b = 0) or transition 1x1 conv
      b{b}_op{o}_read                    # concat of the banks read (if more than one)
      b{b}_op{o}_bn0, _relu0, _proj      # BN-ReLU-1x1 conv (generated weights)
      b{b}_op{o}_bn{l+1}, _relu{l+1}, _conv{l}
      b{b}_op{o}_write{m}                # add to bank m
      t{b}_cat, t{b}_bn, t{b}_relu, t{b}_pool   # transition after block b
      head_cat, head_bn, head_relu, gap, logits

  Args:
    space: the space ``net`` belongs to.
    net: the architecture.
    input_shape: ``(H, W, C)`` of one input image.
    num_classes: classes of the ``logits`` output.
  """
  space.validate(net)
  shape = _check_io(space, input_shape, num_classes)
  nodes = [Node("input", "input", shape=shape)]

  def merged(prefix: str, names: list[str]) -> str:
    if len(names) == 1:
      return names[0]
    nodes.append(Node(prefix, "concat", names))
    return prefix

  first = net.blocks[0]
  banks = []
  for m in range(first.num_banks):
    nodes.append(Node(f"b0_init{m}", "conv", ["input"], features=first.width, kernel=3,
                      stride=space.stem_stride))
    banks.append(f"b0_init{m}")
  for b, block in enumerate(net.blocks):
    if b > 0:
      p = f"t{b - 1}"
      src = merged(f"{p}_cat", banks)
      nodes += [Node(f"{p}_bn", "batchnorm", [src]), Node(f"{p}_relu", "relu", [f"{p}_bn"]),
                Node(f"{p}_pool", "avg_pool", [f"{p}_relu"], window=2, padding="SAME")]
      banks = []
      for m in range(block.num_banks):
        nodes.append(Node(f"b{b}_init{m}", "conv", [f"{p}_pool"], features=block.width,
                          kernel=1))
        banks.append(f"b{b}_init{m}")
    for o, op in enumerate(block.ops):
      p = f"b{b}_op{o}"
      src = merged(f"{p}_read", [banks[m] for m in op.reads])
      nodes += [Node(f"{p}_bn0", "batchnorm", [src]), Node(f"{p}_relu0", "relu", [f"{p}_bn0"]),
                Node(f"{p}_proj", "conv", [f"{p}_relu0"], features=op.width, kernel=1)]
      prev = f"{p}_proj"
      for l, conv in enumerate(op.convs):
        nodes += [Node(f"{p}_bn{l + 1}", "batchnorm", [prev]),
                  Node(f"{p}_relu{l + 1}", "relu", [f"{p}_bn{l + 1}"]),
                  Node(f"{p}_conv{l}", "conv", [f"{p}_relu{l + 1}"], features=conv.width,
                       kernel=conv.kernel, dilation=conv.dilation, groups=conv.groups)]
        prev = f"{p}_conv{l}"
      for m in op.writes:
        nodes.append(Node(f"{p}_write{m}", "add", [banks[m], prev]))
        banks[m] = f"{p}_write{m}"
  src = merged("head_cat", banks)
  nodes += [Node("head_bn", "batchnorm", [src]), Node("head_relu", "relu", ["head_bn"]),
            Node("gap", "gap", ["head_relu"]),
            Node("logits", "dense", ["gap"], features=int(num_classes))]
  return Arch(nodes, "logits")


# ---------------------------------------------------------------------------- encoding
@flax.struct.dataclass
class BlockEncoding:
  """The masks of one block of an architecture (``O = max_ops``, ``L = max_convs``,
  ``Cm`` memory channels, ``Ch`` hidden channels of the block).

  Attributes:
    bank_mask: ``(Cm,)`` float32, 1 on the channels of the block's banks.
    op_active: ``(O,)`` bool, op slots the architecture uses.
    read_mask: ``(O, Cm)`` float32, channels each op reads.
    write_mask: ``(O, Cm)`` float32, channels each op adds its output to.
    hidden_mask: ``(O, Ch)`` float32, output units of each op's 1x1 conv.
    proj_scale: ``(O,)`` float32, ``sqrt(2 / fan_in)`` of each 1x1 conv (He scaling of
      the generated weights).
    conv_active: ``(O, L)`` bool, conv layers the ops use.
    conv_kind: ``(O, L)`` int32, index into ``space.conv_kinds``.
    conv_mask: ``(O, L, Ch, Ch)`` float32, the kernel's valid (input, output) channel
      pairs: both within the layer's widths and in the same group.
  """

  bank_mask: jax.Array
  op_active: jax.Array
  read_mask: jax.Array
  write_mask: jax.Array
  hidden_mask: jax.Array
  proj_scale: jax.Array
  conv_active: jax.Array
  conv_kind: jax.Array
  conv_mask: jax.Array


@flax.struct.dataclass
class Encoding:
  """An architecture as arrays of fixed shapes (the same for every architecture).

  Attributes:
    condition: ``space.condition_shape`` float32, SMASH's conditioning tensor (§3.2):
      for each op slot (column blocks) and each cell of ``unit`` input channels
      (columns) by ``unit`` output units (rows), channel ``m`` is 1 when the cell's input
      channels come from bank ``m``, channel ``max_banks + m`` when the op writes bank
      ``m``, and channel ``2 * max_banks + i`` when its first conv has dilation
      ``dilations[i]``. Cells outside the op's read channels or 1x1 width are zero.
    blocks: one :class:`BlockEncoding` per block.
  """

  condition: jax.Array
  blocks: tuple[BlockEncoding, ...]


def _group_mask(cin: jax.Array, cout: jax.Array, groups: jax.Array, size: int) -> jax.Array:
  """``(..., size, size)`` float32: the (input, output) channel pairs of a grouped conv of
  ``cin`` inputs and ``cout`` outputs (arrays of one shape) that share a group."""
  cin, cout, groups = (jnp.asarray(a, jnp.int32)[..., None, None] for a in (cin, cout, groups))
  i, o = jnp.arange(size)[:, None], jnp.arange(size)[None, :]
  same = (i // jnp.maximum(cin // groups, 1)) == (o // jnp.maximum(cout // groups, 1))
  return ((i < cin) & (o < cout) & same).astype(jnp.float32)


def _encode_block(space: MemoryBankSpace, b: int, head: jax.Array, genes: jax.Array
                  ) -> tuple[BlockEncoding, jax.Array]:
  """The masks of block ``b`` and its ``(H, max_ops * Cm / unit, C)`` conditioning columns,
  from the block's head ``[banks - 1, width index, ops - 1]`` and its ``(max_ops, op
  length)`` op genes of a canonical code."""
  M, O, L, u = space.max_banks, space.max_ops, space.max_convs, space.unit
  slot, cm, ch = space.bank_slot(b), space.memory_channels(b), space.hidden_channels(b)
  factors = jnp.asarray(space.width_factors, jnp.int32)
  width = jnp.asarray(space.widths(b), jnp.int32)[head[1]]
  bank_of = np.arange(cm) // slot
  in_bank = jnp.arange(cm) % slot < width
  op_on = jnp.arange(O) < head[2] + 1
  bank_on = (jnp.arange(M) < head[0] + 1)[None] & op_on[:, None]
  reads, writes = (genes[:, :M] > 0) & bank_on, (genes[:, M:2 * M] > 0) & bank_on  # (O, M)
  read, write = in_bank & reads[:, bank_of], in_bank & writes[:, bank_of]  # (O, Cm)
  op_width = factors[genes[:, 2 * M]] * width
  # He scale sqrt(2 / fan_in) of each (bank count, width) pair, rounded as float32 once.
  scales = np.asarray([[math.sqrt(2.0 / (n * w)) for w in space.widths(b)]
                       for n in range(1, M + 1)], np.float32)
  proj_scale = jnp.where(op_on, jnp.asarray(scales)[jnp.maximum(reads.sum(1) - 1, 0),
                                                    head[1]], 0.0)
  convs = genes[:, 2 * M + 2:].reshape(O, L, 3)  # kind, groups, width factor per slot
  n_convs = genes[:, 2 * M + 1:2 * M + 2] + 1
  conv_on = (jnp.arange(L)[None] < n_convs) & op_on[:, None]
  cout = jnp.where(jnp.arange(L)[None] == n_convs - 1, width, factors[convs[..., 2]] * width)
  cin = jnp.concatenate([op_width[:, None], cout[:, :-1]], axis=1)
  groups = jnp.asarray(space.groups, jnp.int32)[convs[..., 1]]
  enc = BlockEncoding(
      bank_mask=(in_bank & (bank_of < head[0] + 1)).astype(jnp.float32), op_active=op_on,
      read_mask=read.astype(jnp.float32), write_mask=write.astype(jnp.float32),
      hidden_mask=((jnp.arange(ch)[None] < op_width[:, None]) & op_on[:, None]).astype(
          jnp.float32),
      proj_scale=proj_scale.astype(jnp.float32), conv_active=conv_on,
      conv_kind=jnp.where(conv_on, convs[..., 0], 0).astype(jnp.int32),
      conv_mask=_group_mask(cin, cout, groups, ch) * conv_on[..., None, None])
  # Cell (row r, column c) of an op: output units [r u, (r + 1) u) of its 1x1 conv and
  # input channels [c u, (c + 1) u) of the memory; u divides every width.
  H = space.condition_shape[0]
  cells = (jnp.arange(H)[None, :, None] * u < op_width[:, None, None]) & read[:, None, ::u]
  dilation = jnp.asarray([space.dilations.index(d) for _, d in space.conv_kinds])[
      convs[:, 0, 0]]  # of each op's first conv
  full = lambda a: jnp.broadcast_to(a, cells.shape + a.shape[-1:])
  channels = jnp.concatenate([
      full(bank_of[::u][:, None] == np.arange(M)),  # the bank the cell's inputs come from
      full(writes[:, None, None, :]),  # the banks the op writes
      full((dilation[:, None] == np.arange(len(space.dilations)))[:, None, None, :]),
  ], axis=-1) & cells[..., None]
  return enc, channels.astype(jnp.float32).transpose(1, 0, 2, 3).reshape(H, O * cm // u, -1)


def encode_code(space: MemoryBankSpace, code: jax.Array) -> Encoding:
  """The :class:`Encoding` of the architecture of ``code`` (``(L,)`` int), computed in
  the program (jittable): what :func:`encode` gives for ``space.decode(code)``, so a
  training step can sample an architecture from its key and run it."""
  code = space.canonical(jnp.asarray(code, jnp.int32))
  head, genes = space._split(code)
  blocks, columns = [], []
  for b in range(space.num_blocks):
    enc, cond = _encode_block(space, b, head[b], genes[b])
    blocks.append(enc)
    columns.append(cond)
  return Encoding(condition=jnp.concatenate(columns, axis=1), blocks=tuple(blocks))


@functools.lru_cache(maxsize=32)
def _encoder(space: MemoryBankSpace):
  return jax.jit(functools.partial(encode_code, space))


def encode(space: MemoryBankSpace, net: BankNet) -> Encoding:
  """The :class:`Encoding` of ``net`` (host NumPy; shapes depend only on ``space``)."""
  code = space.encode(net)  # validates net
  return jax.tree_util.tree_map(np.asarray, _encoder(space)(code))


# ------------------------------------------------------------------------ parameters
def _normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
  return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32)


def _he(rng, shape) -> np.ndarray:
  return _normal(rng, shape, math.sqrt(2.0 / max(int(np.prod(shape[:-1])), 1)))


def _bn(size: int) -> dict:
  return {"scale": np.ones(size, np.float32), "bias": np.zeros(size, np.float32)}


def init_params(space: MemoryBankSpace, key, input_shape: Sequence[int],
                num_classes: int, *, hyper_hidden: int = 32, hyper_layers: int = 2,
                hyper_kernel: int = 3) -> dict:
  """Initial one-shot parameters ``{"hyper": ..., "shared": ...}`` (host NumPy).

  ``hyper`` is the hypernetwork: ``hyper_layers`` ``hyper_kernel``-sized convs of
  ``hyper_hidden`` channels with ReLU over the conditioning tensor, a learned position
  embedding added after the first (convolutions are translation-equivariant, so without
  it every cell with the same encoding would get the same weights), and a 1x1 conv to
  ``unit * unit`` outputs per cell. ``shared`` holds every other weight at the space's
  maximum sizes: the stem conv, per block a BN before the 1x1 convs and ``max_convs``
  conv slots (BN and kernel), per transition BN and 1x1 conv, and the head.

  Args:
    space: the space.
    key: ``jax.random`` key.
    input_shape: ``(H, W, C)`` of one input image.
    num_classes: classes of the classifier.
    hyper_hidden, hyper_layers, hyper_kernel: size of the hypernetwork.
  """
  shape = _check_io(space, input_shape, num_classes)
  for name, value in (("hyper_hidden", hyper_hidden), ("hyper_layers", hyper_layers),
                      ("hyper_kernel", hyper_kernel)):
    if int(value) < 1:
      raise ValueError(f"{name} must be positive, got {value!r}")
  seed = key_seed(key)
  rng = lambda name: node_rng(seed, name)  # stable per parameter group
  height, width, channels = space.condition_shape
  hyper, cin = {}, channels
  for i in range(hyper_layers):
    hyper[f"conv{i}"] = {"kernel": _he(rng(f"hyper{i}"),
                                       (hyper_kernel, hyper_kernel, cin, hyper_hidden)),
                         "bias": np.zeros(hyper_hidden, np.float32)}
    cin = hyper_hidden
  hyper["position"] = _normal(rng("hyper_position"), (height, width, hyper_hidden), 1.0)
  hyper["out"] = {"kernel": _normal(rng("hyper_out"), (1, 1, cin, space.unit ** 2),
                                    1.0 / math.sqrt(cin)),
                  "bias": np.zeros(space.unit ** 2, np.float32)}
  k = space.max_kernel
  shared = {"stem": {"kernel": _he(rng("stem"), (3, 3, shape[-1], space.memory_channels(0)))}}
  for b in range(space.num_blocks):
    cm, ch = space.memory_channels(b), space.hidden_channels(b)
    shared[f"block{b}"] = {"bn_in": _bn(cm)}
    for l in range(space.max_convs):
      shared[f"block{b}"][f"conv{l}"] = {"bn": _bn(ch),
                                         "kernel": _he(rng(f"block{b}_conv{l}"), (k, k, ch, ch))}
    if b + 1 < space.num_blocks:
      shared[f"transition{b}"] = {
          "bn": _bn(cm),
          "kernel": _he(rng(f"transition{b}"), (1, 1, cm, space.memory_channels(b + 1)))}
  cm = space.memory_channels(space.num_blocks - 1)
  shared["head"] = {"bn": _bn(cm),
                    "kernel": _normal(rng("head"), (cm, int(num_classes)), 1 / math.sqrt(cm)),
                    "bias": np.zeros(int(num_classes), np.float32)}
  return {"hyper": hyper, "shared": shared}


# ------------------------------------------------------------------------ computation
def _conv(x, kernel, stride=1, dilation=1):
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(stride, stride), padding="SAME",
      rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _bn_relu(x, p):
  """Batch norm with batch statistics (the IR's formula) followed by ReLU."""
  mean = jnp.mean(x, axis=(0, 1, 2))
  var = jnp.maximum(jnp.mean(jnp.square(x), axis=(0, 1, 2)) - jnp.square(mean), 0.0)
  return jax.nn.relu((x - mean) * jax.lax.rsqrt(var + BN_EPS) * p["scale"] + p["bias"])


def generate(space: MemoryBankSpace, hyper: dict, condition: jax.Array
             ) -> tuple[jax.Array, ...]:
  """The hypernetwork: raw 1x1 conv weights of every op slot.

  Args:
    space: the space.
    hyper: ``params["hyper"]``.
    condition: ``space.condition_shape`` conditioning tensor.

  Returns:
    Per block, ``(max_ops, Cm, Ch)`` weights (input channels in the memory layout,
    output units), before masking and He scaling (see :func:`projection_weights`).
  """
  h = condition[None]
  i = 0
  while f"conv{i}" in hyper:
    h = _conv(h, hyper[f"conv{i}"]["kernel"]) + hyper[f"conv{i}"]["bias"]
    if i == 0:
      h = h + hyper["position"]
    h = jax.nn.relu(h)
    i += 1
  out = (_conv(h, hyper["out"]["kernel"]) + hyper["out"]["bias"])[0]  # (H, W, u*u)
  u, O = space.unit, space.max_ops
  weights = []
  for b in range(space.num_blocks):
    cm, ch = space.memory_channels(b), space.hidden_channels(b)
    c0, n = space.condition_offset(b), cm // u
    cells = out[:ch // u, c0:c0 + O * n].reshape(ch // u, O, n, u, u)
    # cell (row r, column c) holds the (u inputs) x (u outputs) tile at rows c*u, cols r*u
    weights.append(cells.transpose(1, 2, 3, 0, 4).reshape(O, cm, ch))
  return tuple(weights)


def projection_weights(raw: jax.Array, enc: BlockEncoding) -> jax.Array:
  """The 1x1 conv weights the main net uses: ``raw`` ``(O, Cm, Ch)`` masked to the read
  channels and output units, times the He scale ``sqrt(2 / fan_in)``."""
  return (raw * enc.read_mask[:, :, None] * enc.hidden_mask[:, None, :] *
          enc.proj_scale[:, None, None])


def _conv_layer(space: MemoryBankSpace, h, kernel, mask, kind):
  """One conv of the space's kinds, chosen by ``kind`` (one program for all kinds)."""
  kmax = space.max_kernel

  def branch(kd):
    k, d = kd
    off = (kmax - k) // 2
    return lambda h, kernel, mask: _conv(h, kernel[off:off + k, off:off + k] * mask,
                                         dilation=d)

  return jax.lax.switch(kind, [branch(kd) for kd in space.conv_kinds], h, kernel, mask)


def _block(space: MemoryBankSpace, b: int, shared: dict, raw: jax.Array,
           enc: BlockEncoding, mem: jax.Array) -> jax.Array:
  """The ops of block ``b`` on the padded memory ``(N, H, W, Cm)``."""
  p = shared[f"block{b}"]
  slot = space.bank_slot(b)
  weights = projection_weights(raw, enc)

  def op(mem, xs):
    w, write, active, conv_active, conv_kind, conv_mask = xs

    def run(mem):
      h = _conv(_bn_relu(mem, p["bn_in"]), w[None, None])
      for l in range(space.max_convs):
        q = p[f"conv{l}"]

        def layer(h, q=q, l=l):
          return _conv_layer(space, _bn_relu(h, q["bn"]), q["kernel"], conv_mask[l],
                             conv_kind[l])

        h = jax.lax.cond(conv_active[l], layer, lambda h: h, h)
      # The op's output has the bank width; it is added to every bank it writes.
      out = jnp.tile(h[..., :slot], (1, 1, 1, space.max_banks))
      return mem + out * write

    return jax.lax.cond(active, run, lambda m: m, mem), None

  xs = (weights, enc.write_mask, enc.op_active, enc.conv_active, enc.conv_kind, enc.conv_mask)
  mem, _ = jax.lax.scan(op, mem, xs)
  return mem


_AVG_POOL = dict(window=(2, 2), stride=None, padding="SAME")


def main_net(space: MemoryBankSpace, shared: dict, raw: Sequence[jax.Array],
             enc: Encoding, x: jax.Array) -> jax.Array:
  """The padded, masked main network with 1x1 weights ``raw`` (from :func:`generate`).

  Batch norm always uses the batch's statistics (SMASH scores architectures this way
  too: there are no running statistics per architecture).

  Args:
    space: the space.
    shared: ``params["shared"]``.
    raw: per block ``(max_ops, Cm, Ch)`` generated weights.
    enc: the architecture's :class:`Encoding`.
    x: ``(N, H, W, C)`` float32 images.

  Returns:
    ``(N, num_classes)`` logits.
  """
  x = jnp.asarray(x, jnp.float32)
  mem = _conv(x, shared["stem"]["kernel"], stride=space.stem_stride) * enc.blocks[0].bank_mask
  for b in range(space.num_blocks):
    be = enc.blocks[b]
    mem = _block(space, b, shared, raw[b], be, mem)
    if b + 1 < space.num_blocks:
      t = shared[f"transition{b}"]
      h = _bn_relu(mem, t["bn"])
      h, _ = layers.OPS["avg_pool"].apply(_AVG_POOL, [h], {}, {}, None)
      kernel = t["kernel"] * be.bank_mask[None, None, :, None]
      mem = _conv(h, kernel) * enc.blocks[b + 1].bank_mask
  last = enc.blocks[-1]
  h = jnp.mean(_bn_relu(mem, shared["head"]["bn"]), axis=(1, 2))
  return h @ (shared["head"]["kernel"] * last.bank_mask[:, None]) + shared["head"]["bias"]


def apply(space: MemoryBankSpace, params: dict, enc: Encoding, x: jax.Array) -> jax.Array:
  """Logits of the architecture ``enc`` with hypernetwork-generated weights.

  A pure function of ``(params, enc, x)`` for a fixed ``space``: jit it with ``space``
  static and every architecture of the space runs through the same compiled program.

  Args:
    space: the space.
    params: ``{"hyper": ..., "shared": ...}`` (:func:`init_params`).
    enc: the architecture's :class:`Encoding`.
    x: ``(N, H, W, C)`` images.

  Returns:
    ``(N, num_classes)`` logits.
  """
  return main_net(space, params["shared"], generate(space, params["hyper"], enc.condition),
                  enc, x)


# -------------------------------------------------------------- weights for stand-alone
def _grouped(dense: np.ndarray, groups: int) -> np.ndarray:
  """The IR's grouped kernel ``(k, k, cin / g, cout)`` of a block-diagonal dense one."""
  k1, k2, cin, cout = dense.shape
  gi, go = cin // groups, cout // groups
  out = np.zeros((k1, k2, gi, cout), dense.dtype)
  for g in range(groups):
    out[:, :, :, g * go:(g + 1) * go] = dense[:, :, g * gi:(g + 1) * gi, g * go:(g + 1) * go]
  return out


def to_network(space: MemoryBankSpace, net: BankNet, params: dict,
               input_shape: Sequence[int], num_classes: int) -> Network:
  """The stand-alone :class:`~nasjax.Network` of ``net`` with the one-shot weights.

  The shared weights are sliced to the architecture's sizes and the 1x1 convs get the
  hypernetwork's weights, so that ``nasjax.forward(result, x, train=True)`` computes what
  :func:`apply` computes (batch norm on batch statistics; the running statistics are
  the IR's initial ones).

  Args:
    space: the space.
    net: the architecture.
    params: one-shot parameters (:func:`init_params`, possibly trained).
    input_shape, num_classes: as for :func:`to_arch`.
  """
  arch = to_arch(space, net, input_shape, num_classes)
  enc = encode(space, net)
  raw = generate(space, params["hyper"], jnp.asarray(enc.condition))
  sh = jax.tree_util.tree_map(np.asarray, params["shared"])
  out: dict[str, dict] = {}

  def bank_channels(b: int, banks: Sequence[int]) -> np.ndarray:
    slot, w = space.bank_slot(b), net.blocks[b].width
    return np.concatenate([m * slot + np.arange(w) for m in banks])

  def bn(name: str, p: dict, idx: np.ndarray):
    out[name] = {"scale": p["scale"][idx], "bias": p["bias"][idx]}

  first = net.blocks[0]
  for m in range(first.num_banks):
    out[f"b0_init{m}"] = {"kernel": sh["stem"]["kernel"][..., bank_channels(0, [m])]}
  for b, block in enumerate(net.blocks):
    if b > 0:
      t = sh[f"transition{b - 1}"]
      idx = bank_channels(b - 1, range(net.blocks[b - 1].num_banks))
      bn(f"t{b - 1}_bn", t["bn"], idx)
      for m in range(block.num_banks):
        out[f"b{b}_init{m}"] = {"kernel": t["kernel"][:, :, idx][..., bank_channels(b, [m])]}
    proj = np.asarray(projection_weights(raw[b], enc.blocks[b]))
    p = sh[f"block{b}"]
    off0 = space.max_kernel
    for o, op in enumerate(block.ops):
      idx = bank_channels(b, op.reads)
      bn(f"b{b}_op{o}_bn0", p["bn_in"], idx)
      out[f"b{b}_op{o}_proj"] = {"kernel": proj[o][idx][:, :op.width][None, None]}
      cin = op.width
      for l, conv in enumerate(op.convs):
        q = p[f"conv{l}"]
        bn(f"b{b}_op{o}_bn{l + 1}", q["bn"], np.arange(cin))
        off = (off0 - conv.kernel) // 2
        dense = q["kernel"][off:off + conv.kernel, off:off + conv.kernel, :cin, :conv.width]
        out[f"b{b}_op{o}_conv{l}"] = {"kernel": _grouped(dense, conv.groups)}
        cin = conv.width
  idx = bank_channels(space.num_blocks - 1, range(net.blocks[-1].num_banks))
  bn("head_bn", sh["head"]["bn"], idx)
  out["logits"] = {"kernel": sh["head"]["kernel"][idx], "bias": sh["head"]["bias"]}
  state = {n.name: {"mean": np.zeros(arch.shape(n.name)[-1], np.float32),
                    "var": np.ones(arch.shape(n.name)[-1], np.float32)}
           for n in arch.nodes_of("batchnorm")}
  return Network(arch, jax.device_put(out), jax.device_put(state))


__all__ = ["ConvLayer", "BankOp", "BankBlock", "BankNet", "MemoryBankSpace", "to_arch",
           "BlockEncoding", "Encoding", "encode", "encode_code", "init_params", "generate",
           "projection_weights", "main_net", "apply", "to_network", "BN_EPS"]
