"""Compile time, steady-state time and preservation error of every registered morphism.

    python benchmarks/morphisms.py [--json] [--repeats 5]

The network is ResNet-20 (Fashion-MNIST-sized input 28x28x1, 16/32/64 channels, three
residual blocks per stage: 19 convs and a dense layer) with random batch-norm
parameters and running statistics. Each morphism in :data:`nasjax.ops.MORPHISMS` is
applied in the middle stage (32 channels, four producers summed into the residual
stream), with the arguments in :data:`ARGUMENTS`; then:

- ``compile``: the first call, which plans the new architecture, traces and compiles
  the parameter transform and runs it (seconds);
- ``steady``: the median of ``--repeats`` further calls on other networks of the same
  architecture with other keys, which reuse the compiled transform (milliseconds);
- ``error``: ``max |f(x) - f'(x)| / max(1, max |f(x)|)`` over 256 validation images of the
  embedded Fashion-MNIST subset, inference mode; ~1e-7 for exact morphisms (float32
  rounding), the loss before distillation for approximate ones.

Times are wall clock and, in parentheses, the process's CPU time (all threads), which
is the better measure on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import nasjax
from nasjax import data, models, ops


ARGUMENTS = {
    # Widening or pruning one residual conv changes the whole stage: s1_b0_proj,
    # s1_b0_conv2, s1_b1_conv2 and s1_b2_conv2 feed the same sums.
    "net2wider": {"node": "s1_b0_conv2", "width": 48},
    "net2deeper": {"after": "s1_b1_relu", "kernel": 3},
    "insert_conv_bn_relu": {"after": "s1_b1_relu", "kernel": 3},
    "add_skip": {"src": "s0_b2_relu", "dst": "s1_b1_relu", "mode": "add"},
    "widen_kernel": {"node": "s1_b1_conv1", "kernel": 5},
    "remove_layer": {"node": "s1_b1_conv1"},
    "remove_skip": {"node": "s1_b1_add", "src": "s1_b0_relu"},
    "prune_filters": {"node": "s1_b0_conv2", "keep": 0.5},
    "to_sepconv": {"node": "s1_b1_conv1"},
}


def network(seed: int) -> nasjax.Network:
  """ResNet-20 with random BN parameters and running statistics."""
  arch = models.resnet(((16, 3), (32, 3), (64, 3)), input_shape=(28, 28, 1), num_classes=10)
  net = nasjax.init(arch, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  params = {k: dict(v) for k, v in net.params.items()}
  state = {}
  for name, st in net.state.items():
    c = st["mean"].shape
    params[name]["scale"] = jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32)
    params[name]["bias"] = jnp.asarray(rng.normal(0.0, 0.3, c), jnp.float32)
    state[name] = {"mean": jnp.asarray(rng.normal(0.0, 0.5, c), jnp.float32),
                   "var": jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)}
  return nasjax.Network(arch, params, state)


def measure(name: str, repeats: int, x) -> dict:
  entry = ops.MORPHISMS[name]
  net = network(0)
  kwargs = ARGUMENTS.get(name) or entry.sample(jax.random.key(0), net)
  t, c = time.perf_counter(), time.process_time()
  child = jax.block_until_ready(entry(net, jax.random.key(1), **kwargs))
  compile_s, compile_cpu = time.perf_counter() - t, time.process_time() - c
  times, cpus = [], []
  for r in range(repeats):
    other = network(r + 1)
    t, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(entry(other, jax.random.key(r + 2), **kwargs))
    times.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c)
  y0, y1 = nasjax.apply(net, x), nasjax.apply(child, x)
  err = float(jnp.max(jnp.abs(y0 - y1)) / max(1.0, float(jnp.max(jnp.abs(y0)))))
  return {"morphism": name, "exact": entry.exact, "kwargs": kwargs,
          "compile_s": compile_s, "compile_cpu_s": compile_cpu,
          "steady_ms": 1e3 * statistics.median(times),
          "steady_cpu_ms": 1e3 * statistics.median(cpus),
          "error": err, "params_before": nasjax.count_params(net.arch),
          "params_after": nasjax.count_params(child.arch)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  x = jnp.asarray(data.load("fashion_mnist_small").x_val[:256])
  # Warm up jit's own machinery on another network, so the first row is not charged.
  warm = nasjax.init(models.plain_cnn(((4,),), input_shape=(28, 28, 1)), jax.random.key(0))
  jax.block_until_ready(ops.net2wider(warm, jax.random.key(0), node="b0_l0_conv", width=6))
  with jax.default_matmul_precision("highest"):
    rows = [measure(name, args.repeats, x) for name in ops.MORPHISMS]
  if args.json:
    print(json.dumps({"device": str(jax.devices()[0]), "rows": rows}, indent=1))
    return rows
  print(f"ResNet-20 (28x28x1, {rows[0]['params_before']} params), "
        f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})\n")
  print("| morphism | exact | arguments | first call, s (CPU s) "
        "| steady, ms (CPU ms) | error |")
  print("|---|---|---|---:|---:|---:|")
  for r in rows:
    args_s = ", ".join(f"{k}={v}" for k, v in r["kwargs"].items())
    print(f"| {r['morphism']} | {'yes' if r['exact'] else 'no'} | {args_s} "
          f"| {r['compile_s']:.2f} ({r['compile_cpu_s']:.2f}) "
          f"| {r['steady_ms']:.1f} ({r['steady_cpu_ms']:.1f}) | {r['error']:.1e} |")
  return rows


if __name__ == "__main__":
  main()
