"""SPOS, DARTS and ENAS on Fashion-MNIST: do shared weights rank NB201 cells?

    python experiments/oneshot_fmnist.py [--variant default|paper|tiny] [--workdir DIR]
        [--only spos,darts,enas]

1. Ground truth: ``num_sample`` distinct random NB201 cells are trained alone from
   scratch (:func:`nasjax.train.fit`, the same short budget for all) and tested.
2. Each method searches with its own supernet (:mod:`nasjax.search.strategies.spos`,
   :mod:`~nasjax.search.strategies.darts`, :mod:`~nasjax.search.strategies.enas`; its
   requests on the shared weights run on the experiment's data,
   :func:`~nasjax.search.strategies.oneshot.run_until_proposal`) and returns a cell, which
   is trained alone with the same budget.
3. Each supernet scores the sample: SPOS by validation accuracy with recalibrated batch
   norm; ENAS by validation accuracy with batch statistics (its reward) and with
   recalibration; DARTS by the sum of the cell's log-softmax architecture weights (the
   ranking its parameters imply) and by recalibrated accuracy with its shared weights.
   Kendall's tau-b between each score and the stand-alone test accuracy measures the
   ranking.
4. Costs: seconds per supernet step and the memory XLA plans for the compiled step, for
   the path step (``lax.switch`` and one-hot) and the mixed (DARTS) step, with and
   without rematerialisation.

Results go to ``DIR/results.json`` as they come (a second run with the same ``--workdir``
skips what is done) and are printed as Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import nasjax
from nasjax import configs
from nasjax import data as data_lib
from nasjax import train as train_lib
from nasjax.models import NB201_EDGES, NB201_OPS
from nasjax.models import supernet as sn_lib
from nasjax.search import make_strategy, work
from nasjax.search.spaces import NB201Space
from nasjax.search.strategies import oneshot
from nasjax.stats import kendall_tau


def load_variants(name: str = "oneshot_fmnist_config") -> dict:
  """The ``VARIANTS`` of a config file next to this one."""
  return configs.load_variants(Path(__file__).with_name(f"{name}.py"))


def connected(code) -> bool:
  """Whether some path of non-``none`` edges leads from the cell input to its output (a
  cell without one outputs zeros whatever the image)."""
  reach = {0}
  for (j, i), op in zip(NB201_EDGES, code):
    if i in reach and NB201_OPS[int(op)] != "none":
      reach.add(j)
  return 3 in reach


def _save(path: Path, results: dict) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(results, indent=1))
  tmp.replace(path)


def sample_codes(space, n: int, seed: int) -> np.ndarray:
  """``n`` distinct codes drawn uniformly, in drawing order."""
  out, seen, k = [], set(), 0
  while len(out) < n:
    code = np.asarray(space.sample(jax.random.fold_in(jax.random.key(seed), k)))
    k += 1
    if space.hash(code) not in seen:
      seen.add(space.hash(code))
      out.append(code)
  return np.stack(out)


def train_alone(space, code, data, cfg) -> dict:
  """Train the cell ``code`` from scratch; its validation and test accuracy."""
  arch = space.build(code, data.input_shape, data.num_classes)
  key = jax.random.key(cfg.seed)
  net = nasjax.init(arch, key)
  start = time.perf_counter()
  net, hist = train_lib.fit(net, data, train_lib.TrainConfig(**cfg.train),
                            jax.random.fold_in(key, 1))
  test = train_lib.evaluate(net, data.x_test, data.y_test)
  return {"arch": space.describe(code), "val_accuracy": hist.val_accuracy[-1],
          "test_accuracy": test["accuracy"], "status": hist.status,
          "params": nasjax.count_params(arch), "seconds": time.perf_counter() - start}


def stand_alone(space, codes, data, cfg, results, path) -> list[dict]:
  table = results.setdefault("stand_alone", {})
  out = []
  for code in codes:
    key = space.describe(code)
    if key not in table:
      table[key] = train_alone(space, code, data, cfg)
      _save(path, results)
      print(f"  alone {key}: test {table[key]['test_accuracy']:.4f} "
            f"({table[key]['seconds']:.0f}s)", flush=True)
    out.append(table[key])
  return out


def make_method(name: str, options: dict, space, data):
  """The strategy ``name`` with ``options`` (``epochs`` turned into ``steps`` on ``data``'s
  training split), for ``data``'s input shape and classes."""
  options = dict(options)
  epochs = options.pop("epochs", None)
  if epochs is not None:
    options["steps"] = oneshot.steps_for_epochs(epochs, len(data.y_train),
                                                options.get("batch_size", 64))
  return make_strategy(name, space, options, problem=work.Problem.of(data))


def _alpha_scores(spec, alphas, codes) -> np.ndarray:
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(alphas).reshape(6, -1), axis=-1))
  return np.array([logp[np.arange(6), c].sum() for c in codes])


def search(name: str, space, data, cfg, sample, results, path) -> dict:
  """Run one method, then score the sample with its supernet (cached in results)."""
  done = results.setdefault("methods", {})
  if name in done:
    return done[name]
  strat = make_method(name, cfg.methods[name], space, data)
  start = time.perf_counter()
  state = strat.init(jax.random.key(cfg.seed))
  codes, state, _ = oneshot.run_until_proposal(strat, state, jax.random.key(cfg.seed + 1),
                                               data)
  seconds = time.perf_counter() - start
  chosen = np.asarray(codes[0])
  sn = state.weights.supernet
  kw = {**cfg.score, "seed": cfg.data_seed}
  scores = {}
  t = time.perf_counter()
  if name == "darts":
    scores["alpha"] = _alpha_scores(strat.spec, state.weights.alphas, sample)
    scores["shared_weights"] = sn_lib.score_paths(sn, sample, data, **kw)
  elif name == "enas":
    scores["batch_bn"] = sn_lib.score_paths(sn, sample, data, bn="batch",
                                            max_examples=kw.get("max_examples"))
    scores["recalibrated"] = sn_lib.score_paths(sn, sample, data, **kw)
  else:
    scores["recalibrated"] = sn_lib.score_paths(sn, sample, data, **kw)
  done[name] = {"chosen": chosen.tolist(), "chosen_arch": space.describe(chosen),
                "search_seconds": seconds, "score_seconds": time.perf_counter() - t,
                "steps": int(state.step), "scores": {k: np.asarray(v).tolist()
                                                     for k, v in scores.items()},
                "log": state.log.rows(), "phase_log": state.phase_log.rows(),
                "options": strat.config.to_dict()}
  _save(path, results)
  print(f"  {name}: chose {space.describe(chosen)} in {seconds:.0f}s", flush=True)
  return done[name]


def costs(space, data, cfg, results, path) -> dict:
  """Seconds per step and compiled memory of the supernet steps (cached in results)."""
  if "costs" in results:
    return results["costs"]
  bs = cfg.methods["spos"]["batch_size"]
  x, y = data.x_train[:bs], data.y_train[:bs]
  tx = oneshot.sgd(0.01)
  rows = []
  for label, by_path, impl, remat in (("path, lax.switch", True, "switch", False),
                                      ("path, one-hot", True, "onehot", False),
                                      ("path, lax.switch, remat", True, "switch", True),
                                      ("mixed (DARTS)", False, "onehot", False),
                                      ("mixed (DARTS), remat", False, "onehot", True)):
    spec = sn_lib.supernet_for_space(space, data.input_shape, data.num_classes, remat=remat)
    sn = spec.init(jax.random.key(0))
    t = time.perf_counter()
    mem = oneshot.step_memory(sn, tx, bs, by_path=by_path, impl=impl)
    compile_s = time.perf_counter() - t
    step = oneshot.weight_step_fn(tx, by_path, impl)
    opt_state = tx.init(sn.params)
    arch = (jnp.zeros(6, jnp.int32) if by_path else jnp.full(spec.weights_shape, 0.2))
    sn, opt_state, loss, _ = step(sn, opt_state, x, y, arch)  # warm up
    jax.block_until_ready(loss)
    times = []
    for k in range(10):
      arch = (jnp.asarray(np.random.default_rng(k).integers(0, 5, 6), jnp.int32) if by_path
              else arch)
      t = time.perf_counter()
      sn, opt_state, loss, _ = step(sn, opt_state, x, y, arch)
      jax.block_until_ready(loss)
      times.append(time.perf_counter() - t)
    rows.append({"step": label, "seconds_per_step": float(np.median(times)),
                 "compile_seconds": compile_s, **{f"{k}_bytes": v for k, v in mem.items()}})
    print(f"  cost {label}: {rows[-1]['seconds_per_step']:.3f}s/step, temp "
          f"{mem['temp'] / 2**20:.1f} MiB", flush=True)
  results["costs"] = {"batch_size": bs, "rows": rows}
  _save(path, results)
  return results["costs"]


def train_and_evaluate(cfg, workdir, only=None) -> dict:
  """The whole experiment; returns (and writes) the results dict."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "results.json"
  results = json.loads(path.read_text()) if path.exists() else {}
  data = data_lib.load(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.data_seed,
                       limit=cfg.data_limit)
  space = NB201Space(**cfg.space)
  sample = sample_codes(space, cfg.num_sample, cfg.seed)
  results["sample"] = [space.describe(c) for c in sample]
  print(f"ground truth: {len(sample)} cells trained alone", flush=True)
  truth = stand_alone(space, sample, data, cfg, results, path)
  test = np.array([t["test_accuracy"] for t in truth])
  best = int(np.argmax(test))
  results["sample_best"] = {"arch": truth[best]["arch"], "test_accuracy": float(test[best]),
                            "median_test_accuracy": float(np.median(test)),
                            "connected": int(sum(connected(c) for c in sample))}
  for name in (only or cfg.methods):
    print(f"method {name}", flush=True)
    m = search(name, space, data, cfg, sample, results, path)
    m["tau"] = {k: kendall_tau(v, test) for k, v in m["scores"].items()}
    live = np.array([connected(c) for c in sample])
    m["tau_connected"] = {k: kendall_tau(np.asarray(v)[live], test[live])
                          for k, v in m["scores"].items()}
    chosen = stand_alone(space, [np.asarray(m["chosen"])], data, cfg, results, path)[0]
    m["chosen_test_accuracy"] = chosen["test_accuracy"]
    m["chosen_rank_in_sample"] = int(np.sum(test > chosen["test_accuracy"])) + 1
    _save(path, results)
  if cfg.costs:
    costs(space, data, cfg, results, path)
  _save(path, results)
  return results


def markdown(results: dict) -> str:
  lines = ["| method | supernet score | Kendall tau, all | tau, connected cells | "
           "search s | chosen cell | chosen, alone (test %) | rank in sample |",
           "|---|---|---|---|---|---|---|---|"]
  for name, m in results.get("methods", {}).items():
    for k, tau in m.get("tau", {}).items():
      tau_c = m.get("tau_connected", {}).get(k, float("nan"))
      lines.append(f"| {name} | {k} | {tau:.3f} | {tau_c:.3f} | {m['search_seconds']:.0f} | "
                   f"`{m['chosen_arch']}` | {100 * m['chosen_test_accuracy']:.2f} | "
                   f"{m['chosen_rank_in_sample']} / {len(results['sample']) + 1} |")
  sb = results.get("sample_best")
  if sb:
    lines += ["", f"Best of the sample alone: {100 * sb['test_accuracy']:.2f}% "
              f"(`{sb['arch']}`); median {100 * sb['median_test_accuracy']:.2f}%; "
              f"{sb['connected']} of {len(results['sample'])} cells connected."]
  c = results.get("costs")
  if c:
    lines += ["", f"| supernet step (batch {c['batch_size']}) | s / step | compile s | "
              "XLA temp MiB | peak MiB |", "|---|---|---|---|---|"]
    for r in c["rows"]:
      lines.append(f"| {r['step']} | {r['seconds_per_step']:.3f} | "
                   f"{r['compile_seconds']:.0f} | {r['temp_bytes'] / 2**20:.1f} | "
                   f"{r['peak_bytes'] / 2**20:.1f} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variant", default="default", choices=sorted(load_variants()))
  p.add_argument("--workdir", default="runs/oneshot_fmnist")
  p.add_argument("--only", help="comma-separated methods to run (default: all)")
  args = p.parse_args(argv)
  cfg = load_variants()[args.variant]
  only = args.only.split(",") if args.only else None
  results = train_and_evaluate(cfg, args.workdir, only)
  print(markdown(results))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
