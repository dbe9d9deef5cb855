"""Reports of a run directory: a summary table and PNG plots.

:func:`report` reads ``config.json``, ``history.jsonl`` and ``best.json`` and writes

- ``best_vs_evals.png``: the best first objective so far against evaluations;
- ``best_vs_time.png``: the same against charged seconds (simulated for tabular
  benchmarks, wall time for training);
- ``pareto.png`` (runs with several objectives): every successful evaluation of the
  first two objectives, the non-dominated ones joined as the front;
- ``report.txt``: the summary table that :func:`format_summary` prints.

A run evaluated on Ray workers (:mod:`nasjax.search.ray_backend`) also reports each
worker's utilisation and the evaluations per hour (:func:`worker_use`).

Plots use Matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from nasjax.search import pareto
from nasjax.search.rundir import read_best, read_config, read_history


def _values(history, names) -> np.ndarray:
  return np.array([[math.nan if h["objectives"].get(n) is None else h["objectives"][n]
                    for n in names] for h in history], np.float64).reshape(len(history),
                                                                             len(names))


def best_so_far(values: np.ndarray) -> np.ndarray:
  """``(n,)`` running minimum of ``values``, ignoring NaN (NaN until a finite value)."""
  out = np.full(len(values), np.nan)
  best = math.inf
  for i, v in enumerate(values):
    if math.isfinite(v) and v < best:
      best = v
    out[i] = best if math.isfinite(best) else np.nan
  return out


def compile_time(history) -> dict:
  """How much of a training run's wall time went into compiling.

  Two figures:

  - ``compile_seconds``: all compiling the run's process did (the ``compile`` clock of
    the last history entry, :func:`nasjax.runtime.compile_seconds`): the candidates'
    train and eval steps, and the strategy's own programs (morphisms, distillation,
    controllers, latency probes). Histories written before that clock existed fall back
    to the candidates' figure.
  - ``candidate_compile_seconds``: the sum of the per-candidate
    ``metrics.compile_seconds`` (the train and eval steps; cached entries, which were
    not evaluated again, are left out).

  Candidates trained at once on several devices (and processes) compile concurrently,
  so the share divides by the wall time times the number of such lanes (the distinct
  ``metrics.device`` values): ``compile_share = compile_seconds / (wall_seconds *
  lanes)``, which is the plain fraction of wall time for a sequential run. On Ray
  workers, ``compile_seconds`` adds each worker's compiling (its ``worker.compile``
  records) to the driver's, and the lanes are the workers.

  Returns:
    ``{}`` if no entry records compile seconds (tabular runs), else ``compile_seconds``,
    ``candidate_compile_seconds``, ``compile_share`` (None when no wall time was
    recorded) and ``lanes``.
  """
  fresh = [h.get("metrics") or {} for h in history]
  fresh = [m for m in fresh if "compile_seconds" in m and not m.get("cached")]
  if not fresh:
    return {}
  candidates = float(sum(m["compile_seconds"] or 0.0 for m in fresh))
  last = history[-1]
  seconds = float(last["compile"]) if last.get("compile") is not None else candidates
  lanes = max(1, len({m["device"] for m in fresh if "device" in m}))
  workers = [h["worker"] for h in history if isinstance(h.get("worker"), dict)]
  if workers:  # on Ray: the driver's compiling and each worker's, over the workers
    seconds += float(sum(w.get("compile") or 0.0 for w in workers))
    lanes = max(1, len({(w.get("session", 0), w["id"]) for w in workers}))
  wall = last["wall"]
  share = seconds / (wall * lanes) if wall > 0 else None
  return {"compile_seconds": seconds, "candidate_compile_seconds": candidates,
          "compile_share": share, "lanes": lanes}


def _worker_label(w: dict, sessions: int) -> str:
  return f"{w['id']}" if sessions == 1 else f"{w.get('session', 0)}.{w['id']}"


def worker_use(history) -> dict:
  """How busy the Ray workers of a run were, from the ``worker`` record of its entries
  (where and between which unix times each evaluation ran).

  A session's wall time runs from the start of its first evaluation to the end of its
  last (Ray's start-up and the time a resumed run was down are left out); a worker's
  utilisation is the time it spent evaluating over the wall time of its session.
  Workers are numbered per session (``"SESSION.ID"`` when the run was resumed).

  Returns:
    ``{}`` if no entry has a worker record, else ``workers`` (``count``,
    ``evaluations_per_hour`` over the sessions' wall time and ``mean_utilisation``) and
    ``worker_utilisation`` (label -> busy share of its session's wall time) and
    ``worker_table`` (label -> ``node``, ``evaluations``, ``busy_seconds``,
    ``utilisation``).
  """
  timed = [e["worker"] for e in history if isinstance(e.get("worker"), dict)
           and e["worker"].get("start") is not None and e["worker"].get("end") is not None]
  if not timed:
    return {}
  windows: dict = {}
  for w in timed:
    a, b = windows.get(w.get("session", 0), (math.inf, -math.inf))
    windows[w.get("session", 0)] = (min(a, w["start"]), max(b, w["end"]))
  table: dict = {}
  for w in timed:
    row = table.setdefault(_worker_label(w, len(windows)), {
        "node": w.get("node", ""), "evaluations": 0, "busy_seconds": 0.0,
        "session": w.get("session", 0)})
    row["evaluations"] += 1
    row["busy_seconds"] += w["end"] - w["start"]
  for row in table.values():
    a, b = windows[row.pop("session")]
    row["utilisation"] = row["busy_seconds"] / (b - a) if b > a else None
  wall = sum(b - a for a, b in windows.values())
  shares = [r["utilisation"] for r in table.values() if r["utilisation"] is not None]
  return {"workers": {"count": len(table),
                      "evaluations_per_hour": 3600.0 * len(timed) / wall if wall > 0 else None,
                      "mean_utilisation": float(np.mean(shares)) if shares else None},
          "worker_utilisation": {k: r["utilisation"] for k, r in table.items()},
          "worker_table": table}


def summarize(workdir: str | os.PathLike) -> dict:
  """Summary numbers of a run directory (what the report table shows); training runs
  also show the time spent compiling (see :func:`compile_time`), and runs on Ray workers
  how busy the workers were (:func:`worker_use`, without its ``worker_table``).

  A run is ``finished`` when ``best.json`` says so and the history holds every
  evaluation it counts; a history that holds fewer (cut short, or restored from an
  older copy) adds ``recorded_evaluations``, the count of ``best.json``.
  """
  workdir = Path(workdir)
  cfg = read_config(workdir)
  history = read_history(workdir)
  names = cfg["objectives"]
  F = _values(history, names)
  ok = np.array([h["status"] == "ok" for h in history], bool) & ~np.isnan(F).any(axis=1)
  best = read_best(workdir)
  recorded = best.get("evals")
  complete = not isinstance(recorded, int) or len(history) >= recorded
  out = {
      "workdir": str(workdir), "strategy": cfg["strategy"],
      "evaluator": cfg["evaluator"].get("kind"), "objectives": names,
      "evaluations": len(history), "failed": int((~ok).sum()),
      "charged_seconds": history[-1]["elapsed"] if history else 0.0,
      "wall_seconds": history[-1]["wall"] if history else 0.0,
      "finished": bool(best.get("finished", False)) and complete,
      **({} if complete else {"recorded_evaluations": recorded}),
      **compile_time(history),
      **{k: v for k, v in worker_use(history).items() if k != "worker_table"},
  }
  if ok.any():
    i = int(np.flatnonzero(ok)[np.argmin(F[ok, 0])])
    out["best"] = {"eval": history[i]["eval"], "arch": history[i]["arch"],
                   "objectives": history[i]["objectives"]}
  if len(names) > 1 and ok.any():
    out["pareto_size"] = int(pareto.pareto_mask(F[ok]).sum())
  if best.get("summary"):
    out["result"] = best["summary"]
  return out


def format_summary(summary: dict) -> str:
  """The summary as an aligned two-column table."""
  rows = []
  for k, v in summary.items():
    if isinstance(v, dict):
      for k2, v2 in v.items():
        if isinstance(v2, list) and v2 and isinstance(v2[0], dict):
          v2 = f"{len(v2)} records"  # e.g. a strategy's exported front
        rows.append((f"{k}.{k2}", v2))
    else:
      rows.append((k, v))
  width = max(len(k) for k, _ in rows)
  lines = []
  for k, v in rows:
    if isinstance(v, float):
      v = f"{v:.6g}"
    elif isinstance(v, (dict, list)):
      v = json.dumps(v)
    lines.append(f"{k:<{width}}  {v}")
  return "\n".join(lines)


def _figure():
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6, 4), dpi=100)
  FigureCanvasAgg(fig)
  return fig, fig.add_subplot(1, 1, 1)


def report(workdir: str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
  """Write the plots and ``report.txt`` of a run into ``out`` (default ``workdir``).

  Returns:
    The summary dict, with ``plots``: the paths written.
  """
  workdir = Path(workdir)
  out = Path(out) if out is not None else workdir
  out.mkdir(parents=True, exist_ok=True)
  cfg = read_config(workdir)
  history = read_history(workdir)
  names = cfg["objectives"]
  summary = summarize(workdir)
  F = _values(history, names)
  best = best_so_far(F[:, 0]) if len(history) else np.zeros(0)
  plots = []
  label = f"best {names[0]} so far"
  simulated = cfg["evaluator"].get("kind") in ("nb201", "macro")

  fig, ax = _figure()
  ax.step(np.arange(1, len(best) + 1), best, where="post")
  ax.set_xlabel("evaluations")
  ax.set_ylabel(label)
  ax.set_title(f"{cfg['strategy']}: {names[0]} against evaluations")
  ax.grid(alpha=0.3)
  path = out / "best_vs_evals.png"
  fig.savefig(path)
  plots.append(str(path))

  fig, ax = _figure()
  t = np.array([h["elapsed"] for h in history], np.float64)
  ax.step(t, best, where="post")
  ax.set_xlabel("simulated seconds" if simulated else "charged seconds")
  ax.set_ylabel(label)
  ax.set_title(f"{cfg['strategy']}: {names[0]} against time")
  ax.grid(alpha=0.3)
  path = out / "best_vs_time.png"
  fig.savefig(path)
  plots.append(str(path))

  if len(names) > 1:
    G = F[:, :2]
    ok = ~np.isnan(G).any(axis=1)
    fig, ax = _figure()
    ax.scatter(G[ok, 0], G[ok, 1], s=8, alpha=0.4, label="evaluated")
    front = pareto.pareto_front(G[ok]) if ok.any() else np.zeros((0, 2))
    ax.plot(front[:, 0], front[:, 1], "o-", color="C3", ms=4, label="Pareto front")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"{cfg['strategy']}: objectives")
    ax.legend()
    ax.grid(alpha=0.3)
    path = out / "pareto.png"
    fig.savefig(path)
    plots.append(str(path))

  from nasjax.search.base import STRATEGIES, load_strategies

  entry = STRATEGIES.get(cfg["strategy"]) or load_strategies().get(cfg["strategy"])
  if entry is not None and entry.report is not None:
    extra = entry.report(workdir, out)
    plots += [str(p) for p in extra.get("plots", [])]
    summary["strategy"] = extra

  (out / "report.txt").write_text(format_summary(summary) + "\n")
  summary["plots"] = plots
  html = out / "report.html"
  html.write_text(report_html(cfg, summary, history, plots, workdir))
  summary["html"] = str(html)
  return summary


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{cursor:pointer;background:#eee}
td.l,th.l{text-align:left}img,svg{max-width:100%}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots img{width:31em;max-width:100%}
.arch{max-height:32em;overflow:auto;border:1px solid #ddd;display:inline-block}"""
# Click a column header to sort the table by it (numbers numerically).
_SORT = """document.querySelectorAll('th').forEach((th,i)=>th.onclick=()=>{
const b=th.closest('table').tBodies[0],r=[...b.rows],d=th.dataset.d=th.dataset.d=='a'?'d':'a';
const v=x=>{const t=x.cells[i].textContent;const n=parseFloat(t);return isNaN(n)?t:n};
r.sort((x,y)=>(v(x)>v(y)?1:v(x)<v(y)?-1:0)*(d=='a'?1:-1));r.forEach(x=>b.appendChild(x))})"""


def _cell(value) -> str:
  import html

  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.6g}"
  if isinstance(value, (dict, list)):
    value = json.dumps(_rounded(value))
  return html.escape(str(value))


def _rounded(value):
  """``value`` with every float in it at 6 significant digits (for display)."""
  if isinstance(value, float):
    return value if not math.isfinite(value) else float(f"{value:.6g}")
  if isinstance(value, dict):
    return {k: _rounded(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_rounded(v) for v in value]
  return value


def report_html(cfg: dict, summary: dict, history: list[dict], plots: list[str],
                workdir: Path) -> str:
  """One self-contained page (no network needed to view it): the summary, the plots
  (embedded), the best architecture drawn and a table of every evaluation, sortable by
  clicking a column."""
  import base64
  import html

  names = list(cfg["objectives"])
  rows = [f"<tr><th class=l>{html.escape(k)}</th><td class=l>{_cell(v)}</td></tr>"
          for k, v in summary.items() if k not in ("plots", "strategy")]
  images = [f'<img alt="{html.escape(Path(p).stem)}" src="data:image/png;base64,'
            f'{base64.b64encode(Path(p).read_bytes()).decode()}">'
            for p in plots if str(p).endswith(".png") and Path(p).is_file()]
  head = ["eval", "generation", "status", *names, "cost", "elapsed", "arch"]
  table = ["<tr>" + "".join(f"<th{' class=l' if h == 'arch' else ''}>{html.escape(h)}</th>"
                            for h in head) + "</tr>"]
  for e in history:
    values = [e["eval"], e["generation"], e["status"],
              *[e["objectives"].get(n) for n in names], e["cost"], e["elapsed"]]
    table.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in values) +
                 f"<td class=l>{_cell(e['arch'])}</td></tr>")
  title = html.escape(f"nasjax report: {cfg['strategy']} in {workdir}")
  workers = _workers_section(history)
  return "\n".join([
      "<!DOCTYPE html>", f"<html><head><meta charset=utf-8><title>{title}</title>",
      f"<style>{_STYLE}</style></head><body>", f"<h1>{title}</h1>",
      "<h2>Summary</h2>", f"<table id=summary>{''.join(rows)}</table>",
      *workers, "<h2>Plots</h2>", f"<div class=plots>{''.join(images)}</div>",
      "<h2>Best architecture</h2>", f"<div class=arch>{_best_drawing(workdir)}</div>",
      f"<h2>Every evaluation ({len(history)})</h2>",
      f"<table id=evaluations><thead>{table[0]}</thead><tbody>{''.join(table[1:])}"
      "</tbody></table>", f"<script>{_SORT}</script></body></html>"])


def _best_drawing(workdir: Path) -> str:
  """The best network's architecture as inline SVG, where the run saved one."""
  import html

  path = workdir / "best_net.npz"
  if not path.is_file():
    return "<p>(no network saved: a tabular benchmark's best is its code, above)</p>"
  try:
    from nasjax import viz
    from nasjax.network import load

    svg = viz.to_svg(load(path).arch)
    return svg[svg.index("<svg"):]
  except Exception as e:  # drawing is a courtesy: the report stands without it
    return f"<p>(architecture not drawn: {html.escape(str(e))})</p>"


def _workers_section(history: list[dict]) -> list[str]:
  """The Ray workers' table (:func:`worker_use`), or nothing for a run without them."""
  import html

  use = worker_use(history)
  if not use:
    return []
  head = ["worker", "node", "evaluations", "busy seconds", "utilisation %"]
  rows = ["<tr>" + "".join(f"<th{' class=l' if h == 'node' else ''}>{h}</th>" for h in head)
          + "</tr>"]
  for label, r in use["worker_table"].items():
    share = None if r["utilisation"] is None else 100.0 * r["utilisation"]
    rows.append(f"<tr><td>{html.escape(label)}</td><td class=l>{_cell(r['node'])}</td>"
                f"<td>{r['evaluations']}</td><td>{_cell(r['busy_seconds'])}</td>"
                f"<td>{_cell(share)}</td></tr>")
  rate = use["workers"]["evaluations_per_hour"]
  return ["<h2>Workers</h2>",
          f"<p>{use['workers']['count']} Ray workers, {_cell(rate)} evaluations per hour "
          "(busy share of each session's wall time, from its first evaluation's start to "
          "its last one's end)</p>",
          f"<table id=workers><thead>{rows[0]}</thead><tbody>{''.join(rows[1:])}"
          "</tbody></table>"]
