"""The planted-solution task of ``tests/test_planted.py`` with each strategy broken on purpose.

For every weight-sharing strategy of the planted tests (SPOS, ENAS, DARTS first and
second order, NAO-WS, SMASH) this prints the teacher's rank among the 16 candidates (1
is best; ties counted against it), intact and with one part broken:

- ``update``: the shared weights' learning rate 1e-12 (and ``min_learning_rate`` 0), so
  the shared-weight update stalls;
- ``path``: the shared weights are trained as usual, but every candidate is scored
  through the wrong ops (each op id 1-4 of the cell replaced by the next one, ``none``
  kept), as a supernet whose op table is shuffled between training and scoring would;
- ``bn``: the candidates scored with the supernet's running batch-norm statistics
  (``bn="running"``) instead of the strategy's mode (SPOS, NAO-WS: recalibrated; ENAS:
  the batch's), a mode known to mislead single-path supernets;
- ``controller``: ENAS's controller learning rate 1e-12, so the policy stalls at its
  initialisation.

``enas_controller`` ranks by the log-probability of ENAS's trained controller (the same
training as ``enas``, which ranks by its shared weights' score).

SMASH (its own space and task, ``tests/test_planted.py``'s ``smash_task``) has the
``update`` break only (its hypernetwork's learning rate 1e-12); its ``path`` and ``bn``
columns are empty. ``--control`` also prints SMASH's control: the rank of the same
largest candidate when the labels come from a network outside the candidates.

    python3 experiments/planted_breaks.py [--seeds 0] [--strategies spos,smash] \
        [--control] [--json out.json]

One training of about 300 steps per strategy and break on CPU (SMASH: 1,000), about a
minute each (most of it compiling: later seeds take seconds; SMASH's a minute or more).
Then the mean rank over the seeds of each strategy and break, next to the suite's bound
on the mean (``MEAN_BOUND``).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
BREAKS = ("intact", "update", "path", "bn", "controller")
STRATEGIES = ("spos", "enas", "enas_controller", "darts", "darts2", "nao_ws", "smash")
# The option that sets each strategy's scoring BN mode (DARTS ranks by its architecture
# weights: no scoring BN).
BN_OPTION = {"spos": "bn", "nao_ws": "bn", "enas": "derive_bn"}
# The rankings that come from a training with ENAS's controller.
CONTROLLED = ("enas", "enas_controller")
# Op ids 1-4 (skip, 1x1 conv, 3x3 conv, 3x3 average pooling) each read as the next one.
WRONG_OP = np.array([0, 2, 3, 4, 1], np.int32)


@functools.cache
def planted():
  """``tests/test_planted.py`` as a module (its task and its ranking functions)."""
  path = ROOT / "tests" / "test_planted.py"
  if str(path.parent) not in sys.path:
    sys.path.append(str(path.parent))  # the module imports its neighbour fast_compile
  spec = importlib.util.spec_from_file_location("planted_task", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module


def rank(name: str, broken: str, seed: int) -> int:
  """The teacher's rank by strategy ``name`` with ``broken`` (one of BREAKS)."""
  if not applies(name, broken):
    raise ValueError(f"{name!r} has no {broken!r} break (a scoring batch-norm mode, a "
                     "controller or NB201 cells is missing)")
  t = planted()
  options = {}
  if broken == "update":
    options.update(learning_rate=1e-12, min_learning_rate=0.0)
  if broken == "bn":
    options[BN_OPTION[name]] = "running"
  if broken == "controller":
    options["controller_lr"] = 1e-12
  cells = WRONG_OP[t.nb201_task(seed)[1]] if broken == "path" else None
  return t.rank(name, seed, cells, **options)[0]


def applies(name: str, broken: str) -> bool:
  """Whether strategy ``name`` has the break ``broken``."""
  if broken == "bn":
    return name in BN_OPTION
  if broken == "controller":
    return name in CONTROLLED
  return broken in ("intact", "update") or name != "smash"


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0", help="comma-separated task seeds")
  parser.add_argument("--json", help="also write the ranks to this file")
  parser.add_argument("--strategies", default=",".join(STRATEGIES),
                      help=f"comma-separated, of {', '.join(STRATEGIES)}")
  parser.add_argument("--control", action="store_true",
                      help="also SMASH's control (labels from a network outside the "
                           "candidates)")
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  names = [n for n in args.strategies.split(",") if n]
  unknown = [n for n in names if n not in STRATEGIES]
  if unknown:
    parser.error(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
  if args.control and "smash" not in names:
    parser.error(f"--control is SMASH's control; --strategies {args.strategies!r} leaves "
                 "smash out")
  out = {}
  print("| seed | strategy | " + " | ".join(BREAKS) + " |")
  print("|---|---|" + "---|" * len(BREAKS))
  for seed in seeds:
    for name in names:
      row = {b: rank(name, b, seed) if applies(name, b) else None for b in BREAKS}
      out[f"{seed}/{name}"] = row
      cells = ["-" if v is None else str(v) for v in row.values()]
      print(f"| {seed} | {name} | " + " | ".join(cells) + " |", flush=True)
  bound = planted().MEAN_BOUND
  print("\n| strategy | mean over the seeds: " + " | ".join(BREAKS) + " | suite's bound |")
  print("|---|" + "---|" * (len(BREAKS) + 1))
  for name in names:
    means = [np.mean([out[f"{s}/{name}"][b] for s in seeds])
             if out[f"{seeds[0]}/{name}"][b] is not None else None for b in BREAKS]
    cells = ["-" if m is None else f"{m:.1f}" for m in means]
    print(f"| {name} | " + " | ".join(cells) + f" | {bound[name]:g} |")
  if args.control:
    control = [int(planted().smash_rank(s, teacher="outside")[0]) for s in seeds]
    out["smash_control"] = control
    print(f"\nSMASH control, the largest candidate's rank with labels from a network "
          f"outside the candidates: {control} (mean {np.mean(control):.1f})")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(out, indent=1))
  return out


if __name__ == "__main__":
  main()
