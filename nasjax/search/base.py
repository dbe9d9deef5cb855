"""The strategy protocol and the registry of strategies.

A strategy proposes architectures and learns from their fitness through three pure
functions over an explicit state pytree::

    state = strategy.init(key)
    candidates, state = strategy.ask(key, state)
    state = strategy.tell(key, state, candidates, fitness)

``candidates`` are search-space codes, an int array of shape ``(B, L)``, or, for
strategies that are not array programs, a Python list of ``B`` architectures.
``fitness`` is minimised: shape ``(B,)`` for one objective or ``(B, M)`` for ``M``;
a NaN marks a failed evaluation, which is never the best and never a parent. The same
key gives the same search. A strategy whose state is all arrays (``jittable``) runs
under ``jax.jit``, ``jax.lax.scan`` and ``jax.vmap`` (many seeds in one program).

Every strategy is registered by name with :func:`register_strategy`; from then on the
``search``, ``resume``, ``report`` and ``bench`` commands accept it, and the test suite
runs it on a space it supports. An entry holds a factory
``factory(space, config) -> strategy``, the spaces it supports, whether it handles
several objectives, whether it is jittable, its default config and a ``smoke`` preset.
The framework adds ``num_objectives`` to every config it passes to a factory.

:data:`STRATEGIES`, :data:`nasjax.search.spaces.SPACES` and the other registries of
:mod:`nasjax.search` are :class:`Registry` dicts: the module that defines an entry
registers it when it is imported, and a registry imports those modules
(:func:`load_modules`) the first time it is asked for a name it does not hold yet, or for
all of its names. A fresh process therefore resolves every registered name, whatever it
imported before: ``nasjax resume`` rebuilds a run from the names in its ``config.json``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp

if TYPE_CHECKING:  # spaces.py imports this module for Registry
  from nasjax.search.spaces import SearchSpace


class Strategy(Protocol):
  """What a search strategy provides (see the module docstring)."""

  name: str

  def init(self, key: jax.Array) -> Any:
    ...

  def ask(self, key: jax.Array, state: Any) -> tuple[Any, Any]:
    ...

  def tell(self, key: jax.Array, state: Any, candidates: Any, fitness: jax.Array) -> Any:
    ...


@dataclasses.dataclass(frozen=True)
class StrategyEntry:
  """A registered strategy.

  Attributes:
    name: the registry key (``--strategy NAME``).
    factory: ``factory(space, config) -> strategy``; ``config`` is the default config
      updated with the user's options, plus ``num_objectives``.
    spaces: names of the search spaces it supports (keys of
      :data:`nasjax.search.spaces.SPACES`), or ``("*",)`` for every space.
    multi_objective: whether it uses all objectives of a fitness vector (otherwise it
      optimises ``config["objective"]``, default the first).
    jittable: whether its state is all arrays and ``ask``/``tell`` trace under ``jit``;
      such strategies get the vectorised benchmark path.
    default_config: every option with its default; other keys are rejected.
    smoke: the ``--preset smoke`` run: optional keys ``space`` (name), ``space_config``,
      ``config`` (strategy options), ``max_evals``, ``train`` (training overrides),
      ``evaluator`` (an evaluator config replacing the training evaluator).
    description: one line for ``--help`` and reports.
    report: optional ``report(workdir, out) -> dict``: the strategy's own part of
      ``nasjax report`` (plots and exports beyond the common ones), merged into the
      summary under ``"strategy"``.
    options: the strategy's :class:`~nasjax.search.options.Options` class, or None for
      a strategy configured by a plain dict: ``default_config`` then derives from it,
      every config is checked by it and the factory gets an instance of it.
    needs_problem: whether the factory takes ``problem=`` (a
      :class:`nasjax.search.work.Problem`: input shape, classes, a batch of inputs), as
      strategies that build networks do.
    asynchronous: whether its ``tell`` takes results one at a time, in any order, while
      other candidates it asked for are still being evaluated, and its ``ask`` does not
      wait for them; such strategies run asynchronously on Ray workers
      (:mod:`nasjax.search.ray_backend`), the others a whole generation at a time.
  """

  name: str
  factory: Callable[[SearchSpace, dict], Any]
  spaces: tuple[str, ...] = ("*",)
  multi_objective: bool = False
  jittable: bool = False
  default_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  smoke: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  description: str = ""
  report: Callable[[Any, Any], dict] | None = None
  needs_problem: bool = False
  options: type | None = None
  asynchronous: bool = False

  def supports(self, space: str | SearchSpace) -> bool:
    name = space if isinstance(space, str) else space.name
    return "*" in self.spaces or name in self.spaces


# ----------------------------------------------------------------------------- registries
_load_lock = threading.RLock()
_load_state = "pending"  # then "loading" (in the thread that imports), then "done"


def load_modules() -> None:
  """Import every module of :mod:`nasjax.search`, so that every entry is registered.

  Runs once per process; later calls return at once. A call made while the modules are
  being imported (by a module that looks something up as it is imported) returns at
  once too, and other threads wait until the registries are complete.
  """
  global _load_state
  if _load_state == "done":
    return
  with _load_lock:
    if _load_state != "pending":
      return
    _load_state = "loading"
    try:
      package = importlib.import_module("nasjax.search")
      for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        importlib.import_module(module.name)
    except BaseException:
      _load_state = "pending"
      raise
    _load_state = "done"


class Registry(dict):
  """A dict of named entries that resolves every registered name in any process.

  Entries are added by the modules that define them, when they are imported
  (:meth:`register`). A lookup of a name the registry does not hold yet (``reg[name]``,
  ``name in reg``, ``reg.get(name)``) and every listing (iteration, ``len``, ``keys``,
  ``values``, ``items``) first imports those modules (:func:`load_modules`); a lookup of
  a name it holds imports nothing. Otherwise it is an ordinary dict.

  Attributes:
    what: what an entry is, for messages (``"strategy"``, ``"search space"``).
  """

  def __init__(self, what: str, entries: Mapping[str, Any] | None = None):
    super().__init__(entries or {})
    self.what = what

  def register(self, name: str, value: Any) -> Any:
    """Add ``value`` under ``name`` (without importing anything) and return it.

    Registering the same value again is a no-op.

    Raises:
      ValueError: if ``name`` is not a non-empty string or holds another value.
    """
    if not isinstance(name, str) or not name:
      raise ValueError(f"a {self.what} name must be a non-empty string, got {name!r}")
    if dict.get(self, name, value) is not value:
      raise ValueError(f"a different {self.what} is already registered as {name!r}")
    dict.__setitem__(self, name, value)
    return value

  def __missing__(self, name):
    load_modules()
    if dict.__contains__(self, name):
      return dict.__getitem__(self, name)
    raise KeyError(name)

  def __contains__(self, name) -> bool:
    if not dict.__contains__(self, name):
      load_modules()
    return dict.__contains__(self, name)

  def get(self, name, default=None):
    return self[name] if name in self else default

  def __iter__(self):
    load_modules()
    return dict.__iter__(self)

  def __len__(self) -> int:
    load_modules()
    return dict.__len__(self)

  def keys(self):
    load_modules()
    return dict.keys(self)

  def values(self):
    load_modules()
    return dict.values(self)

  def items(self):
    load_modules()
    return dict.items(self)


STRATEGIES: Registry = Registry("strategy")


def register_strategy(name: str, factory: Callable[[SearchSpace, dict], Any], *,
                      spaces: Sequence[str] = ("*",), multi_objective: bool = False,
                      jittable: bool = False, default_config: Mapping[str, Any] | None = None,
                      smoke: Mapping[str, Any] | None = None,
                      description: str = "",
                      report: Callable[[Any, Any], dict] | None = None,
                      needs_problem: bool = False, options: type | None = None,
                      asynchronous: bool = False) -> StrategyEntry:
  """Add a strategy to :data:`STRATEGIES` (see :class:`StrategyEntry` for the fields).

  With ``options`` (an :class:`~nasjax.search.options.Options` subclass), leave
  ``default_config`` out: it is the class's defaults; the ``smoke`` preset's options are
  checked against the class here.

  Raises:
    ValueError: if ``name`` is empty or already registered, or a smoke option is bad.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"a strategy name must be a non-empty string, got {name!r}")
  # Only the names registered so far: a lookup would import the module being imported.
  if dict.__contains__(STRATEGIES, name):
    raise ValueError(f"strategy {name!r} is already registered")
  if options is not None:
    if default_config is not None:
      raise ValueError(f"strategy {name!r}: give options or default_config, not both")
    default_config = options.defaults()
    options.from_dict((smoke or {}).get("config", {}))
  entry = StrategyEntry(name, factory, tuple(spaces), bool(multi_objective), bool(jittable),
                        dict(default_config or {}), dict(smoke or {}), description, report,
                        bool(needs_problem), options, bool(asynchronous))
  return STRATEGIES.register(name, entry)


def load_strategies() -> Registry:
  """:data:`STRATEGIES`, complete: every module of :mod:`nasjax.search` imported.

  Built-in baselines register when the package is imported; the other strategies'
  modules are imported on the first lookup of a name not registered yet (so that a
  command that uses a baseline does not pay for importing every strategy), or here.
  """
  load_modules()
  return STRATEGIES


def strategy_entry(name: str) -> StrategyEntry:
  """The registry entry of ``name``; ``ValueError`` listing the known names otherwise."""
  if name not in STRATEGIES:
    raise ValueError(f"unknown strategy {name!r}; registered: {sorted(STRATEGIES)}")
  return STRATEGIES[name]


def resolve_config(name: str, config: Mapping[str, Any] | None = None, *,
                   num_objectives: int = 1) -> dict:
  """The default config of ``name`` updated with ``config``, plus ``num_objectives``."""
  entry = strategy_entry(name)
  config = dict(config or {})
  config.pop("num_objectives", None)
  unknown = set(config) - set(entry.default_config)
  if unknown:
    raise ValueError(f"unknown option(s) {sorted(unknown)} for strategy {name!r}; it takes "
                     f"{sorted(entry.default_config)}")
  config = {**entry.default_config, **config, "num_objectives": int(num_objectives)}
  if entry.options is not None:
    config = entry.options.from_dict(config).to_dict()
  return config


def make_strategy(name: str, space: SearchSpace, config: Mapping[str, Any] | None = None, *,
                  num_objectives: int = 1, problem=None, evaluator=None):
  """Build the registered strategy ``name`` for ``space``.

  Args:
    name: a key of :data:`STRATEGIES`.
    space: the search space.
    config: options overriding the entry's defaults.
    num_objectives: length of the fitness vectors the strategy will be told.
    problem: the :class:`~nasjax.search.work.Problem` of a strategy that builds networks
      (``needs_problem``); default ``evaluator.problem()`` where the evaluator has one,
      else None. Ignored by the others.
    evaluator: the evaluator the search will use (asked for the problem when needed).

  Raises:
    ValueError: for an unknown name or option, a space the strategy does not support,
      or several objectives for a single-objective strategy without ``objective``.
  """
  entry = strategy_entry(name)
  if not entry.supports(space):
    raise ValueError(f"strategy {name!r} does not search space {space.name!r}; it supports "
                     f"{list(entry.spaces)}")
  config = resolve_config(name, config, num_objectives=num_objectives)
  if entry.options is not None:
    config = entry.options.from_dict(config)
  if not entry.needs_problem:
    return entry.factory(space, config)
  if problem is None and callable(getattr(evaluator, "problem", None)):
    problem = evaluator.problem()
  # Without one (a tabular evaluator), the strategy gets None and says so if it needs it.
  return entry.factory(space, config, problem=problem)


def strategy_config(strategy) -> dict:
  """The options of a strategy object as JSON data (what a run directory records): its
  :class:`~nasjax.search.options.Options` ``config`` without ``num_objectives``, or what
  its ``config()`` method returns, or ``{}``."""
  from nasjax.search.options import Options

  config = getattr(strategy, "config", None)
  if isinstance(config, Options):
    out = config.to_dict()
    out.pop("num_objectives")
    return out
  return dict(config()) if callable(config) else {}


def fitness_matrix(fitness: jax.Array, num_objectives: int) -> jax.Array:
  """``fitness`` as float32 ``(B, M)``; a ``(B,)`` vector is one objective."""
  f = jnp.asarray(fitness, jnp.float32)
  if f.ndim == 1:
    f = f[:, None]
  if f.ndim != 2 or f.shape[1] != num_objectives:
    raise ValueError(f"expected fitness of shape (B,) or (B, {num_objectives}), got "
                     f"{tuple(jnp.shape(fitness))}")
  return f


def select_objective(fitness: jax.Array, objective: int) -> jax.Array:
  """The ``(B,)`` float32 column ``objective`` of a fitness ``(B,)`` or ``(B, M)``."""
  f = jnp.asarray(fitness, jnp.float32)
  if f.ndim == 1:
    if objective != 0:
      raise ValueError(f"objective {objective} requested but the fitness has one objective")
    return f
  if not 0 <= objective < f.shape[1]:
    raise ValueError(f"objective {objective} is outside the {f.shape[1]} objectives")
  return f[:, objective]


def generation_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """``(next_key, ask_key, eval_key, tell_key)``: the keys of one generation.

  Every search loop (the run directory's and the vectorised benchmarks') splits its key
  this way, so the same seed gives the same candidates on every path.
  """
  k = jax.random.split(key, 4)
  return k[0], k[1], k[2], k[3]


def init_keys(seed) -> tuple[jax.Array, jax.Array]:
  """``(loop_key, init_key)`` of a search with integer ``seed`` (traceable, vmappable)."""
  k = jax.random.split(jax.random.key(seed))
  return k[0], k[1]
