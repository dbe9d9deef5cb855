"""EAS: architecture search by function-preserving transformations (Cai et al., "Efficient
Architecture Search by Network Transformation", AAAI 2018).

Instead of training every candidate from scratch, EAS grows a trained network. A
meta-controller (:mod:`nasjax.search.strategies.eas_controller`: a bidirectional-LSTM
encoder of the network's layer sequence, a Net2Wider actor and a Net2Deeper actor, §3,
§3.1) looks at the network and picks transformations that keep the function it computes:
Net2Wider (a layer goes to the next width on a discrete ladder) and Net2Deeper (an
identity-initialised layer is inserted; the actor picks the block, the position in it and
a new conv layer's filter height, filter width and stride). The transformed child
inherits all weights (:data:`nasjax.ops.MORPHISMS`), so a short training suffices to tell
whether the change helps.

One episode:

1. From the seed network (the best trained network found so far; at first the trained
   start network), ``num_children`` children are sampled. Each applies ``steps`` in turn
   (e.g. four Net2Deeper steps and one Net2Wider step); before every step the current
   child is re-encoded, so each decision sees the network it changes.
2. A child whose actions were already trained from the same seed takes that result
   (results are cached by the seed network's identity and the actions, which together
   say what was trained); the others get the seed's weights through the morphisms (a
   batch norm inserted with a new conv takes its statistics on the problem's training
   inputs, :attr:`EAS.morph_batch`, so that the child computes the seed's function in
   training mode too) and are returned by ``ask``: the evaluator trains them briefly
   (:func:`nasjax.train.fit`) and scores them on the validation split. The children of
   one episode form one batch, spread over the evaluator's devices.
3. The reward of a child is EAS's transform of its validation accuracy,
   ``tan(acc * pi / 2)``, which stretches differences near the top. The controller
   follows REINFORCE with a moving-average baseline ``b``::

       grad J = 1/m sum_k (R_k - b) grad log P(actions_k | networks_k)

   (the first episode's baseline is its own mean reward), optimised with Adam.
4. The best child, if better than the seed, becomes the seed of the next episode with
   its trained weights.

Two families of networks (``family``): plain CNNs (:func:`nasjax.models.eas_start_net`:
conv-BN-ReLU layers in blocks between max pools, global pooling, dense layers; Net2Deeper
inserts a conv-BN(-ReLU) inside a block or a dense layer after global pooling) and
DenseNets (:func:`nasjax.models.densenet`, §3.2: widening a layer gives it more filters,
which every later layer of the block reads as copies; deepening adds a layer to a dense
block, whose filters copy existing channels).

Strategy protocol (:mod:`nasjax.search.base`; the candidates of
:mod:`nasjax.search.work`). EAS proposes and never trains a candidate: ``ask`` returns
the start network, then each episode's children to evaluate, as
:class:`~nasjax.Network` s carrying their inherited weights; the runner tells back the
trained networks, and the best becomes the seed. The controller's own REINFORCE steps
are the strategy's. The task comes as a :class:`~nasjax.search.work.Problem` (the start
network's input shape and classes, and the inputs inserted batch norms take their
statistics on); EAS loads no data. Fitness must be a validation error in percent (the
training evaluator's ``val_error``). With ``policy="random"`` the actions are drawn
uniformly and the controller never learns: the ablation that isolates what the
controller adds.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.arch import Arch
from nasjax.network import Network, init
from nasjax.search import work
from nasjax.search.base import register_strategy, select_objective
from nasjax.search.options import Options, integer, number, one_of, option
from nasjax.search.spaces import SearchSpace
from nasjax.search.strategies import eas_controller as ctrl

FAMILIES = ("plain_cnn", "densenet")
POLICIES = ("controller", "random")
STEP_KINDS = ("wider", "deeper")
# Token ids: 0 pads; then pools, global pooling, conv-<level>-<height>-<width>, fc-<level>.
PAD, POOL, GAP, FIRST_CONV = 0, 1, 2, 3
# The strides the Net2Deeper actor chooses from for a new conv layer (§3.1 has it choose
# one). Only stride 1 keeps the function: a layer of stride s > 1 keeps one position in s
# along each axis, so every later layer sees another feature map; nasjax.ops.net2deeper
# inserts stride-1 layers only. The decision is made over this one stride, and becomes a
# choice once a transformation can insert strided layers.
STRIDES = (1,)

DEFAULT_FILTER_LEVELS = (16, 32, 64, 96, 128, 192, 256, 384, 512)
DEFAULT_UNIT_LEVELS = (64, 128, 256, 384, 512, 768, 1024)
DEFAULT_GROWTH_LEVELS = (12, 16, 24, 32, 48, 64)
DEFAULT_KERNELS = (1, 3, 5)
DEFAULT_STARTS = {"plain_cnn": {"variant": "small"},
                  "densenet": {"growth_rate": 12, "block_layers": [2, 2, 2],
                               "init_features": 16}}


# --------------------------------------------------------------------- layer sequences
@dataclasses.dataclass(frozen=True)
class Layer:
  """One entry of a network's layer sequence.

  Attributes:
    node: the conv, dense, pool or global-pooling node.
    kind: ``"conv"``, ``"fc"``, ``"pool"`` or ``"gap"``.
    token: the encoder's token id.
    widen_to: the next width on the layer's ladder if the Net2Wider actor may widen it
      (None: at the top, or not a widenable layer).
    block: the block a layer inserted right after this one joins (-1: no insertion here).
    after: the node Net2Deeper inserts after (the end of this layer's conv-BN-ReLU, its
      DenseNet concatenation, global pooling), or None.
  """

  node: str
  kind: str
  token: int
  widen_to: int | None = None
  block: int = -1
  after: str | None = None


@dataclasses.dataclass(frozen=True)
class Ladders:
  """The discrete widths (§3.1) and the kernel sizes the actors choose from."""

  filters: tuple[int, ...] = DEFAULT_FILTER_LEVELS
  units: tuple[int, ...] = DEFAULT_UNIT_LEVELS
  growth: tuple[int, ...] = DEFAULT_GROWTH_LEVELS
  kernels: tuple[int, ...] = DEFAULT_KERNELS

  def __post_init__(self):
    for what in ("filters", "units", "growth", "kernels"):
      levels = tuple(getattr(self, what))
      if (not levels or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                            or v < 1 for v in levels)
          or list(levels) != sorted(set(levels))):
        raise ValueError(f"{what} levels must be increasing positive ints, got {levels!r}")
      object.__setattr__(self, what, tuple(int(v) for v in levels))

  @property
  def conv_levels(self) -> int:
    return max(len(self.filters), len(self.growth))

  @property
  def kernel_shapes(self) -> int:
    """Filter shapes a conv token tells apart: every (height, width) of ``kernels``."""
    return len(self.kernels) ** 2

  @property
  def vocab(self) -> int:
    return FIRST_CONV + self.conv_levels * self.kernel_shapes + len(self.units)

  def conv_token(self, width: int, kernel: Sequence[int], ladder: tuple[int, ...]) -> int:
    """The token of a conv of ``width`` filters of shape ``kernel`` ``(height, width)``
    (each taken as the nearest of ``kernels``)."""
    h, w = (int(np.argmin([abs(k - v) for v in self.kernels])) for k in kernel)
    shape = h * len(self.kernels) + w
    return FIRST_CONV + _level(width, ladder) * self.kernel_shapes + shape

  def fc_token(self, width: int) -> int:
    return FIRST_CONV + self.conv_levels * self.kernel_shapes + _level(width, self.units)


def _level(width: int, ladder: tuple[int, ...]) -> int:
  """Index of the largest rung not above ``width`` (0 below the ladder)."""
  return max(0, int(np.searchsorted(ladder, width, side="right")) - 1)


def _next_width(width: int, ladder: tuple[int, ...]) -> int | None:
  above = [v for v in ladder if v > width]
  return above[0] if above else None


def _layer_end(arch: Arch, name: str) -> str:
  """The last node of ``name``'s conv-BN-ReLU (or dense-ReLU) chain."""
  end = name
  while True:
    consumers = arch.consumers(end)
    if len(consumers) != 1 or arch[consumers[0]].op not in ("batchnorm", "relu"):
      return end
    end = consumers[0]


def _can_widen(arch: Arch, node: str, width: int | None) -> int | None:
  from nasjax.ops.plan import try_plan

  if width is None or try_plan("net2wider", arch, node=node, width=width) is None:
    return None
  return width


def layer_sequence(arch: Arch, family: str, ladders: Ladders) -> tuple[Layer, ...]:
  """The layers of ``arch`` as the controller sees them, in topological order.

  Plain CNNs: every conv is a ``conv`` layer of block ``b`` (the number of pools before
  it), widenable on the filter ladder, with an insertion point after its ReLU; global
  pooling opens the dense block (insertion right after it), and every hidden dense layer
  is an ``fc`` layer of that block, widenable on the unit ladder. DenseNets: a conv whose
  output is the last input of a concatenation is a layer of its dense block, widenable
  on the growth ladder, with the insertion point after that concatenation; the other
  convs (stem, transitions, bottlenecks) only appear as tokens.

  Args:
    arch: the network's architecture.
    family: ``"plain_cnn"`` or ``"densenet"``.
    ladders: widths and kernel sizes.

  Returns:
    The layers (the classifier, ``arch.output``, is not one of them).
  """
  if family not in FAMILIES:
    raise ValueError(f"unknown family {family!r}; choose from {list(FAMILIES)}")
  layers, block = [], 0
  for name in arch.topo_order:
    node = arch[name]
    if name == arch.output:
      continue
    if node.op in ("max_pool", "avg_pool"):
      layers.append(Layer(name, "pool", POOL))
      block += 1
    elif node.op in ("gap", "flatten"):
      if family == "plain_cnn":
        block += 1
        layers.append(Layer(name, "gap", GAP, block=block, after=name))
      else:
        layers.append(Layer(name, "gap", GAP))
    elif node.op in ("conv", "sep_conv"):
      width, kernel = node["features"], node["kernel"]
      if family == "plain_cnn":
        layers.append(Layer(name, "conv", ladders.conv_token(width, kernel, ladders.filters),
                            _can_widen(arch, name, _next_width(width, ladders.filters)),
                            block, _layer_end(arch, name)))
        continue
      cat = next((c for c in arch.consumers(name)
                  if arch[c].op == "concat" and arch[c].inputs[-1] == name), None)
      if cat is None:
        layers.append(Layer(name, "conv", ladders.conv_token(width, kernel, ladders.filters)))
      else:
        layers.append(Layer(name, "conv", ladders.conv_token(width, kernel, ladders.growth),
                            _can_widen(arch, name, _next_width(width, ladders.growth)),
                            block, cat))
    elif node.op == "dense":
      width = node["features"]
      if family == "plain_cnn":
        layers.append(Layer(name, "fc", ladders.fc_token(width),
                            _can_widen(arch, name, _next_width(width, ladders.units)),
                            block, _layer_end(arch, name)))
      else:
        layers.append(Layer(name, "fc", ladders.fc_token(width)))
  return tuple(layers)


def insertion_blocks(layers: Sequence[Layer]) -> list[list[Layer]]:
  """The insertion points of each block, in order (block ``b`` is entry ``b``)."""
  num = 1 + max([layer.block for layer in layers] + [-1])
  blocks: list[list[Layer]] = [[] for _ in range(num)]
  for layer in layers:
    if layer.block >= 0 and layer.after is not None:
      blocks[layer.block].append(layer)
  return blocks


def observe(layers: Sequence[Layer], max_len: int, max_blocks: int) -> dict[str, np.ndarray]:
  """One observation (:func:`~nasjax.search.strategies.eas_controller.observation_spec`)
  of a network.

  Raises:
    ValueError: if the network has more than ``max_len`` layers or ``max_blocks`` blocks.
  """
  n = len(layers)
  if n > max_len:
    raise ValueError(f"the network has {n} layers, more than max_len={max_len}")
  blocks = insertion_blocks(layers)
  if len(blocks) > max_blocks:
    raise ValueError(f"the network has {len(blocks)} blocks, more than max_blocks="
                     f"{max_blocks}")
  tokens = np.zeros(max_len, np.int32)
  tokens[:n] = [layer.token for layer in layers]
  widen = np.zeros(max_len, bool)
  widen[:n] = [layer.widen_to is not None for layer in layers]
  sizes = np.zeros(max_blocks, np.int32)
  conv = np.zeros(max_blocks, bool)
  for b, members in enumerate(blocks):
    sizes[b] = len(members)
    conv[b] = bool(members) and members[0].kind == "conv"
  return {"tokens": tokens, "length": np.int32(n), "widen_mask": widen,
          "block_sizes": sizes, "block_conv": conv,
          "deeper_ok": np.bool_(n < max_len and sizes.any())}



# ----------------------------------------------------------------------------- state
@dataclasses.dataclass(frozen=True)
class Child:
  """A transformation sequence sampled from the seed in the current episode.

  Attributes:
    arch: the child's architecture.
    ops: the morphisms that make it from the seed, ``((name, kwargs), ...)``.
    key: its cache key, :func:`child_key` of the seed and ``ops``: what its training
      would be.
    candidate: its index among the candidates of the ``ask`` (-1: taken from the cache).
    fitness: the cached fitness (NaN for a candidate, until told).
  """

  arch: Arch
  ops: tuple
  key: str
  candidate: int = -1
  fitness: float = math.nan


@dataclasses.dataclass(frozen=True)
class EASState:
  """EAS's search state: immutable (``ask`` and ``tell`` return new states).

  Attributes:
    params: the controller's parameters.
    opt_state: Adam's state.
    baseline: the moving average of the rewards (None before the first update).
    seed: the best trained network so far, the start of every episode (None at first).
    seed_fitness: its fitness.
    seed_depth: evaluations along its lineage, its own included: its weights were
      trained that many times.
    seed_id: which told candidate the seed is (its index in the order candidates were
      told; -1 before the first): the seed network's identity in cache keys.
    pending: the children of the last ``ask`` (the start network, in the first).
    trajectory: the observations and actions of the pending children (arrays with
      leading axes ``(num_children, T)``), None for the start network.
    cache: fitness of every child trained, by :func:`child_key` (the seed it grew from
      and its actions).
    episode: episodes sampled (controller updates made).
    count: candidates told.
    log: one dict per controller update: ``episode``, ``mean_reward``, ``baseline``,
      ``best_child`` (lowest fitness among the episode's children), ``seed_fitness``.
  """

  params: Any
  opt_state: Any
  baseline: float | None = None
  seed: Network | None = None
  seed_fitness: float = math.nan
  seed_depth: int = 0
  seed_id: int = -1
  pending: tuple[Child, ...] = ()
  trajectory: Mapping[str, np.ndarray] | None = None
  cache: Mapping[str, float] = dataclasses.field(default_factory=dict)
  episode: int = 0
  count: int = 0
  log: tuple[Mapping[str, float], ...] = ()


def child_key(seed_id: int, ops) -> str:
  """The cache key of a child: a digest of the seed network's identity (``seed_id``) and
  the actions (``ops``, ``((name, kwargs), ...)``) that make the child from it. Equal keys
  mean the same network trained the same way; the same architecture grown from another
  seed, whose weights differ, has another key."""
  text = json.dumps([int(seed_id), [[name, dict(kwargs)] for name, kwargs in ops]],
                    sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:32]


def reward(fitness) -> np.ndarray:
  """EAS's reward ``tan(acc * pi / 2)`` of validation errors in percent (NaN stays NaN).

  The accuracy is clipped to ``[0, 0.999]``: the transform has a pole at 1.
  """
  acc = np.clip(1.0 - np.asarray(fitness, np.float64) / 100.0, 0.0, 0.999)
  return np.tan(acc * np.pi / 2)


# --------------------------------------------------------------------------- options
def _levels(v):
  """A width or kernel ladder: increasing positive ints."""
  ok = (isinstance(v, (tuple, list)) and len(v) > 0
        and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 1
                for x in v)
        and list(v) == sorted(set(v)))
  return None if ok else "must be increasing positive ints"


def _steps(v):
  if (not isinstance(v, (tuple, list)) or not v
      or any(s not in STEP_KINDS for s in v)):
    return f"must be a non-empty list of {list(STEP_KINDS)}"
  return None


def _mapping(v):
  return None if isinstance(v, Mapping) else "must be a dict of keyword arguments"


def _decay(v):
  ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1
  return None if ok else "must lie in [0, 1)"


def _path(v):
  return None if v is None or isinstance(v, str) else "must be a file path or None"


# EAS's settings (§4.1) where the registered defaults differ: ten networks sampled per
# episode, and the width ladders of its plain-CNN search (the authors' code lists the
# same ladders, extended to 640 filters and 1,280 units). The kernel sizes, the encoder
# (16-dimensional embeddings, 50 LSTM units per direction) and the baseline's decay are
# the paper's and the defaults; they are listed so that the preset applied over other
# options restores them. The number of actions per child is not: the registered four
# Net2Deeper and one Net2Wider step are kept (docs/results/eas.md).
PAPER = {"num_children": 10,
         "filter_levels": (16, 32, 64, 96, 128, 192, 256, 320, 384, 448, 512),
         "unit_levels": (64, 128, 256, 384, 512, 640, 768, 896, 1024),
         "kernels": (1, 3, 5), "embed": 16, "hidden": 50, "baseline_decay": 0.95}


@dataclasses.dataclass(frozen=True, kw_only=True)
class EasConfig(Options):
  """EAS's options (preset ``"paper"``: :data:`PAPER`).

  Attributes:
    objective: which told fitness column is the validation error in percent.
    family: ``"plain_cnn"`` or ``"densenet"``.
    start: keyword arguments of the start network's builder
      (:func:`nasjax.models.eas_start_net` or :func:`nasjax.models.densenet`); empty:
      the family's default (:data:`DEFAULT_STARTS`).
    num_children: children sampled per episode.
    steps: the transformation steps of a child, each ``"wider"`` or ``"deeper"``.
    filter_levels, unit_levels, growth_levels: the width ladders of conv filters, dense
      units and DenseNet layers.
    kernels: the filter heights and widths (chosen separately) of inserted conv layers.
    max_len, max_blocks: the longest layer sequence and most blocks the controller
      reads; a child stops deepening at ``max_len`` layers.
    embed, hidden: the controller's embedding size and LSTM units per direction.
    learning_rate: Adam's step size.
    baseline_decay: the moving average keeps this much of the old baseline per episode.
    policy: ``"controller"`` (learned) or ``"random"`` (uniform actions, no learning).
    wider_noise: Net2Wider's symmetry-breaking noise (the copies' shares of outgoing
      weights still sum to one, so the function is kept).
    max_resample: episodes re-sampled (and learned from) when every child is cached,
      before one is evaluated again anyway.
    start_weights: a network file (:func:`nasjax.save`) to start from instead: a trained
      start network, whose architecture replaces ``start``.
  """

  strategy = "eas"
  presets = {"paper": PAPER}
  objective: int = option(0, integer(0))
  family: str = option("plain_cnn", one_of(*FAMILIES))
  start: Mapping[str, Any] = option({}, _mapping)
  num_children: int = option(8, integer(1))
  steps: tuple[str, ...] = option(("deeper", "deeper", "deeper", "deeper", "wider"), _steps)
  filter_levels: tuple[int, ...] = option(DEFAULT_FILTER_LEVELS, _levels)
  unit_levels: tuple[int, ...] = option(DEFAULT_UNIT_LEVELS, _levels)
  growth_levels: tuple[int, ...] = option(DEFAULT_GROWTH_LEVELS, _levels)
  kernels: tuple[int, ...] = option(DEFAULT_KERNELS, _levels)
  max_len: int = option(64, integer(1))
  max_blocks: int = option(8, integer(1))
  embed: int = option(16, integer(1))
  hidden: int = option(50, integer(1))
  learning_rate: float = option(0.005, number(0.0))
  baseline_decay: float = option(0.95, _decay)
  policy: str = option("controller", one_of(*POLICIES))
  wider_noise: float = option(0.1, number(0.0))
  max_resample: int = option(8, integer(0))
  start_weights: str | None = option(None, _path)

  def check(self) -> None:
    if self.objective >= self.num_objectives:
      raise ValueError(f"eas: objective {self.objective!r} is outside the "
                       f"{self.num_objectives} objectives")


@functools.lru_cache(maxsize=32)
def _controller(vocab: int, max_len: int, max_blocks: int, kernels: int, strides: int,
                embed: int, hidden: int) -> ctrl.EASController:
  """One controller module per shape, so that its jitted programs compile once."""
  return ctrl.EASController(vocab, max_len, max_blocks, kernels, strides, embed, hidden)


# -------------------------------------------------------------------------- strategy
@dataclasses.dataclass(frozen=True, eq=False)
class EAS:
  """The EAS strategy (see the module docstring).

  Attributes:
    space: the search space named by the run (networks are grown, not coded).
    config: an :class:`EasConfig`.
    problem: the task (:class:`~nasjax.search.work.Problem`): the start network's input
      shape and classes, and the training inputs on which inserted batch norms take
      their statistics; needed to start a search (not to inspect architectures).
  """

  space: SearchSpace
  config: EasConfig = EasConfig()
  problem: work.Problem | None = None
  name = "eas"

  def __post_init__(self):
    if not isinstance(self.config, EasConfig):
      raise ValueError(f"eas: config must be an EasConfig, got {type(self.config).__name__}")

  # -- configuration -------------------------------------------------------------------
  @property
  def ladders(self) -> Ladders:
    c = self.config
    return Ladders(c.filter_levels, c.unit_levels, c.growth_levels, c.kernels)

  @property
  def controller(self) -> ctrl.EASController:
    c, ladders = self.config, self.ladders
    return _controller(ladders.vocab, c.max_len, c.max_blocks, len(ladders.kernels),
                       len(STRIDES),
                       c.embed, c.hidden)

  @property
  def uniform(self) -> jax.Array:
    """``()`` bool: whether actions are drawn uniformly (``policy="random"``)."""
    return jnp.bool_(self.config.policy == "random")

  def start_arch(self, input_shape: Sequence[int], num_classes: int) -> Arch:
    """The start network's architecture for images of ``input_shape``."""
    from nasjax.models import densenet, eas_start_net

    c = self.config
    build = eas_start_net if c.family == "plain_cnn" else densenet
    start = dict(c.start or DEFAULT_STARTS[c.family])
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in start.items()}
    arch = build(**kwargs, input_shape=tuple(input_shape), num_classes=num_classes)
    observe(self.layers(arch), c.max_len, c.max_blocks)  # fits the controller
    return arch

  def start_network(self, key: jax.Array) -> Network:
    """The network the search starts from: ``start_weights`` if given, else the start
    architecture for the problem, initialised from ``key``."""
    c = self.config
    if c.start_weights is None:
      problem = self._problem()
      return init(self.start_arch(problem.input_shape, problem.num_classes), key)
    from nasjax.network import load

    net = load(c.start_weights)
    observe(self.layers(net.arch), c.max_len, c.max_blocks)  # fits the controller
    return net

  def layers(self, arch: Arch) -> tuple[Layer, ...]:
    """The controller's view of ``arch`` (:func:`layer_sequence`)."""
    return layer_sequence(arch, self.config.family, self.ladders)

  def _problem(self) -> work.Problem:
    if self.problem is None:
      raise ValueError("eas builds networks: give it problem= (a "
                       "nasjax.search.work.Problem), as make_strategy does from a training "
                       "evaluator")
    return self.problem

  @property
  def morph_batch(self) -> np.ndarray:
    """``(n, *input_shape)``: the problem's training inputs, on which the batch norms that
    Net2Deeper inserts take their statistics (EAS §3.1: set to undo the normalisation the
    layer applies in training mode too)."""
    return self._problem().inputs

  # -- protocol --------------------------------------------------------------------------
  def init(self, key: jax.Array) -> EASState:
    import optax

    params = ctrl.init_params(self.controller, key)
    return EASState(params=params, opt_state=optax.scale_by_adam().init(params))

  def ask(self, key: jax.Array, state: EASState) -> tuple[list[Network], EASState]:
    """The start network (first call), then the children of one episode to evaluate.

    Nothing is trained here: the children carry the seed's weights through the
    morphisms (the controller may take REINFORCE steps on cached results).

    Returns:
      ``(networks, state)``: :class:`~nasjax.Network` s with inherited weights, one per
      distinct child not trained before; ``state.pending`` lists every child of the
      episode (cached ones included).
    """
    if state.seed is None:
      net = self.start_network(key)
      child = Child(net.arch, (), child_key(-1, ()), candidate=0)
      return [net], dataclasses.replace(state, pending=(child,), trajectory=None)
    k_sample, k_make = jax.random.split(key)
    most = self.config.max_resample
    for attempt in range(most + 1):
      children, trajectory = self.sample_episode(jax.random.fold_in(k_sample, attempt),
                                                 state)
      children = self._assign_candidates(children, state.cache, force=attempt == most)
      if any(c.candidate >= 0 for c in children):
        break
      # Every child was trained before: learn from the cached rewards, sample again.
      state = self._learn(state, trajectory, np.array([c.fitness for c in children]))
    nets = {}
    for j, child in enumerate(children):
      if child.candidate >= 0 and child.candidate not in nets:
        nets[child.candidate] = self.apply_ops(state.seed, child.ops,
                                               jax.random.fold_in(k_make, j))
    return [nets[i] for i in range(len(nets))], dataclasses.replace(
        state, pending=tuple(children), trajectory=trajectory)

  def tell(self, key, state: EASState, candidates, fitness) -> EASState:
    """Cache the results, update the controller by REINFORCE and the seed.

    Args:
      key: unused (the update is deterministic).
      state: the state returned by the last ``ask``.
      candidates: the candidates of that ``ask``, or the trained networks in their place.
      fitness: ``(B,)`` or ``(B, M)``; a NaN marks a failed child (no reward, never the
        seed).

    Raises:
      ValueError: if the candidates do not match the last ``ask``.
    """
    del key
    f = np.asarray(select_objective(fitness, self.config.objective), np.float64)
    num = 1 + max([c.candidate for c in state.pending] + [-1])
    if len(candidates) != num or f.shape != (num,):
      raise ValueError(f"told {len(candidates)} candidates with fitness of shape "
                       f"{np.shape(fitness)}, but the last ask proposed {num}")
    by_candidate = {c.candidate: c for c in state.pending if c.candidate >= 0}
    cache = dict(state.cache)
    seed, seed_fitness, seed_depth, seed_id = (state.seed, state.seed_fitness,
                                               state.seed_depth, state.seed_id)
    for i, cand in enumerate(candidates):
      child = by_candidate[i]
      if isinstance(cand, Network) and cand.arch != child.arch:
        raise ValueError(f"candidate {i} has a different architecture than the one asked")
      if not math.isfinite(f[i]):
        continue
      cache[child.key] = float(f[i])
      if isinstance(cand, Network) and (math.isnan(seed_fitness) or f[i] < seed_fitness):
        seed, seed_fitness, seed_id = cand, float(f[i]), state.count + i
        seed_depth = state.seed_depth + 1
    new = dataclasses.replace(state, seed=seed, seed_fitness=seed_fitness,
                              seed_depth=seed_depth, seed_id=seed_id, cache=cache,
                              pending=(), trajectory=None, count=state.count + num)
    if state.trajectory is None:  # the start network: nothing to learn from
      return new
    child_f = np.array([f[c.candidate] if c.candidate >= 0 else c.fitness
                        for c in state.pending])
    return self._learn(new, state.trajectory, child_f, seed_fitness=seed_fitness)

  # -- episodes ---------------------------------------------------------------------------
  def sample_episode(self, key: jax.Array, state: EASState
                     ) -> tuple[list[Child], dict[str, np.ndarray]]:
    """Sample ``num_children`` transformation sequences from the seed.

    Only architectures are built here (the morphisms' structural plans); weights are
    transferred later, for the children that are evaluated.

    Returns:
      ``(children, trajectory)``: the children (not yet checked against the cache) and
      their observations and actions, arrays with leading axes ``(num_children, T)``:
      the observation fields, ``widen`` ``(n, T, L)``, ``deeper`` ``(n, T, 5)``
      (:data:`~nasjax.search.strategies.eas_controller.DEEPER_DECISIONS`),
      ``valid`` ``(n, T)``, and ``is_wider`` ``(T,)``, the kind of each step.
    """
    from nasjax.ops.plan import try_plan

    n = self.config.num_children
    archs = [state.seed.arch] * n
    ops: list[list] = [[] for _ in range(n)]
    obs_steps, widen_steps, deeper_steps, valid_steps = [], [], [], []
    for t, kind in enumerate(self.config.steps):
      layer_lists = [self.layers(a) for a in archs]
      obs = [observe(layers, self.config.max_len, self.config.max_blocks) for layers in layer_lists]
      batch = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
      keys = jax.random.split(jax.random.fold_in(key, t), n)
      actions, _ = _sample(self.controller, state.params, batch, keys, kind, self.uniform)
      actions = np.asarray(actions)
      widen = np.zeros((n, self.config.max_len), np.int32)
      deeper = np.zeros((n, len(ctrl.DEEPER_DECISIONS)), np.int32)
      valid = np.zeros(n, bool)
      for i in range(n):
        if kind == "wider":
          widen[i] = actions[i]
          new_ops = [("net2wider", {"node": layer.node, "width": layer.widen_to})
                     for layer, w in zip(layer_lists[i], actions[i]) if w]
          valid[i] = bool(batch["widen_mask"][i].any())
        else:
          deeper[i] = actions[i]
          valid[i] = bool(batch["deeper_ok"][i])
          new_ops = [self._deeper_op(layer_lists[i], actions[i])] if valid[i] else []
        for name, kwargs in new_ops:
          plan = try_plan(name, archs[i], **kwargs)
          if plan is None:
            raise RuntimeError(f"{name}({kwargs}) was offered to the controller but does "
                               f"not apply to the network")
          archs[i] = plan.arch
          ops[i].append((name, kwargs))
      obs_steps.append(batch)
      widen_steps.append(widen)
      deeper_steps.append(deeper)
      valid_steps.append(valid)
    trajectory = {k: np.stack([b[k] for b in obs_steps], axis=1) for k in obs_steps[0]}
    trajectory.update(widen=np.stack(widen_steps, 1), deeper=np.stack(deeper_steps, 1),
                      valid=np.stack(valid_steps, 1),
                      is_wider=np.array([kind == "wider" for kind in self.config.steps]))
    children = [Child(a, tuple(o), child_key(state.seed_id, o)) for a, o in zip(archs, ops)]
    return children, trajectory

  def _deeper_op(self, layers: Sequence[Layer], action) -> tuple[str, dict]:
    # The stride decision indexes STRIDES, whose one stride is net2deeper's.
    block, pos, height, width, _ = (int(v) for v in action)
    at = insertion_blocks(layers)[block][pos]
    if at.kind in ("gap", "fc"):
      return "net2deeper", {"after": at.after, "op": "dense"}
    kernel = (self.config.kernels[height], self.config.kernels[width])
    return "net2deeper", {"after": at.after, "kernel": kernel, "op": "conv"}

  @staticmethod
  def _assign_candidates(children: list[Child], cache: Mapping[str, float],
                         force: bool) -> list[Child]:
    """Number the distinct children (by :func:`child_key`) not in ``cache`` as
    candidates; the others take their cached fitness. With ``force`` and nothing new, the
    first child is evaluated again."""
    nothing_new = all(c.key in cache for c in children)
    forced = children[0].key if force and nothing_new else None
    out, index = [], {}
    for c in children:
      if c.key in cache and c.key != forced:
        out.append(dataclasses.replace(c, candidate=-1, fitness=cache[c.key]))
      else:
        index.setdefault(c.key, len(index))
        out.append(dataclasses.replace(c, candidate=index[c.key], fitness=math.nan))
    return out

  def apply_ops(self, net: Network, ops, key: jax.Array) -> Network:
    """``net`` transformed by ``ops`` (``((name, kwargs), ...)``), weights carried over
    (inserted batch norms' statistics from :attr:`morph_batch`); no gradient step."""
    from nasjax.ops import MORPHISMS

    for s, (name, kwargs) in enumerate(ops):
      extra = {"noise": self.config.wider_noise} if name == "net2wider" else {}
      net = MORPHISMS[name](net, jax.random.fold_in(key, s), batch=self.morph_batch,
                            **kwargs, **extra)
    return net

  # -- learning -------------------------------------------------------------------------
  def _learn(self, state: EASState, trajectory, fitness: np.ndarray,
             seed_fitness: float | None = None) -> EASState:
    """REINFORCE on one episode's children with their ``fitness`` ``(n,)``."""
    R = reward(fitness)
    ok = np.isfinite(R)
    log = {"episode": state.episode,
           "mean_reward": float(R[ok].mean()) if ok.any() else math.nan,
           "best_child": float(np.nanmin(fitness)) if ok.any() else math.nan,
           "seed_fitness": state.seed_fitness if seed_fitness is None else seed_fitness}
    if not ok.any() or self.config.policy == "random":
      return dataclasses.replace(state, episode=state.episode + 1,
                                 log=state.log + ({**log, "baseline": state.baseline},))
    mean = float(R[ok].mean())
    b = mean if state.baseline is None else state.baseline
    weights = np.where(ok, np.nan_to_num(R - b), 0.0) / ok.sum()
    params, opt_state = _reinforce_step(self.controller, state.params, state.opt_state,
                                        {k: jnp.asarray(v) for k, v in trajectory.items()},
                                        jnp.asarray(weights, jnp.float32),
                                        jnp.float32(self.config.learning_rate))
    baseline = self.config.baseline_decay * b + (1 - self.config.baseline_decay) * mean
    return dataclasses.replace(state, params=params, opt_state=opt_state, baseline=baseline,
                               episode=state.episode + 1,
                               log=state.log + ({**log, "baseline": baseline},))

  # -- inspection -------------------------------------------------------------------------
  def action_probabilities(self, params, arch: Arch) -> dict[str, np.ndarray]:
    """The controller's first decisions on ``arch`` as probabilities.

    Returns:
      ``widen`` ``(num_layers,)``: the probability that each layer of
      :meth:`layers` widens (0 where it cannot); ``block`` ``(num_blocks,)``: the
      probability that the Net2Deeper actor inserts into each block.
    """
    layers = self.layers(arch)
    obs = {k: jnp.asarray(v) for k, v in observe(layers, self.config.max_len,
                                                  self.config.max_blocks).items()}
    p_widen, p_block = _policy(self.controller, params, obs, self.uniform)
    return {"widen": np.asarray(p_widen)[:len(layers)],
            "block": np.asarray(p_block)[:len(insertion_blocks(layers))]}


# Jitted with the controller static: controllers of the same shape (equal modules) share
# the compiled programs, and the policy flag and the learning rate are traced, so the
# learned controller and the random-policy ablation use the same programs.
_sample = jax.jit(ctrl.sample, static_argnames=("controller", "kind"))


@functools.partial(jax.jit, static_argnames=("controller",))
def _policy(controller: ctrl.EASController, params, obs: dict, uniform: jax.Array):
  return controller.apply({"params": params}, obs, uniform=uniform, method="policy")


@functools.partial(jax.jit, static_argnames=("controller",))
def _reinforce_step(controller: ctrl.EASController, params, opt_state, trajectory: dict,
                    weights: jax.Array, learning_rate: jax.Array):
  """One Adam step on ``-sum_k weights_k log P(child_k)``.

  Args:
    controller: the module.
    params: its parameters.
    opt_state: ``optax.scale_by_adam`` state.
    trajectory: the episode (:meth:`EAS.sample_episode`), arrays ``(n, T, ...)``.
    weights: ``(n,)`` advantage of each child over the number of rewarded children (0
      for a failed child).
    learning_rate: ``()`` Adam's step size.

  Returns:
    ``(params, opt_state)``.
  """
  import optax

  obs = {k: trajectory[k] for k in ctrl.observation_spec(1, 1)}

  def loss(p):
    logp = ctrl.log_prob(controller, p, obs, trajectory["widen"], trajectory["deeper"],
                         trajectory["is_wider"], trajectory["valid"])
    return -jnp.sum(weights * logp)

  grads = jax.grad(loss)(params)
  updates, opt_state = optax.scale_by_adam().update(grads, opt_state, params)
  params = jax.tree_util.tree_map(lambda p, u: p - learning_rate * u, params, updates)
  return params, opt_state



def _make(space: SearchSpace, config: EasConfig, problem: work.Problem | None = None) -> EAS:
  """The registry's factory: the strategy and the problem it builds networks for."""
  strategy = EAS(space, config, problem)
  strategy._problem()  # fail here, not at the first ask
  return strategy


register_strategy(
    "eas", _make, options=EasConfig, spaces=("plain_cnn",), multi_objective=False,
    jittable=False, needs_problem=True,
    smoke={"space": "plain_cnn", "max_evals": 4,
           "config": {"start": {"variant": "tiny", "num_blocks": 2},
                      "filter_levels": [4, 8, 16], "unit_levels": [8, 16, 32],
                      "num_children": 3, "steps": ["deeper", "wider"], "hidden": 16},
           "train": {"epochs": 1.0, "max_steps": 4, "batch_size": 32}},
    description="EAS, an RL meta-controller growing trained networks by Net2Wider / "
                "Net2Deeper (Cai et al. 2018)")

__all__ = ["EAS", "EasConfig", "EASState", "Child", "Layer", "Ladders", "layer_sequence",
           "insertion_blocks", "observe", "child_key", "reward", "FAMILIES", "POLICIES",
           "DEFAULT_STARTS", "STRIDES", "PAPER"]
