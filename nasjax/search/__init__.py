"""Architecture search: spaces, strategies, evaluators, run directories, benchmarks.

Importing this package registers the baselines (``random``, ``rea``, ``reinforce``) in
:data:`STRATEGIES`. The registries (:data:`STRATEGIES`, :data:`SPACES`) import the
package's other modules, which register the remaining strategies and spaces, on the
first lookup of a name they do not hold yet (:class:`Registry`).

:class:`RayBackend` and :class:`WorkerPool` (:mod:`nasjax.search.ray_backend`) are
imported on first use, so that importing nasjax does not import that module (which
imports Ray only when a pool starts).
"""

import importlib

from nasjax.search.strategies import evolution, random_search, reinforce  # noqa: F401  (registration)
from nasjax.search.base import (STRATEGIES, Registry, Strategy, StrategyEntry, fitness_matrix,
                                generation_keys, init_keys, load_modules, load_strategies,
                                make_strategy, register_strategy, resolve_config,
                                select_objective, strategy_entry)
from nasjax.search.evaluators import (EVALUATORS, MacroEvaluator, NB201Evaluator, Record,
                                      TrainingEvaluator, make_evaluator)
from nasjax.search.strategies.evolution import EvolutionState, RegularizedEvolution
from nasjax.search.strategies.random_search import RandomSearch, RandomState
from nasjax.search.strategies.reinforce import Reinforce, ReinforceState
from nasjax.search.rundir import read_config, read_history
from nasjax.search.runner import Budget, RunResult, resume, run
from nasjax.search.spaces import (SPACES, DartsCellSpace, MacroSpace, NB201Space,
                                  PlainCNNSpace, SearchSpace, make_space, register_space)

__all__ = [
    "STRATEGIES", "Strategy", "StrategyEntry", "register_strategy", "make_strategy",
    "resolve_config", "strategy_entry", "load_strategies", "load_modules", "Registry",
    "fitness_matrix", "select_objective", "generation_keys", "init_keys", "EVALUATORS",
    "Record", "NB201Evaluator", "MacroEvaluator", "TrainingEvaluator", "make_evaluator",
    "RegularizedEvolution", "EvolutionState", "RandomSearch", "RandomState", "Reinforce",
    "ReinforceState", "Budget", "RunResult", "run", "resume", "read_config", "read_history",
    "SPACES", "SearchSpace", "NB201Space", "MacroSpace", "PlainCNNSpace", "DartsCellSpace",
    "make_space", "register_space", "RayBackend", "WorkerPool",
]

# Names re-exported from modules imported on first use: name -> module.
_LAZY = {"RayBackend": "nasjax.search.ray_backend", "WorkerPool": "nasjax.search.ray_backend"}


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

