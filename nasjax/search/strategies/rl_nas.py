"""RL-NAS: an LSTM controller trained with REINFORCE (Zoph & Le, ICLR 2017).

The controller (:mod:`nasjax.search.strategies.controller`) samples a batch of child architectures;
each child is trained and its validation accuracy is the reward ``R``; the controller's
parameters ``theta`` follow the policy gradient (§3.2)::

    grad J = 1/m sum_k (R_k - b) grad log P(a_k; theta)  +  beta * grad H(P)

with ``b`` an exponential moving average of the previous rewards (the first batch uses
its own mean) and an entropy bonus ``beta * H`` that keeps the policy exploring (ENAS,
Pham et al. 2018). Optimised with Adam. Here the reward is the negated fitness, i.e.
``val_error`` in % gives ``accuracy - 100``: the same advantages as the accuracy itself.
With ``reward`` set to a MnasNet config (:mod:`nasjax.search.hardware`), the reward is
``ACC * (LAT / T) ** w`` over the evaluator's error and cost objectives.

Spaces: on :class:`LayerStringSpace` the controller writes Zoph & Le's layer strings
(per layer: anchor point with skip connections, filter height, filter width, filters,
stride); on every other space it is autoregressive over the code positions (NB201
edges, DARTS ``[input, op]`` genes, plain-CNN genes, NAS-Bench-Macro layers), so it runs
on the tabular benchmarks. The state is all arrays: ``ask`` and ``tell`` jit, scan and
vmap.

Defaults: the paper's controller (2-layer LSTM, 35 units, weights uniform in
[-0.08, 0.08]) and Adam. One child per update (NB201's sequential protocol), learning
rate 0.005 and entropy weight 0.001 were chosen among six settings on NAS-Bench-201's
CIFAR-100 alone (``docs/results/rl_pnas.md``): a search here sees about a hundred
children, not the paper's 12,800. The ``paper`` preset (:data:`PAPER`) runs Zoph & Le's
own settings: learning rate 0.0006, 8 children per update, no entropy bonus.
``batch_size`` children per update are evaluated together (in parallel on several
devices by the training evaluator).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nasjax.arch import Arch, Node
from nasjax.search.strategies import controller as controller_lib
from nasjax.search.base import fitness_matrix, register_strategy, select_objective
from nasjax.search.hardware import make_scalarizer
from nasjax.search.options import Check, Options, integer, number, option
from nasjax.search.spaces import SearchSpace, register_space


# ----------------------------------------------------------------------- layer strings
@dataclasses.dataclass(frozen=True)
class LayerStringSpace(SearchSpace):
  """Zoph & Le's CNN space: ``num_layers`` conv layers, each with its own filter height,
  filter width, number of filters, stride and skip connections (§3.3, §4.1).

  Code of layer ``i`` (layers in order): ``i`` anchor bits (bit ``j``: layer ``j`` is an
  input of layer ``i``), then the indices of its filter height, filter width, filters
  and stride in ``filter_heights``, ``filter_widths``, ``filters`` and ``layer_strides``.
  A layer is conv (no bias) -> batch norm -> ReLU.

  Skip connections as in the paper: a layer's inputs are concatenated along channels; a
  layer with no input reads the image; the outputs that no layer reads are concatenated
  before the classifier (global average pooling, then a dense layer). The paper pads
  smaller inputs with zeros to the size of the largest; here, where strides make sizes
  differ, the larger inputs are max-pooled down to the smallest (window = stride = the
  size ratio, SAME padding), so concatenated maps stay spatially aligned. Strides must
  be powers of two, so that these ratios are whole.

  Defaults: the paper's CIFAR-10 choices (filter sizes 1, 3, 5, 7; 24, 36, 48 or 64
  filters; stride 1, i.e. strides not predicted) with 6 layers instead of 15-20.
  """

  name: ClassVar[str] = "layer_string"
  num_layers: int = 6
  filter_heights: tuple[int, ...] = (1, 3, 5, 7)
  filter_widths: tuple[int, ...] = (1, 3, 5, 7)
  filters: tuple[int, ...] = (24, 36, 48, 64)
  layer_strides: tuple[int, ...] = (1,)

  def __post_init__(self):
    if not isinstance(self.num_layers, int) or self.num_layers < 1:
      raise ValueError(f"num_layers must be a positive int, got {self.num_layers!r}")
    for what in ("filter_heights", "filter_widths", "filters", "layer_strides"):
      values = tuple(int(v) for v in getattr(self, what))
      if not values or min(values) < 1:
        raise ValueError(f"{what} must be a non-empty list of positive ints, got "
                         f"{getattr(self, what)!r}")
      object.__setattr__(self, what, values)
    bad = [s for s in self.layer_strides if s & (s - 1)]
    if bad:
      raise ValueError(f"layer_strides must be powers of two (1, 2, 4, ...), got {bad}")

  # Genes after the anchor bits of a layer.
  GENES: ClassVar[tuple[str, ...]] = ("filter_heights", "filter_widths", "filters",
                                      "layer_strides")

  def _offset(self, i: int) -> int:
    """Position of layer ``i``'s first gene."""
    return i * len(self.GENES) + i * (i - 1) // 2

  @property
  def num_choices(self):
    out = []
    for i in range(self.num_layers):
      out += [2] * i + [len(getattr(self, g)) for g in self.GENES]
    return tuple(out)

  def controller_program(self):
    """Per layer: the anchor point, then filter height, width, filters and stride."""
    steps = []
    for i in range(self.num_layers):
      o = self._offset(i)
      steps.append(controller_lib.Anchor(i, tuple(range(o, o + i))))
      steps += [controller_lib.Choice(o + i + k, len(getattr(self, g)))
                for k, g in enumerate(self.GENES)]
    return tuple(steps)

  def decode(self, code) -> tuple[tuple[int, int, int, int, tuple[int, ...]], ...]:
    """``((height, width, filters, stride, inputs), ...)`` per layer; ``inputs`` lists the
    earlier layers feeding it (empty: the image)."""
    c = self.check(code)
    out = []
    for i in range(self.num_layers):
      o = self._offset(i)
      inputs = tuple(j for j in range(i) if c[o + j])
      genes = [getattr(self, g)[int(c[o + i + k])] for k, g in enumerate(self.GENES)]
      out.append((*genes, inputs))
    return tuple(out)

  def describe(self, code) -> str:
    """E.g. ``"3x3-36/1 5x1-48/1<0"``: per layer height x width - filters / stride and
    ``<`` the layers it reads."""
    parts = []
    for h, w, f, s, inputs in self.decode(code):
      src = "<" + ",".join(map(str, inputs)) if inputs else ""
      parts.append(f"{h}x{w}-{f}/{s}{src}")
    return " ".join(parts)

  _LAYER = re.compile(r"(\d+)x(\d+)-(\d+)/(\d+)(?:<([\d,]+))?")

  def encode(self, arch) -> np.ndarray:
    """Code of a decoded tuple (see :meth:`decode`) or its :meth:`describe` text."""
    if isinstance(arch, str):
      layers = []
      for part in arch.split():
        m = self._LAYER.fullmatch(part)
        if not m:
          raise ValueError(f"bad layer {part!r} in {arch!r}; expected e.g. '3x5-36/1<0,2'")
        inputs = tuple(int(j) for j in m.group(5).split(",")) if m.group(5) else ()
        layers.append((*(int(v) for v in m.groups()[:4]), inputs))
      arch = tuple(layers)
    if len(arch) != self.num_layers:
      raise ValueError(f"expected {self.num_layers} layers, got {len(arch)} in {arch!r}")
    code = []
    for i, layer in enumerate(arch):
      *genes, inputs = layer
      if any(not 0 <= j < i for j in inputs):
        raise ValueError(f"layer {i} of {arch!r} reads {inputs}; it can read layers 0..{i - 1}")
      code += [int(j in inputs) for j in range(i)]
      for value, g in zip(genes, self.GENES):
        if value not in getattr(self, g):
          raise ValueError(f"layer {i} of {arch!r}: {g[:-1].replace('_', ' ')} {value} is not "
                           f"one of {getattr(self, g)}")
        code.append(getattr(self, g).index(value))
    return np.array(code, np.int32)

  def build(self, code, input_shape=(32, 32, 3), num_classes=10) -> Arch:
    layers = self.decode(code)
    nodes = [Node("input", "input", shape=tuple(input_shape))]
    scale = {"input": 1}  # node name -> its total stride

    def at_scale(src: str, target: int) -> str:
      ratio = target // scale[src]
      if ratio == 1:
        return src
      name = f"{src}_pool{ratio}"
      if name not in scale:
        nodes.append(Node(name, "max_pool", [src], window=ratio, stride=ratio,
                          padding="SAME"))
        scale[name] = target
      return name

    def merge(srcs: Sequence[str], name: str) -> str:
      target = max(scale[s] for s in srcs)
      srcs = [at_scale(s, target) for s in srcs]
      if len(srcs) == 1:
        return srcs[0]
      nodes.append(Node(name, "concat", srcs))
      scale[name] = target
      return name

    consumed = set()
    for i, (h, w, f, s, inputs) in enumerate(layers):
      srcs = [f"l{j}_relu" for j in inputs]
      consumed.update(inputs)
      x = merge(srcs, f"l{i}_in") if srcs else "input"
      nodes += [Node(f"l{i}_conv", "conv", [x], features=f, kernel=(h, w), stride=s),
                Node(f"l{i}_bn", "batchnorm", [f"l{i}_conv"]),
                Node(f"l{i}_relu", "relu", [f"l{i}_bn"])]
      scale[f"l{i}_relu"] = scale[x] * s
    ends = [f"l{i}_relu" for i in range(len(layers)) if i not in consumed]
    x = merge(ends, "out_concat")
    nodes += [Node("gap", "gap", [x]), Node("logits", "dense", ["gap"], features=num_classes)]
    return Arch(nodes, output="logits")


# A run directory names its space: make_space (and so ``nasjax resume``) must find it.
register_space(LayerStringSpace)


# --------------------------------------------------------------------------- strategy
def reward_config() -> Check:
  """None or a reward config dict (checked against the objectives by the options)."""
  return lambda v: None if v is None or isinstance(v, Mapping) else (
      "must be a reward config such as {'kind': 'mnas', 'target': 0.01}, or None")


# Zoph & Le's own settings where the registered defaults differ: Adam with learning rate
# 0.0006, m = 8 children per controller update (each of their controller replicas
# sampled 8), no entropy bonus (added to REINFORCE for NAS by ENAS). Their reward, the
# validation accuracy cubed, is not reproduced: the reward is the accuracy itself, which
# orders the children alike; the cube weighs gaps between good children more.
PAPER = {"learning_rate": 0.0006, "batch_size": 8, "entropy_weight": 0.0}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RLNASConfig(Options):
  """Attributes:
    batch_size: children per ``ask`` (``m``; one controller update per batch).
    learning_rate: Adam's step size.
    baseline_decay: the moving average keeps this much of the old baseline per batch.
    entropy_weight: ``beta``, weight of the entropy bonus.
    hidden, num_layers, temperature, tanh_constant: the controller's (see
      :class:`~nasjax.search.strategies.controller.Controller`).
    objective: which objective is the (negated) reward, when ``reward`` is None.
    reward: a MnasNet reward config (:func:`~nasjax.search.hardware.make_scalarizer`),
      or None.
  """

  strategy = "rl_nas"
  presets = {"paper": PAPER}
  batch_size: int = option(1, integer(1))
  learning_rate: float = option(0.005, number(0, open_min=True))
  baseline_decay: float = option(0.9, number(0.0, 1.0, open_max=True))
  entropy_weight: float = option(1e-3, number(0))
  hidden: int = option(35, integer(1))
  num_layers: int = option(2, integer(1))
  temperature: float = option(1.0, number(0, open_min=True))
  tanh_constant: float | None = option(None, number(0, open_min=True, none=True))
  objective: int = option(0, integer(0))
  reward: Mapping[str, Any] | None = option(None, reward_config())

  def check(self) -> None:
    check_reward(self)


def check_reward(config: Options) -> None:
  """The cross-option rule of a strategy with ``objective`` and ``reward`` options: the
  reward reads objectives that exist, or without one, ``objective`` is one of them."""
  make_scalarizer(config.reward, config.num_objectives)
  if config.reward is None and config.objective >= config.num_objectives:
    raise ValueError(f"{config.strategy}: objective {config.objective} is outside the "
                     f"{config.num_objectives} objectives")


@flax.struct.dataclass
class RLNASState:
  """Attributes:
    params: the controller's parameters.
    opt_state: Adam's state.
    baseline: ``()`` float32, moving average of the rewards told so far.
    rewarded: ``()`` int32, successfully evaluated children told.
    count: ``()`` int32, children told (failed ones included).
  """

  params: Any
  opt_state: Any
  baseline: jax.Array
  rewarded: jax.Array
  count: jax.Array


@dataclasses.dataclass(frozen=True)
class RLNAS:
  """REINFORCE on an autoregressive LSTM controller.

  Attributes:
    space: the search space.
    config: an :class:`RLNASConfig`.
  """

  space: SearchSpace
  config: RLNASConfig = RLNASConfig()
  name = "rl_nas"
  # Under NB201's protocol the query that would pass the time budget is dropped, as in
  # NB201's random-search and REA scripts (nasjax.search.bench.charged_prefix).
  budget_crossing = "drop"

  @property
  def controller(self) -> controller_lib.Controller:
    """The controller module of ``space`` with the sizes of ``config``."""
    cfg = self.config
    return controller_lib.make_controller(
        self.space, hidden=cfg.hidden, num_layers=cfg.num_layers, temperature=cfg.temperature,
        tanh_constant=cfg.tanh_constant)

  @property
  def _optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.config.learning_rate)

  def init(self, key: jax.Array) -> RLNASState:
    params = controller_lib.init_params(self.controller, key)
    zero = jnp.zeros((), jnp.int32)
    return RLNASState(params, self._optimizer.init(params), jnp.zeros((), jnp.float32),
                      zero, zero)

  def ask(self, key: jax.Array, state: RLNASState) -> tuple[jax.Array, RLNASState]:
    """Returns ``(codes (batch_size, L) int32, state)`` sampled from the controller."""
    codes, _, _ = controller_lib.sample(self.controller, state.params,
                                        jax.random.split(key, self.config.batch_size))
    return codes, state

  def rewards(self, fitness: jax.Array) -> jax.Array:
    """``(B,)`` rewards of fitness ``(B,)`` or ``(B, M)`` (NaN for failed children)."""
    cfg = self.config
    scalarizer = make_scalarizer(cfg.reward, cfg.num_objectives)
    if scalarizer is None:
      return -select_objective(fitness, cfg.objective)
    return -scalarizer(fitness_matrix(fitness, cfg.num_objectives))

  def tell(self, key, state: RLNASState, candidates, fitness) -> RLNASState:
    """One Adam step on the REINFORCE loss of the told children."""
    del key
    codes = jnp.asarray(candidates, jnp.int32)
    reward = self.rewards(fitness)
    ok = jnp.isfinite(reward)
    n_ok = jnp.sum(ok)
    reward = jnp.where(ok, reward, 0.0)
    batch_mean = jnp.sum(reward) / jnp.maximum(n_ok, 1)
    baseline = jnp.where(state.rewarded > 0, state.baseline, batch_mean)
    advantage = jnp.where(ok, reward - baseline, 0.0)

    def loss(params):
      log_prob, entropy = controller_lib.score(self.controller, params, codes)
      pg = -jnp.sum(advantage * log_prob)
      bonus = jnp.sum(jnp.where(ok, entropy, 0.0))
      return (pg - self.config.entropy_weight * bonus) / jnp.maximum(n_ok, 1)

    grads = jax.grad(loss)(state.params)
    updates, opt_state = self._optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    d = jnp.float32(self.config.baseline_decay)
    new_baseline = jnp.where(n_ok > 0, d * baseline + (1 - d) * batch_mean, state.baseline)
    return state.replace(params=params, opt_state=opt_state, baseline=new_baseline,
                         rewarded=state.rewarded + n_ok.astype(jnp.int32),
                         count=state.count + codes.shape[0])


register_strategy(
    "rl_nas", RLNAS, options=RLNASConfig, spaces=("*",), multi_objective=False,
    jittable=True,
    smoke={"space": "layer_string",
           "space_config": {"num_layers": 3, "filters": [8, 16], "layer_strides": [1, 2]},
           "config": {"batch_size": 2}, "max_evals": 4},
    description="RL-NAS: LSTM controller + REINFORCE (Zoph & Le 2017), optional MnasNet reward")
