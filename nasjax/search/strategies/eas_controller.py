"""The EAS meta-controller: an encoder and two actors (Cai et al., AAAI 2018, §3, §3.1).

The network to transform is a variable-length sequence of layer tokens
(``conv-<filters>-<kernel>``, ``pool``, ``gap``, ``fc-<units>``). The encoder embeds the
tokens and runs a bidirectional LSTM over them, giving every layer a hidden state that
sees the whole network. Two actors read it:

- **Net2Wider actor**: one sigmoid classifier, shared by all layers, decides from each
  layer's hidden state whether that layer widens to the next discrete width. Layers that
  cannot widen (already at the top width, pools, the classifier) are masked out and make
  no decision.
- **Net2Deeper actor**: an LSTM whose initial state is the encoder's final state (both
  directions concatenated) makes five decisions in turn (:data:`DEEPER_DECISIONS`), each
  fed back as the next input: the block (the conv layers between two pools, or the dense
  layers after global pooling), the position inside the block (insert after its ``p``-th
  layer), and the new conv layer's filter height, filter width and stride (§3.1). In the
  dense block there is no filter or stride to choose: those decisions are 0 and add
  nothing to the log-probability.

The LSTMs are :class:`flax.linen.OptimizedLSTMCell` (the encoder's two directions scanned
with ``nn.scan``, padded steps leaving the state unchanged), and the parameters are drawn
on the host, uniform in ``[-0.08, 0.08]``, which keeps the controller's initialisation
time small next to a child's training.

An observation of one network is a dict of arrays (see :func:`observation_spec`); a
batch of ``n`` observations has a leading axis. Every function here is pure and jits;
``uniform=True`` replaces every logit by 0, so the same code samples the uniformly
random policy the controller is compared against. ``uniform`` may be a traced bool: one
compiled program serves both policies.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# A masked logit: finite, so that 0 * log p stays 0 where a choice is masked out.
NEG = -1e9
INIT_SCALE = 0.08
# The Net2Deeper actor's decisions, in the order it makes them; an action is an int32
# array of their indices (block, position in it, filter height and width among the
# kernel sizes, stride among the strides).
DEEPER_DECISIONS = ("block", "position", "height", "width", "stride")


class LSTM(nn.Module):
  """An LSTM layer (a :class:`flax.linen.OptimizedLSTMCell` scanned over the steps).

  Called on ``(xs (L, E), mask (L,))`` it runs over the steps where ``mask`` holds (in
  reverse with ``reverse``; a masked step leaves the state as it is) and returns
  ``((c, h) final, outputs (L, H))``, outputs 0 at masked steps.

  Attributes:
    hidden: H, the state size.
    reverse: run from the last step to the first.
  """

  hidden: int
  reverse: bool = False

  @nn.compact
  def __call__(self, xs: jax.Array, mask: jax.Array):
    def body(cell, carry, inputs):
      x, m = inputs
      new, h = cell(carry, x)
      new = jax.tree_util.tree_map(lambda a, b: jnp.where(m, a, b), new, carry)
      return new, jnp.where(m, h, 0.0)

    scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False},
                   reverse=self.reverse)
    zero = jnp.zeros((self.hidden,), xs.dtype)
    return scan(nn.OptimizedLSTMCell(self.hidden, name="cell"), (zero, zero), (xs, mask))


def observation_spec(max_len: int, max_blocks: int) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Shapes and dtypes of one observation (one network).

  - ``tokens`` ``(max_len,)`` int32: the layer tokens, padded with 0 after ``length``;
  - ``length`` ``()`` int32: number of layers;
  - ``widen_mask`` ``(max_len,)`` bool: layers that may widen;
  - ``block_sizes`` ``(max_blocks,)`` int32: insertion positions in each block;
  - ``block_conv`` ``(max_blocks,)`` bool: the block takes conv layers (else dense);
  - ``deeper_ok`` ``()`` bool: whether any layer may be inserted at all.
  """
  return {"tokens": ((max_len,), jnp.int32), "length": ((), jnp.int32),
          "widen_mask": ((max_len,), jnp.bool_), "block_sizes": ((max_blocks,), jnp.int32),
          "block_conv": ((max_blocks,), jnp.bool_), "deeper_ok": ((), jnp.bool_)}


def _masked_log_softmax(logits: jax.Array, mask: jax.Array, uniform) -> jax.Array:
  logits = jnp.where(uniform, 0.0, logits)
  return jax.nn.log_softmax(jnp.where(mask, logits, NEG))


class EASController(nn.Module):
  """Encoder, Net2Wider actor and Net2Deeper actor.

  Attributes:
    vocab: number of layer tokens (0 is padding).
    max_len: the longest layer sequence (positions of the deeper actor).
    max_blocks: the most blocks a network has.
    num_kernels: kernel sizes the deeper actor chooses a filter height and a filter width
      from.
    num_strides: strides the deeper actor chooses from.
    embed: token embedding size.
    hidden: LSTM units per direction of the encoder (the deeper actor has twice as many).
  """

  vocab: int
  max_len: int
  max_blocks: int
  num_kernels: int
  num_strides: int = 1
  embed: int = 16
  hidden: int = 50

  def setup(self):
    h2 = 2 * self.hidden
    self.embedding = nn.Embed(self.vocab, self.embed)
    self.forward_lstm = LSTM(self.hidden)
    self.backward_lstm = LSTM(self.hidden, reverse=True)
    self.wider_head = nn.Dense(1)
    self.deeper_lstm = nn.OptimizedLSTMCell(h2)
    self.deeper_start = self.param("deeper_start", nn.initializers.zeros, (h2,))
    # One head per decision; each decision's embedding is the next decision's input.
    self.block_head = nn.Dense(self.max_blocks)
    self.pos_head = nn.Dense(self.max_len)
    self.height_head = nn.Dense(self.num_kernels)
    self.width_head = nn.Dense(self.num_kernels)
    self.stride_head = nn.Dense(self.num_strides)
    self.block_embed = nn.Embed(self.max_blocks, h2)
    self.pos_embed = nn.Embed(self.max_len, h2)
    self.height_embed = nn.Embed(self.num_kernels, h2)
    self.width_embed = nn.Embed(self.num_kernels, h2)

  def encode(self, tokens: jax.Array, length: jax.Array):
    """Per-layer states ``(L, 2H)`` and the final state ``(c, h)``, each ``(2H,)``."""
    x = self.embedding(tokens)
    mask = (jnp.arange(tokens.shape[0]) < length)[:, None]
    (c_f, h_f), out_f = self.forward_lstm(x, mask)
    (c_b, h_b), out_b = self.backward_lstm(x, mask)
    return (jnp.concatenate([out_f, out_b], -1),
            (jnp.concatenate([c_f, c_b]), jnp.concatenate([h_f, h_b])))

  def _wider(self, states, obs, widen, key, uniform):
    logits = jnp.where(uniform, 0.0, self.wider_head(states)[:, 0])
    mask = obs["widen_mask"]
    if widen is None:
      widen = jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(jnp.int32)
    widen = jnp.where(mask, widen, 0)
    logp = jnp.where(widen == 1, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))
    return widen, jnp.sum(jnp.where(mask, logp, 0.0)), jax.nn.sigmoid(logits)

  def _deeper(self, state, obs, action, key, uniform):
    n = len(DEEPER_DECISIONS)
    keys = jax.random.split(key, n) if key is not None else (None,) * n

    def decide(i, lstm_state, x, head, mask):
      lstm_state, h = self.deeper_lstm(lstm_state, x)
      logp = _masked_log_softmax(head(h), mask, uniform)
      given = None if action is None else action[i]
      if given is None:
        given = jax.random.categorical(keys[i], logp).astype(jnp.int32)
      return lstm_state, logp, given

    sizes = obs["block_sizes"]
    kernels, strides = jnp.ones(self.num_kernels, bool), jnp.ones(self.num_strides, bool)
    state, lp_block, block = decide(0, state, self.deeper_start, self.block_head, sizes > 0)
    state, lp_pos, pos = decide(1, state, self.block_embed(block), self.pos_head,
                                jnp.arange(self.max_len) < sizes[block])
    state, lp_h, height = decide(2, state, self.pos_embed(pos), self.height_head, kernels)
    state, lp_w, width = decide(3, state, self.height_embed(height), self.width_head, kernels)
    _, lp_s, stride = decide(4, state, self.width_embed(width), self.stride_head, strides)
    is_conv = obs["block_conv"][block]
    conv = jnp.where(is_conv, jnp.stack([height, width, stride]), 0)
    lp_conv = lp_h[conv[0]] + lp_w[conv[1]] + lp_s[conv[2]]
    logp = lp_block[block] + lp_pos[pos] + jnp.where(is_conv, lp_conv, 0.0)
    ok = obs["deeper_ok"]
    chosen = jnp.concatenate([jnp.stack([block, pos]), conv])
    return (jnp.where(ok, chosen, 0).astype(jnp.int32), jnp.where(ok, logp, 0.0),
            jnp.exp(lp_block))

  def wider(self, obs: dict, widen: jax.Array | None = None, key: jax.Array | None = None,
            uniform=False):
    """The Net2Wider decisions of one network.

    Args:
      obs: one observation.
      widen: ``(L,)`` int32 decisions to score; sampled from ``key`` when None.
      key: PRNG key for sampling.
      uniform: use probability 1/2 for every decision instead of the classifier.

    Returns:
      ``(widen (L,) int32, log-probability ())``; masked layers hold 0 and add nothing.
    """
    states, _ = self.encode(obs["tokens"], obs["length"])
    return self._wider(states, obs, widen, key, uniform)[:2]

  def deeper(self, obs: dict, action: jax.Array | None = None, key: jax.Array | None = None,
             uniform=False):
    """The Net2Deeper decision of one network: ``(block, position, filter height index,
    filter width index, stride index)`` (:data:`DEEPER_DECISIONS`).

    Args:
      obs: one observation.
      action: ``(5,)`` int32 decision to score; sampled from ``key`` when None.
      key: PRNG key for sampling.
      uniform: choose uniformly among the allowed blocks, positions, kernel sizes and
        strides.

    Returns:
      ``(action (5,) int32, log-probability ())``. The filter and stride indices are 0
      and add nothing in a dense block; the log-probability is 0 when ``deeper_ok`` is
      false.
    """
    _, final = self.encode(obs["tokens"], obs["length"])
    return self._deeper(final, obs, action, key, uniform)[:2]

  def step_log_prob(self, obs: dict, widen: jax.Array, action: jax.Array,
                    is_wider: jax.Array) -> jax.Array:
    """``()``: log-probability of ``widen`` (if ``is_wider``) or of ``action``, with one
    pass of the encoder."""
    states, final = self.encode(obs["tokens"], obs["length"])
    lw = self._wider(states, obs, widen, None, False)[1]
    ld = self._deeper(final, obs, action, None, False)[1]
    return jnp.where(is_wider, lw, ld)

  def policy(self, obs: dict, uniform=False) -> tuple[jax.Array, jax.Array]:
    """The first decision of each actor as probabilities: ``(widen (L,), block (B,))``:
    the probability that each layer widens (0 where masked) and that the Net2Deeper
    actor picks each block."""
    states, final = self.encode(obs["tokens"], obs["length"])
    p_widen = self._wider(states, obs, jnp.zeros_like(obs["tokens"]), None, uniform)[2]
    no_action = jnp.zeros((len(DEEPER_DECISIONS),), jnp.int32)
    p_block = self._deeper(final, obs, no_action, None, uniform)[2]
    return jnp.where(obs["widen_mask"], p_widen, 0.0), p_block

  def __call__(self, obs: dict):
    # Only for ``init``: touch every submodule once.
    return self.step_log_prob(obs, jnp.zeros_like(obs["tokens"]),
                              jnp.zeros((len(DEEPER_DECISIONS),), jnp.int32), jnp.bool_(True))


def dummy_observation(controller: EASController) -> dict:
  """An observation of a one-layer network (for ``init``)."""
  spec = observation_spec(controller.max_len, controller.max_blocks)
  obs = {k: jnp.zeros(shape, dtype) for k, (shape, dtype) in spec.items()}
  return {**obs, "tokens": obs["tokens"].at[0].set(1), "length": jnp.int32(1),
          "block_sizes": obs["block_sizes"].at[0].set(1), "deeper_ok": jnp.bool_(True)}


def init_params(controller: EASController, key: jax.Array) -> Any:
  """Fresh controller parameters, uniform in ``[-INIT_SCALE, INIT_SCALE]``.

  Drawn on the host from the shapes alone (no compilation), one generator per array
  seeded by ``key`` and the array's path, so the same key gives the same parameters.
  """
  from nasjax.network import key_seed

  shapes = jax.eval_shape(lambda: controller.init(jax.random.key(0),
                                                  dummy_observation(controller)))["params"]
  seed = key_seed(key)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    rng = np.random.default_rng(seed + [int(b) for b in name.encode()])
    return jnp.asarray(rng.uniform(-INIT_SCALE, INIT_SCALE, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def sample(controller: EASController, params, obs: dict, keys: jax.Array, kind: str,
           uniform=False):
  """Sample one decision of ``kind`` (``"wider"`` or ``"deeper"``) for a batch.

  Args:
    controller: the module.
    params: its parameters.
    obs: a batch of ``n`` observations (leading axis ``n``).
    keys: ``(n,)`` PRNG keys.
    kind: which actor decides.
    uniform: sample the uniformly random policy instead.

  Returns:
    ``(actions, log-probabilities (n,))``: actions ``(n, L)`` (wider) or ``(n, 5)``
    (deeper, :data:`DEEPER_DECISIONS`), int32.
  """
  method = _method(kind)

  def one(o, k):
    return controller.apply({"params": params}, o, key=k, uniform=uniform, method=method)

  return jax.vmap(one)(obs, keys)


def log_prob(controller: EASController, params, obs: dict, widen: jax.Array,
             deeper: jax.Array, is_wider: jax.Array, valid: jax.Array) -> jax.Array:
  """Log-probability of whole transformation sequences (teacher forcing).

  Args:
    controller: the module.
    params: its parameters.
    obs: observations with leading axes ``(n, T)``: child ``i`` before its step ``t``.
    widen: ``(n, T, L)`` wider decisions (read where ``is_wider``).
    deeper: ``(n, T, 5)`` deeper decisions (read elsewhere).
    is_wider: ``(T,)`` bool, the kind of each step.
    valid: ``(n, T)`` bool, the steps that were taken.

  Returns:
    ``(n,)``: the sum over the valid steps of each child.
  """
  def step(o, w, d, wide):
    return controller.apply({"params": params}, o, w, d, wide, method="step_log_prob")

  per_step = jax.vmap(jax.vmap(step, (0, 0, 0, 0)), (0, 0, 0, None))(obs, widen, deeper,
                                                                      is_wider)
  return jnp.sum(jnp.where(valid, per_step, 0.0), axis=1)


def _method(kind: str) -> str:
  if kind not in ("wider", "deeper"):
    raise ValueError(f"kind must be 'wider' or 'deeper', got {kind!r}")
  return kind


__all__ = ["EASController", "LSTM", "observation_spec", "dummy_observation", "init_params",
           "sample", "log_prob", "NEG", "INIT_SCALE", "DEEPER_DECISIONS"]
