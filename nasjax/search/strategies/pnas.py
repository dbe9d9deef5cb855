"""Progressive Neural Architecture Search (Liu et al., ECCV 2018).

PNAS grows cells one block at a time. All cells of one block are evaluated; then, level
by level, every evaluated cell of ``b - 1`` blocks is expanded by every possible next
block, a *surrogate* predictor trained on all cells evaluated so far scores every
expansion, the top ``K`` are evaluated (the beam), the surrogate is refitted, and so on
up to the full size (§3.2, Algorithm 1): level 2 expands all one-block cells, each later
level the ``K`` cells the level before evaluated. The surrogate must rank cells larger
than any it was trained on, so it reads a cell as a sequence of blocks: an LSTM over
the blocks, or an MLP over the mean of the blocks' embeddings (§3.3). Each kind is an
ensemble of ``M`` members; here member ``m`` is trained on all but every ``M``-th
evaluated cell (offset ``m``), and the prediction is the members' mean (over both kinds
with ``predictor="both"``). The loss is L1, as in the paper, on standardised rewards (the
negated fitness); each refit continues from the previous weights. Once the full size is
reached and budget remains, the last level repeats: the refitted surrogate ranks the
expansions not yet evaluated and the next ``K`` are evaluated. ``first_level`` can cap
the first level to a random subset when it is too large to train in full.

How each space grows (:func:`progression_for`):

- :class:`PnasCellSpace` (``pnas_cell``): the PNAS cell in the DARTS op set. A block adds
  one node: two ``(input, op)`` pairs, summed; inputs are the two cell inputs or earlier
  blocks. The two pairs of a block are unordered (the code keeps them sorted), so level
  1 has ``C(2 * 7 + 1, 2) = 105`` cells, as PNAS counts ``|B_1| = 136`` for its 8 ops.
  The cell's output concatenates the blocks no other block reads (PNAS's "unused
  hidden states"); normal and reduction cells share the structure, as in PNAS.
- NB201 (``nb201``): a "block" is one of the cell's nodes 1..3 with all its incoming
  edges (1, 2 and 3 edges), so the cell grows node by node like PNAS's blocks. A cell
  of ``b < 3`` nodes outputs node ``b``: written as a full NB201 cell, node 3 is a
  ``skip_connect`` from node ``b`` and every undecided edge is ``none``, so partial cells
  are ordinary NB201 cells and are queried (and charged) like any other. Levels have 5,
  25 and 125 expansions per parent.
- NAS-Bench-Macro (``macro``): a block is a layer; layers not yet grown are identities
  (digit 0), which the benchmark contains.

The state is all arrays: evaluated cells live in a buffer that forgets none of them (the
surrogate's training set: each refit trains on every cell evaluated so far; when the
buffer is full, ``tell`` doubles it on the host before it records more), and a level's
candidates in a ranked queue. ``ask`` hands out the queue in order, so a level evaluates
its top ``K``, rounded up to whole batches; a level with fewer than a batch of
candidates left repeats its best ones.
Which expansions were already evaluated is checked by code rank for spaces under 2**31
codes, else by two 32-bit hashes. ``ask`` and ``tell`` are compiled once per strategy
and also trace under ``jit``; the registry marks the strategy as not jittable all the
same, so that benchmarks run seeds one after another: under ``vmap`` the refit at the
end of a level (a ``lax.cond``) would run at every generation of every seed.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, ClassVar, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.arch import Arch
from nasjax.models import Genotype, darts_cell
from nasjax.search.base import fitness_matrix, register_strategy, select_objective
from nasjax.search.hardware import make_scalarizer
from nasjax.search.options import Options, integer, number, one_of, option
from nasjax.search.spaces import (DARTS_SEARCH_OPS, MacroSpace, NB201Space, SearchSpace,
                                  register_space)
from nasjax.search.strategies.rl_nas import check_reward, reward_config


# ------------------------------------------------------------------------ the PNAS cell
@dataclasses.dataclass(frozen=True)
class PnasCellSpace(SearchSpace):
  """PNAS cells of 1..``max_blocks`` blocks over the DARTS ops.

  Code: ``[blocks - 1]`` then, per block ``k``, ``[input_1, op_1, input_2, op_2]`` (inputs
  in ``[0, k + 2)``: 0 and 1 are the cell inputs, ``j >= 2`` block ``j - 2``; ops index
  :data:`~nasjax.search.spaces.DARTS_SEARCH_OPS`). Genes of blocks beyond ``blocks``
  are inactive; the canonical code sorts the two pairs of a block, which are summed and
  so interchangeable. ``C`` and ``layers`` size the network (DARTS's CIFAR skeleton).
  """

  name: ClassVar[str] = "pnas_cell"
  has_inactive: ClassVar[bool] = True
  max_blocks: int = 5
  C: int = 16
  layers: int = 5

  def __post_init__(self):
    for what in ("max_blocks", "C", "layers"):
      v = getattr(self, what)
      if not isinstance(v, int) or v < 1:
        raise ValueError(f"{what} must be a positive int, got {v!r}")

  @property
  def num_choices(self):
    n = len(DARTS_SEARCH_OPS)
    out = [self.max_blocks]
    for k in range(self.max_blocks):
      out += [k + 2, n, k + 2, n]
    return tuple(out)

  def active(self, code):
    block = jnp.concatenate([jnp.array([-1]), jnp.repeat(jnp.arange(self.max_blocks), 4)])
    return block <= code[0]

  def canonical(self, code):
    code = jnp.where(self.active(code), code, 0).astype(jnp.int32)
    n = len(DARTS_SEARCH_OPS)
    blocks = code[1:].reshape(self.max_blocks, 4)
    first, second = blocks[:, 0] * n + blocks[:, 1], blocks[:, 2] * n + blocks[:, 3]
    swapped = jnp.concatenate([blocks[:, 2:], blocks[:, :2]], axis=1)
    blocks = jnp.where((second < first)[:, None], swapped, blocks)
    return jnp.concatenate([code[:1], blocks.reshape(-1)])

  def _blocks(self, code) -> list[tuple[tuple[int, str], tuple[int, str]]]:
    c = np.asarray(self.canonical(jnp.asarray(self.check(code), jnp.int32)))
    return [((int(c[1 + 4 * k]), DARTS_SEARCH_OPS[c[2 + 4 * k]]),
             (int(c[3 + 4 * k]), DARTS_SEARCH_OPS[c[4 + 4 * k]])) for k in range(c[0] + 1)]

  def decode(self, code) -> Genotype:
    """The cell as a DARTS genotype (the same cell for normal and reduction)."""
    blocks = self._blocks(code)
    pairs = tuple((op, src) for block in blocks for src, op in block)
    used = {src for block in blocks for src, _ in block}
    concat = tuple(j for j in range(2, 2 + len(blocks)) if j not in used)
    return Genotype(normal=pairs, normal_concat=concat, reduce=pairs, reduce_concat=concat)

  def describe(self, code) -> str:
    """E.g. ``"sep_conv_3x3~1+skip_connect~0|max_pool_3x3~2+sep_conv_5x5~1"``."""
    return "|".join("+".join(f"{op}~{src}" for src, op in block) for block in self._blocks(code))

  def encode(self, arch) -> np.ndarray:
    """Code of a :meth:`describe` string or a genotype's ``normal`` pairs."""
    if isinstance(arch, str):
      try:
        blocks = [[(p.split("~")[0], int(p.split("~")[1])) for p in b.split("+")]
                  for b in arch.split("|")]
      except (IndexError, ValueError):
        raise ValueError(f"bad PNAS cell {arch!r}; expected e.g. "
                         "'sep_conv_3x3~1+skip_connect~0|max_pool_3x3~2+sep_conv_5x5~1'") from None
    else:
      pairs = list(Genotype(*arch).normal if isinstance(arch, (Genotype, tuple)) and
                   len(arch) == 4 else arch)
      blocks = [pairs[i:i + 2] for i in range(0, len(pairs), 2)]
    if not 1 <= len(blocks) <= self.max_blocks or any(len(b) != 2 for b in blocks):
      raise ValueError(f"a PNAS cell has 1..{self.max_blocks} blocks of two (op, input) "
                       f"pairs, got {arch!r}")
    code = [len(blocks) - 1]
    for k, block in enumerate(blocks):
      for op, src in block:
        if op not in DARTS_SEARCH_OPS or not 0 <= src < k + 2:
          raise ValueError(f"block {k} of {arch!r}: ({op!r}, {src}) is not in the space (ops "
                           f"{list(DARTS_SEARCH_OPS)}, inputs below {k + 2})")
        code += [src, DARTS_SEARCH_OPS.index(op)]
    code += [0] * (4 * (self.max_blocks - len(blocks)))
    return np.asarray(self.canonical(jnp.asarray(code, jnp.int32)))

  def build(self, code, input_shape=(32, 32, 3), num_classes=10) -> Arch:
    genotype = self.decode(code)
    return darts_cell(genotype, C=self.C, layers=self.layers, steps=len(genotype.normal) // 2,
                      input_shape=tuple(input_shape), num_classes=num_classes)


# A run directory names its space: make_space (and so ``nasjax resume``) must find it.
register_space(PnasCellSpace)


# ------------------------------------------------------------------------ progressions
@dataclasses.dataclass(frozen=True, eq=False)
class Progression:
  """How cells of a space grow block by block, and how the surrogate reads them.

  Attributes:
    levels: B, the number of blocks of a full cell.
    first: ``(N_1, L)`` codes of all one-block cells.
    positions: per level ``b`` (index ``b - 1``), the code positions it decides.
    combos: per level, ``(N_b, len(positions))`` the values those positions may take.
    template: per level, ``(L,)`` values written where ``template_mask`` is set: the
      fillers that make a ``b``-block cell a valid code.
    template_mask: per level, ``(L,)`` bool.
    token_positions: ``(T,)`` code positions the surrogate reads, block by block.
    token_offset: ``(T,)`` added to each value to make a token id.
    vocab: number of token ids.
    group: tokens per block as the surrogate reads them (``T / group`` blocks).
    tokens_per_level: per level, how many tokens a cell of that size has.
  """

  levels: int
  first: np.ndarray
  positions: tuple
  combos: tuple
  template: tuple
  template_mask: tuple
  token_positions: np.ndarray
  token_offset: np.ndarray
  vocab: int
  group: int
  tokens_per_level: tuple

  def children(self, parents: jax.Array, level: int) -> jax.Array:
    """``(K * N_b, L)`` expansions of ``parents`` ``(K, L)`` to ``level`` (static) blocks."""
    i = level - 1
    base = jnp.where(jnp.asarray(self.template_mask[i]), jnp.asarray(self.template[i]), parents)
    combos = jnp.asarray(self.combos[i])
    kids = jnp.repeat(base, combos.shape[0], axis=0)
    vals = jnp.tile(combos, (parents.shape[0], 1))
    return kids.at[:, jnp.asarray(self.positions[i])].set(vals)

  def tokens(self, codes: jax.Array, levels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(tokens (N, T) int32, mask (N, T) bool)`` of codes ``(N, L)`` of ``levels`` blocks."""
    tok = codes[:, jnp.asarray(self.token_positions)] + jnp.asarray(self.token_offset)
    count = jnp.asarray(self.tokens_per_level)[jnp.clip(levels, 1, self.levels) - 1]
    mask = jnp.arange(tok.shape[1])[None, :] < count[:, None]
    return tok.astype(jnp.int32), mask


def _nb201_progression(space: NB201Space) -> Progression:
  del space
  n = 5  # NB201_OPS; "none" is 0 and "skip_connect" 1
  node_edges = {1: [0], 2: [1, 2], 3: [3, 4, 5]}  # code positions of node j's edges
  positions, combos, template, mask = [], [], [], []
  for b in (1, 2, 3):
    positions.append(tuple(node_edges[b]))
    combos.append(np.array(list(itertools.product(range(n), repeat=b)), np.int32))
    t, m = np.zeros(6, np.int32), np.zeros(6, bool)
    if b < 3:
      # Nodes after b are empty; node 3 copies node b, which is then the cell's output.
      later = [p for j in range(b + 1, 4) for p in node_edges[j]]
      m[later] = True
      t[node_edges[3][b]] = 1
    template.append(t)
    mask.append(m)
  first = np.repeat(template[0][None], n, axis=0)
  first[:, 0] = np.arange(n)
  return Progression(3, first, tuple(positions), tuple(combos), tuple(template), tuple(mask),
                     np.arange(6), np.arange(6) * n, 6 * n, 1, (1, 3, 6))


def _macro_progression(space: MacroSpace) -> Progression:
  L = space.length
  positions = tuple((b,) for b in range(L))
  combos = tuple(np.arange(3, dtype=np.int32)[:, None] for _ in range(L))
  template = tuple(np.zeros(L, np.int32) for _ in range(L))
  mask = tuple(np.zeros(L, bool) for _ in range(L))
  first = np.zeros((3, L), np.int32)
  first[:, 0] = np.arange(3)
  return Progression(L, first, positions, combos, template, mask, np.arange(L),
                     np.arange(L) * 3, 3 * L, 1, tuple(range(1, L + 1)))


def _pnas_cell_progression(space: PnasCellSpace) -> Progression:
  B, n = space.max_blocks, len(DARTS_SEARCH_OPS)
  L = space.length
  positions, combos, template, mask = [], [], [], []
  for b in range(1, B + 1):
    k = b - 1
    pairs = [(src, op) for src in range(k + 2) for op in range(n)]
    # Unordered pairs: the code keeps a block's two pairs sorted.
    combos.append(np.array([[b - 1, *p, *q] for p, q in
                            itertools.combinations_with_replacement(pairs, 2)], np.int32))
    positions.append((0, 1 + 4 * k, 2 + 4 * k, 3 + 4 * k, 4 + 4 * k))
    template.append(np.zeros(L, np.int32))
    mask.append(np.zeros(L, bool))
  first = np.zeros((len(combos[0]), L), np.int32)
  first[:, list(positions[0])] = combos[0]
  token_positions = np.arange(1, L)
  is_op = (token_positions - 1) % 2 == 1
  offset = np.where(is_op, B + 1, 0)  # inputs take ids [0, B + 1), ops the next n
  return Progression(B, first, tuple(positions), tuple(combos), tuple(template), tuple(mask),
                     token_positions, offset, B + 1 + n, 4, tuple(4 * b for b in range(1, B + 1)))


PROGRESSIONS = {
    NB201Space.name: _nb201_progression,
    MacroSpace.name: _macro_progression,
    PnasCellSpace.name: _pnas_cell_progression,
}


@functools.lru_cache(maxsize=32)
def progression_for(space: SearchSpace) -> Progression:
  """How ``space`` grows (built once per space); ``ValueError`` for a space PNAS cannot
  grow."""
  if space.name not in PROGRESSIONS:
    raise ValueError(f"PNAS grows spaces {sorted(PROGRESSIONS)}, not {space.name!r}")
  return PROGRESSIONS[space.name](space)


# --------------------------------------------------------------------------- surrogate
class LSTMPredictor(nn.Module):
  """Reads a cell block by block with an LSTM (:class:`flax.linen.OptimizedLSTMCell`,
  flax's default initialisation); the state after the last block gives the prediction.

  Attributes:
    vocab: token ids.
    group: tokens per block (their embeddings are concatenated as one LSTM input).
    embed: embedding width; hidden: LSTM width.
  """

  vocab: int
  group: int
  embed: int = 16
  hidden: int = 32

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """``tokens``, ``mask``: ``(T,)``. Returns the ``()`` predicted standardised reward."""
    x = nn.Embed(self.vocab, self.embed)(tokens).reshape(-1, self.group * self.embed)
    on = mask.reshape(-1, self.group).any(axis=1)
    cell = nn.OptimizedLSTMCell(self.hidden)
    carry = (jnp.zeros((self.hidden,)), jnp.zeros((self.hidden,)))  # (c, h)
    for t in range(x.shape[0]):  # a few blocks: unrolled
      new, _ = cell(carry, x[t])
      carry = jax.tree_util.tree_map(lambda a, b, t=t: jnp.where(on[t], a, b), new, carry)
    return nn.Dense(1)(carry[1])[0]


class MLPPredictor(nn.Module):
  """An MLP on the mean of the cell's block embeddings."""

  vocab: int
  group: int
  embed: int = 16
  hidden: int = 32

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    x = nn.Embed(self.vocab, self.embed)(tokens).reshape(-1, self.group * self.embed)
    on = mask.reshape(-1, self.group).any(axis=1)
    x = jnp.sum(jnp.where(on[:, None], x, 0.0), axis=0) / jnp.maximum(jnp.sum(on), 1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(1)(x)[0]


PREDICTORS = ("lstm", "mlp", "both")


@dataclasses.dataclass(frozen=True, eq=False)
class Surrogate:
  """An ensemble of predictors of the standardised reward of a cell.

  Attributes:
    progression: how cells are read.
    kind: ``"lstm"``, ``"mlp"`` or ``"both"``.
    members: M, predictors per kind.
    embed, hidden: predictor widths.
    learning_rate: Adam's step size.
    steps: full-batch Adam steps per fit.
  """

  progression: Progression
  kind: str = "both"
  members: int = 5
  embed: int = 16
  hidden: int = 32
  learning_rate: float = 0.01
  steps: int = 100

  @property
  def modules(self) -> dict[str, nn.Module]:
    p = self.progression
    kinds = ("lstm", "mlp") if self.kind == "both" else (self.kind,)
    cls = {"lstm": LSTMPredictor, "mlp": MLPPredictor}
    return {k: cls[k](p.vocab, p.group, self.embed, self.hidden) for k in kinds}

  def init(self, key: jax.Array) -> dict:
    """Parameters ``{kind: stacked (M, ...) member params}``."""
    T = len(self.progression.token_positions)
    tok, mask = jnp.zeros((T,), jnp.int32), jnp.ones((T,), bool)
    out = {}
    for i, (name, module) in enumerate(sorted(self.modules.items())):
      keys = jax.random.split(jax.random.fold_in(key, i), self.members)
      out[name] = jax.vmap(lambda k, m=module: m.init(k, tok, mask))(keys)
    return out

  def _member_predictions(self, params, tokens, mask) -> jax.Array:
    """``(kinds * M, N)`` predictions."""
    preds = []
    for name, module in sorted(self.modules.items()):
      per = jax.vmap(lambda p, m=module: jax.vmap(lambda t, k: m.apply(p, t, k))(tokens, mask))
      preds.append(per(params[name]))
    return jnp.concatenate(preds, axis=0)

  def predict(self, params, codes: jax.Array, levels: jax.Array) -> jax.Array:
    """``(N,)`` ensemble mean prediction for codes ``(N, L)`` of ``levels`` ``(N,)`` blocks."""
    tokens, mask = self.progression.tokens(codes, levels)
    return jnp.mean(self._member_predictions(params, tokens, mask), axis=0)

  def fit(self, params, codes: jax.Array, levels: jax.Array, reward: jax.Array,
          valid: jax.Array) -> dict:
    """Refit (warm start) on the valid entries: member ``m`` skips fold ``i % M == m``.

    Args:
      params: current parameters.
      codes: ``(N, L)``; levels: ``(N,)``; reward: ``(N,)`` (higher is better);
      valid: ``(N,)`` bool, entries to train on.

    Returns:
      The new parameters.
    """
    tokens, mask = self.progression.tokens(codes, levels)
    n = jnp.maximum(jnp.sum(valid), 1)
    mean = jnp.sum(jnp.where(valid, reward, 0.0)) / n
    std = jnp.sqrt(jnp.sum(jnp.where(valid, (reward - mean) ** 2, 0.0)) / n)
    target = jnp.where(valid, (reward - mean) / jnp.where(std > 0, std, 1.0), 0.0)
    kinds = len(self.modules)
    fold = jnp.arange(codes.shape[0]) % self.members
    use = valid[None, :] & (fold[None, :] != jnp.arange(self.members)[:, None])  # (M, N)
    # With one member, or too few entries for folds, every member sees everything.
    use = jnp.where((self.members == 1) | (jnp.sum(valid) < 2 * self.members), valid[None], use)
    use = jnp.tile(use, (kinds, 1)).astype(jnp.float32)
    opt = optax.adam(self.learning_rate)

    def loss(p):
      err = jnp.abs(self._member_predictions(p, tokens, mask) - target[None])
      return jnp.sum(jnp.sum(err * use, axis=1) / jnp.maximum(jnp.sum(use, axis=1), 1))

    def step(carry, _):
      p, s = carry
      g = jax.grad(loss)(p)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=self.steps)
    return params


# --------------------------------------------------------------------------- strategy
@flax.struct.dataclass
class PNASState:
  """Attributes:
    codes: ``(N, L)`` int32 evaluated cells, in the order told (a buffer of N rows,
      ``capacity`` at first, doubled whenever it is full: nothing is forgotten).
    fitness: ``(N,)`` float32 their scalar fitness (NaN: failed or empty slot).
    levels: ``(N,)`` int32 their numbers of blocks (0: empty slot).
    inserted: ``()`` int32 entries written (the next goes to row ``inserted``).
    predictor: the surrogate's parameters.
    queue: ``(Q, L)`` int32 candidates of the current level, best predicted first.
    queue_size: ``()`` int32 valid entries of the queue.
    quota: ``()`` int32 evaluations of this level (``min(K, queue_size)``).
    position: ``()`` int32 next queue entry to ask.
    level: ``()`` int32 blocks of the current level's cells.
    count: ``()`` int32 candidates told.
  """

  codes: jax.Array
  fitness: jax.Array
  levels: jax.Array
  inserted: jax.Array
  predictor: Any
  queue: jax.Array
  queue_size: jax.Array
  quota: jax.Array
  position: jax.Array
  level: jax.Array
  count: jax.Array


# PNAS's own settings: a beam of K = 256 cells per level (its CIFAR-10 search trained
# 136 + 4 * 256 = 1,160 cells) and an ensemble of 5 LSTM predictors (the paper also
# reports an ensemble of MLPs). The registered default beam, 16, was chosen for searches
# of about a hundred cells (docs/results/rl_pnas.md).
PAPER = {"beam": 256, "predictor": "lstm"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PNASConfig(Options):
  """Attributes:
    beam: K, cells evaluated per level after the first.
    first_level: how many one-block cells to evaluate (a random subset); None: all of
      them, as in PNAS.
    batch_size: candidates per ``ask``.
    predictor: ``"lstm"``, ``"mlp"`` or ``"both"``.
    members: M, ensemble members per predictor kind.
    embed, hidden: predictor widths.
    learning_rate: the surrogate's Adam step size.
    fit_steps: Adam steps per refit.
    capacity: rows of the buffer of evaluated cells at first (it doubles when full).
    objective: which objective is minimised, when ``reward`` is None.
    reward: a MnasNet reward config (:func:`~nasjax.search.hardware.make_scalarizer`),
      or None.
  """

  strategy = "pnas"
  presets = {"paper": PAPER}
  beam: int = option(16, integer(1))
  first_level: int | None = option(None, integer(1, none=True))
  batch_size: int = option(1, integer(1))
  predictor: str = option("lstm", one_of(*PREDICTORS))
  members: int = option(5, integer(1))
  embed: int = option(16, integer(1))
  hidden: int = option(32, integer(1))
  learning_rate: float = option(0.01, number(0, open_min=True))
  fit_steps: int = option(100, integer(1))
  capacity: int = option(128, integer(1))
  objective: int = option(0, integer(0))
  reward: Mapping[str, Any] | None = option(None, reward_config())

  def check(self) -> None:
    check_reward(self)


@dataclasses.dataclass(frozen=True, eq=False)
class PNAS:
  """Progressive search with a surrogate (see the module docstring).

  ``init``, ``ask`` and ``tell`` are compiled once per strategy object (which compares
  and hashes by identity): the runner and the benchmark call them without ``jit``, as
  the registry marks PNAS not jittable.

  Attributes:
    space: ``nb201``, ``macro`` or ``pnas_cell``.
    config: a :class:`PNASConfig`.
  """

  space: SearchSpace
  config: PNASConfig = PNASConfig()
  name = "pnas"
  # Under NB201's protocol the query that would pass the time budget is dropped, as in
  # NB201's random-search and REA scripts (nasjax.search.bench.charged_prefix).
  budget_crossing = "drop"

  def __post_init__(self):
    progression_for(self.space)  # a space PNAS cannot grow fails here

  @property
  def progression(self) -> Progression:
    return progression_for(self.space)

  @property
  def surrogate(self) -> Surrogate:
    cfg = self.config
    return Surrogate(self.progression, cfg.predictor, cfg.members, cfg.embed, cfg.hidden,
                     cfg.learning_rate, cfg.fit_steps)

  def parents_at(self, level: int) -> int:
    """How many cells of ``level - 1`` blocks can have been evaluated, so expanded: all
    one-block cells for level 2, else the beam rounded up to whole batches."""
    if level <= 2:
      return len(self.progression.first)
    B = self.config.batch_size
    return -(-self.config.beam // B) * B

  @property
  def queue_length(self) -> int:
    """Q, the length of a level's queue of candidates: every expansion of every parent."""
    prog = self.progression
    return max([len(prog.first)] + [self.parents_at(b) * len(prog.combos[b - 1])
                                    for b in range(2, prog.levels + 1)])

  # -- helpers ------------------------------------------------------------------------
  def _fingerprints(self, codes: jax.Array) -> jax.Array:
    """``(N, 2)`` uint32 identities of canonical codes ``(N, L)``."""
    if self.space.size < 2 ** 31:
      rank = self.space.index(codes).astype(jnp.uint32)
      return jnp.stack([rank, jnp.zeros_like(rank)], axis=1)
    # Two linear hashes with fixed random odd multipliers (wrapping uint32 arithmetic):
    # distinct codes collide in both with probability about 2**-64.
    mult = np.random.default_rng(0).integers(0, 2 ** 31, (2, codes.shape[1])) * 2 + 1
    c = codes.astype(jnp.uint32)
    h1 = jnp.sum(c * jnp.asarray(mult[0], jnp.uint32), axis=1, dtype=jnp.uint32)
    h2 = jnp.sum(c * jnp.asarray(mult[1], jnp.uint32), axis=1, dtype=jnp.uint32)
    return jnp.stack([h1, h2], axis=1)

  def _scalar(self, fitness) -> jax.Array:
    cfg = self.config
    scalarizer = make_scalarizer(cfg.reward, cfg.num_objectives)
    if scalarizer is None:
      return select_objective(fitness, cfg.objective)
    return scalarizer(fitness_matrix(fitness, cfg.num_objectives))

  def _ranked_queue(self, predictor, children: jax.Array, valid: jax.Array, level,
                    state_codes, state_levels) -> tuple[jax.Array, jax.Array]:
    """Children ordered by predicted reward, the unevaluated valid ones first."""
    children = jax.vmap(self.space.canonical)(children)
    seen_fp = self._fingerprints(state_codes)
    fp = self._fingerprints(children)
    seen = jnp.any(jnp.all(fp[:, None, :] == seen_fp[None, :, :], axis=-1) &
                   (state_levels > 0)[None, :], axis=1)
    ok = valid & ~seen
    levels = jnp.full((children.shape[0],), level, jnp.int32)
    score = self.surrogate.predict(predictor, children, levels)
    order = jnp.argsort(jnp.where(ok, -score, jnp.inf), stable=True)
    return children[order], jnp.sum(ok).astype(jnp.int32)

  def _level_candidates(self, state: PNASState, level) -> tuple[jax.Array, jax.Array]:
    """``(Q, L)`` expansions of every evaluated cell of ``level - 1`` blocks (each cell
    once, failed ones not), and which rows hold one."""
    prog, Q, L = self.progression, self.queue_length, self.space.length
    fp = self._fingerprints(state.codes)
    earlier = jnp.arange(fp.shape[0])[None, :] < jnp.arange(fp.shape[0])[:, None]
    repeat = jnp.any(jnp.all(fp[:, None, :] == fp[None, :, :], axis=-1) & earlier &
                     jnp.isfinite(state.fitness)[None, :], axis=1)
    f = jnp.where((state.levels == level - 1) & jnp.isfinite(state.fitness) & ~repeat,
                  state.fitness, jnp.inf)
    order = jnp.argsort(f, stable=True)

    def branch(b):
      def fn(_):
        top = order[:min(self.parents_at(b), f.shape[0])]
        parent_ok = jnp.isfinite(f[top])
        kids = prog.children(state.codes[top], b)
        ok = jnp.repeat(parent_ok, len(prog.combos[b - 1]))
        pad = Q - kids.shape[0]
        return (jnp.concatenate([kids, jnp.zeros((pad, L), jnp.int32)]),
                jnp.concatenate([ok, jnp.zeros((pad,), bool)]))
      return fn

    branches = [branch(b) for b in range(2, prog.levels + 1)]
    return jax.lax.switch(jnp.clip(level - 2, 0, len(branches) - 1), branches, None)

  # -- protocol -----------------------------------------------------------------------
  def init(self, key: jax.Array) -> PNASState:
    """The empty buffer, the untrained surrogate and the one-block cells in random order."""
    return _init(self, key)

  def _init_impl(self, key):
    k_pred, k_order = jax.random.split(key)
    prog, N, L, Q = self.progression, self.config.capacity, self.space.length, self.queue_length
    first_level = self.config.first_level
    first = jnp.asarray(prog.first)
    first = first[jax.random.permutation(k_order, first.shape[0])]
    queue = jnp.zeros((Q, L), jnp.int32).at[:first.shape[0]].set(first)
    n1 = first.shape[0]
    zero = jnp.zeros((), jnp.int32)
    return PNASState(
        codes=jnp.zeros((N, L), jnp.int32), fitness=jnp.full((N,), jnp.nan, jnp.float32),
        levels=jnp.zeros((N,), jnp.int32), inserted=zero,
        predictor=self.surrogate.init(k_pred), queue=queue,
        queue_size=jnp.asarray(n1, jnp.int32),
        quota=jnp.asarray(n1 if first_level is None else min(first_level, n1), jnp.int32),
        position=zero, level=jnp.ones((), jnp.int32), count=zero)

  def ask(self, key: jax.Array, state: PNASState) -> tuple[jax.Array, PNASState]:
    """Returns ``(codes (batch_size, L) int32, state)``: the next queue entries."""
    return _ask(self, key, state)

  def tell(self, key, state: PNASState, candidates, fitness) -> PNASState:
    """Record the candidates; at the end of a level refit the surrogate and rank the next.

    When the buffer of evaluated cells cannot hold the candidates, it is doubled first
    (on the host: a ``tell`` traced under the caller's ``jit`` cannot grow it, and then
    records no cell past its capacity).
    """
    codes = jnp.asarray(candidates, jnp.int32)
    return _tell(self, key, grown(state, codes.shape[0]), codes,
                 jnp.asarray(fitness, jnp.float32))

  def _ask_impl(self, key, state: PNASState):
    del key  # the queue is already ranked
    idx = (state.position + jnp.arange(self.config.batch_size)) % jnp.maximum(
        state.queue_size, 1)
    return state.queue[idx], state

  def _tell_impl(self, key, state: PNASState, candidates, fitness) -> PNASState:
    del key
    codes = jnp.asarray(candidates, jnp.int32)
    f = self._scalar(fitness)
    B = codes.shape[0]
    slots = state.inserted + jnp.arange(B)
    state = state.replace(
        codes=state.codes.at[slots].set(codes, mode="drop"),
        fitness=state.fitness.at[slots].set(f, mode="drop"),
        levels=state.levels.at[slots].set(jnp.full((B,), state.level), mode="drop"),
        inserted=state.inserted + B, position=state.position + B, count=state.count + B)

    def advance(s: PNASState) -> PNASState:
      valid = (s.levels > 0) & jnp.isfinite(s.fitness)
      predictor = self.surrogate.fit(s.predictor, s.codes, s.levels, -s.fitness, valid)
      level = jnp.minimum(s.level + 1, self.progression.levels)
      children, ok = self._level_candidates(s, level)
      queue, size = self._ranked_queue(predictor, children, ok, level, s.codes, s.levels)
      return s.replace(predictor=predictor, queue=queue, queue_size=size,
                       quota=jnp.maximum(jnp.minimum(self.config.beam, size), 1),
                       position=jnp.zeros((), jnp.int32), level=level)

    return jax.lax.cond(state.position >= state.quota, advance, lambda s: s, state)


def grown(state: PNASState, more: int) -> PNASState:
  """``state`` with its buffer of evaluated cells doubled until ``more`` further cells fit
  (the new rows empty); ``state`` itself when they fit, or when it is being traced."""
  if isinstance(state.inserted, jax.core.Tracer):
    return state
  n, need = state.fitness.shape[0], int(state.inserted) + more
  if need <= n:
    return state
  size = n
  while size < need:
    size *= 2
  pad = size - n
  return state.replace(
      codes=jnp.concatenate([state.codes, jnp.zeros((pad, state.codes.shape[1]), jnp.int32)]),
      fitness=jnp.concatenate([state.fitness, jnp.full((pad,), jnp.nan, jnp.float32)]),
      levels=jnp.concatenate([state.levels, jnp.zeros((pad,), jnp.int32)]))


# Compiled once per strategy object: the static first argument hashes by identity.
_init = jax.jit(PNAS._init_impl, static_argnums=0)
_ask = jax.jit(PNAS._ask_impl, static_argnums=0)
_tell = jax.jit(PNAS._tell_impl, static_argnums=0)


register_strategy(
    "pnas", PNAS, options=PNASConfig, spaces=tuple(PROGRESSIONS), multi_objective=False,
    jittable=False,
    smoke={"space": "pnas_cell", "space_config": {"max_blocks": 2, "C": 4, "layers": 3},
           "config": {"beam": 2, "first_level": 2, "batch_size": 2, "members": 2,
                      "fit_steps": 5},
           "max_evals": 4},
    description="progressive NAS with an LSTM/MLP ensemble surrogate (Liu et al. 2018)")
