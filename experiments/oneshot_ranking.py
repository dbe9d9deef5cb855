"""Do shared weights rank NB201 cells? A ranking study with its own ceiling and baselines.

    python experiments/oneshot_ranking.py [--variant default|tiny] [--workdir DIR]

1. Cells: ``num_cells`` distinct NB201 cells drawn uniformly, each with its dead edges
   (those on no path from the cell's input to its output) set to ``none``, keeping those
   with such a path (a cell without one outputs zeros).
2. Ground truth: each cell trained alone from scratch twice, with two init keys (and
   batch orders), and tested on the test split; the Kendall tau between the two runs
   is the ceiling of any score, the mean of the two is the truth.
3. Supernets: each method's supernet (SPOS, ENAS, DARTS) trained by the strategy's own
   training requests (:class:`~nasjax.search.work.TrainShared`, run with
   :func:`~nasjax.search.evaluators.run_shared` on the study's data) for each budget
   in epochs, a separate run per budget; then every cell scored with the shared weights
   (validation accuracy, batch norm recalibrated per cell on training images,
   :func:`nasjax.models.supernet.score_paths`); DARTS also by the sum of the cell's
   log-softmax architecture weights, ENAS also by the cell's log-probability under its
   controller.
4. Free baselines: the cell network's parameter count and its SynFlow score at
   initialisation (:func:`nasjax.proxies.synflow`).
5. For every score: Kendall tau against the truth with a bootstrap interval over cells,
   the top-k regret (the best truth minus the best truth among the score's top k), and
   the Kendall tau with the number of parameter-free ops (skip connections and pooling
   on live edges), the bias weight sharing is suspected of.

Results go to ``DIR/results.json`` as each stage finishes (a rerun with the same
``--workdir`` skips what is done); the table is printed as Markdown. The run sets XLA to
one thread, so it uses one CPU core.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nasjax
from nasjax import configs, proxies
from nasjax import data as data_lib
from nasjax import train as train_lib
from nasjax.models import NB201_EDGES, NB201_OPS
from nasjax.models import supernet as sn_lib
from nasjax.search import generation_keys, make_strategy, work
from nasjax.search.evaluators import run_shared
from nasjax.search.spaces import NB201Space
from nasjax.search.strategies import oneshot
from nasjax.stats import kendall_tau

FREE_OPS = ("skip_connect", "avg_pool_3x3")  # parameter-free ops that carry a signal


def load_variants(name: str = "oneshot_ranking_config") -> dict:
  """The ``VARIANTS`` of a config file next to this one."""
  return configs.load_variants(Path(__file__).with_name(f"{name}.py"))


# --------------------------------------------------------------------------------- cells
def live_cell(code) -> np.ndarray | None:
  """``code`` with every edge that lies on no input-to-output path set to ``none``
  (the same function), or None when no such path exists."""
  code = np.asarray(code, np.int32)
  on = [NB201_OPS[int(op)] != "none" for op in code]
  fwd, bwd = {0}, {3}
  for (j, i), ok in zip(NB201_EDGES, on):  # edges are in topological order
    if ok and i in fwd:
      fwd.add(j)
  for (j, i), ok in reversed(list(zip(NB201_EDGES, on))):
    if ok and j in bwd:
      bwd.add(i)
  if 3 not in fwd:
    return None
  live = [ok and i in fwd and j in bwd for (j, i), ok in zip(NB201_EDGES, on)]
  return np.where(live, code, 0).astype(np.int32)


def free_ops(code) -> int:
  """Edges of ``code`` holding a parameter-free op that passes a signal."""
  return sum(NB201_OPS[int(op)] in FREE_OPS for op in code)


def draw_cells(n: int, seed: int) -> np.ndarray:
  """``(n, 6)`` distinct live cells (:func:`live_cell`), drawn uniformly, in order."""
  rng = np.random.default_rng(seed)
  out, seen = [], set()
  while len(out) < n:
    cell = live_cell(rng.integers(0, len(NB201_OPS), 6))
    if cell is not None and cell.tobytes() not in seen:
      seen.add(cell.tobytes())
      out.append(cell)
  return np.stack(out)


# ---------------------------------------------------------------------------------- data
def load_data(cfg) -> data_lib.Dataset:
  """The study's data set, average-pooled by ``cfg.downsample``."""
  data = data_lib.load(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.data_seed,
                       limit=cfg.data_limit)
  f = cfg.downsample
  if f == 1:
    return data

  def pool(x):
    n, h, w, c = x.shape
    return x[:, :h - h % f, :w - w % f].reshape(n, h // f, f, w // f, f, c).mean((2, 4))

  return dataclasses.replace(data, x_train=pool(data.x_train), x_val=pool(data.x_val),
                             x_test=pool(data.x_test))


def _save(path: Path, results: dict) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(results, indent=1))
  tmp.replace(path)


# ------------------------------------------------------------------------- ground truth
def train_alone(space, code, data, cfg, seed: int) -> dict:
  """Test accuracy of the cell ``code`` trained from scratch with init key ``seed``."""
  arch = space.build(code, data.input_shape, data.num_classes)
  key = jax.random.key(seed)
  net = nasjax.init(arch, key)
  no_val = dataclasses.replace(data, x_val=data.x_val[:0], y_val=data.y_val[:0])
  tc = train_lib.TrainConfig(**cfg.truth)
  start = time.perf_counter()
  net, hist = train_lib.fit(net, no_val, tc, jax.random.fold_in(key, 1))
  test = train_lib.evaluate(net, data.x_test, data.y_test, tc.eval_batch_size)
  return {"test_accuracy": test["accuracy"], "status": hist.status,
          "seconds": time.perf_counter() - start}


def ground_truth(space, cells, data, cfg, results, path) -> np.ndarray:
  """``(2, n)`` test accuracies of the cells alone, one row per init key."""
  table = results.setdefault("truth", {})
  for seed in cfg.truth_seeds:
    for code in cells:
      key = f"{space.describe(code)}/{seed}"
      if key not in table:
        table[key] = train_alone(space, code, data, cfg, seed)
        _save(path, results)
        print(f"  alone {key}: {table[key]['test_accuracy']:.4f} "
              f"({table[key]['seconds']:.0f}s)", flush=True)
  return np.array([[table[f"{space.describe(c)}/{s}"]["test_accuracy"] for c in cells]
                   for s in cfg.truth_seeds])


def free_baselines(space, cells, data, results, path) -> dict:
  """Parameter counts and SynFlow scores at initialisation (key 0) of the cells."""
  if "baselines" not in results:
    start = time.perf_counter()
    params, synflow = [], []
    for code in cells:
      arch = space.build(code, data.input_shape, data.num_classes)
      params.append(nasjax.count_params(arch))
      synflow.append(proxies.synflow(nasjax.init(arch, jax.random.key(0))))
    results["baselines"] = {"scores": {"params": params, "synflow": synflow},
                            "seconds": time.perf_counter() - start}
    _save(path, results)
  return results["baselines"]


# ---------------------------------------------------------------------------- supernets
def train_supernet(name: str, options: dict, epochs: float, space, data, seed: int):
  """The strategy ``name`` with ``options`` and its state once its supernet has trained
  for ``epochs`` epochs: its training requests run on ``data`` until it asks for
  anything else."""
  options = {**options, "steps": oneshot.steps_for_epochs(
      epochs, len(data.y_train), options.get("batch_size", 64))}
  return trained(name, space, options, data, seed)


def trained(name: str, space, options: dict, data, seed: int):
  """The strategy ``name`` with ``options`` and its state once its training requests
  (run on ``data``, as the evaluator runs them) are done."""
  strat = make_strategy(name, space, options, problem=work.Problem.of(data))
  state = strat.init(jax.random.key(seed))
  key = jax.random.key(seed + 1)
  while True:
    key, k_ask, _, k_tell = generation_keys(key)
    asked, state = strat.ask(k_ask, state)
    if not isinstance(asked, work.TrainShared):
      return strat, state
    state = strat.tell(k_tell, state, asked, run_shared(asked, data))


def alpha_scores(alphas, cells) -> np.ndarray:
  """The sum of each cell's log-softmax architecture weights (DARTS's own ranking)."""
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(alphas).reshape(6, -1), axis=-1))
  return np.array([logp[np.arange(6), c].sum() for c in cells])


def supernet_scores(space, cells, data, cfg, results, path) -> dict:
  """Each method and budget: its supernet's scores of the cells (cached in results)."""
  done = results.setdefault("supernets", {})
  for name, spec in cfg.methods.items():
    options = {k: v for k, v in spec.items() if k != "budgets"}
    for epochs in spec["budgets"]:
      tag = f"{name}@{epochs:g}"
      if tag in done:
        continue
      start = time.perf_counter()
      strat, state = train_supernet(name, options, epochs, space, data, cfg.supernet_seed)
      trained = time.perf_counter() - start
      scores = {"shared": sn_lib.score_paths(state.weights.supernet, cells, data,
                                             seed=cfg.data_seed, **cfg.score).tolist()}
      if name == "darts":
        scores["alpha"] = alpha_scores(state.weights.alphas, cells).tolist()
      if name == "enas":
        logp, _ = strat.controller.apply(state.weights.controller, jnp.asarray(cells))
        scores["controller"] = np.asarray(logp).tolist()
      done[tag] = {"method": name, "epochs": epochs, "steps": int(state.step),
                   "train_seconds": trained,
                   "score_seconds": time.perf_counter() - start - trained,
                   "scores": scores, "log": state.log.rows()}
      _save(path, results)
      print(f"  {tag}: {int(state.step)} steps, {trained:.0f}s training, "
            f"{done[tag]['score_seconds']:.0f}s scoring", flush=True)
  return done


# ----------------------------------------------------------------------------- analysis
def bootstrap_tau(a, b, resamples: int, seed: int = 0) -> tuple[float, float]:
  """The 2.5 and 97.5 percentiles of Kendall's tau over resamples of the pairs."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  rng = np.random.default_rng(seed)
  taus = [kendall_tau(a[i], b[i]) for i in rng.integers(0, len(a), (resamples, len(a)))]
  lo, hi = np.nanpercentile(taus, [2.5, 97.5])
  return float(lo), float(hi)


def top_regret(score, truth, k: int) -> float:
  """The best truth minus the best truth among the ``k`` best-scored cells."""
  top = np.argsort(-np.asarray(score, np.float64), kind="stable")[:k]
  return float(np.max(truth) - np.max(np.asarray(truth)[top]))


def random_regret(truth, k: int) -> float:
  """The expected :func:`top_regret` of ``k`` cells drawn at random without
  replacement."""
  t = np.sort(np.asarray(truth, np.float64))[::-1]
  n = len(t)
  k = min(k, n)
  p = [math.comb(n - 1 - i, k - 1) / math.comb(n, k) for i in range(n)]  # i-th best wins
  return float(t[0] - np.dot(p, t))


def row(label: str, score, truth, free, cfg, **extra) -> dict:
  tau = kendall_tau(score, truth)
  lo, hi = bootstrap_tau(score, truth, cfg.bootstrap)
  return {"score": label, "tau": tau, "tau_low": lo, "tau_high": hi,
          "top_regret": top_regret(score, truth, cfg.top),
          "tau_free_ops": kendall_tau(score, free), **extra}


def analyse(cells, truth2: np.ndarray, baselines: dict, supernets: dict, cfg) -> dict:
  """The table's rows: the ceiling, the baselines and every supernet score."""
  truth = truth2.mean(0)
  free = np.array([free_ops(c) for c in cells])
  lo, hi = bootstrap_tau(truth2[0], truth2[1], cfg.bootstrap)
  rows = [{"score": "ceiling: stand-alone seed 0 vs seed 1",
           "tau": kendall_tau(truth2[0], truth2[1]), "tau_low": lo, "tau_high": hi,
           "top_regret": top_regret(truth2[0], truth, cfg.top),
           "tau_free_ops": kendall_tau(truth, free)}]
  for name, score in baselines["scores"].items():
    rows.append(row(name, score, truth, free, cfg))
  for tag, s in supernets.items():
    for kind, score in s["scores"].items():
      rows.append(row(f"{tag} {kind}", score, truth, free, cfg, seconds=s["train_seconds"]
                      + s["score_seconds"], steps=s["steps"]))
  return {"rows": rows, "random_regret": random_regret(truth, cfg.top),
          "truth_mean": float(truth.mean()), "truth_best": float(truth.max()),
          "truth_worst": float(truth.min()),
          "seed_gap": float(np.mean(np.abs(truth2[0] - truth2[1])))}


def train_and_evaluate(cfg, workdir) -> dict:
  """The whole study; returns (and writes) the results dict."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "results.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  start = time.perf_counter() - results.get("seconds", 0.0)
  data = load_data(cfg)
  space = NB201Space(**cfg.space)
  cells = draw_cells(cfg.num_cells, cfg.cell_seed)
  results["cells"] = [space.describe(c) for c in cells]
  results["free_ops"] = [free_ops(c) for c in cells]
  print(f"{len(cells)} cells; data {data.x_train.shape[1:]}: {len(data.y_train)} train, "
        f"{len(data.y_val)} val, {len(data.y_test)} test", flush=True)
  baselines = free_baselines(space, cells, data, results, path)
  truth2 = ground_truth(space, cells, data, cfg, results, path)
  supernets = supernet_scores(space, cells, data, cfg, results, path)
  results["analysis"] = analyse(cells, truth2, baselines, supernets, cfg)
  results["seconds"] = time.perf_counter() - start
  _save(path, results)
  return results


def markdown(results: dict) -> str:
  a = results["analysis"]
  lines = ["| score | Kendall tau vs truth [95% bootstrap] | top-5 regret (pp) | "
           "tau with param-free ops | steps | seconds |", "|---|---|---|---|---|---|"]
  for r in a["rows"]:
    sec = f"{r['seconds']:.0f}" if "seconds" in r else ""
    steps = str(r.get("steps", ""))
    lines.append(f"| {r['score']} | {r['tau']:.3f} [{r['tau_low']:.2f}, {r['tau_high']:.2f}]"
                 f" | {100 * r['top_regret']:.2f} | {r['tau_free_ops']:.3f} | {steps} | "
                 f"{sec} |")
  lines += ["", f"Truth (mean of two seeds): best {100 * a['truth_best']:.2f} %, mean "
            f"{100 * a['truth_mean']:.2f} %, worst {100 * a['truth_worst']:.2f} %; mean "
            f"|seed 0 - seed 1| {100 * a['seed_gap']:.2f} pp; top-5 regret of 5 random "
            f"cells (expected) {100 * a['random_regret']:.2f} pp. "
            f"Whole run {results['seconds'] / 60:.0f} min."]
  return "\n".join(lines)


def single_core() -> None:
  """Keep XLA to one thread and one CPU device (before JAX starts its backend)."""
  flags = os.environ.get("XLA_FLAGS", "")
  os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                             "intra_op_parallelism_threads=1").strip()
  jax.config.update("jax_num_cpu_devices", 1)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variant", default="default", choices=sorted(load_variants()))
  p.add_argument("--workdir", default="runs/oneshot_ranking")
  args = p.parse_args(argv)
  single_core()
  results = train_and_evaluate(load_variants()[args.variant], args.workdir)
  print(markdown(results))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
