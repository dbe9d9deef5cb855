"""Search spaces: fixed-length integer codes for architectures.

A code is an int32 vector of shape ``(L,)`` whose position ``i`` takes one of
``num_choices[i]`` values. Every space offers the same interface:

- ``sample(key) -> code`` and ``mutate(key, code) -> code``: pure ``jax.numpy``,
  jittable and vmappable, so strategies over codes run under ``jit``/``scan``/``vmap``;
- ``encode(arch) -> code`` and ``decode(code) -> arch description`` (hashable: the
  NB201 cell string, the NAS-Bench-Macro key, a plain-CNN block tuple, a DARTS genotype);
- ``describe(code) -> str``: the description as text, as written to run histories;
- ``hash(code) -> int``: the code's rank in mixed radix (unique per architecture);
- ``index(code)``: the same rank, jittable, for spaces of fewer than 2**31 codes;
- ``build(code, input_shape, num_classes) -> nasjax.Arch``: a trainable network.

Some spaces have positions that only matter given others (a plain-CNN block with two
layers ignores its third layer's genes). :meth:`SearchSpace.active` says which positions
matter, and codes are kept canonical: inactive positions hold 0, so one architecture
has one code.

:data:`SPACES` maps each space's name to its class, and :func:`make_space` builds one
from a name and a config; :func:`register_space` adds a space.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.arch import Arch, Node
from nasjax.models import (DARTS_OPS, NB201_OPS, Genotype, darts_cell, nb201, nb201_str,
                           parse_nb201, plain_cnn)
from nasjax.search.base import Registry


def _as_code(code, length: int) -> np.ndarray:
  c = np.asarray(code)
  if c.shape != (length,) or not np.issubdtype(c.dtype, np.integer):
    raise ValueError(f"expected an integer code of shape ({length},), got {code!r}")
  return c.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class SearchSpace(abc.ABC):
  """Base class: a product of categorical positions, possibly with inactive ones.

  Subclasses set :attr:`name`, implement :attr:`num_choices`, ``decode``, ``encode`` and
  ``build``, and override :meth:`active` when some positions can be inactive.
  """

  name: ClassVar[str] = "space"
  # Whether some positions can be inactive (then codes are made canonical).
  has_inactive: ClassVar[bool] = False

  @property
  @abc.abstractmethod
  def num_choices(self) -> tuple[int, ...]:
    """Number of values of each code position, ``(L,)``."""

  @property
  def length(self) -> int:
    """L, the length of a code."""
    return len(self.num_choices)

  @property
  def size(self) -> int:
    """Number of distinct codes (an upper bound on architectures when some are inactive)."""
    return math.prod(self.num_choices)

  def config(self) -> dict:
    """Constructor arguments, JSON-serialisable, to rebuild this space with :func:`make_space`."""
    return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)}

  # -- array functions (jittable) ----------------------------------------------------
  def active(self, code: jax.Array) -> jax.Array:
    """``(L,)`` bool: which positions of ``code`` affect the architecture."""
    return jnp.ones(code.shape, bool)

  def canonical(self, code: jax.Array) -> jax.Array:
    """``code`` with inactive positions set to 0."""
    return jnp.where(self.active(code), code, 0).astype(jnp.int32)

  # Random codes are made from uint32 words rather than from many PRNG calls: every
  # PRNG call site costs compile time, and a strategy can draw all of a generation's
  # words at once. A word taken modulo n has a bias below n / 2**32.
  @property
  def sample_words(self) -> int:
    """Number of uint32 words :meth:`sample_bits` consumes."""
    return self.length

  @property
  def mutate_words(self) -> int:
    """Number of uint32 words :meth:`mutate_bits` consumes."""
    return self.length + 2

  def sample_bits(self, words: jax.Array) -> jax.Array:
    """A code drawn uniformly per position from ``(sample_words,)`` uint32 ``words``."""
    n = jnp.asarray(self.num_choices, jnp.uint32)
    return self.canonical((words[:self.length] % n).astype(jnp.int32))

  def mutate_bits(self, words: jax.Array, code: jax.Array) -> jax.Array:
    """:meth:`mutate` driven by ``(mutate_words,)`` uint32 ``words``."""
    code = jnp.asarray(code, jnp.int32)
    n = jnp.asarray(self.num_choices, jnp.int32)
    mutable = self.active(code) & (n > 1)
    count = jnp.maximum(jnp.sum(mutable), 1).astype(jnp.uint32)
    rank = (words[0] % count).astype(jnp.int32)
    pos = jnp.argmax(jnp.cumsum(mutable) > rank)  # the rank-th mutable position
    choices = n[pos]
    shift = 1 + (words[1] % jnp.maximum(choices - 1, 1).astype(jnp.uint32)).astype(jnp.int32)
    new = code.at[pos].set((code[pos] + shift) % choices)
    fresh = (words[2:2 + self.length] % n.astype(jnp.uint32)).astype(jnp.int32)
    new = jnp.where(self.active(new) & ~self.active(code), fresh, new)
    return self.canonical(new)

  def sample(self, key: jax.Array) -> jax.Array:
    """A code drawn uniformly per position, made canonical. Shape ``(L,)`` int32."""
    return self.sample_bits(jax.random.bits(key, (self.sample_words,), jnp.uint32))

  def mutate(self, key: jax.Array, code: jax.Array) -> jax.Array:
    """Change one active position, chosen uniformly, to a different value.

    Positions that the change activates (a block that gains a layer) get random values.

    Args:
      key: PRNG key.
      code: ``(L,)`` int code.

    Returns:
      ``(L,)`` int32 canonical code that differs from ``code`` at the chosen position.
    """
    return self.mutate_bits(jax.random.bits(key, (self.mutate_words,), jnp.uint32), code)

  def strides(self) -> np.ndarray:
    """Mixed-radix place values, the first position most significant."""
    n = self.num_choices
    return np.array([math.prod(n[i + 1:]) for i in range(len(n))], dtype=object)

  def index(self, code: jax.Array) -> jax.Array:
    """The code's rank as int32, jittable (batched codes ``(..., L)`` give ``(...)``)."""
    if self.size >= 2 ** 31:
      raise ValueError(f"space {self.name!r} has {self.size} codes, too many for an int32 "
                       "index; use hash() on the host")
    s = jnp.asarray(self.strides().astype(np.int64), jnp.int32)
    return jnp.sum(jnp.asarray(code, jnp.int32) * s, axis=-1)

  # -- host functions ----------------------------------------------------------------
  def check(self, code) -> np.ndarray:
    """``code`` as a NumPy vector after checking its shape and value ranges."""
    c = _as_code(code, self.length)
    bad = np.flatnonzero((c < 0) | (c >= np.asarray(self.num_choices)))
    if len(bad):
      i = int(bad[0])
      raise ValueError(f"code {c.tolist()} of space {self.name!r}: position {i} is {c[i]}, "
                       f"outside [0, {self.num_choices[i]})")
    return c

  def hash(self, code) -> int:
    """The canonical code's rank, a Python int unique per architecture."""
    c = self.check(code)
    if self.has_inactive:
      c = np.asarray(self.canonical(jnp.asarray(c, jnp.int32)))
    return int(sum(int(v) * int(s) for v, s in zip(c, self.strides())))

  def from_index(self, index: int) -> np.ndarray:
    """The code of rank ``index`` (inverse of :meth:`hash` for canonical codes)."""
    if not 0 <= int(index) < self.size:
      raise ValueError(f"index {index} is outside [0, {self.size}) for space {self.name!r}")
    out, rest = [], int(index)
    for s in self.strides():
      out.append(rest // int(s))
      rest %= int(s)
    return np.array(out, np.int32)

  @abc.abstractmethod
  def decode(self, code) -> Any:
    """The hashable architecture description of ``code``."""

  @abc.abstractmethod
  def encode(self, arch) -> np.ndarray:
    """The code of an architecture description (inverse of :meth:`decode`)."""

  def describe(self, code) -> str:
    """The decoded architecture as text (what run histories record)."""
    return str(self.decode(code))

  @abc.abstractmethod
  def build(self, code, input_shape: Sequence[int], num_classes: int) -> Arch:
    """A trainable :class:`~nasjax.Arch` for ``code``."""


# ----------------------------------------------------------------------------- NB201
@dataclasses.dataclass(frozen=True)
class NB201Space(SearchSpace):
  """The NAS-Bench-201 cell: 6 edges, 5 ops each (15,625 codes).

  Position ``i`` is edge ``NB201_EDGES[i]`` (the order of the official string) and its
  value indexes :data:`nasjax.models.NB201_OPS`. ``C`` and ``N`` size the network that
  :meth:`build` makes (NB201: 16 and 5).
  """

  name: ClassVar[str] = "nb201"
  C: int = 16
  N: int = 5

  @property
  def num_choices(self):
    return (len(NB201_OPS),) * 6

  def decode(self, code) -> str:
    return nb201_str([NB201_OPS[i] for i in self.check(code)])

  def encode(self, arch) -> np.ndarray:
    """Code of an NB201 cell string or a sequence of six op names."""
    ops = parse_nb201(arch) if isinstance(arch, str) else parse_nb201(nb201_str(arch))
    return np.array([NB201_OPS.index(op) for op in ops], np.int32)

  def build(self, code, input_shape=(32, 32, 3), num_classes=10) -> Arch:
    return nb201(self.decode(code), C=self.C, N=self.N, input_shape=tuple(input_shape),
                 num_classes=num_classes)


# ----------------------------------------------------------------------- NAS-Bench-Macro
MACRO_OPS = ("identity", "mb3_k3", "mb6_k5")  # digits 0, 1, 2 of a NAS-Bench-Macro key


@dataclasses.dataclass(frozen=True)
class MacroSpace(SearchSpace):
  """NAS-Bench-Macro (Su et al., CVPR 2021): 8 layers, 3 choices each (6,561 codes).

  Network: 3x3 conv-BN-ReLU stem with ``init_channels``; three stages of ``stages``
  layers; the first layer of each stage halves the resolution and doubles the channels.
  A layer is the identity (``0``; a 1x1 stride-2 conv-BN where the shape changes), a
  MobileNetV2 block with expansion 3 and kernel 3 (``1``) or with expansion 6 and kernel 5
  (``2``), with a residual connection where the shape is kept. Head: 1x1 conv-BN-ReLU to
  ``head_channels``, global average pooling, dense classifier. With the defaults the
  parameter counts equal the benchmark's.
  """

  name: ClassVar[str] = "macro"
  init_channels: int = 32
  head_channels: int = 1280
  stages: tuple[int, ...] = (2, 3, 3)

  def __post_init__(self):
    object.__setattr__(self, "stages", tuple(int(s) for s in self.stages))
    if any(s < 1 for s in self.stages):
      raise ValueError(f"stages must be positive layer counts, got {self.stages!r}")

  @property
  def num_choices(self):
    return (3,) * sum(self.stages)

  def decode(self, code) -> str:
    return "".join(str(int(v)) for v in self.check(code))

  def encode(self, arch) -> np.ndarray:
    """Code of a key such as ``"01202100"`` (one digit per layer)."""
    if not isinstance(arch, str) or len(arch) != self.length or set(arch) - set("012"):
      raise ValueError(f"a NAS-Bench-Macro key is {self.length} digits 0/1/2, got {arch!r}")
    return np.array([int(ch) for ch in arch], np.int32)

  def build(self, code, input_shape=(32, 32, 3), num_classes=10) -> Arch:
    digits = self.check(code)
    c = self.init_channels
    nodes = [Node("input", "input", shape=tuple(input_shape)),
             Node("stem_conv", "conv", ["input"], features=c, kernel=3),
             Node("stem_bn", "batchnorm", ["stem_conv"]),
             Node("stem_relu", "relu", ["stem_bn"])]
    prev, layer = "stem_relu", 0
    for stage, depth in enumerate(self.stages):
      for i in range(depth):
        stride, cin = (2, c) if i == 0 else (1, c)
        cout = 2 * c if i == 0 else c
        p = f"s{stage}_l{i}"
        op = MACRO_OPS[int(digits[layer])]
        if op == "identity":
          if stride != 1 or cin != cout:
            nodes += [Node(f"{p}_conv", "conv", [prev], features=cout, kernel=1, stride=stride),
                      Node(f"{p}_bn", "batchnorm", [f"{p}_conv"])]
            prev = f"{p}_bn"
        else:
          t, k = (3, 3) if op == "mb3_k3" else (6, 5)
          hidden = cin * t
          nodes += [Node(f"{p}_expand", "conv", [prev], features=hidden, kernel=1),
                    Node(f"{p}_bn1", "batchnorm", [f"{p}_expand"]),
                    Node(f"{p}_relu1", "relu", [f"{p}_bn1"]),
                    Node(f"{p}_dw", "conv", [f"{p}_relu1"], features=hidden, kernel=k,
                         stride=stride, groups=hidden),
                    Node(f"{p}_bn2", "batchnorm", [f"{p}_dw"]),
                    Node(f"{p}_relu2", "relu", [f"{p}_bn2"]),
                    Node(f"{p}_project", "conv", [f"{p}_relu2"], features=cout, kernel=1),
                    Node(f"{p}_bn3", "batchnorm", [f"{p}_project"])]
          if stride == 1 and cin == cout:
            nodes.append(Node(f"{p}_add", "add", [prev, f"{p}_bn3"]))
            prev = f"{p}_add"
          else:
            prev = f"{p}_bn3"
        c = cout
        layer += 1
    nodes += [Node("head_conv", "conv", [prev], features=self.head_channels, kernel=1),
              Node("head_bn", "batchnorm", ["head_conv"]),
              Node("head_relu", "relu", ["head_bn"]),
              Node("gap", "gap", ["head_relu"]),
              Node("logits", "dense", ["gap"], features=num_classes)]
    return Arch(nodes)


# ---------------------------------------------------------------------------- plain CNN
@dataclasses.dataclass(frozen=True)
class PlainCNNSpace(SearchSpace):
  """Plain CNNs: ``num_blocks`` blocks of 1..``max_layers`` conv-BN-ReLU layers.

  Each layer picks its filters from ``filters`` and its kernel from ``kernels``; blocks
  are separated by 2x2 max pooling (see :func:`nasjax.models.plain_cnn`). A block's
  genes are ``[layers - 1, f_0, k_0, ..., f_{max-1}, k_{max-1}]`` (indices into
  ``filters`` and ``kernels``); the genes of layers beyond ``layers`` are inactive.
  """

  name: ClassVar[str] = "plain_cnn"
  has_inactive: ClassVar[bool] = True
  num_blocks: int = 3
  max_layers: int = 3
  filters: tuple[int, ...] = (16, 32, 64)
  kernels: tuple[int, ...] = (1, 3, 5)

  def __post_init__(self):
    object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
    object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
    for value, what in ((self.num_blocks, "num_blocks"), (self.max_layers, "max_layers")):
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    if not self.filters or min(self.filters) < 1:
      raise ValueError(f"filters must be positive widths, got {self.filters!r}")
    if not self.kernels or min(self.kernels) < 1:
      raise ValueError(f"kernels must be positive sizes, got {self.kernels!r}")

  @property
  def _block_len(self) -> int:
    return 1 + 2 * self.max_layers

  @property
  def num_choices(self):
    block = (self.max_layers,) + (len(self.filters), len(self.kernels)) * self.max_layers
    return block * self.num_blocks

  def active(self, code):
    blocks = jnp.reshape(code, (self.num_blocks, self._block_len))
    # Layer of each gene; -1 for the layer-count gene, which is always active.
    layer = (jnp.arange(self._block_len) - 1) // 2
    mask = layer[None, :] <= blocks[:, :1]
    return mask.reshape(-1)

  def decode(self, code) -> tuple[tuple[tuple[int, int], ...], ...]:
    c = self.check(code).reshape(self.num_blocks, self._block_len)
    return tuple(tuple((self.filters[b[1 + 2 * l]], self.kernels[b[2 + 2 * l]])
                       for l in range(int(b[0]) + 1)) for b in c)

  def describe(self, code) -> str:
    return "|".join(",".join(f"{f}k{k}" for f, k in block) for block in self.decode(code))

  def encode(self, arch) -> np.ndarray:
    """Code of a block tuple ``((filters, kernel), ...)`` per block, its text form
    (``"16k3,32k5|64k3"``) or a plain-CNN :class:`~nasjax.Arch` (by its node names)."""
    if isinstance(arch, Arch):
      blocks = []
      for b in range(self.num_blocks):
        layers = []
        while f"b{b}_l{len(layers)}_conv" in arch:
          n = arch[f"b{b}_l{len(layers)}_conv"]
          layers.append((n["features"], n["kernel"][0]))
        blocks.append(tuple(layers))
      arch = tuple(blocks)
    elif isinstance(arch, str):
      try:
        arch = tuple(tuple(tuple(int(v) for v in layer.split("k")) for layer in block.split(","))
                     for block in arch.split("|"))
      except ValueError:
        raise ValueError(f"bad plain-CNN description {arch!r}; expected e.g. "
                         "'16k3,32k5|64k3'") from None
    if len(arch) != self.num_blocks:
      raise ValueError(f"expected {self.num_blocks} blocks, got {len(arch)} in {arch!r}")
    code = []
    for block in arch:
      if not 1 <= len(block) <= self.max_layers:
        raise ValueError(f"a block has 1..{self.max_layers} layers, got {len(block)} in "
                         f"{arch!r}")
      genes = [len(block) - 1]
      for f, k in block:
        if f not in self.filters or k not in self.kernels:
          raise ValueError(f"layer ({f}, {k}) of {arch!r}: filters must be one of "
                           f"{self.filters} and kernel one of {self.kernels}")
        genes += [self.filters.index(f), self.kernels.index(k)]
      code += genes + [0, 0] * (self.max_layers - len(block))
    return np.array(code, np.int32)

  def build(self, code, input_shape=(32, 32, 3), num_classes=10) -> Arch:
    blocks = [list(b) for b in self.decode(code)]
    return plain_cnn(blocks, input_shape=tuple(input_shape), num_classes=num_classes)


# ---------------------------------------------------------------------------- DARTS cell
DARTS_SEARCH_OPS = tuple(op for op in DARTS_OPS if op != "none")


@dataclasses.dataclass(frozen=True)
class DartsCellSpace(SearchSpace):
  """The DARTS cell space: a normal and a reduction cell of ``steps`` nodes.

  Node ``i`` of a cell has two incoming edges; each picks an input among the two cell
  inputs and the earlier nodes (``i + 2`` choices) and an op among
  :data:`DARTS_SEARCH_OPS` (the DARTS ops without ``none``). Genes per cell:
  ``[input, op]`` for each of the ``2 * steps`` edges, normal cell first. ``C`` and
  ``layers`` size the network that :meth:`build` makes.
  """

  name: ClassVar[str] = "darts"
  steps: int = 4
  C: int = 16
  layers: int = 5

  @property
  def num_choices(self):
    cell = []
    for k in range(2 * self.steps):
      cell += [2 + k // 2, len(DARTS_SEARCH_OPS)]
    return tuple(cell) * 2

  def _pairs(self, genes) -> tuple[tuple[str, int], ...]:
    return tuple((DARTS_SEARCH_OPS[int(genes[2 * k + 1])], int(genes[2 * k]))
                 for k in range(2 * self.steps))

  def decode(self, code) -> Genotype:
    c = self.check(code)
    half = 4 * self.steps
    concat = tuple(range(2, 2 + self.steps))
    return Genotype(normal=self._pairs(c[:half]), normal_concat=concat,
                    reduce=self._pairs(c[half:]), reduce_concat=concat)

  def describe(self, code) -> str:
    g = self.decode(code)
    return ("normal:" + ",".join(f"{op}~{i}" for op, i in g.normal) + " reduce:" +
            ",".join(f"{op}~{i}" for op, i in g.reduce))

  def encode(self, arch) -> np.ndarray:
    """Code of a :class:`~nasjax.models.Genotype` (its ``*_concat`` must be all nodes)."""
    g = Genotype(*arch)
    concat = tuple(range(2, 2 + self.steps))
    code = []
    for kind in ("normal", "reduce"):
      pairs = tuple(getattr(g, kind))
      if tuple(getattr(g, f"{kind}_concat")) != concat:
        raise ValueError(f"genotype.{kind}_concat must be {concat} in this space, got "
                         f"{tuple(getattr(g, f'{kind}_concat'))}")
      if len(pairs) != 2 * self.steps:
        raise ValueError(f"genotype.{kind} needs {2 * self.steps} pairs, got {len(pairs)}")
      for k, (op, src) in enumerate(pairs):
        if op not in DARTS_SEARCH_OPS or not 0 <= src < 2 + k // 2:
          raise ValueError(f"genotype.{kind}[{k}] = {(op, src)!r} is not in the space (ops "
                           f"{list(DARTS_SEARCH_OPS)}, inputs below {2 + k // 2})")
        code += [src, DARTS_SEARCH_OPS.index(op)]
    return np.array(code, np.int32)

  def build(self, code, input_shape=(32, 32, 3), num_classes=10) -> Arch:
    return darts_cell(self.decode(code), C=self.C, layers=self.layers, steps=self.steps,
                      input_shape=tuple(input_shape), num_classes=num_classes)


# Spaces defined beside their strategy (``layer_string``, ``pnas_cell``, ``smash``) join
# when their module is imported; SPACES imports it on a lookup of their name.
SPACES: Registry = Registry("search space", {
    NB201Space.name: NB201Space,
    MacroSpace.name: MacroSpace,
    PlainCNNSpace.name: PlainCNNSpace,
    DartsCellSpace.name: DartsCellSpace,
})


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
  """Add the space class ``cls`` to :data:`SPACES` under ``cls.name`` and return it.

  From then on :func:`make_space`, the ``search`` command and run directories (which name
  their space) accept it; any strategy whose entry lists the name (or ``"*"``) searches it.
  Call it (or decorate the class with it) in a module of :mod:`nasjax.search`, so that
  a fresh process finds the space (see :class:`~nasjax.search.base.Registry`).

  Raises:
    ValueError: if ``cls`` is not a :class:`SearchSpace` subclass, or another class is
      registered under its name.
  """
  if not (isinstance(cls, type) and issubclass(cls, SearchSpace)):
    raise ValueError(f"a search space is a SearchSpace subclass, got {cls!r}")
  return SPACES.register(cls.name, cls)


def make_space(name: str, **config) -> SearchSpace:
  """The search space ``name`` (a key of :data:`SPACES`) with constructor ``config``."""
  if name not in SPACES:
    raise ValueError(f"unknown search space {name!r}; known: {sorted(SPACES)}")
  cls = SPACES[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = set(config) - fields
  if unknown:
    raise ValueError(f"unknown option(s) {sorted(unknown)} for space {name!r}; it takes "
                     f"{sorted(fields)}")
  return cls(**config)
