"""Compile time and step time of nasjax's CPU compiler options against XLA's defaults.

    python benchmarks/compile_options.py [--json PATH] [--repeats 2]

nasjax compiles its own programs on the CPU backend with
:data:`nasjax.runtime.CPU_COMPILER_OPTIONS` (XLA's CPU fusion emitters off);
``NASJAX_CPU_COMPILER_OPTIONS=off`` gives XLA's defaults. For three plain CNNs on
Fashion-MNIST images (28x28x1, batch 128, SGD with momentum, the default 8 CPU
devices), each measurement runs in a fresh process with the persistent compilation
cache off and reports:

- ``compile_s``: ``nasjax.runtime.compile_seconds()`` around building the training copy
  and compiling the train step (tracing, lowering, XLA compilation), as ``fit`` does for
  a new architecture;
- ``eval_compile_s``: the same for the validation program (batch 512);
- ``step_ms``: the median of 15 train steps after 3 warm-up steps;
- ``loss``: the loss after those steps (both settings compute the same function).

The two settings alternate (``--repeats`` rounds, each network with options and then
without), so that a change in the machine's load affects both alike; the ratios are
medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NETWORKS = {
    "small": [[8], [16]],
    "mid": [[16], [32], [64]],
    "big": [[32, 32], [64, 64], [128, 128]],
}

CHILD = r"""
import json, sys, time
import jax, numpy as np
import nasjax
from nasjax import data as data_lib, models, train
from nasjax.network import init

blocks = json.loads(sys.argv[1])
data = data_lib.load("fashion_mnist_small", limit=1024)
arch = models.plain_cnn(blocks, input_shape=data.input_shape, num_classes=data.num_classes)
net = init(arch, jax.random.key(0))
cfg = train.TrainConfig(batch_size=128, optimizer="sgd", learning_rate=0.03, momentum=0.9,
                        weight_decay=5e-4)
devices = train.data_parallel_devices(cfg.batch_size)
mesh, replicated, batch_sharding = train._placement(devices)
clock = nasjax.runtime.compile_seconds
c0 = clock()
n, o = train._prepare(net, cfg, replicated)
step = train._compiled_step(cfg, mesh, n, o, data.input_shape, data.num_classes,
                            batch_sharding)
compile_s = clock() - c0
c0 = clock()
train.evaluate(net, data.x_val[:512], data.y_val[:512])
eval_compile_s = clock() - c0
x = jax.device_put(np.asarray(data.x_train[:128], np.float32), batch_sharding)
y = jax.device_put(train.one_hot(data.y_train[:128], 10), batch_sharding)
lr, temp = np.float32(0.01), np.float32(1.0)
times = []
for i in range(18):
  t = time.perf_counter()
  n, o, loss, ok = step(n, o, x, y, lr, temp)
  bool(ok)
  if i >= 3:
    times.append(time.perf_counter() - t)
print(json.dumps({"compile_s": compile_s, "eval_compile_s": eval_compile_s,
                  "step_ms": 1000 * float(np.median(times)), "loss": float(loss),
                  "options": nasjax.runtime.compiler_options()}))
"""


def measure(blocks, options: bool) -> dict:
  env = dict(os.environ, NASJAX_CACHE_DIR="off")
  env.pop("NASJAX_CPU_COMPILER_OPTIONS", None)
  if not options:
    env["NASJAX_CPU_COMPILER_OPTIONS"] = "off"
  proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(blocks)], env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  if proc.returncode != 0:
    raise RuntimeError(proc.stderr[-2000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--json", default=None, help="write the results here")
  args = parser.parse_args(argv)
  start = time.time()
  load = os.getloadavg()[0]
  rows = []
  for name, blocks in NETWORKS.items():
    runs = {True: [], False: []}
    for _ in range(args.repeats):
      for options in (True, False):
        runs[options].append(measure(blocks, options))

    def med(opt, key):
      return statistics.median(r[key] for r in runs[opt])

    row = {"network": name, "blocks": blocks}
    for key in ("compile_s", "eval_compile_s", "step_ms"):
      row[key + "_options"] = round(med(True, key), 3)
      row[key + "_defaults"] = round(med(False, key), 3)
      row[key + "_ratio"] = round(med(True, key) / med(False, key), 3)
    row["loss_options"] = runs[True][0]["loss"]
    row["loss_defaults"] = runs[False][0]["loss"]
    rows.append(row)
    print(json.dumps(row), flush=True)
  result = {"rows": rows, "repeats": args.repeats, "load_start": round(load, 2),
            "load_end": round(os.getloadavg()[0], 2), "seconds": round(time.time() - start, 1),
            "command": "python benchmarks/compile_options.py " + " ".join(argv or sys.argv[1:])}
  print("| network | step compile s, options / defaults (ratio) | eval compile s (ratio) | "
        "step ms (ratio) |")
  print("| --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['network']} {r['blocks']} | {r['compile_s_options']:.2f} / "
          f"{r['compile_s_defaults']:.2f} ({r['compile_s_ratio']:.2f}) | "
          f"{r['eval_compile_s_options']:.2f} / {r['eval_compile_s_defaults']:.2f} "
          f"({r['eval_compile_s_ratio']:.2f}) | {r['step_ms_options']:.1f} / "
          f"{r['step_ms_defaults']:.1f} ({r['step_ms_ratio']:.2f}) |")
  print(f"load average {result['load_start']} -> {result['load_end']}, "
        f"{result['seconds']} s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
