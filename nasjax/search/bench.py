"""Benchmarks on tabular spaces: many independent searches, vectorised.

A jittable strategy runs all seeds in one compiled program: ``jax.vmap`` over seeds of a
``jax.lax.while_loop`` over generations, each generation being ask, table lookup, tell
-- the same steps and PRNG keys as :func:`nasjax.search.run`, so benchmark run ``i``
proposes exactly the architectures that ``nasjax search --seed (seed + i)`` records.
The program only records which architectures each run queried; the budget accounting
and the results are then computed on the host in float64 from those sequences, exactly
as the sequential protocol does (the loop stops a run a little after its float32 charged
time passes the budget, which the host check confirms is late enough). Strategies that
are not jittable run the same loop in Python.

- :func:`bench_nb201`: NAS-Bench-201's protocol (12-epoch validation signal, simulated
  time, the 200-epoch test accuracy of the best by validation), mean and std over runs,
  and, as NB201's Table 5 reports a search on CIFAR-10, the test accuracy of the same
  chosen cells on all three data sets.
- :func:`bench_macro`: the (error, params) Pareto front each run found on
  NAS-Bench-Macro, its hypervolume as a fraction of the true front's.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.search import pareto
from nasjax.search.base import generation_keys, init_keys, make_strategy, strategy_entry
from nasjax.search.evaluators import MacroEvaluator, NB201Evaluator
from nasjax.search.options import preset_config

MARGIN_SECONDS = 1.0  # float32 charged time may lag the float64 sum by far less

# What NB201's protocol does with the query whose simulated time crosses the budget,
# declared by a strategy class as ``budget_crossing``: NB201's scripts of random search
# and REA make the query, find that its cost would pass the budget and drop it
# ("drop"); its REINFORCE script records the query first and so keeps it ("keep"). (The
# REA script charges its first population without that check; the rule applies it to
# every query, which differs only under budgets shorter than the first population.)
CROSSING_RULES = ("drop", "keep")
DEFAULT_CROSSING = "drop"  # the rule of a strategy that declares none
NB201_DATASETS = ("cifar10", "cifar100", "imagenet16-120")


def crossing_rule(strategy) -> str:
  """The ``budget_crossing`` rule a strategy (object or class) declares, else
  :data:`DEFAULT_CROSSING`.

  Raises:
    ValueError: if the strategy declares a rule not in :data:`CROSSING_RULES`.
  """
  rule = getattr(strategy, "budget_crossing", DEFAULT_CROSSING)
  if rule not in CROSSING_RULES:
    raise ValueError(f"strategy {getattr(strategy, 'name', strategy)!r} declares "
                     f"budget_crossing={rule!r}; expected one of {list(CROSSING_RULES)}")
  return rule


def _batch_size(strategy, space) -> int:
  key, k_init = init_keys(0)
  state = jax.eval_shape(strategy.init, k_init)
  cands = jax.eval_shape(strategy.ask, key, state)[0]
  if len(cands.shape) != 2 or cands.shape[1] != space.length:
    raise ValueError(f"strategy {strategy.name!r} asks for candidates of shape "
                     f"{cands.shape}, expected (B, {space.length})")
  return int(cands.shape[0])


def query_sequences(strategy, evaluator, seeds, *, time_budget: float | None = None,
                    max_evals: int | None = None, jittable: bool = True,
                    vectorize: bool = True, final_states: bool = False):
  """The code ranks each run queries, in order.

  Args:
    strategy: a strategy over ``evaluator.space``.
    evaluator: a tabular evaluator (``arrays()`` gives fitness and cost by code rank).
    seeds: ``(R,)`` integer seeds, one run each.
    time_budget: stop a run once its charged time reaches this (see the module doc).
    max_evals: stop a run after this many queries.
    jittable: whether the strategy's ask and tell can be jit-compiled.
    vectorize: for a jittable strategy, run all seeds in one compiled program (else a
      Python loop over seeds and generations, as for strategies that are not jittable).
    final_states: also return each run's strategy state after its last ``tell``.

  Returns:
    ``(R, N)`` int64 code ranks, ``-1`` after a run stopped. Under a time budget each
    row extends at least to the query that crosses the budget (whether that query
    counts is :func:`charged_prefix`'s rule); with ``max_evals`` each
    row holds exactly the first ``max_evals`` queries. With ``final_states``, the pair
    ``(ranks, states)``, ``states`` the runs' states stacked along a leading axis R.
  """
  if (time_budget is None) == (max_evals is None):
    raise ValueError("give exactly one of time_budget and max_evals")
  F, cost = evaluator.arrays()
  space = evaluator.space
  seeds = np.asarray(seeds, np.int64).ravel()
  if not (jittable and vectorize):
    seqs, states = _python_sequences(strategy, space, F, cost, seeds, time_budget, max_evals,
                                     jittable)
    return (seqs, jax.tree_util.tree_map(lambda *a: np.stack(a), *states)
            ) if final_states else seqs
  B = _batch_size(strategy, space)
  if time_budget is not None:
    if not np.any(cost > 0):
      raise ValueError("this benchmark charges no time per query; give max_evals instead")
    min_cost = float(cost[cost > 0].min())
    gens = int(math.ceil((time_budget + MARGIN_SECONDS) / min_cost)) + 1
  else:
    gens = int(math.ceil(max_evals / B))
  capacity = gens * B
  F32 = jnp.asarray(F.astype(np.float32))
  fit_table = F32[:, 0] if F.shape[1] == 1 else F32
  cost32 = jnp.asarray(cost.astype(np.float32))
  limit_time = jnp.float32(np.inf if time_budget is None else time_budget + MARGIN_SECONDS)
  limit_evals = capacity if max_evals is None else max_evals

  def one(seed):
    key, k_init = init_keys(seed)
    state = strategy.init(k_init)

    def cond(c):
      g, _, _, elapsed, n, _ = c
      return (g < gens) & (elapsed <= limit_time) & (n < limit_evals)

    def body(c):
      g, key, state, elapsed, n, buf = c
      key, k_ask, _, k_tell = generation_keys(key)
      cands, state = strategy.ask(k_ask, state)
      idx = space.index(cands)
      state = strategy.tell(k_tell, state, cands, fit_table[idx])
      buf = jax.lax.dynamic_update_slice(buf, idx, (n,))
      return g + 1, key, state, elapsed + jnp.sum(cost32[idx]), n + B, buf

    init = (jnp.int32(0), key, state, jnp.float32(0), jnp.int32(0),
            jnp.full((capacity,), -1, jnp.int32))
    out = jax.lax.while_loop(cond, body, init)
    return out[-1], out[2]

  seqs, states = jax.jit(jax.vmap(one))(jnp.asarray(seeds, jnp.int32))
  seqs = np.asarray(seqs).astype(np.int64)
  if max_evals is not None:
    seqs = seqs[:, :max_evals]
  return (seqs, states) if final_states else seqs


def _python_sequences(strategy, space, F, cost, seeds, time_budget, max_evals,
                      jit: bool) -> tuple[np.ndarray, list]:
  ask = jax.jit(strategy.ask) if jit else strategy.ask
  tell = jax.jit(strategy.tell) if jit else strategy.tell
  rows, states = [], []
  for seed in seeds:
    key, k_init = init_keys(int(seed))
    state = strategy.init(k_init)
    seq, elapsed = [], 0.0
    while True:
      if time_budget is not None and elapsed >= time_budget:
        break
      if max_evals is not None and len(seq) >= max_evals:
        break
      key, k_ask, _, k_tell = generation_keys(key)
      cands, state = ask(k_ask, state)
      if not isinstance(cands, (np.ndarray, jax.Array)):
        cands = np.stack([space.encode(c) for c in cands])
      idx = [space.hash(c) for c in np.asarray(cands)]
      seq += idx
      elapsed += float(np.sum(cost[idx]))
      fit = F[idx]
      state = tell(k_tell, state, cands, fit[:, 0] if F.shape[1] == 1 else fit)
    rows.append(seq[:max_evals] if max_evals is not None else seq)
    states.append(state)
  width = max(len(r) for r in rows)
  return np.array([r + [-1] * (width - len(r)) for r in rows], np.int64), states


def charged_prefix(seqs: np.ndarray, cost: np.ndarray, time_budget: float,
                   crossing: str = DEFAULT_CROSSING) -> np.ndarray:
  """How many queries of each sequence the protocol makes. The time charged before query
  ``j`` and with it are summed in order in float64, as NB201's scripts sum them; the run
  goes on while the time charged is below the budget, and the query that passes the
  budget is dropped (``crossing="drop"``: query ``j`` counts iff the time charged with it
  is at most the budget) or kept (``"keep"``: iff the time charged before it is below
  the budget).

  Raises:
    ValueError: for an unknown rule, or if a sequence ends before its budget is spent
      (too few recorded).
  """
  if crossing not in CROSSING_RULES:
    raise ValueError(f"crossing must be one of {list(CROSSING_RULES)}, got {crossing!r}")
  valid = seqs >= 0
  c = np.where(valid, cost[np.where(valid, seqs, 0)], 0.0)
  # np.cumsum adds left to right, with the same roundings as a sequential loop.
  cum = np.cumsum(c, axis=1)
  before = np.concatenate([np.zeros((len(seqs), 1)), cum[:, :-1]], axis=1)
  if crossing == "drop":
    taken = valid & (before < time_budget) & (cum <= time_budget)
  else:
    taken = valid & (before < time_budget)
  if np.any(cum[:, -1] < time_budget):
    raise ValueError("a run's recorded queries end before its time budget is spent; "
                     "raise the generation limit")
  return taken.sum(axis=1)


def nb201_results(seqs: np.ndarray, evaluator: NB201Evaluator, time_budget: float,
                  crossing: str = DEFAULT_CROSSING) -> dict[str, np.ndarray]:
  """Per run: number of queries, best validation accuracy, its test accuracy on the
  searched data set and on each of :data:`NB201_DATASETS` (``test_<name>``), and its
  code rank (``best_index``). ``crossing``: see :func:`charged_prefix`."""
  table = evaluator.table
  val = table.val(evaluator.dataset)
  n = charged_prefix(seqs, table.cost, time_budget, crossing)
  cols = np.arange(seqs.shape[1])[None, :]
  v = np.where(cols < n[:, None], val[np.maximum(seqs, 0)], -np.inf)
  best = np.argmax(v, axis=1)  # the first maximum: the earliest of equals wins
  idx = seqs[np.arange(len(seqs)), best]
  out = {"queries": n, "best_val": val[idx], "test": table.test(evaluator.dataset)[idx],
         "best_index": idx}
  out.update({f"test_{name}": table.test(name)[idx] for name in NB201_DATASETS})
  return out


def accuracy_by_dataset(res: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
  """Mean and population std (%) over runs of the chosen cells' 200-epoch test accuracy
  on each NB201 data set, from :func:`nb201_results` (NB201's Table 5 for a search on
  CIFAR-10)."""
  return {name: {"mean": float(np.mean(res[f"test_{name}"])),
                 "std": float(np.std(res[f"test_{name}"]))} for name in NB201_DATASETS}


def bench_nb201(strategy: str, dataset: str = "cifar10", runs: int = 500,
                time_budget: float = 12000.0, seed: int = 0,
                config: Mapping[str, Any] | None = None, data_dir: str | None = None,
                preset: str | None = None, vectorize: bool = True) -> dict:
  """``runs`` independent searches under NAS-Bench-201's protocol.

  Run ``i`` uses seed ``seed + i``; the strategy's options are ``config`` over its
  ``preset`` (e.g. ``"paper"``, :func:`~nasjax.search.options.preset_config`) or over its
  registered defaults. The query that crosses the budget counts or not by the strategy's
  ``budget_crossing`` rule (:func:`charged_prefix`). Returns a JSON-ready dict:
  ``mean``, ``std`` (population std, %) of the final test accuracy on ``dataset``,
  ``test_by_dataset`` (the same chosen cells' test accuracy on all three data sets),
  ``runs``, ``mean_queries``, ``crossing``, ``wall_seconds`` (this call, including
  loading and compiling) and the settings. ``vectorize=False`` runs a jittable
  strategy's seeds one after another (:func:`query_sequences`).
  """
  start = time.perf_counter()
  if runs < 1:
    raise ValueError(f"runs must be positive, got {runs}")
  if preset is not None:
    config = preset_config(strategy, preset, config)
  evaluator = NB201Evaluator(dataset, data_dir=data_dir)
  entry = strategy_entry(strategy)
  strat = make_strategy(strategy, evaluator.space, config, num_objectives=1)
  seqs = query_sequences(strat, evaluator, np.arange(seed, seed + runs),
                         time_budget=time_budget, jittable=entry.jittable,
                         vectorize=vectorize)
  crossing = crossing_rule(strat)
  res = nb201_results(seqs, evaluator, time_budget, crossing)
  return {"benchmark": "nb201", "strategy": strategy, "preset": preset,
          "dataset": evaluator.dataset, "runs": runs, "time_budget": time_budget,
          "seed": seed, "crossing": crossing,
          "mean": float(np.mean(res["test"])), "std": float(np.std(res["test"])),
          "min": float(np.min(res["test"])), "max": float(np.max(res["test"])),
          "test_by_dataset": accuracy_by_dataset(res),
          "mean_queries": float(np.mean(res["queries"])),
          "wall_seconds": time.perf_counter() - start}


MACRO_REFERENCE = (1.1, 1.1)


def macro_hypervolumes(seqs: np.ndarray, evaluator: MacroEvaluator
                       ) -> tuple[np.ndarray, float]:
  """Per run: the normalised hypervolume of the front found; and the true front's.

  Objectives are normalised to [0, 1] by the table's minimum and maximum; the reference
  point is (1.1, 1.1).
  """
  F, _ = evaluator.arrays()
  lo, hi = F.min(axis=0), F.max(axis=0)
  G = pareto.normalize(F, lo, hi)
  ref = np.full(G.shape[1], MACRO_REFERENCE[0])
  true_hv = pareto.hypervolume(G[pareto.pareto_mask(G)], ref)
  hvs = np.array([pareto.hypervolume(G[np.unique(s[s >= 0])], ref) for s in seqs])
  return hvs, true_hv


def bench_macro(strategy: str, evals: int = 100, runs: int = 10, seed: int = 0,
                config: Mapping[str, Any] | None = None, data_dir: str | None = None,
                objectives=("error", "params"), preset: str | None = None) -> dict:
  """``runs`` searches of ``evals`` queries on NAS-Bench-Macro, scored by hypervolume.

  The strategy's options are ``config`` over its ``preset`` or over its registered
  defaults, as for :func:`bench_nb201`. Returns a JSON-ready dict with
  ``hv_fraction_mean``, ``hv_fraction_std`` (population std), ``true_hypervolume``,
  ``runs``, ``evals``, ``preset`` and ``wall_seconds``.
  """
  start = time.perf_counter()
  if runs < 1 or evals < 1:
    raise ValueError(f"runs and evals must be positive, got runs={runs}, evals={evals}")
  if preset is not None:
    config = preset_config(strategy, preset, config)
  evaluator = MacroEvaluator(tuple(objectives), data_dir=data_dir)
  entry = strategy_entry(strategy)
  strat = make_strategy(strategy, evaluator.space, config,
                        num_objectives=len(evaluator.objectives))
  seqs = query_sequences(strat, evaluator, np.arange(seed, seed + runs), max_evals=evals,
                         jittable=entry.jittable)
  hvs, true_hv = macro_hypervolumes(seqs, evaluator)
  frac = hvs / true_hv
  return {"benchmark": "macro", "strategy": strategy, "preset": preset,
          "objectives": list(objectives), "runs": runs, "evals": evals, "seed": seed,
          "hv_fraction_mean": float(np.mean(frac)), "hv_fraction_std": float(np.std(frac)),
          "hypervolume_mean": float(np.mean(hvs)), "true_hypervolume": float(true_hv),
          "reference_point": list(MACRO_REFERENCE), "wall_seconds": time.perf_counter() - start}
