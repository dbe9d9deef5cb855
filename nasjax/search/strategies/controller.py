"""An autoregressive LSTM controller that writes search-space codes (Zoph & Le, 2017).

The controller of "Neural Architecture Search with Reinforcement Learning" (Zoph & Le,
ICLR 2017, §3.1 and §3.3) is a recurrent network that emits an architecture one decision
at a time, the embedding of each decision fed back as the next step's input. Here the
decisions are the positions of a search-space code, described by a *program*, a
sequence of steps:

- :class:`Choice` ``(position, num_choices)``: one categorical token. The LSTM output
  goes through this step's own softmax classifier; the chosen token's embedding is the
  next input.
- :class:`Anchor` ``(layer, positions)``: the anchor point of layer ``i`` (§3.3). Its
  LSTM output ``h_i`` is the layer's anchor state; for every earlier layer ``j`` a
  content-based sigmoid ``sigmoid(v . tanh(W_prev h_j + W_curr h_i))`` decides whether
  layer ``j`` feeds layer ``i`` (a 0/1 token at ``positions[j]``). The next input is the
  mean of the chosen layers' anchor states (a learned vector when none is chosen).

:func:`program_for` gives a space's program: its own ``controller_program()`` when it
has one (the layer strings of :mod:`nasjax.search.strategies.rl_nas`: per layer an anchor point,
then the layer's choices), else one :class:`Choice` per code position in order (NB201
edges, DARTS ``[input, op]`` genes, ...). The program is run as a ``lax.scan`` over its
*groups* (an anchor and the choices that follow it, or a single choice), so a long
program compiles as fast as a short one.

Positions that a space leaves inactive (:meth:`~nasjax.search.spaces.SearchSpace.active`)
are written as 0 and contribute nothing to the log-probability or the entropy. For this
the activity of a position must depend only on earlier positions, which holds for every
built-in space; then sampling and teacher-forced scoring of the canonical code see the
same inputs, so the log-probability of a sampled code is exact.

The LSTM is written out (gates ``i, f, g, o`` from ``[x, h] @ W + b``) so that it runs
inside the scan; weights start uniform in ``[-0.08, 0.08]`` as in the paper (§4.1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INIT_SCALE = 0.08


@dataclasses.dataclass(frozen=True)
class Choice:
  """A categorical decision: code ``position`` takes one of ``num_choices`` values."""

  position: int
  num_choices: int


@dataclasses.dataclass(frozen=True)
class Anchor:
  """The anchor point of layer ``layer``: ``positions[j]`` holds whether layer ``j < layer``
  is one of its inputs (0 or 1)."""

  layer: int
  positions: tuple[int, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
  """A program as ``G`` groups of ``C`` choices, each optionally after an anchor point.

  Attributes:
    steps: the steps as given.
    anchors: whether every group starts with an anchor point (group ``g`` = layer ``g``).
    positions: ``(G, C)`` code positions of the choices.
    num_choices: ``(G, C)`` their numbers of choices.
    anchor_positions: ``(G, G)`` code position of "layer ``j`` feeds layer ``g``" at
      ``[g, j]`` for ``j < g``, else -1 (all -1 without anchors).
  """

  steps: tuple
  anchors: bool
  positions: np.ndarray
  num_choices: np.ndarray
  anchor_positions: np.ndarray

  @property
  def num_groups(self) -> int:
    return self.positions.shape[0]

  @property
  def max_choices(self) -> int:
    return int(self.num_choices.max())


def compile_program(steps: Sequence[Choice | Anchor], num_choices: Sequence[int]) -> Program:
  """Group ``steps`` for the scan and check them against the space's ``num_choices``.

  Raises:
    ValueError: if a position is written twice or never, a choice count disagrees with
      the space, anchors are not numbered 0, 1, ... or are followed by different numbers
      of choices, or anchors and loose choices are mixed.
  """
  steps = tuple(steps)
  length = len(num_choices)
  seen = []
  for step in steps:
    if isinstance(step, Choice):
      if step.num_choices != num_choices[step.position]:
        raise ValueError(f"program step {step} disagrees with the space's "
                         f"{num_choices[step.position]} choices")
      seen.append(step.position)
    elif isinstance(step, Anchor):
      if len(step.positions) != step.layer:
        raise ValueError(f"anchor of layer {step.layer} needs {step.layer} positions, got "
                         f"{step.positions}")
      bad = [p for p in step.positions if num_choices[p] != 2]
      if bad:
        raise ValueError(f"anchor positions {bad} must have 2 choices")
      seen.extend(step.positions)
    else:
      raise ValueError(f"unknown program step {step!r}")
  if sorted(seen) != list(range(length)):
    raise ValueError(f"a program must write each of the {length} code positions once, "
                     f"it writes {sorted(seen)}")
  anchors = any(isinstance(s, Anchor) for s in steps)
  if not anchors:
    groups = [[s] for s in steps]
  else:
    if not isinstance(steps[0], Anchor):
      raise ValueError("a program with anchors must start with the anchor of layer 0")
    groups = []
    for s in steps:
      if isinstance(s, Anchor):
        if s.layer != len(groups):
          raise ValueError(f"anchor of layer {s.layer} found where layer {len(groups)} "
                           "begins")
        groups.append([])
      else:
        groups[-1].append(s)
    if len({len(g) for g in groups}) != 1:
      raise ValueError("every anchor must be followed by the same number of choices, got "
                       f"{[len(g) for g in groups]}")
  G, C = len(groups), len(groups[0])
  positions = np.array([[s.position for s in g] for g in groups], np.int32).reshape(G, C)
  counts = np.array([[s.num_choices for s in g] for g in groups], np.int32).reshape(G, C)
  anchor_positions = np.full((G, G), -1, np.int32)
  if anchors:
    for s in steps:
      if isinstance(s, Anchor):
        anchor_positions[s.layer, :s.layer] = s.positions
  return Program(steps, anchors, positions, counts, anchor_positions)


def program_for(space) -> Program:
  """The compiled controller program of ``space`` (see the module docstring)."""
  if callable(getattr(space, "controller_program", None)):
    steps = tuple(space.controller_program())
  else:
    steps = tuple(Choice(i, int(n)) for i, n in enumerate(space.num_choices))
  return compile_program(steps, space.num_choices)


def _uniform(key, shape, dtype=jnp.float32):
  return jax.random.uniform(key, shape, dtype, -INIT_SCALE, INIT_SCALE)


class Controller(nn.Module):
  """The LSTM controller.

  Calling it returns ``(code, log_prob, entropy)``: with ``code=None`` it samples a code
  using ``key``; given a code it scores that code (teacher forcing) and returns it.

  Attributes:
    program: the compiled program (:func:`program_for`).
    length: L, the code length.
    hidden: LSTM width (the paper: 35).
    num_layers: stacked LSTM layers (the paper: 2).
    temperature: logits are divided by it.
    tanh_constant: if set, logits become ``c * tanh(logits / temperature)`` (bounded
      logits keep the policy from collapsing early).
    active: optional ``code (L,) -> (L,) bool`` of the space (inactive positions are 0).
  """

  program: Program
  length: int
  hidden: int = 35
  num_layers: int = 2
  temperature: float = 1.0
  tanh_constant: float | None = None
  active: Callable[[jax.Array], jax.Array] | None = None

  @nn.compact
  def __call__(self, key: jax.Array | None, code: jax.Array | None = None):
    """Sample (``code=None``) or score ``code``.

    Args:
      key: PRNG key (unused when ``code`` is given).
      code: ``(L,)`` int code to score, or None to sample.

    Returns:
      ``(code (L,) int32, log_prob () float32, entropy () float32)``; the entropy is the
      sum over the decisions of each one's distribution entropy along this code.
    """
    prog, H = self.program, self.hidden
    G, C, K = prog.num_groups, prog.positions.shape[1], prog.max_choices
    lstm = [(self.param(f"lstm{i}_kernel", _uniform, (2 * H, 4 * H)),
             self.param(f"lstm{i}_bias", _uniform, (4 * H,))) for i in range(self.num_layers)]
    start = self.param("start", _uniform, (H,))
    embed = self.param("embed", _uniform, (G, C, K, H))
    head_kernel = self.param("head_kernel", _uniform, (G, C, H, K))
    head_bias = self.param("head_bias", nn.initializers.zeros, (G, C, K))
    if prog.anchors:
      w_prev = self.param("w_prev", _uniform, (H, H))
      w_curr = self.param("w_curr", _uniform, (H, H))
      v = self.param("v", _uniform, (H,))
      no_anchor = self.param("no_anchor", _uniform, (G, H))

    forced = code is not None
    out = jnp.asarray(code, jnp.int32) if forced else jnp.zeros((self.length,), jnp.int32)
    keys = None if forced else jax.random.split(key, G * (C + 1)).reshape(G, C + 1)
    zeros = jnp.zeros((self.num_layers, H))

    def cell(state, x):
      hs, cs = state
      new_h, new_c = [], []
      for i, (w, b) in enumerate(lstm):
        gates = jnp.concatenate([x, hs[i]]) @ w + b
        gi, gf, gg, go = jnp.split(gates, 4)
        c = jax.nn.sigmoid(gf) * cs[i] + jax.nn.sigmoid(gi) * jnp.tanh(gg)
        x = jax.nn.sigmoid(go) * jnp.tanh(c)
        new_h.append(x)
        new_c.append(c)
      return (jnp.stack(new_h), jnp.stack(new_c)), x

    def squash(raw):
      raw = raw / self.temperature
      return raw if self.tanh_constant is None else self.tanh_constant * jnp.tanh(raw)

    positions = jnp.asarray(prog.positions)
    counts = jnp.asarray(prog.num_choices)
    anchor_pos = jnp.asarray(prog.anchor_positions)

    def group(carry, g):
      state, x, out, log_prob, entropy, states, projected = carry
      if prog.anchors:
        state, h = cell(state, x)
        earlier = jnp.arange(G) < g
        scores = squash(jnp.tanh(projected + h @ w_curr) @ v)  # (G,)
        # Layers j >= g have no position: index L, dropped on write, 0 on read.
        where = jnp.where(earlier, anchor_pos[g], self.length)
        if forced:
          bits = out.at[where].get(mode="fill", fill_value=0)
        else:
          bits = jax.random.bernoulli(keys[g, C], jax.nn.sigmoid(scores)).astype(jnp.int32)
        bits = jnp.where(earlier, bits, 0)
        out = out.at[where].set(bits, mode="drop")
        on_lp, off_lp = jax.nn.log_sigmoid(scores), jax.nn.log_sigmoid(-scores)
        q = jax.nn.sigmoid(scores)
        log_prob += jnp.sum(jnp.where(earlier, jnp.where(bits == 1, on_lp, off_lp), 0.0))
        entropy += jnp.sum(jnp.where(earlier, -(q * on_lp + (1 - q) * off_lp), 0.0))
        chosen = jnp.sum(bits)
        mean = jnp.sum(bits[:, None] * states, axis=0) / jnp.maximum(chosen, 1)
        x = jnp.where(chosen > 0, mean, no_anchor[g])
        states = states.at[g].set(h)
        projected = projected.at[g].set(h @ w_prev)
      for c in range(C):
        state, h = cell(state, x)
        logits = squash(h @ head_kernel[g, c] + head_bias[g, c])
        logits = jnp.where(jnp.arange(K) < counts[g, c], logits, -jnp.inf)
        logp = jax.nn.log_softmax(logits)
        pos = positions[g, c]
        if forced:
          token = out[pos]
        else:
          token = jax.random.categorical(keys[g, c], logits).astype(jnp.int32)
        if self.active is not None:
          # Later positions are still 0 here: activity depends on earlier ones only.
          on = self.active(out)[pos]
          token = jnp.where(on, token, 0)
        else:
          on = jnp.bool_(True)
        out = out.at[pos].set(token)
        p = jnp.exp(logp)
        log_prob += jnp.where(on, logp[token], 0.0)
        # Masked choices have logp = -inf: zero them before the product, so that neither
        # the value nor the gradient meets 0 * inf (a NaN gradient there reached every
        # parameter through the shared LSTM, on any space with unequal choice counts).
        valid = jnp.arange(K) < counts[g, c]
        entropy += jnp.where(on, -jnp.sum(p * jnp.where(valid, logp, 0.0)), 0.0)
        x = embed[g, c, token]
      return (state, x, out, log_prob, entropy, states, projected), None

    zero = jnp.zeros((), jnp.float32)
    carry = ((zeros, zeros), start, out, zero, zero, jnp.zeros((G, H)), jnp.zeros((G, H)))
    (_, _, out, log_prob, entropy, _, _), _ = jax.lax.scan(group, carry, jnp.arange(G))
    return out, log_prob, entropy


def make_controller(space, **options) -> Controller:
  """The controller for ``space`` (options: the :class:`Controller` hyperparameters)."""
  from nasjax.search.spaces import SearchSpace

  # Spaces that never deactivate a position skip the per-step activity check.
  active = None if type(space).active is SearchSpace.active else space.active
  return Controller(program_for(space), space.length, active=active, **options)


def init_params(controller: Controller, key: jax.Array) -> Any:
  """The controller's parameters (traceable: works under ``jit`` and ``vmap``)."""
  return controller.init(key, key)


def sample(controller: Controller, params, keys: jax.Array):
  """Sample a batch: ``keys`` ``(B,)`` -> ``(codes (B, L), log_probs (B,), entropies (B,))``."""
  return jax.vmap(lambda k: controller.apply(params, k))(keys)


def score(controller: Controller, params, codes: jax.Array):
  """``(log_probs (B,), entropies (B,))`` of codes ``(B, L)`` under the controller."""
  _, lp, ent = jax.vmap(lambda c: controller.apply(params, None, c))(codes)
  return lp, ent
