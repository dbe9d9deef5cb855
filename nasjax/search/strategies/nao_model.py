"""The model of Neural Architecture Optimization (Luo et al., NeurIPS 2018, §3).

An architecture is a sequence of tokens. An LSTM *encoder* maps it to a sequence of
unit-norm hidden states ``e_x = (h_1, ..., h_T)``, the continuous representation that
NAO optimises; a *performance predictor* (an MLP with a sigmoid output) reads the
normalised mean of ``e_x``; an LSTM *decoder* with attention over ``e_x``, started from
that mean, reconstructs the tokens. The three are trained jointly on every evaluated
architecture with ``lam * MSE(predicted, measured) + (1 - lam) * NLL(tokens)`` (§3.4).
To search, the representation of a good architecture is moved along the predictor's
gradient, ``e' = e + eta * df/de`` (§3.3), and decoded back to an architecture.

Token sequences (:class:`TokenScheme`) follow NAO's vocabulary: token 0 starts the
decoder, then one block of tokens for node inputs and one for ops, so an input index and
an op index never share a token. The decoder masks, at each position, the tokens that
position cannot take (an op where an input belongs, an input that is not yet computed),
so greedy decoding always yields a valid code.

- DARTS cell (:class:`~nasjax.search.spaces.DartsCellSpace`): the code's own order,
  ``input, op`` for each of the two edges of each node, normal cell then reduction
  cell, as NAO writes a cell. The two ``(input, op)`` pairs of a node feed a sum, so
  exchanging them gives the same architecture: NAO's symmetric augmentation exchanges
  them at random during training and :meth:`TokenScheme.canonical` orders them when
  architectures are compared.
- NB201 cell: for each of the six edges ``j <- i`` the input token of ``i`` (fixed by
  the position, so it carries topology but no choice) and the op token. An NB201 edge
  is identified by its two endpoints, so no exchange of edges keeps the architecture:
  this space has no symmetric augmentation.
- Any other space: one token block per code position.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.models import NB201_EDGES, NB201_OPS
from nasjax.search.spaces import DARTS_SEARCH_OPS, DartsCellSpace, NB201Space, SearchSpace

START = 0  # the token that starts decoding


# ---------------------------------------------------------------------------- tokens
@dataclasses.dataclass(frozen=True)
class TokenScheme:
  """How codes of a space map to token sequences and back.

  Token ``t`` of a sequence is ``offset[t] + code[source[t]]``, or the constant
  ``offset[t]`` where ``source[t] == -1`` (a token fixed by its position). Position
  ``t`` accepts the ``choices[t]`` tokens from ``offset[t]`` on.

  Attributes:
    source: ``(T,)`` code position read by each token, -1 for a fixed token.
    offset: ``(T,)`` the token of value 0 at each position.
    choices: ``(T,)`` how many tokens each position accepts (1 for a fixed token).
    vocab_size: V, including the start token 0.
    swaps: pairs ``(a, b)`` of equally long code-position groups whose exchange leaves
      the architecture unchanged (the two edges of a DARTS node).
    valid: ``(T, V)`` bool, the tokens each position accepts (derived).
  """

  source: tuple[int, ...]
  offset: tuple[int, ...]
  choices: tuple[int, ...]
  vocab_size: int
  swaps: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] = ()
  valid: np.ndarray = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    if not len(self.source) == len(self.offset) == len(self.choices):
      raise ValueError("source, offset and choices must have one entry per token, got "
                       f"{len(self.source)}, {len(self.offset)}, {len(self.choices)}")
    fed = sorted(s for s in self.source if s >= 0)
    if fed != list(range(len(fed))):
      raise ValueError(f"every code position must feed exactly one token, got {self.source}")
    top = max(o + c for o, c in zip(self.offset, self.choices))
    if min(self.offset) < 1 or top > self.vocab_size:
      raise ValueError(f"tokens must lie in [1, {self.vocab_size}), got offsets {self.offset} "
                       f"with choices {self.choices}")
    v = np.arange(self.vocab_size)[None, :]
    off, n = np.asarray(self.offset)[:, None], np.asarray(self.choices)[:, None]
    object.__setattr__(self, "valid", (v >= off) & (v < off + n))

  @property
  def length(self) -> int:
    """T, the length of a token sequence."""
    return len(self.source)

  @property
  def code_length(self) -> int:
    """L, the length of a code."""
    return sum(s >= 0 for s in self.source)

  def tokens(self, codes: jax.Array) -> jax.Array:
    """Token sequences ``(..., T)`` int32 of codes ``(..., L)``."""
    src = np.asarray(self.source)
    picked = jnp.take(jnp.asarray(codes, jnp.int32), np.maximum(src, 0), axis=-1)
    return jnp.where(src >= 0, picked + np.asarray(self.offset), np.asarray(self.offset))

  def codes(self, tokens: jax.Array) -> jax.Array:
    """Codes ``(..., L)`` int32 of token sequences ``(..., T)`` (inverse of :meth:`tokens`)."""
    where = np.argsort(np.where(np.asarray(self.source) >= 0, self.source, len(self.source)))
    where = where[:self.code_length]
    return (jnp.take(jnp.asarray(tokens, jnp.int32), where, axis=-1) -
            np.asarray(self.offset)[where]).astype(jnp.int32)

  def _exchange(self, codes: jax.Array, a, b, flip: jax.Array) -> jax.Array:
    perm = np.arange(codes.shape[-1])
    perm[list(a)], perm[list(b)] = list(b), list(a)
    return jnp.where(flip[..., None], codes[..., perm], codes)

  def canonical(self, codes: jax.Array) -> jax.Array:
    """Codes ``(..., L)`` with each swap group pair in ascending lexicographic order, so
    that codes of one architecture become equal."""
    codes = jnp.asarray(codes, jnp.int32)
    radix = max(self.choices) + 1
    for a, b in self.swaps:
      w = radix ** np.arange(len(a) - 1, -1, -1)
      flip = codes[..., list(a)] @ w > codes[..., list(b)] @ w
      codes = self._exchange(codes, a, b, flip)
    return codes

  def augment(self, key: jax.Array, codes: jax.Array) -> jax.Array:
    """Codes ``(..., L)`` with each swap applied independently with probability 1/2
    (NAO's symmetric augmentation); unchanged when the space has no swaps."""
    codes = jnp.asarray(codes, jnp.int32)
    for k, (a, b) in zip(jax.random.split(key, max(len(self.swaps), 1)), self.swaps):
      codes = self._exchange(codes, a, b, jax.random.bernoulli(k, 0.5, codes.shape[:-1]))
    return codes


def token_scheme(space: SearchSpace) -> TokenScheme:
  """The token scheme of ``space`` (see the module docstring)."""
  if isinstance(space, NB201Space):
    nodes, n_ops = 3, len(NB201_OPS)  # inputs 0..2 feed the edges
    source, offset, choices = [], [], []
    for e, (_, i) in enumerate(NB201_EDGES):
      source += [-1, e]
      offset += [1 + i, 1 + nodes]
      choices += [1, n_ops]
    return TokenScheme(tuple(source), tuple(offset), tuple(choices), 1 + nodes + n_ops)
  if isinstance(space, DartsCellSpace):
    n_in, n_ops = space.steps + 1, len(DARTS_SEARCH_OPS)  # the last node reads 0..steps
    offset = tuple(1 if p % 2 == 0 else 1 + n_in for p in range(space.length))
    swaps = []
    for cell in range(2):
      for node in range(space.steps):
        base = cell * 4 * space.steps + 4 * node
        swaps.append(((base, base + 1), (base + 2, base + 3)))
    return TokenScheme(tuple(range(space.length)), offset, tuple(space.num_choices),
                       1 + n_in + n_ops, tuple(swaps))
  n = space.num_choices
  offset = tuple(1 + int(np.sum(n[:p])) for p in range(len(n)))
  return TokenScheme(tuple(range(len(n))), offset, tuple(n), 1 + int(np.sum(n)))


# ---------------------------------------------------------------------------- modules
def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pool(memory: jax.Array) -> jax.Array:
  """The architecture embedding: the unit-norm mean of ``memory (..., T, H)`` -> ``(..., H)``."""
  return _unit(jnp.mean(memory, axis=-2))


class Encoder(nn.Module):
  """Token embedding and a one-layer LSTM; ``(B, T)`` tokens -> ``(B, T, H)`` unit-norm
  states."""

  vocab_size: int
  embed_dim: int
  hidden: int

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab_size, self.embed_dim)(tokens)
    return _unit(nn.RNN(nn.OptimizedLSTMCell(self.hidden))(x))


class Predictor(nn.Module):
  """ReLU MLP on the embedding ``(B, H)`` -> ``(B,)`` predicted score in (0, 1)."""

  layers: int
  hidden: int

  @nn.compact
  def __call__(self, emb):
    x = emb
    for _ in range(self.layers):
      x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.sigmoid(nn.Dense(1)(x))[..., 0]


class DecoderStep(nn.Module):
  """One decoder step: LSTM on the previous token, then global (dot-product) attention
  over the encoder states, as in NAO's decoder.

  The carry is ``((c, h), previous token (B,))``; ``teacher (B,)`` is the true token
  (teacher forcing) or -1 to feed back the greedy choice; ``valid (V,)`` masks the
  tokens the position cannot take.
  """

  vocab_size: int
  embed_dim: int
  hidden: int

  @nn.compact
  def __call__(self, carry, teacher, valid, memory):
    lstm, prev = carry
    x = nn.Embed(self.vocab_size, self.embed_dim)(prev)
    lstm, h = nn.OptimizedLSTMCell(self.hidden)(lstm, x)
    attn = jax.nn.softmax(jnp.einsum("bh,bth->bt", h, memory), axis=-1)
    context = jnp.einsum("bt,bth->bh", attn, memory)
    mixed = jnp.tanh(nn.Dense(self.hidden)(jnp.concatenate([h, context], axis=-1)))
    logits = jnp.where(valid, nn.Dense(self.vocab_size)(mixed), -1e9)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return (lstm, jnp.where(teacher >= 0, teacher, greedy)), (logits, greedy)


class Decoder(nn.Module):
  """Runs :class:`DecoderStep` over the T positions, started from the embedding of
  ``memory``: ``(memory (B, T, H), targets (B, T), valid (T, V))`` ->
  ``(logits (B, T, V), greedy tokens (B, T))``."""

  vocab_size: int
  embed_dim: int
  hidden: int

  @nn.compact
  def __call__(self, memory, targets, valid):
    emb = pool(memory)
    start = jnp.full(memory.shape[:1], START, jnp.int32)
    scan = nn.scan(DecoderStep, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=(0, 0, nn.broadcast), out_axes=0)
    step = scan(self.vocab_size, self.embed_dim, self.hidden)
    _, (logits, greedy) = step(((emb, emb), start), targets.T, valid, memory)
    return jnp.swapaxes(logits, 0, 1), greedy.T


class NAONet(nn.Module):
  """Encoder, predictor and decoder with shared parameters; see :class:`NAOModel`."""

  vocab_size: int
  embed_dim: int
  hidden: int
  mlp_layers: int
  mlp_hidden: int

  def setup(self):
    self.encoder = Encoder(self.vocab_size, self.embed_dim, self.hidden)
    self.predictor = Predictor(self.mlp_layers, self.mlp_hidden)
    self.decoder = Decoder(self.vocab_size, self.embed_dim, self.hidden)

  def __call__(self, tokens, valid):
    memory = self.encoder(tokens)
    logits, _ = self.decoder(memory, tokens, valid)
    return self.predictor(pool(memory)), logits

  def encode(self, tokens):
    return self.encoder(tokens)

  def predict(self, memory):
    return self.predictor(pool(memory))

  def decode(self, memory, targets, valid):
    return self.decoder(memory, targets, valid)


# ---------------------------------------------------------------------------- model
@dataclasses.dataclass(frozen=True)
class NAOModel:
  """NAO's encoder-predictor-decoder for a search space, with its training and search.

  Hashable (it is the static argument of the jitted methods), so models of equal
  configuration share compiled programs.

  Attributes:
    space: the search space whose codes are modelled.
    embed_dim: token embedding size.
    hidden: LSTM size H (the representation is ``(T, H)``).
    mlp_layers: hidden layers of the predictor.
    mlp_hidden: their width.
    trade_off: lam, the weight of the predictor's MSE against the decoder's NLL.
    learning_rate: Adam's step size.
    weight_decay: L2 penalty added to the gradients (as NAO's Adam).
    grad_clip: global gradient-norm clip.
    batch_size: architectures per training step.
    scheme: the space's :class:`TokenScheme` (derived).
    net: the flax modules (:class:`NAONet`, derived).
    optimizer: the optax training transformation: global-norm clipping, the L2 penalty
      and Adam (derived).
  """

  space: SearchSpace
  embed_dim: int = 32
  hidden: int = 64
  mlp_layers: int = 1
  mlp_hidden: int = 64
  trade_off: float = 0.8
  learning_rate: float = 0.005
  weight_decay: float = 1e-4
  grad_clip: float = 5.0
  batch_size: int = 32
  scheme: TokenScheme = dataclasses.field(init=False, repr=False, compare=False)
  net: NAONet = dataclasses.field(init=False, repr=False, compare=False)
  optimizer: optax.GradientTransformation = dataclasses.field(init=False, repr=False,
                                                               compare=False)

  def __post_init__(self):
    for what in ("embed_dim", "hidden", "mlp_hidden", "batch_size"):
      v = getattr(self, what)
      if not isinstance(v, int) or v < 1:
        raise ValueError(f"{what} must be a positive int, got {v!r}")
    if not isinstance(self.mlp_layers, int) or self.mlp_layers < 0:
      raise ValueError(f"mlp_layers must be a non-negative int, got {self.mlp_layers!r}")
    if not 0.0 <= self.trade_off <= 1.0:
      raise ValueError(f"trade_off must lie in [0, 1], got {self.trade_off!r}")
    for what in ("learning_rate", "grad_clip"):
      if not getattr(self, what) > 0:
        raise ValueError(f"{what} must be positive, got {getattr(self, what)!r}")
    if not self.weight_decay >= 0:
      raise ValueError(f"weight_decay must be non-negative, got {self.weight_decay!r}")
    scheme = token_scheme(self.space)
    object.__setattr__(self, "scheme", scheme)
    object.__setattr__(self, "net", NAONet(scheme.vocab_size, self.embed_dim, self.hidden,
                                           self.mlp_layers, self.mlp_hidden))
    # Adam with an L2 penalty added to the gradients (NAO's Adam with weight decay).
    object.__setattr__(self, "optimizer", optax.chain(
        optax.clip_by_global_norm(self.grad_clip), optax.add_decayed_weights(self.weight_decay),
        optax.adam(self.learning_rate)))

  def init(self, key: jax.Array) -> tuple[Any, Any]:
    """``(params, opt_state)`` of a fresh model."""
    tokens = jnp.asarray(self.scheme.offset, jnp.int32)[None]
    params = self.net.init(key, tokens, self.scheme.valid)
    return params, self.optimizer.init(params)

  # -- pieces ---------------------------------------------------------------------
  def _valid_codes(self, codes: jax.Array) -> jax.Array:
    return jax.vmap(self.space.canonical)(codes.reshape(-1, codes.shape[-1])).reshape(
        codes.shape)

  def _loss(self, params, codes, target, weight, rec_weight):
    tokens = self.scheme.tokens(codes)
    pred, logits = self.net.apply(params, tokens, self.scheme.valid)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.mean(jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0], axis=-1)
    hit = jnp.mean(jnp.argmax(logits, axis=-1) == tokens, axis=-1)
    mean = lambda w, v: jnp.sum(w * v) / jnp.maximum(jnp.sum(w), 1e-12)
    mse, nll, hit = mean(weight, (pred - target) ** 2), mean(rec_weight, nll), mean(rec_weight, hit)
    return self.trade_off * mse + (1.0 - self.trade_off) * nll, (mse, nll, hit)

  # -- jitted API -------------------------------------------------------------------
  @functools.partial(jax.jit, static_argnums=(0,), static_argnames=("epochs",))
  def train(self, params, opt_state, codes, target, weight, key, rec_weight=None, *,
            epochs: int):
    """Train jointly for ``epochs`` passes over the weighted architectures.

    Each epoch shuffles the rows of nonzero weight to the front and runs over their
    batches of ``batch_size``; the batches of padding rows only are not run (their
    number is computed in the program, so ``codes`` may be padded to a fixed size and
    one program serves a growing set). Swaps are re-drawn per batch. The loss of a batch
    is ``lam * MSE + (1 - lam) * NLL``, each a weighted mean over the batch's rows.

    Args:
      params, opt_state: the model's parameters and Adam state.
      codes: ``(N, L)`` int codes, N a multiple of ``min(batch_size, N)``.
      target: ``(N,)`` float measured scores, normalised to [0, 1] (higher is better).
      weight: ``(N,)`` float weights of the rows in the MSE; 0 marks padding, failed
        evaluations and unlabeled rows.
      key: PRNG key for shuffling and augmentation.
      rec_weight: ``(N,)`` float weights of the rows in the reconstruction NLL (default
        ``weight``); nonzero for unlabeled architectures too.
      epochs: number of passes (static).

    Returns:
      ``(params, opt_state, metrics)``: the last epoch's weighted means of ``loss``,
      ``mse``, ``nll`` and the teacher-forced ``token_accuracy`` (zeros, and the
      parameters unchanged, when every weight is 0).
    """
    n = codes.shape[0]
    b = min(self.batch_size, n)
    if n % b:
      raise ValueError(f"{n} rows are not a multiple of the batch size {b}")
    codes = jnp.asarray(codes, jnp.int32)
    target = jnp.asarray(target, jnp.float32)
    weight = jnp.asarray(weight, jnp.float32)
    rec_weight = weight if rec_weight is None else jnp.asarray(rec_weight, jnp.float32)
    mass_of = weight + rec_weight
    live = (jnp.sum(mass_of > 0) + b - 1) // b  # batches holding a real row
    grad = jax.value_and_grad(self._loss, has_aux=True)

    def epoch(carry, k):
      k_perm, k_aug = jax.random.split(k)
      order = jnp.argsort(jnp.where(mass_of > 0, jax.random.uniform(k_perm, (n,)), 2.0))
      batches = order.reshape(n // b, b)
      keys = jax.random.split(k_aug, n // b)

      def batch_step(i, c):
        params, opt_state, total, mass = c
        idx = batches[i]
        (loss, aux), g = grad(params, self.scheme.augment(keys[i], codes[idx]),
                              target[idx], weight[idx], rec_weight[idx])
        updates, opt_state = self.optimizer.update(g, opt_state, params)
        w = jnp.sum(mass_of[idx])
        return (optax.apply_updates(params, updates), opt_state,
                total + w * jnp.stack([loss, *aux]), mass + w)

      params, opt_state, total, mass = jax.lax.fori_loop(
          0, live, batch_step, (*carry, jnp.zeros(4, jnp.float32), jnp.float32(0)))
      return (params, opt_state), total / jnp.maximum(mass, 1e-12)

    (params, opt_state), stats = jax.lax.scan(epoch, (params, opt_state),
                                              jax.random.split(key, epochs))
    last = stats[-1]
    return params, opt_state, {"loss": last[0], "mse": last[1], "nll": last[2],
                               "token_accuracy": last[3]}

  @functools.partial(jax.jit, static_argnums=(0,))
  def encode(self, params, codes: jax.Array) -> jax.Array:
    """``(N, T, H)`` unit-norm representations of codes ``(N, L)``."""
    return self.net.apply(params, self.scheme.tokens(codes), method=NAONet.encode)

  @functools.partial(jax.jit, static_argnums=(0,))
  def predict(self, params, codes: jax.Array) -> jax.Array:
    """``(N,)`` predicted normalised scores (higher is better) of codes ``(N, L)``."""
    memory = self.net.apply(params, self.scheme.tokens(codes), method=NAONet.encode)
    return self.net.apply(params, memory, method=NAONet.predict)

  @functools.partial(jax.jit, static_argnums=(0,))
  def predict_memory(self, params, memory: jax.Array) -> jax.Array:
    """``(N,)`` predicted scores of representations ``(N, T, H)``."""
    return self.net.apply(params, memory, method=NAONet.predict)

  @functools.partial(jax.jit, static_argnums=(0,))
  def decode(self, params, memory: jax.Array) -> jax.Array:
    """Greedy, masked decoding of representations ``(N, T, H)`` -> valid codes ``(N, L)``."""
    targets = jnp.full(memory.shape[:2], -1, jnp.int32)
    _, tokens = self.net.apply(params, memory, targets, self.scheme.valid,
                               method=NAONet.decode)
    return self._valid_codes(self.scheme.codes(tokens))

  def reconstruct(self, params, codes: jax.Array) -> jax.Array:
    """Codes ``(N, L)`` decoded from their own encodings (the autoencoder's output)."""
    return self.decode(params, self.encode(params, codes))

  @functools.partial(jax.jit, static_argnums=(0,), static_argnames=("max_steps",))
  def step(self, params, memory: jax.Array, step_size, *, max_steps: int) -> jax.Array:
    """NAO's move in the representation (§3.3), with growing step sizes.

    Args:
      params: model parameters.
      memory: ``(K, T, H)`` representations of the seed architectures.
      step_size: eta; step ``j`` (1..max_steps) moves by ``j * eta`` along the gradient.
      max_steps: J, the number of step sizes tried (static).

    Returns:
      ``(K, J, L)`` codes decoded from ``unit(e + j * eta * df/de)``.
    """
    grads = jax.grad(lambda m: jnp.sum(self.net.apply(params, m, method=NAONet.predict)))(
        memory)
    scale = step_size * jnp.arange(1, max_steps + 1, dtype=jnp.float32)
    moved = _unit(memory[:, None] + scale[None, :, None, None] * grads[:, None])
    k, j, t, h = moved.shape
    return self.decode(params, moved.reshape(k * j, t, h)).reshape(k, j, -1)

  @functools.partial(jax.jit, static_argnums=(0,))
  def pick_new(self, candidates: jax.Array, known: jax.Array, known_mask: jax.Array,
               priority: jax.Array | None = None):
    """For each seed in turn, the candidate of highest priority (by default the first,
    i.e. the smallest step) that is neither known nor picked for an earlier seed
    (architectures compared up to the scheme's swaps).

    Args:
      candidates: ``(K, J, L)`` codes, in order of growing step.
      known: ``(N, L)`` codes already evaluated.
      known_mask: ``(N,)`` bool, which rows of ``known`` are real.
      priority: ``(K, J)`` float, higher is preferred (ties: the smaller step).

    Returns:
      ``(codes (K, L), found (K,) bool, step (K,) int32)``: the picked code of each seed
      (its last candidate where none is new), whether it is new, and its step (1..J; 0
      where none was found).
    """
    canon = self.scheme.canonical(candidates)
    ref = self.scheme.canonical(known)
    seen = jnp.any(jnp.all(canon[:, :, None, :] == ref[None, None], axis=-1) &
                   known_mask[None, None, :], axis=-1)
    k, j, _ = candidates.shape
    if priority is None:
      priority = jnp.zeros((k, j), jnp.float32)

    def choose(picked, xs):
      i, cand, can, old, prio = xs
      dup = jnp.any(jnp.all(can[:, None, :] == picked[None], axis=-1) &
                    (jnp.arange(k) < i)[None, :], axis=-1)
      new = ~old & ~dup
      first = jnp.argmax(jnp.where(new, prio, -jnp.inf))  # argmax takes the first of ties
      found = new[first]
      pick = jnp.where(found, first, j - 1)
      return picked.at[i].set(can[pick]), (cand[pick], found, jnp.where(found, first + 1, 0))

    _, (codes, found, step) = jax.lax.scan(
        choose, jnp.zeros((k, candidates.shape[-1]), jnp.int32),
        (jnp.arange(k), candidates, canon, seen, jnp.asarray(priority, jnp.float32)))
    return codes, found, step.astype(jnp.int32)

  @functools.partial(jax.jit, static_argnums=(0,), static_argnames=("k",))
  def pick_best(self, candidates: jax.Array, known: jax.Array, known_mask: jax.Array,
                priority: jax.Array, *, k: int):
    """The ``k`` distinct candidates of highest priority that are not known (the
    predictor as a filter over a pool of decoded architectures, compared up to the
    scheme's swaps).

    Args:
      candidates: ``(M, L)`` codes.
      known: ``(N, L)`` codes already evaluated.
      known_mask: ``(N,)`` bool, which rows of ``known`` are real.
      priority: ``(M,)`` float, higher is preferred (ties: the earlier candidate).
      k: how many to pick (static).

    Returns:
      ``(codes (k, L), found (k,) bool, index (k,) int32)``: the picked codes in order of
      falling priority, whether each is a new one (false once the pool's new candidates
      run out; such rows hold an arbitrary candidate), and its row in ``candidates``.
    """
    canon = self.scheme.canonical(candidates)
    ref = self.scheme.canonical(known)
    seen = jnp.any(jnp.all(canon[:, None, :] == ref[None], axis=-1) & known_mask[None],
                   axis=-1)
    m = candidates.shape[0]
    same = jnp.all(canon[:, None, :] == canon[None], axis=-1)
    repeat = jnp.any(same & (jnp.arange(m)[None, :] < jnp.arange(m)[:, None]), axis=-1)
    score = jnp.where(~seen & ~repeat, jnp.asarray(priority, jnp.float32), -jnp.inf)
    top, index = jax.lax.top_k(score, min(k, m))
    if k > m:
      top = jnp.concatenate([top, jnp.full((k - m,), -jnp.inf)])
      index = jnp.concatenate([index, jnp.zeros((k - m,), index.dtype)])
    return candidates[index], jnp.isfinite(top), index.astype(jnp.int32)
