"""LEMONADE: multi-objective Lamarckian evolution (Elsken et al., "Efficient Multi-Objective
Neural Architecture Search via Lamarckian Evolution", ICLR 2019).

The objectives are ``f(N) = (f_exp(N), f_cheap(N))``: expensive ones that need training
(validation error) and cheap ones that are known from the architecture alone (parameter
count, FLOPs, latency measured on the current device). The population is the set of
networks that no evaluated network dominates in all objectives: the current
approximation of the Pareto front. Each generation (Algorithm 1 of the paper):

1. a kernel density estimate ``p_KDE`` is fitted to the population's cheap objectives
   (log-scaled: sizes span orders of magnitude; :mod:`nasjax.search.strategies.kde`);
2. ``n_pc`` parents are drawn with probability proportional to ``1 / p_KDE``, so sparse
   regions of the front get more offspring;
3. each parent gets one child by random network morphisms (§3.1: insert a layer, widen,
   add a skip; the function is kept) or approximate morphisms (§3.2: remove a layer or a
   skip, prune filters, replace a conv by a separable one; the function is nearly kept
   and then recovered by distillation from the parent), drawn from
   :data:`nasjax.ops.MORPHISMS`; only the child's architecture is built at this point and
   its cheap objectives computed, without training;
4. ``n_ac`` of the children are accepted, again with probability proportional to
   ``1 / p_KDE``, here a density over the population and the proposed children together,
   so that children crowding the same spot compete with each other (optionally also
   divided by a power of each child's cost, ``cost_objective``, so that a search under a
   budget of training time spreads its time rather than its children over the front;
   ``accept_density="population"`` is the paper's density of the population alone, the
   density of step 1; the preset ``"paper"``, :data:`PAPER`, gives Algorithm 1's rules);
5. only the accepted children get weights, inherited from their parent through the
   morphism (Lamarckian inheritance; an inserted batch norm takes its statistics on the
   problem's training inputs, so that the child keeps the function in training mode
   too), and only they are trained, briefly, and scored on the expensive objectives;
6. the population becomes the Pareto front of itself and the new children. Front members
   keep their trained weights, so their children start from them.

The search starts from trivial networks (small plain CNNs) and needs no good initial
architecture.

Strategy protocol (:mod:`nasjax.search.base`; the candidates of
:mod:`nasjax.search.work`). LEMONADE proposes and never trains: ``ask`` returns the
initial networks as :class:`~nasjax.Arch` s, which the evaluator initialises and trains;
an exact child as a :class:`~nasjax.Network` carrying the weights it inherits through
its morphisms, which the evaluator trains further; and an approximate child as a
:class:`~nasjax.search.work.Child` whose teacher is its parent, which the evaluator
first distils from the parent for ``distill_steps`` steps (on its own training data,
with its own optimiser and batch size) and then trains. The runner tells back the
trained networks, which become the members' weights. The strategy knows the task only
through its :class:`~nasjax.search.work.Problem` (the input shape and classes of the
initial networks, and the training inputs that inserted batch norms take their
statistics on); it loads no data. On the tabular spaces (NAS-Bench-Macro, NAS-Bench-201)
there are no weights and no problem: candidates are codes, the space's one-position
mutation stands in for a morphism, the cheap objectives come from the architecture the
code builds, and children already evaluated are not proposed again (a table gives the
same answer twice, and charges every query).

The Pareto front is taken over the told fitness together with the cheap objectives, so
an evaluator that reports only the validation error still gives a multi-objective
search; a cheap objective that the evaluator also reports is a repeated column, which
does not change dominance.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.arch import Arch
from nasjax.network import Network, count_params, flops, init, key_seed, latency
from nasjax.search import work
from nasjax.search.base import register_strategy
from nasjax.search.options import Options, boolean, integer, number, one_of, option
from nasjax.search.pareto import dominance_matrix, pareto_mask
from nasjax.search.spaces import SearchSpace
from nasjax.search.strategies import kde

CHEAP_OBJECTIVES = ("params", "flops", "latency")
REPRESENTATIONS = ("auto", "networks", "codes")
# Spaces searched by table lookup, where candidates are codes without weights.
TABULAR_SPACES = ("macro", "nb201")
DEFAULT_INITIAL = (((8,),), ((8,), (16,)), ((16,), (32,)))


# ------------------------------------------------------------------------ cheap objectives
@functools.lru_cache(maxsize=2048)
def arch_latency(arch: Arch) -> float:
  """Median seconds of one batch-1 inference of ``arch`` on the current device (cached).

  The weights do not change the time, so the network is initialised with a fixed key.
  """
  return latency(init(arch, jax.random.key(0)))


@functools.lru_cache(maxsize=16384)
def _cheap(arch: Arch, names: tuple[str, ...]) -> tuple[float, ...]:
  out = []
  for name in names:
    if name == "params":
      out.append(float(count_params(arch)))
    elif name == "flops":
      out.append(float(flops(arch)))
    else:
      out.append(arch_latency(arch))
  return tuple(out)


def cheap_objectives(arch: Arch, names: Sequence[str]) -> tuple[float, ...]:
  """The cheap objectives ``names`` (of :data:`CHEAP_OBJECTIVES`) of ``arch``, untrained.

  Raises:
    ValueError: for an unknown objective name.
  """
  names = tuple(names)
  for name in names:
    if name not in CHEAP_OBJECTIVES:
      raise ValueError(f"unknown cheap objective {name!r}; choose from {list(CHEAP_OBJECTIVES)}")
  return _cheap(arch, names)


@functools.lru_cache(maxsize=16384)
def _code_arch(space: SearchSpace, code: tuple[int, ...]) -> Arch:
  return space.build(np.asarray(code, np.int32))


@functools.lru_cache(maxsize=16)
def _batched(space: SearchSpace):
  """Jitted ``(mutate, sample)`` over batches of keys and codes for ``space``."""
  return jax.jit(jax.vmap(space.mutate)), jax.jit(jax.vmap(space.sample))


# ------------------------------------------------------------------------------ options
# The operators of the LEMONADE paper: network morphisms (§3.1: insert a conv-BN-ReLU,
# widen a layer, add a skip; widening a kernel, appendix A.1.1) and approximate ones
# (§3.2: remove a layer or a skip, prune filters, replace a conv by a depthwise-separable
# one). Net2Deeper, which the defaults draw too, is EAS's.
PAPER_MORPHISMS = ("net2wider", "insert_conv_bn_relu", "add_skip", "widen_kernel",
                   "remove_layer", "remove_skip", "prune_filters", "to_sepconv")
# Algorithm 1 as published. The registered defaults differ in two rules: they accept
# children by a density over the population and the proposed children together, and draw
# Net2Deeper too. The other options listed here are the ones this package adds to the
# paper's rules (size bounds, width priors, cost weighting, margins, constraints, repeated
# training of the starts), at the values that switch them off, as in the defaults: so
# the preset applied over any options (an experiment's) gives the paper's rules, and
# leaves its budget and scale (n_pc, n_ac, starts, distillation) as they are.
PAPER = {"accept_density": "population", "morphisms": PAPER_MORPHISMS,
         "cost_objective": None, "dominance_margin": (), "depth_margin": 0.0,
         "constraints": (), "initial_depth": 1, "min_params": None, "max_params": None,
         "monotone_widths": False, "widen_to_monotone": False, "min_width": None}


def _morphism_names() -> tuple[str, ...]:
  from nasjax.ops import MORPHISMS

  return tuple(MORPHISMS)


def _names(known, what: str, at_least_one: bool = False):
  """A list of names, each one of ``known()`` (and at least one with ``at_least_one``)."""
  def check(v):
    if not isinstance(v, (tuple, list)) or not all(isinstance(n, str) for n in v):
      return "must be a list of names"
    names = known()
    bad = [n for n in v if n not in names]
    if bad:
      return f"names an unknown {what} {bad[0]!r} (choose from {sorted(names)})"
    if at_least_one and not v:
      return f"needs at least one of {list(names)}"
    return None
  return check


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
          and math.isfinite(v))


def _columns(v):
  """Fitness columns: a list of ints >= 0 (their bound is checked with the objectives)."""
  if not isinstance(v, (tuple, list)) or not all(_is_int(c) and c >= 0 for c in v):
    return "must be a list of column indices (ints >= 0)"
  return None


def _margins(v):
  if not isinstance(v, (tuple, list)):
    return "must be a list of numbers"
  bad = [m for m in v if not (_is_number(m) and m >= 0)]
  return f"values must be finite and >= 0, {bad[0]!r} is not" if bad else None


def _constraint_pairs(v):
  """``(column, bound)`` pairs (the columns are checked against the front's in
  :meth:`LemonadeConfig.check`)."""
  if not isinstance(v, (tuple, list)):
    return "must be a list of (column, bound) pairs"
  for pair in v:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
      return f"needs (column, bound) pairs, {pair!r} is not one"
    if not _is_int(pair[0]):
      return f"needs an int column in each pair, {pair!r} has none"
    if not _is_number(pair[1]):
      return f"needs a finite number as each bound, {pair[1]!r} is not"
  return None


def _initial_specs(v):
  """At least one plain CNN as a list of blocks of positive conv widths, no two equal."""
  def widths(block):
    return isinstance(block, (tuple, list)) and block and all(
        _is_int(w) and w >= 1 for w in block)

  if not isinstance(v, (tuple, list)) or not v:
    return "needs at least one network (a list of blocks of conv widths)"
  for spec in v:
    if not isinstance(spec, (tuple, list)) or not spec or not all(widths(b) for b in spec):
      return f"needs lists of blocks of positive conv widths, {spec!r} is not one"
  specs = [tuple(tuple(int(w) for w in b) for b in spec) for spec in v]
  if len(set(specs)) != len(specs):
    return "holds the same network twice"
  return None


def _morphism_options(v):
  if not isinstance(v, Mapping) or not all(isinstance(o, Mapping) for o in v.values()):
    return "must map morphism names to keyword arguments"
  bad = [name for name in v if name not in _morphism_names()]
  return f"names an unknown morphism {bad[0]!r}" if bad else None


def constraint_pairs(constraints) -> tuple[tuple[int, float], ...]:
  """``LemonadeConfig.constraints`` as ``((column, bound), ...)`` of ints and floats."""
  return tuple((int(c), float(b)) for c, b in constraints or ())


@dataclasses.dataclass(frozen=True, kw_only=True)
class LemonadeConfig(Options):
  """LEMONADE's options (preset ``"paper"``: :data:`PAPER`).

  Attributes:
    n_pc: children proposed per generation.
    n_ac: children accepted (trained and evaluated) per generation; at most ``n_pc``.
    cheap_objectives: names of :data:`CHEAP_OBJECTIVES` the densities are estimated on.
    front_objectives: the columns of the told fitness that the Pareto front uses (empty:
      all), e.g. ``(0, 1)`` to search error and size while the evaluator also records
      latency.
    dominance_margin: optional tolerances, one per column of ``front_objectives`` (of the
      whole fitness when that is empty), in the fitness's units: a network leaves the
      population only when another is no worse in every objective and better by at
      least this margin in those columns (:func:`nasjax.search.pareto.dominance_matrix`),
      e.g. ``(0.15, 0)`` to keep networks within 0.15 points of validation error of a
      smaller one. A validation error measured on a few thousand images moves by more
      than that between two trainings, and with plain dominance such a difference can
      remove a whole lineage (a network 0.01 points less accurate than a smaller one is
      never a parent again). Empty or all zero: plain Pareto dominance.
    depth_margin: points of the front's first fitness column (the expensive objective,
      e.g. validation error) per doubling of lineage depth (networks only; default 0).
      Under Lamarckian inheritance a network's error falls with the number of trainings
      its weights went through (its ``depth``), so a small network many evaluations deep
      can dominate a large one trained two or three times, and the large one's lineage
      leaves the population before it has trained as long. With ``depth_margin`` a
      network dominates a shallower one only when it is better in that column by
      ``dominance_margin`` plus ``depth_margin * log2(its depth / the other's depth)``
      (:func:`pareto_population`); the gain per evaluation shrinks with depth, hence the
      logarithm. It protects members of the population, the parents, only: the front the
      search returns (:meth:`Lemonade.front`, :func:`export_front`, the report) is the
      population's non-dominated part without it.
    constraints: pairs ``(column, bound)`` of the told fitness, each column one the front
      is taken over: a network whose value in that column exceeds the bound is
      infeasible, e.g. ``((0, 14.0),)`` for at most 14% validation error. The front the
      search returns (:meth:`Lemonade.front`, :func:`export_front`, the report) is the
      feasible part of the population, which is the Pareto front of the feasible networks
      (an infeasible network is worse in a bounded column than every feasible one, so it
      never dominates one). The population, the parents, keeps infeasible networks: in a
      Lamarckian search a network's error falls as its lineage trains, and a small
      network over the bound is the way to a small network under it.
    log_scale: estimate the density on the log of the cheap objectives.
    min_bandwidth: the smallest kernel width (log units when ``log_scale``).
    accept_density: ``"joint"`` (density of the population and the proposed children,
      step 4) or ``"population"`` (the parents' density, as in the paper's Algorithm 1).
    cost_objective: optional name in :data:`CHEAP_OBJECTIVES` that stands for a child's
      training cost: a child is accepted with probability proportional to
      ``1 / (p_KDE * cost ** cost_exponent)`` instead of ``1 / p_KDE``. The paper's
      acceptance spreads the *number* of children evenly over the cheap objectives; under
      a budget of training seconds a child ten times as costly takes ten times the budget,
      and the large end of the front takes most of it. With the cost modelled as
      ``flops ** cost_exponent`` the expected training time is spread evenly instead. On
      a 2-core CPU an epoch of a plain CNN of 6k to 660k parameters (0.7M to 94M FLOPs)
      took 8 to 133 s, about ``flops ** 0.55`` (a log-log fit, residual 0.15): small
      networks are bound by per-step overheads. ``"flops"`` costs nothing to compute;
      ``"latency"`` compiles and times every proposed child. None: the paper's
      acceptance.
    cost_exponent: the power of the cost (>= 0; 0 is the paper's acceptance).
    representation: ``"networks"``, ``"codes"`` or ``"auto"`` (codes on
      :data:`TABULAR_SPACES`, networks elsewhere).
    initial: the initial networks as :func:`nasjax.models.plain_cnn` block lists.
    initial_depth: how many evaluations each initial network's lineage gets before any
      morphism (networks only; default 1). The generations after the first then train
      the initial networks once more each, unchanged (``ops=("train",)``), until they
      reach this lineage ``depth``. With Lamarckian inheritance a network's error falls
      with its lineage's depth, so a start trained once can be dominated by a small
      network many evaluations deep before any child of the start is trained; starts
      trained as deep as that keep their region of the front.
    morphisms: names in :data:`nasjax.ops.MORPHISMS` to draw from (empty: all).
    max_morphisms: a child applies between 1 and this many morphisms (uniformly).
    morphism_options: extra keyword arguments per morphism (e.g. Net2Wider's
      symmetry-breaking ``noise``: copied filters with equal weights would otherwise get
      equal gradients and never differ).
    max_params: children above this parameter count are not proposed (None: no limit).
    min_params: children below this parameter count are not proposed (None: no limit);
      with ``max_params`` it bounds the range of sizes the front is searched over, so
      that no training is spent on networks too small (or too big) to be of use.
    monotone_widths: children in which a convolution has fewer filters than a
      convolution before it (on any path from the input) are not proposed: the prior of
      hand-designed CNNs that widths never shrink with depth, which keeps bottleneck
      layers (a cheap way to a small parameter count that retrains poorly) off the front.
    min_width: children with a convolution of fewer filters than this are not proposed
      (None: no limit). A conv inserted by an exact morphism has its input's width, so on
      one-channel images a child can start with 1-filter convs: an identity while its
      weights are inherited, a bottleneck when the architecture is trained from scratch.
    widen_to_monotone: with ``monotone_widths``, a child grown by exact morphisms only
      whose widening left a later convolution narrower than an earlier one gets that
      convolution widened too (an exact Net2Wider step, repeated down the network until
      no convolution narrows) instead of being dropped, so that a block can grow as a
      whole; these steps do not count against ``max_morphisms``. Without it, only the
      last convolutions of a network can be widened.
    distill_steps: distillation steps of an approximate child (0: none; the child is
      then trained from its inherited weights as they are).
    distill_temperature: distillation's softmax temperature.
    distill_learning_rate: distillation's constant step size (None: the evaluator's
      learning rate). The rest of distillation (optimiser, batch size, data) is the
      evaluator's (:class:`~nasjax.search.work.Child`), so that a child's distillation
      and training run one compiled program.
  """

  strategy = "lemonade"
  presets = {"paper": PAPER}
  n_pc: int = option(16, integer(1))
  n_ac: int = option(4, integer(1))
  cheap_objectives: tuple[str, ...] = option(
      ("params",), _names(lambda: CHEAP_OBJECTIVES, "cheap objective", at_least_one=True))
  front_objectives: tuple[int, ...] = option((), _columns)
  dominance_margin: tuple[float, ...] = option((), _margins)
  depth_margin: float = option(0.0, number(0.0))
  constraints: tuple = option((), _constraint_pairs)
  log_scale: bool = option(True, boolean())
  min_bandwidth: float = option(0.1, number(0.0, open_min=True))
  accept_density: str = option("joint", one_of("joint", "population"))
  cost_objective: str | None = option(None, one_of(None, *CHEAP_OBJECTIVES))
  cost_exponent: float = option(1.0, number(0.0))
  representation: str = option("auto", one_of(*REPRESENTATIONS))
  initial: tuple = option(DEFAULT_INITIAL, _initial_specs)
  initial_depth: int = option(1, integer(1))
  morphisms: tuple[str, ...] = option((), _names(_morphism_names, "morphism"))
  max_morphisms: int = option(1, integer(1))
  morphism_options: Mapping[str, Mapping[str, Any]] = option(
      {"net2wider": {"noise": 0.1}}, _morphism_options)
  max_params: int | None = option(None, integer(1, none=True))
  min_params: int | None = option(None, integer(1, none=True))
  monotone_widths: bool = option(False, boolean())
  min_width: int | None = option(None, integer(1, none=True))
  widen_to_monotone: bool = option(False, boolean())
  distill_steps: int = option(50, integer(0))
  distill_temperature: float = option(4.0, number(0.0, open_min=True))
  distill_learning_rate: float | None = option(0.02, number(0.0, open_min=True, none=True))

  def check(self) -> None:
    if self.n_ac > self.n_pc:
      raise ValueError(f"lemonade: n_ac ({self.n_ac}) cannot exceed n_pc ({self.n_pc}): only "
                       "proposed children can be accepted")
    m = self.num_objectives
    for c in self.front_objectives:
      if c >= m:
        raise ValueError(f"lemonade: front_objectives names column {c!r}, but the fitness "
                         f"has {m} objectives")
    width = len(self.front_objectives) or m
    if self.dominance_margin and len(self.dominance_margin) != width:
      raise ValueError(f"lemonade: dominance_margin has {len(self.dominance_margin)} values, "
                       f"but the front is taken over {width} fitness columns")
    columns = list(self.front_objectives or range(m))
    seen = set()
    for c, _ in self.constraints:
      if c not in columns:
        raise ValueError(f"lemonade: constraint column {c!r} is not one of the fitness "
                         f"columns the front is taken over, {columns}")
      if c in seen:
        raise ValueError(f"lemonade: constraints bound column {c} twice")
      seen.add(c)
    if (self.min_params is not None and self.max_params is not None
        and self.min_params > self.max_params):
      raise ValueError(f"lemonade: min_params ({self.min_params}) exceeds max_params "
                       f"({self.max_params}): no child could be proposed")
    if self.widen_to_monotone and not self.monotone_widths:
      raise ValueError("lemonade: widen_to_monotone=True needs monotone_widths=True (it "
                       "widens the convolutions that would otherwise narrow)")


# ------------------------------------------------------------------------------ state
@dataclasses.dataclass(frozen=True)
class Individual:
  """A member of the population, or a child waiting for its evaluation.

  Attributes:
    uid: running number, unique within a search.
    genome: a :class:`~nasjax.Network` (its weights: inherited while pending, trained once
      told), an :class:`~nasjax.Arch` (an initial network, pending), or a code tuple
      (tabular spaces).
    cheap: the raw cheap objectives (e.g. the parameter count).
    fitness: the told objectives (empty while pending).
    parent: uid of the parent (-1 for an initial network).
    ops: the morphisms (or ``"mutate"``) that made it from its parent; ``("train",)``: its
      parent trained once more, unchanged (``initial_depth``).
    exact: whether all of them preserve the function.
    generation: the generation that proposed it.
    depth: evaluations along its lineage, its own included (1 for an initial network):
      with Lamarckian inheritance its weights were trained ``depth`` times.
  """

  uid: int
  genome: Any
  cheap: tuple[float, ...]
  fitness: tuple[float, ...] = ()
  parent: int = -1
  ops: tuple[str, ...] = ()
  exact: bool = True
  generation: int = 0
  depth: int = 1

  def objectives(self, columns: Sequence[int] = ()) -> tuple[float, ...]:
    """What the Pareto front is taken over: the told fitness (its ``columns``, or all
    when empty), then the cheap objectives."""
    fitness = [self.fitness[i] for i in columns] if columns else list(self.fitness)
    return tuple(fitness) + tuple(self.cheap)


@dataclasses.dataclass(frozen=True)
class LemonadeState:
  """LEMONADE's search state: immutable (``tell`` and ``ask`` return new states; the
  networks it holds are never modified).

  Attributes:
    population: the current Pareto front (evaluated individuals, oldest first).
    pending: the children of the last ``ask``, in candidate order.
    seen: hashes of every code asked so far (tabular spaces; empty otherwise).
    generation: completed ``tell`` calls.
    next_uid: the uid of the next individual.
    count: candidates told.
  """

  population: tuple[Individual, ...] = ()
  pending: tuple[Individual, ...] = ()
  seen: frozenset = frozenset()
  generation: int = 0
  next_uid: int = 0
  count: int = 0


@dataclasses.dataclass(frozen=True)
class _Proposal:
  parent: int  # index into the population
  genome: Any  # child code tuple, or the morphism list [(name, kwargs), ...]
  arch: Arch
  cheap: tuple[float, ...]
  exact: bool
  ops: tuple[str, ...]


def _arch_of(genome) -> Arch | None:
  if isinstance(genome, Network):
    return genome.arch
  return genome if isinstance(genome, Arch) else None


# ------------------------------------------------------------------------- the strategy
@dataclasses.dataclass(frozen=True, eq=False)
class Lemonade:
  """LEMONADE (see the module docstring).

  Attributes:
    space: the search space (codes on tabular spaces; otherwise only named in the run).
    config: a :class:`LemonadeConfig`.
    problem: the task networks are built for (:class:`~nasjax.search.work.Problem`: the
      initial networks' input shape and classes, and the training inputs on which the
      batch norms that morphisms insert take their statistics); needed unless the
      candidates are codes.
  """

  space: SearchSpace
  config: LemonadeConfig = LemonadeConfig()
  problem: work.Problem | None = None
  name = "lemonade"

  def __post_init__(self):
    c = self.config
    if not isinstance(c, LemonadeConfig):
      raise ValueError(f"lemonade: config must be a LemonadeConfig, got {type(c).__name__}")
    if c.depth_margin > 0 and self.uses_codes:
      raise ValueError(f"depth_margin={c.depth_margin} needs networks: codes inherit no "
                       "weights, so their depth says nothing about their training")
    if c.initial_depth > 1 and self.uses_codes:
      raise ValueError(f"initial_depth={c.initial_depth} needs networks: a code has no "
                       "weights to train again")

  # -- configuration --------------------------------------------------------------
  @property
  def uses_codes(self) -> bool:
    """Whether candidates are codes (tabular spaces) rather than networks."""
    if self.config.representation == "auto":
      return self.space.name in TABULAR_SPACES
    return self.config.representation == "codes"

  @property
  def morphisms(self) -> tuple[str, ...]:
    """The morphisms children are drawn from (``config.morphisms``, or all)."""
    return tuple(self.config.morphisms) or _morphism_names()

  @property
  def constraints(self) -> tuple[tuple[int, float], ...]:
    """``config.constraints`` as ``((column, bound), ...)``."""
    return constraint_pairs(self.config.constraints)

  def _problem(self) -> work.Problem:
    if self.problem is None:
      raise ValueError(f"lemonade builds networks on space {self.space.name!r}: give it "
                       "problem= (a nasjax.search.work.Problem), as make_strategy does from "
                       "a training evaluator")
    return self.problem

  @property
  def morph_batch(self) -> np.ndarray:
    """``(n, *input_shape)``: the problem's training inputs, on which the batch norms
    that morphisms insert take their statistics, so that a child computes its parent's
    function in training mode as well as in inference mode."""
    return self._problem().inputs

  def allowed(self, arch: Arch) -> bool:
    """Whether a child ``arch`` may be proposed: its parameter count within
    ``[min_params, max_params]``, no conv narrower than ``min_width`` and, with
    ``monotone_widths``, no narrowing conv."""
    c = self.config
    n = count_params(arch)
    return ((c.max_params is None or n <= c.max_params)
            and (c.min_params is None or n >= c.min_params)
            and (c.min_width is None or _narrowest(arch) >= c.min_width)
            and not (c.monotone_widths and narrowing_conv(arch) is not None))

  # -- densities ----------------------------------------------------------------------
  def log_density(self, fit: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Log KDE of the cheap objectives ``fit`` ``(n, d)`` at ``query`` ``(q, d)`` (raw)."""
    X = kde.transform(fit, self.config.log_scale)
    Q = kde.transform(query, self.config.log_scale)
    return kde.log_density(X, Q, kde.scott_bandwidth(X, self.config.min_bandwidth))

  def parent_log_density(self, pop_cheap: np.ndarray) -> np.ndarray:
    """Step 1: ``log p_KDE`` of each member ``(n,)``, fitted on the population ``(n, d)``."""
    return self.log_density(pop_cheap, pop_cheap)

  def child_log_density(self, pop_cheap: np.ndarray, child_cheap: np.ndarray) -> np.ndarray:
    """Step 4: ``log p_KDE`` of each proposed child ``(c,)``; the density is fitted on the
    population ``(n, d)`` and the children ``(c, d)`` (``"joint"``) or the population."""
    fit = (np.concatenate([pop_cheap, child_cheap])
           if self.config.accept_density == "joint" else pop_cheap)
    return self.log_density(fit, child_cheap)

  def accept_log_weight(self, pop_cheap: np.ndarray, child_cheap: np.ndarray,
                        child_archs: Sequence[Arch]) -> np.ndarray:
    """Step 4's ``log(p_KDE * cost ** cost_exponent)`` of each proposed child ``(c,)``:
    a child is accepted with probability proportional to the exponential of minus this
    (:func:`nasjax.search.strategies.kde.sample_sparse`). Without ``cost_objective`` it is
    :meth:`child_log_density`."""
    c = self.config
    log_child = self.child_log_density(pop_cheap, child_cheap)
    if c.cost_objective is None or c.cost_exponent == 0:
      return log_child
    cost = np.array([cheap_objectives(a, (c.cost_objective,))[0] for a in child_archs],
                    np.float64)
    bad = np.flatnonzero(~(cost > 0) | ~np.isfinite(cost))
    if bad.size:
      raise ValueError(f"cost_objective {c.cost_objective!r} must be positive and "
                       f"finite, got {cost[bad[0]]!r} for a proposed child")
    return log_child + c.cost_exponent * np.log(cost)

  # -- protocol -------------------------------------------------------------------------
  def init(self, key: jax.Array) -> LemonadeState:
    del key  # the initial networks are proposed by the first ask
    return LemonadeState()

  def ask(self, key: jax.Array, state: LemonadeState) -> tuple[Any, LemonadeState]:
    """The initial networks, then the accepted children of one generation.

    Nothing is trained here: children get their parents' weights through the morphisms
    and are handed to the evaluator.

    Returns:
      ``(candidates, state)``: codes ``(B, L)`` int32 on tabular spaces; otherwise a list
      of ``B`` candidates: the initial networks as :class:`~nasjax.Arch` s, exact
      children (and the starts trained again, ``initial_depth``) as
      :class:`~nasjax.Network` s with inherited weights, approximate children as
      :class:`~nasjax.search.work.Child` candidates to distil from their parent.
      ``state.pending`` describes them.
    """
    if not state.population:
      return (self._initial_codes(key, state) if self.uses_codes
              else self._initial_archs(state))
    if state.generation < self.config.initial_depth and not self.uses_codes:
      return self._train_initial(state)
    k_parent, k_propose, k_accept, k_make = jax.random.split(key, 4)
    pop = state.population
    pop_cheap = np.array([ind.cheap for ind in pop], np.float64)
    log_pop = self.parent_log_density(pop_cheap)
    parents = kde.sample_sparse(k_parent, log_pop, self.config.n_pc, replace=True)
    proposals = (self._propose_codes(k_propose, state, parents) if self.uses_codes
                 else self._propose_networks(k_propose, state, parents))
    if not proposals:
      if self.uses_codes:
        return self._random_codes(k_make, state)
      raise RuntimeError("no morphism applies to any parent; the population cannot grow")
    child_cheap = np.array([p.cheap for p in proposals], np.float64)
    log_child = self.accept_log_weight(pop_cheap, child_cheap, [p.arch for p in proposals])
    num = min(self.config.n_ac, len(proposals))
    accepted = kde.sample_sparse(k_accept, log_child, num, replace=False)
    chosen = [proposals[int(i)] for i in accepted]
    if self.uses_codes:
      return self._emit_codes(state, chosen)
    return self._emit_networks(k_make, state, chosen)

  def lineage(self, state: LemonadeState) -> list[dict[str, Any]]:
    """Where each candidate of the last ``ask`` came from, in candidate order: its
    ``uid``, its ``parent``'s uid (-1 for an initial network), the ``ops`` that made it,
    whether they were all ``exact``, and its lineage ``depth``. The runner records it in
    each history entry, so that a finished search's lineages can be traced."""
    return [{"uid": ind.uid, "parent": ind.parent, "ops": list(ind.ops),
             "exact": bool(ind.exact), "depth": ind.depth} for ind in state.pending]

  def front(self, state: LemonadeState) -> tuple[Individual, ...]:
    """The front the search has found: the population's members within
    ``constraints`` (all of them without constraints) that no member dominates without
    ``depth_margin``."""
    return _front(state.population, self.constraints, self.config.front_objectives,
                  self.config.dominance_margin)

  def tell(self, key, state: LemonadeState, candidates, fitness) -> LemonadeState:
    """Score the pending children and keep the Pareto front of population and children.

    Args:
      key: unused (the update is deterministic).
      state: the state returned by the last ``ask``.
      candidates: the codes of that ``ask``, or (networks) the trained networks in place
        of its candidates, whose weights the members keep (a candidate itself may come
        back only with a NaN fitness: a failure).
      fitness: ``(B,)`` or ``(B, M)``; NaN rows are failed children, dropped.

    Raises:
      ValueError: if the candidates do not match the pending children, or a network
        candidate comes back with a fitness but without its trained network.
    """
    del key
    m = self.config.num_objectives
    F = np.asarray(fitness, np.float64)  # float64: a table's values are kept exactly
    F = F[:, None] if F.ndim == 1 else F
    if F.ndim != 2 or F.shape[1] != m:
      raise ValueError(f"expected fitness of shape (B,) or (B, {m}), got "
                       f"{np.shape(fitness)}")
    pending = state.pending
    if len(pending) != F.shape[0] or len(candidates) != len(pending):
      raise ValueError(f"told {len(candidates)} candidates with {F.shape[0]} fitness rows, "
                       f"but the last ask proposed {len(pending)}")
    new = []
    for ind, cand, f in zip(pending, candidates, F):
      ok = bool(np.all(np.isfinite(f)))
      genome = self._told_genome(ind, cand, ok)
      if ok:
        new.append(dataclasses.replace(ind, genome=genome, fitness=tuple(float(v) for v in f)))
    c = self.config
    population = pareto_population(state.population + tuple(new), c.front_objectives,
                                   c.dominance_margin, c.depth_margin)
    return dataclasses.replace(state, population=population, pending=(),
                               generation=state.generation + 1,
                               count=state.count + len(pending))

  def _told_genome(self, ind: Individual, cand, ok: bool):
    """What a told candidate leaves in the population: its code, or its trained network."""
    if self.uses_codes:
      if tuple(int(v) for v in np.asarray(cand)) != ind.genome:
        raise ValueError(f"candidate code {np.asarray(cand).tolist()} is not the asked "
                         f"{list(ind.genome)}")
      return ind.genome
    if isinstance(cand, Network):
      if cand.arch != _arch_of(ind.genome):
        raise ValueError(f"candidate for individual {ind.uid} has a different "
                         "architecture than the one asked")
      return cand
    if ok:
      raise ValueError(f"individual {ind.uid} was told its candidate ({type(cand).__name__}) "
                       "back with a fitness: LEMONADE keeps the trained networks, so tell "
                       "needs the trained network in place of each network candidate")
    return ind.genome

  # -- codes (tabular spaces) ------------------------------------------------------------
  def _hash(self, code) -> int:
    return self.space.hash(np.asarray(code, np.int32))

  def _code_individual(self, uid, code, state, parent=-1, ops=()) -> Individual:
    code = tuple(int(v) for v in code)
    return Individual(uid, code, cheap_objectives(_code_arch(self.space, code),
                                                  self.config.cheap_objectives),
                      parent=parent, ops=ops, generation=state.generation)

  def _emit_code_individuals(self, state, inds: list[Individual]):
    seen = state.seen | {self._hash(ind.genome) for ind in inds}
    codes = jnp.asarray(np.array([ind.genome for ind in inds], np.int32))
    return codes, dataclasses.replace(state, pending=tuple(inds), seen=frozenset(seen),
                                      next_uid=state.next_uid + len(inds))

  def _initial_codes(self, key, state):
    # The trivial network (every position 0: skipped layers / no ops) and mutations of it.
    n = self.config.n_ac
    zero = np.asarray(self.space.canonical(jnp.zeros(self.space.length, jnp.int32)))
    codes, hashes = [], set(state.seen)
    mutate, _ = _batched(self.space)
    for code in [zero] + list(np.asarray(mutate(jax.random.split(key, 4 * n),
                                                jnp.tile(zero, (4 * n, 1))))):
      h = self._hash(code)
      if h not in hashes and len(codes) < n:
        hashes.add(h)
        codes.append(code)
    if not codes:
      return self._random_codes(key, state)
    inds = [self._code_individual(state.next_uid + i, c, state, ops=("initial",))
            for i, c in enumerate(codes)]
    return self._emit_code_individuals(state, inds)

  def _random_codes(self, key, state):
    """Unseen random codes: a fallback when every proposed child was evaluated before."""
    _, sample = _batched(self.space)
    out, hashes = [], set(state.seen)
    for code in np.asarray(sample(jax.random.split(key, 16 * self.config.n_ac))):
      h = self._hash(code)
      if h not in hashes and len(out) < self.config.n_ac:
        hashes.add(h)
        out.append(code)
    if not out:
      out = list(np.asarray(sample(jax.random.split(key, self.config.n_ac))))
    inds = [self._code_individual(state.next_uid + i, c, state, ops=("random",))
            for i, c in enumerate(out)]
    return self._emit_code_individuals(state, inds)

  def _propose_codes(self, key, state, parents) -> list[_Proposal]:
    mutate, _ = _batched(self.space)
    pop = state.population
    codes = np.array([pop[int(i)].genome for i in parents], np.int32)
    k_num, k_mut = jax.random.split(key)
    most = self.config.max_morphisms
    steps = np.asarray(jax.random.randint(k_num, (len(parents),), 1, most + 1))
    for j in range(most):
      mutated = np.asarray(mutate(jax.random.split(jax.random.fold_in(k_mut, j), len(codes)),
                                  jnp.asarray(codes)))
      codes = np.where((steps > j)[:, None], mutated, codes)
    out, hashes = [], set(state.seen)
    for i, code in zip(parents, codes):
      h = self._hash(code)
      if h in hashes:
        continue  # a table answers the same again: spend no evaluation on it
      arch = _code_arch(self.space, tuple(int(v) for v in code))
      cheap = cheap_objectives(arch, self.config.cheap_objectives)
      if not self.allowed(arch):
        continue
      hashes.add(h)
      out.append(_Proposal(int(i), tuple(int(v) for v in code), arch, cheap, True, ("mutate",)))
    return out

  def _emit_codes(self, state, chosen: list[_Proposal]):
    pop = state.population
    inds = [Individual(state.next_uid + j, p.genome, p.cheap, parent=pop[p.parent].uid,
                       ops=p.ops, generation=state.generation, depth=pop[p.parent].depth + 1)
            for j, p in enumerate(chosen)]
    return self._emit_code_individuals(state, inds)

  # -- networks ------------------------------------------------------------------------
  def _initial_archs(self, state):
    """The initial networks, as architectures for the evaluator to initialise and train."""
    from nasjax.models import plain_cnn

    problem = self._problem()
    inds = []
    for j, spec in enumerate(self.config.initial):
      arch = plain_cnn([list(b) for b in spec], input_shape=problem.input_shape,
                       num_classes=problem.num_classes)
      inds.append(Individual(state.next_uid + j, arch,
                             cheap_objectives(arch, self.config.cheap_objectives),
                             ops=("initial",), generation=state.generation))
    return [ind.genome for ind in inds], dataclasses.replace(
        state, pending=tuple(inds), next_uid=state.next_uid + len(inds))

  def _train_initial(self, state):
    """The initial lineages' members trained in the last generation, to be trained once
    more unchanged (their lineages are one evaluation deeper each generation)."""
    last = [ind for ind in state.population
            if ind.ops in (("initial",), ("train",)) and ind.depth == state.generation]
    inds = [dataclasses.replace(ind, uid=state.next_uid + j, parent=ind.uid, ops=("train",),
                                exact=True, generation=state.generation,
                                depth=ind.depth + 1, fitness=())
            for j, ind in enumerate(last)]
    return [ind.genome for ind in inds], dataclasses.replace(
        state, pending=tuple(inds), next_uid=state.next_uid + len(inds))

  def _propose_networks(self, key, state, parents) -> list[_Proposal]:
    from nasjax.ops import MORPHISMS
    from nasjax.ops.plan import try_plan

    c, names = self.config, self.morphisms
    out = []
    for j, i in enumerate(parents):
      parent = state.population[int(i)]
      rng = np.random.default_rng(key_seed(jax.random.fold_in(key, j)))
      arch, ops, exact = parent.genome.arch, [], True
      for _ in range(int(rng.integers(1, c.max_morphisms + 1))):
        step = None
        for name in (names[k] for k in rng.permutation(len(names))):
          kwargs = MORPHISMS[name].sampler(rng, arch)
          plan = try_plan(name, arch, **kwargs) if kwargs is not None else None
          if plan is not None:
            step = (name, kwargs, plan.arch)
            break
        if step is None:
          break
        ops.append(step[:2])
        arch = step[2]
        exact = exact and MORPHISMS[step[0]].exact
      if not ops:
        continue
      if c.widen_to_monotone and exact:
        arch, ops = widen_to_monotone(arch, ops)
      if not self.allowed(arch):
        continue
      out.append(_Proposal(int(i), tuple(ops), arch,
                           cheap_objectives(arch, c.cheap_objectives), exact,
                           tuple(name for name, _ in ops)))
    return out

  def _emit_networks(self, key, state, chosen: list[_Proposal]):
    """The chosen children with the weights they inherit through their morphisms (exact:
    a :class:`~nasjax.Network`; approximate: a :class:`~nasjax.search.work.Child` to
    distil from its parent first). No gradient step is taken here."""
    from nasjax.ops import MORPHISMS

    options = self.config.morphism_options
    cands, inds = [], []
    for j, p in enumerate(chosen):
      k_child = jax.random.fold_in(key, j)
      parent = state.population[p.parent]
      net = parent.genome
      for s, (name, kwargs) in enumerate(p.genome):
        net = MORPHISMS[name](net, jax.random.fold_in(k_child, s), batch=self.morph_batch,
                              **kwargs, **options.get(name, {}))
      cands.append(self._candidate(net, parent.genome, p.exact))
      inds.append(Individual(state.next_uid + j, net, p.cheap, parent=parent.uid, ops=p.ops,
                             exact=p.exact, generation=state.generation,
                             depth=parent.depth + 1))
    return cands, dataclasses.replace(state, pending=tuple(inds),
                                      next_uid=state.next_uid + len(inds))

  def _candidate(self, net: Network, parent: Network, exact: bool):
    """What the evaluator gets for a child: the network itself, or (an approximate child
    with ``distill_steps``) a :class:`~nasjax.search.work.Child` to distil from
    ``parent`` before its training."""
    c = self.config
    if exact or not c.distill_steps:
      return net
    return work.Child(net, teacher=parent, distill_steps=c.distill_steps,
                      temperature=c.distill_temperature,
                      learning_rate=c.distill_learning_rate)


_CONV_OPS = ("conv", "sep_conv")


def _narrowing(arch: Arch) -> tuple[str, int] | None:
  widest: dict[str, int] = {}
  for node in (arch[n] for n in arch.topo_order):
    before = max((widest[i] for i in node.inputs), default=0)
    if node.op in _CONV_OPS:
      if node["features"] < before:
        return node.name, before
      before = max(before, node["features"])
    widest[node.name] = before
  return None


def _narrowest(arch: Arch) -> float:
  """The fewest filters of any convolution of ``arch`` (inf without one)."""
  return min((arch[n]["features"] for n in arch.topo_order if arch[n].op in _CONV_OPS),
             default=math.inf)


def narrowing_conv(arch: Arch) -> str | None:
  """The first convolution of ``arch`` with fewer filters than a convolution before it.

  "Before" is any convolution on a path from the input; dense layers do not count. Returns
  the node's name, or ``None`` when widths never shrink with depth (every plain CNN whose
  blocks widen, e.g. ``plain_cnn([[16], [32, 32]])``).
  """
  found = _narrowing(arch)
  return None if found is None else found[0]


def widen_to_monotone(arch: Arch, ops: Sequence = ()) -> tuple[Arch, list]:
  """Widen every narrowing convolution of ``arch`` to the width before it.

  Each step is Net2Wider (exact) on the first convolution with fewer filters than one
  before it (:func:`narrowing_conv`), to that earlier convolution's width; the steps go
  on until no convolution narrows, or stop where Net2Wider does not apply (the returned
  ``arch`` then still narrows and ``allowed`` rejects it).

  Args:
    arch: the architecture.
    ops: the ``(name, kwargs)`` morphism steps that made ``arch``.

  Returns:
    ``(arch, ops)`` with the widening steps appended to ``ops``.
  """
  from nasjax.ops.plan import try_plan

  ops = list(ops)
  for _ in range(len(arch.topo_order)):  # each step fixes one node for good
    found = _narrowing(arch)
    if found is None:
      break
    kwargs = {"node": found[0], "width": found[1]}
    plan = try_plan("net2wider", arch, **kwargs)
    if plan is None:
      break
    ops.append(("net2wider", kwargs))
    arch = plan.arch
  return arch, ops




def feasible(fitness: Sequence[float], constraints: Sequence[tuple[int, float]]) -> bool:
  """Whether ``fitness`` is within every ``(column, bound)`` of ``constraints``."""
  return all(fitness[c] <= b for c, b in constraints)


def _within(population: Sequence[Individual], constraints: Sequence[tuple[int, float]]
            ) -> tuple[Individual, ...]:
  """The members of ``population`` within ``constraints``, in order."""
  return tuple(ind for ind in population if feasible(ind.fitness, constraints))


def _front(population: Sequence[Individual], constraints: Sequence[tuple[int, float]],
           columns: Sequence[int] = (), margin: Sequence[float] = ()
           ) -> tuple[Individual, ...]:
  """The members of ``population`` within ``constraints`` that no member dominates by
  ``margin`` alone (a population kept with ``depth_margin`` holds more), in order."""
  front = {ind.uid for ind in pareto_population(population, columns, margin)}
  return tuple(ind for ind in _within(population, constraints) if ind.uid in front)


def pareto_population(individuals: Sequence[Individual], columns: Sequence[int] = (),
                      margin: Sequence[float] = (), depth_margin: float = 0.0
                      ) -> tuple[Individual, ...]:
  """The non-dominated individuals, oldest first.

  Dominance is over :meth:`Individual.objectives` (the fitness ``columns``, all when
  empty, and the cheap objectives); ``margin`` (one value per fitness column, see
  ``LemonadeConfig.dominance_margin``) makes it tolerant of noise in those columns. With
  ``depth_margin`` (``LemonadeConfig.depth_margin``) an individual i dominates j only where
  also ``f_i + margin + depth_margin * max(0, log2(depth_i / depth_j)) <= f_j`` in the
  first of those columns. Of several with equal objective vectors only the oldest is kept, so
  a front never holds copies.
  """
  inds = sorted(individuals, key=lambda ind: ind.uid)
  if not inds:
    return ()
  F = np.array([ind.objectives(columns) for ind in inds], np.float64)
  # Only the fitness columns get a margin; an all-zero one is plain dominance.
  tol = list(margin) + [0.0] * (F.shape[1] - len(margin)) if margin else None
  if depth_margin > 0:
    depth = np.array([ind.depth for ind in inds], np.float64)
    deeper = np.maximum(np.log2(depth[:, None] / depth[None, :]), 0.0)
    first = F[:, 0] + (tol[0] if tol else 0.0)
    ahead = first[:, None] + depth_margin * deeper <= F[None, :, 0]
    mask = ~(dominance_matrix(F, tol) & ahead).any(axis=0)
  else:
    mask = pareto_mask(F, tol)
  keep, seen = [], set()
  for ind, f, ok in zip(inds, F, mask):
    if ok and tuple(f) not in seen:
      seen.add(tuple(f))
      keep.append(ind)
  return tuple(keep)


# ------------------------------------------------------------------------------ reports
def _entry_value(entry: Mapping, name: str) -> float:
  """Objective ``name`` of a history entry, else its metric of that name, else NaN."""
  for where in ("objectives", "metrics"):
    v = (entry.get(where) or {}).get(name)
    if v is not None:
      return float(v)
  return math.nan


def fronts_by_generation(history: Sequence[Mapping], x: str, y: str, margin: float = 0.0,
                         bounds: Mapping[str, float] | None = None
                         ) -> list[tuple[int, np.ndarray]]:
  """The ``(y, x)`` Pareto front of the evaluations up to each generation.

  Args:
    history: run history entries (``nasjax.search.read_history``).
    x: the size-like value (``"params"``, ``"latency"``, ...: an objective or a metric).
    y: the error-like objective.
    margin: tolerance on ``y`` (``LemonadeConfig.dominance_margin``): a point is dropped only
      where another no larger is better by at least this much. The front is then taken
      over all evaluations so far, a superset of a run's population, which also lost the
      points its members dominated when they were told.
    bounds: ``{objective: upper bound}`` (``LemonadeConfig.constraints`` by name): evaluations
      over a bound are left out (a generation with none within them has no front).

  Returns:
    ``[(generation, front (k, 2) sorted by x)]`` for every generation with a successful
    evaluation; columns are ``(x, y)``.
  """
  bounds = dict(bounds or {})
  rows = [(int(e["generation"]), _entry_value(e, x), _entry_value(e, y)) for e in history
          if e.get("status") == "ok"
          and all(_entry_value(e, name) <= b for name, b in bounds.items())]
  rows = [r for r in rows if math.isfinite(r[1]) and math.isfinite(r[2])]
  out = []
  for g in sorted({r[0] for r in rows}):
    P = np.array([(r[1], r[2]) for r in rows if r[0] <= g], np.float64)
    front = P[pareto_mask(P, [0.0, margin] if margin else None)]
    out.append((g, np.unique(front, axis=0)))
  return out


def plot_fronts(fronts: list[tuple[int, np.ndarray]], path, *, xlabel: str, ylabel: str,
                title: str, log_x: bool = True) -> str:
  """Draw the fronts of :func:`fronts_by_generation` (later generations darker) as a PNG."""
  from matplotlib import cm
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6.4, 4.4), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  last = max((g for g, _ in fronts), default=0)
  for g, front in fronts:
    color = cm.viridis(1.0 - g / max(last, 1))
    final = g == last
    ax.step(front[:, 0], front[:, 1], where="post", color=color, lw=2.0 if final else 0.8,
            alpha=1.0 if final else 0.6, label=f"generation {g}" if final or g == 0 else None)
    if final:
      ax.plot(front[:, 0], front[:, 1], "o", color=color, ms=4)
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3, which="both")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  return str(path)


def export_front(state: LemonadeState, out, names: Sequence[str] = (),
                 constraints: Sequence[tuple[int, float]] = (),
                 columns: Sequence[int] | None = None, margin: Sequence[float] = ()
                 ) -> list[dict]:
  """Write the front of ``state``: ``front.json``, and each network with its weights.

  Args:
    state: a LEMONADE state (e.g. ``load_checkpoint(workdir)["state"]``).
    out: directory; networks go to ``out/member_<uid>.npz`` (:func:`nasjax.save`, with the
      member's record as metadata).
    names: names of the told objectives, for the records.
    constraints: :attr:`Lemonade.constraints`: only the population's feasible members
      are the front (:meth:`Lemonade.front`); none: the whole population.
    columns, margin: ``LemonadeConfig.front_objectives`` and ``dominance_margin``:
      members that another dominates by that margin (kept in the population by
      ``depth_margin``) are not exported. None (the default): no such filter, the
      population's members within ``constraints``.

  Returns:
    The member records (uid, parent, ops, generation, depth, fitness, cheap and the
    network file or the code).
  """
  import json
  from pathlib import Path

  from nasjax.network import save

  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  records = []
  members = (_within(state.population, constraints) if columns is None else
             _front(state.population, constraints, columns, margin))
  for ind in members:
    fitness = ind.fitness
    rec = {"uid": ind.uid, "parent": ind.parent, "ops": list(ind.ops),
           "generation": ind.generation, "depth": ind.depth, "exact": ind.exact,
           "fitness": (dict(zip(names, fitness)) if len(names) == len(fitness)
                       else list(fitness)), "cheap": list(ind.cheap)}
    if isinstance(ind.genome, Network):
      path = out / f"member_{ind.uid:05d}.npz"
      save(ind.genome, path, metadata=rec)
      rec["network"] = str(path)
      rec["params"] = count_params(ind.genome.arch)
    else:
      rec["code"] = list(ind.genome)
    records.append(rec)
  (out / "front.json").write_text(json.dumps(records, indent=1))
  return records



def report_run(workdir, out=None) -> dict:
  """LEMONADE's part of ``nasjax report``: fronts per generation and the final front.

  Writes into ``out`` (default ``workdir``): ``fronts_params.png`` (first objective
  against parameters, the front after each generation), ``fronts_latency.png`` (against
  latency, where the history records it) and ``front/`` (:func:`export_front` of the
  last checkpoint: ``front.json`` and the networks with their weights). The front
  options (``front_objectives``, ``dominance_margin``, ``constraints``) are the run's.

  Returns:
    ``{"plots": [...], "front": [member records]}``.
  """
  from pathlib import Path

  from nasjax.search.runner import load_checkpoint, read_config, read_history

  workdir = Path(workdir)
  out = Path(out) if out is not None else workdir
  out.mkdir(parents=True, exist_ok=True)
  cfg = read_config(workdir)
  history = read_history(workdir)
  names = list(cfg["objectives"])
  scfg = cfg.get("strategy_config") or {}
  keys = ("front_objectives", "dominance_margin", "constraints")
  config = LemonadeConfig(num_objectives=len(names),
                          **{k: scfg[k] for k in keys if scfg.get(k) is not None})
  columns = list(config.front_objectives or range(len(names)))
  margins = list(config.dominance_margin)
  margin = float(margins[columns.index(0)]) if margins and 0 in columns else 0.0
  constraints = constraint_pairs(config.constraints)
  bounds = {names[c]: b for c, b in constraints}
  plots = []
  for x, label in (("params", "parameters"), ("latency", "latency (s, batch 1)")):
    fronts = fronts_by_generation(history, x, names[0], margin, bounds)
    if fronts:
      plots.append(plot_fronts(fronts, out / f"fronts_{x}.png", xlabel=label,
                               ylabel=names[0], title=f"LEMONADE: {names[0]} vs {x}, "
                               "front after each generation"))
  ckpt = load_checkpoint(workdir)
  front = []
  if ckpt is not None and isinstance(ckpt["state"], LemonadeState):
    front = export_front(ckpt["state"], out / "front", names, constraints,
                         config.front_objectives, config.dominance_margin)
  return {"plots": plots, "front": front}


def _make(space: SearchSpace, config: LemonadeConfig, problem: work.Problem | None = None
          ) -> Lemonade:
  """The registry's factory: the strategy, with its problem where it builds networks."""
  strategy = Lemonade(space, config, problem)
  if not strategy.uses_codes:
    strategy._problem()  # fail here, not at the first ask
  return strategy


register_strategy(
    "lemonade", _make, options=LemonadeConfig, spaces=("*",), multi_objective=True,
    jittable=False, needs_problem=True,
    smoke={"space": "plain_cnn", "max_evals": 4,
           "config": {"n_pc": 4, "n_ac": 2, "initial": [[[4]], [[4], [8]]],
                      "distill_steps": 5},
           "train": {"epochs": 1.0, "max_steps": 4, "batch_size": 32}},
    description="LEMONADE, multi-objective Lamarckian evolution by network morphisms "
                "(Elsken et al. 2019)",
    report=report_run)

__all__ = ["Lemonade", "LemonadeConfig", "LemonadeState", "Individual", "pareto_population",
           "feasible", "constraint_pairs", "cheap_objectives", "arch_latency",
           "narrowing_conv", "widen_to_monotone", "fronts_by_generation", "plot_fronts",
           "export_front", "report_run", "CHEAP_OBJECTIVES", "PAPER", "PAPER_MORPHISMS"]
