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
edges, DARTS ``[input, op]`` genes, ...). The program is run as a scan (``nn.scan``, the
parameters shared by every step) over its *groups* (an anchor and the choices that
follow it, or a single choice), so a long program compiles as fast as a short one.

Positions that a space leaves inactive (:meth:`~nasjax.search.spaces.SearchSpace.active`)
are written as 0 and contribute nothing to the log-probability or the entropy. For this
the activity of a position must depend only on earlier positions, which holds for every
built-in space; then sampling and teacher-forced scoring of the canonical code see the
same inputs, so the log-probability of a sampled code is exact.

The LSTM is a stack of :class:`flax.linen.OptimizedLSTMCell`; every weight and bias starts
uniform in ``[-0.08, 0.08]`` as in the paper (§4.1). The controller is a pure function of
its parameters (``Controller.apply``), so sampling and scoring jit and vmap.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

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


class _Carry(NamedTuple):
  """What the scan over the groups carries.

  Attributes:
    lstm: per LSTM layer, its ``(c, h)`` state, each ``(H,)``.
    x: ``(H,)`` the next input of the LSTM.
    code: ``(L,)`` int32, the code written so far (later positions 0).
    log_prob, entropy: ``()`` float32 sums over the decisions made so far.
    states: ``(G, H)`` anchor states of the layers so far (0 after them).
    projected: ``(G, H)`` those states times ``w_prev``.
  """

  lstm: tuple
  x: jax.Array
  code: jax.Array
  log_prob: jax.Array
  entropy: jax.Array
  states: jax.Array
  projected: jax.Array


class _Group(nn.Module):
  """One step of the scan: a group of the program (its anchor point, then its choices).

  The attributes are the :class:`Controller`'s and ``forced``: whether the code is given
  (scored by teacher forcing) rather than sampled. The parameters are shared by every
  group (broadcast by the scan); the per-decision ones are tables indexed by the group.
  """

  program: Program
  length: int
  hidden: int
  num_layers: int
  temperature: float
  tanh_constant: float | None
  active: Callable[[jax.Array], jax.Array] | None
  forced: bool

  def setup(self):
    prog, H = self.program, self.hidden
    G, C, K = prog.num_groups, prog.positions.shape[1], prog.max_choices
    self.cells = [nn.OptimizedLSTMCell(H, kernel_init=_uniform, recurrent_kernel_init=_uniform,
                                       bias_init=_uniform) for _ in range(self.num_layers)]
    self.embed = self.param("embed", _uniform, (G, C, K, H))
    self.head_kernel = self.param("head_kernel", _uniform, (G, C, H, K))
    self.head_bias = self.param("head_bias", nn.initializers.zeros, (G, C, K))
    if prog.anchors:
      self.w_prev = self.param("w_prev", _uniform, (H, H))
      self.w_curr = self.param("w_curr", _uniform, (H, H))
      self.v = self.param("v", _uniform, (H,))
      self.no_anchor = self.param("no_anchor", _uniform, (G, H))

  def _lstm(self, carry: _Carry) -> tuple[tuple, jax.Array]:
    """One step of the stacked LSTM on ``carry.x``: ``(new states, top output)``."""
    x, states = carry.x, []
    for cell, state in zip(self.cells, carry.lstm):
      state, x = cell(state, x)
      states.append(state)
    return tuple(states), x

  def _squash(self, raw: jax.Array) -> jax.Array:
    raw = raw / self.temperature
    return raw if self.tanh_constant is None else self.tanh_constant * jnp.tanh(raw)

  def _anchor(self, c: _Carry, g: jax.Array, key: jax.Array | None) -> _Carry:
    """The anchor point of layer ``g``: which earlier layers feed it."""
    lstm, h = self._lstm(c)
    earlier = jnp.arange(self.program.num_groups) < g
    scores = self._squash(jnp.tanh(c.projected + h @ self.w_curr) @ self.v)  # (G,)
    # Layers j >= g have no position: index L, dropped on write, 0 on read.
    where = jnp.where(earlier, jnp.asarray(self.program.anchor_positions)[g], self.length)
    if self.forced:
      bits = c.code.at[where].get(mode="fill", fill_value=0)
    else:
      bits = jax.random.bernoulli(key, jax.nn.sigmoid(scores)).astype(jnp.int32)
    bits = jnp.where(earlier, bits, 0)
    on_lp, off_lp = jax.nn.log_sigmoid(scores), jax.nn.log_sigmoid(-scores)
    q = jax.nn.sigmoid(scores)
    log_prob = jnp.sum(jnp.where(earlier, jnp.where(bits == 1, on_lp, off_lp), 0.0))
    entropy = jnp.sum(jnp.where(earlier, -(q * on_lp + (1 - q) * off_lp), 0.0))
    chosen = jnp.sum(bits)
    mean = jnp.sum(bits[:, None] * c.states, axis=0) / jnp.maximum(chosen, 1)
    return _Carry(lstm, jnp.where(chosen > 0, mean, self.no_anchor[g]),
                  c.code.at[where].set(bits, mode="drop"), c.log_prob + log_prob,
                  c.entropy + entropy, c.states.at[g].set(h),
                  c.projected.at[g].set(h @ self.w_prev))

  def _choice(self, c: _Carry, g: jax.Array, i: int, key: jax.Array | None) -> _Carry:
    """Choice ``i`` of group ``g``: one categorical token."""
    lstm, h = self._lstm(c)
    prog = self.program
    valid = jnp.arange(prog.max_choices) < jnp.asarray(prog.num_choices)[g, i]
    logits = self._squash(h @ self.head_kernel[g, i] + self.head_bias[g, i])
    logits = jnp.where(valid, logits, -jnp.inf)
    logp = jax.nn.log_softmax(logits)
    pos = jnp.asarray(prog.positions)[g, i]
    if self.forced:
      token = c.code[pos]
    else:
      token = jax.random.categorical(key, logits).astype(jnp.int32)
    on = jnp.bool_(True)
    if self.active is not None:
      # Later positions are still 0 here: activity depends on earlier ones only.
      on = self.active(c.code)[pos]
      token = jnp.where(on, token, 0)
    # Masked choices have logp = -inf: zero them before the product, so that neither
    # the value nor the gradient meets 0 * inf (a NaN gradient there reached every
    # parameter through the shared LSTM, on any space with unequal choice counts).
    entropy = -jnp.sum(jnp.exp(logp) * jnp.where(valid, logp, 0.0))
    return c._replace(lstm=lstm, x=self.embed[g, i, token], code=c.code.at[pos].set(token),
                      log_prob=c.log_prob + jnp.where(on, logp[token], 0.0),
                      entropy=c.entropy + jnp.where(on, entropy, 0.0))

  def __call__(self, carry: _Carry, inputs) -> tuple[_Carry, None]:
    """``inputs``: ``(g, keys)``, the group's index and ``(C + 1,)`` sampling keys (the
    last one the anchor point's; None when forced)."""
    g, keys = inputs
    C = self.program.positions.shape[1]
    if self.program.anchors:
      carry = self._anchor(carry, g, None if self.forced else keys[C])
    for i in range(C):
      carry = self._choice(carry, g, i, None if self.forced else keys[i])
    return carry, None


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
    G, C = prog.num_groups, prog.positions.shape[1]
    forced = code is not None
    start = self.param("start", _uniform, (H,))
    state = (jnp.zeros((H,)), jnp.zeros((H,)))
    zero = jnp.zeros((), jnp.float32)
    out = jnp.asarray(code, jnp.int32) if forced else jnp.zeros((self.length,), jnp.int32)
    carry = _Carry((state,) * self.num_layers, start, out, zero, zero, jnp.zeros((G, H)),
                   jnp.zeros((G, H)))
    keys = None if forced else jax.random.split(key, G * (C + 1)).reshape(G, C + 1)
    groups = nn.scan(_Group, variable_broadcast="params", split_rngs={"params": False},
                     length=G)
    carry, _ = groups(prog, self.length, H, self.num_layers, self.temperature,
                      self.tanh_constant, self.active, forced, name="groups")(
                          carry, (jnp.arange(G), keys))
    return carry.code, carry.log_prob, carry.entropy


@functools.lru_cache(maxsize=64)
def make_controller(space, **options) -> Controller:
  """The controller for ``space`` (options: the :class:`Controller` hyperparameters); the
  same module for the same arguments."""
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
