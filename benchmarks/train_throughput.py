"""Train-step throughput against PyTorch, achieved FLOP rate against the matmul peak.

    python benchmarks/train_throughput.py [--json] [--batch 128] [--steps 10] [--repeats 3]

Trains one fixed CNN, in one process, with nasjax and with PyTorch (the ``bench`` extra:
``pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu``), and
measures on the current machine:

- ``jax_fit``: :func:`nasjax.train.fit` as users call it (all local devices, data
  parallel when there are several; host batching, transfers and the per-step divergence
  check included), its train step already compiled by an earlier call.
- ``jax_step``: nasjax's compiled train step alone on all local devices, on a batch
  already on the devices (the ceiling of the step itself).
- ``jax_one_device_step``: the same step on the first device only: what training cost
  before nasjax split the batch over several CPU devices (:mod:`nasjax.runtime`).
- ``torch_eager``: the same network in PyTorch eager mode, built node by node from the
  same :class:`~nasjax.Arch`, started from the same weights, trained on the same data (a
  new shuffle each epoch, the batch gathered on the host each step, the loss fetched
  each step), SGD with the same momentum and the same weight decay on the kernels only,
  with ``torch.set_num_threads(os.cpu_count())``.
- ``matmul``: the best float32 rate of a ``2048 x 2048`` matmul, jitted in JAX on one
  device and in PyTorch (``2 n^3`` FLOPs per product, best of 5): the machine's peak.
  Each throughput is also given as GFLOP/s and as a share of that peak, both per second
  of wall time and per second of process-CPU time (the latter varies much less with
  other jobs' load; ``cpu_ratio_jax_over_torch`` compares CPU time per step).
- ``compile``: ``History.compile_seconds`` of a one-step ``fit`` for 5 architectures
  never compiled before in the process (widths differ). The persistent compilation
  cache is off for the run (``--compilation-cache`` keeps it on).

The four throughput measurements are interleaved (one repeat of each in turn, median
of ``--repeats``), so that a change in the machine's load affects them alike, and the
ratios ``ratio_jax_over_torch`` (``jax_fit`` images/s over ``torch_eager`` images/s),
``ratio_step_jax_over_torch`` and ``ratio_one_device_jax_over_torch`` compare runs of
one command. Before timing, both frameworks train 3 steps from the same weights on the
same batch and their losses are compared (``loss_check``): the two programs compute the
same function.

The network is a plain CNN on 32x32x3 inputs: two blocks of two 3x3 conv-BN-ReLU
layers (32 and 64 filters) with a 2x2 max pool between them, global average pooling
and a 10-way dense layer. FLOPs follow XLA's convention (a multiply-add is 2 FLOPs)
from :func:`nasjax.flops` (one forward pass per image); a training step is counted as
3x the forward pass (forward, plus backward through activations and weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time

import jax
import numpy as np

import nasjax
from nasjax import data, models, train

INPUT_SHAPE = (32, 32, 3)
MATMUL_N = 2048


def plain_cnn(width: int = 32):
  return models.plain_cnn(blocks=((width, width), (2 * width, 2 * width)),
                          input_shape=INPUT_SHAPE, num_classes=10)


def timed(run, steps: int) -> tuple[float, float]:
  """Wall and process-CPU seconds per step of ``run(steps)``.

  CPU time is reported too because on a shared machine it varies less with the load.
  """
  t, c = time.perf_counter(), time.process_time()
  run(steps)
  return (time.perf_counter() - t) / steps, (time.process_time() - c) / steps


# ----------------------------------------------------------------------------- JAX
def jax_step_runner(net, ds, config, devices):
  """``run(steps)``: the compiled train step on ``devices``, batch already there."""
  mesh, replicated, sharding = train._placement(devices)
  step = train._train_step_fn(train._step_key(config), mesh)
  carry = list(train._prepare(net, config, replicated))
  x = jax.device_put(ds.x_train[:config.batch_size], sharding)
  y = jax.device_put(train.one_hot(ds.y_train[:config.batch_size], ds.num_classes), sharding)
  lr, temperature = np.float32(config.learning_rate), np.float32(1.0)

  def run(steps):
    for _ in range(steps):
      carry[0], carry[1], loss, _ = step(carry[0], carry[1], x, y, lr, temperature)
      loss.block_until_ready()  # as fit does: collectives must not overlap steps

  run(1)  # compile and warm up
  return run


def jax_fit_runner(net, ds, config):
  """``run(steps)``: :func:`nasjax.train.fit` for ``steps`` steps (compiled once here;
  ``fit`` reuses its compiled steps)."""

  def run(steps):
    cfg = dataclasses.replace(config, max_steps=steps, epochs=1000)
    train.fit(net, ds, cfg, jax.random.key(steps))

  run(1)  # compile
  return run


def compile_times(ds, config, widths=(20, 24, 28, 36, 40)) -> list[float]:
  """``compile_seconds`` of a one-step fit for architectures of new widths."""
  cfg = dataclasses.replace(config, max_steps=1)
  out = []
  for w in widths:
    net = nasjax.init(plain_cnn(w), jax.random.key(0))
    _, hist = train.fit(net, ds, cfg, jax.random.key(0))
    out.append(hist.compile_seconds)
  return out


# ----------------------------------------------------------------------------- PyTorch
def torch_model(net):
  """``net`` as a ``torch.nn.Sequential`` with the same weights and batch-norm state.

  Handles chains of conv (stride 1, odd square kernels, SAME padding), batchnorm, relu,
  max_pool (window = stride), gap and dense nodes: what :func:`plain_cnn` uses.
  """
  import torch

  nn = torch.nn
  layers = []
  for node in net.arch.nodes:
    a, p, s = dict(node.attrs), net.params.get(node.name, {}), net.state.get(node.name, {})
    if node.op == "input":
      continue
    if node.op == "conv":
      kernel = np.asarray(p["kernel"])  # HWIO
      if (a["stride"] != (1, 1) or a["dilation"] != (1, 1) or a["groups"] != 1
          or a["kernel"][0] != a["kernel"][1] or a["kernel"][0] % 2 == 0):
        raise ValueError(f"{node.name}: conv attributes {a} are not supported")
      layer = nn.Conv2d(kernel.shape[2], kernel.shape[3], a["kernel"][0],
                        padding=a["kernel"][0] // 2, bias=a["use_bias"])
      layer.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
      if a["use_bias"]:
        layer.bias.data = torch.from_numpy(np.array(p["bias"]))
    elif node.op == "batchnorm":
      layer = nn.BatchNorm2d(len(p["scale"]), eps=a["eps"], momentum=1 - a["momentum"])
      layer.weight.data = torch.from_numpy(np.array(p["scale"]))
      layer.bias.data = torch.from_numpy(np.array(p["bias"]))
      layer.running_mean.data = torch.from_numpy(np.array(s["mean"]))
      layer.running_var.data = torch.from_numpy(np.array(s["var"]))
    elif node.op == "relu":
      layer = nn.ReLU()
    elif node.op == "max_pool":
      if tuple(a["window"]) != tuple(a["stride"]):
        raise ValueError(f"{node.name}: overlapping pooling windows are not supported")
      layer = nn.MaxPool2d(tuple(a["window"]), tuple(a["stride"]))
    elif node.op == "gap":
      layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    elif node.op == "dense":
      kernel = np.asarray(p["kernel"])
      layer = nn.Linear(kernel.shape[0], kernel.shape[1], bias=a["use_bias"])
      layer.weight.data = torch.from_numpy(kernel.T.copy())
      if a["use_bias"]:
        layer.bias.data = torch.from_numpy(np.array(p["bias"]))
    else:
      raise ValueError(f"{node.name}: op {node.op!r} is not supported")
    layers.append(layer)
  return nn.Sequential(*layers)


def torch_trainer(net, ds, config, seed: int = 0):
  """``(step(x, y) -> loss, images (N, C, H, W), labels, rng)`` for ``net`` in PyTorch.

  SGD with momentum; ``config.weight_decay`` is an L2 term on conv and dense kernels
  only, as in :func:`nasjax.train.optimizer`.
  """
  import torch

  model = torch_model(net).train()
  kernels = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                 torch.nn.Linear))]
  ids = {id(k) for k in kernels}
  others = [q for q in model.parameters() if id(q) not in ids]
  opt = torch.optim.SGD([{"params": kernels, "weight_decay": config.weight_decay},
                         {"params": others, "weight_decay": 0.0}],
                        lr=config.learning_rate, momentum=config.momentum)

  def step(x, y):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()

  images = torch.from_numpy(np.ascontiguousarray(ds.x_train.transpose(0, 3, 1, 2)))
  labels = torch.from_numpy(ds.y_train.astype(np.int64))
  return step, images, labels, np.random.default_rng(seed)


def torch_runner(net, ds, config):
  """``run(steps)``: PyTorch training on shuffled batches of ``ds``, as ``fit`` does."""
  import torch

  step, images, labels, rng = torch_trainer(net, ds, config)
  per_epoch = len(labels) // config.batch_size

  def run(steps):
    done = 0
    while done < steps:
      order = torch.from_numpy(rng.permutation(len(labels)))
      for b in range(min(per_epoch, steps - done)):
        idx = order[b * config.batch_size:(b + 1) * config.batch_size]
        step(images[idx], labels[idx])
        done += 1

  run(2)  # warm up
  return run


def loss_check(net, ds, config, steps: int = 3) -> dict:
  """Train ``steps`` steps on one batch (the whole train split) in both frameworks."""
  one = dataclasses.replace(ds, x_train=ds.x_train[:config.batch_size],
                            y_train=ds.y_train[:config.batch_size])
  cfg = dataclasses.replace(config, epochs=steps, max_steps=None)
  _, hist = train.fit(net, one, cfg, jax.random.key(0))
  step, images, labels, _ = torch_trainer(net, one, config)
  theirs = [step(images, labels) for _ in range(steps)]
  ours = hist.train_loss
  return {"jax": ours, "torch": theirs,
          "max_rel_diff": float(max(abs(a - b) / abs(b) for a, b in zip(ours, theirs)))}


# ----------------------------------------------------------------------------- peak
def matmul_peak(n: int = MATMUL_N, repeats: int = 5) -> dict:
  """Best float32 rates of an ``n x n`` matmul in JAX (jitted) and in PyTorch.

  Returns:
    ``{framework: {"gflops_per_s": ..., "gflops_per_cpu_s": ...}}``: the best of
    ``repeats`` products by wall time and by process-CPU time.
  """
  import torch

  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  f = jax.jit(lambda u, v: u @ v)
  ja, ta = jax.device_put(a), torch.from_numpy(a)
  runs = {"jax": lambda: f(ja, ja).block_until_ready(), "torch": lambda: torch.matmul(ta, ta)}
  best = {}
  for name, run in runs.items():
    run()  # compile, warm up
    times = [timed(lambda _: run(), 1) for _ in range(repeats)]
    best[name] = {"gflops_per_s": 2 * n**3 / min(w for w, _ in times) / 1e9,
                  "gflops_per_cpu_s": 2 * n**3 / min(c for _, c in times) / 1e9}
  return best


# ----------------------------------------------------------------------------- main
def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--compilation-cache", action="store_true",
                      help="keep JAX's persistent compilation cache on")
  args = parser.parse_args(argv)
  try:
    import torch
  except ImportError:
    parser.exit(1, "needs PyTorch: pip install torch==2.13.0 "
                "--index-url https://download.pytorch.org/whl/cpu\n")
  if not args.compilation_cache:
    jax.config.update("jax_enable_compilation_cache", False)
  torch.set_num_threads(os.cpu_count())

  arch = plain_cnn()
  net = nasjax.init(arch, jax.random.key(0))
  ds = data.synthetic(num_train=4 * args.batch, num_val=0, num_test=0,
                      input_shape=INPUT_SHAPE, num_classes=10)
  config = train.TrainConfig(batch_size=args.batch, learning_rate=0.01, dtype=args.dtype,
                             schedule="constant")
  devices = jax.local_devices()
  load_before = os.getloadavg()[0]
  check = loss_check(net, ds, config)
  peak = matmul_peak()
  runners = {"jax_fit": jax_fit_runner(net, ds, config),
             "jax_step": jax_step_runner(net, ds, config, devices),
             "jax_one_device_step": jax_step_runner(net, ds, config, devices[:1]),
             "torch_eager": torch_runner(net, ds, config)}
  wall = {k: [] for k in runners}
  cpu = {k: [] for k in runners}
  for _ in range(args.repeats):
    for name, run in runners.items():
      w, c = timed(run, args.steps)
      wall[name].append(w)
      cpu[name].append(c)
  compiles = compile_times(ds, config)
  train_flops = 3 * nasjax.flops(arch) * args.batch
  peak_gflops = max(p["gflops_per_s"] for p in peak.values())
  peak_cpu_gflops = max(p["gflops_per_cpu_s"] for p in peak.values())
  measured = {}
  for name in runners:
    s, c = statistics.median(wall[name]), statistics.median(cpu[name])
    measured[name] = {"seconds_per_step": s, "cpu_seconds_per_step": c,
                      "images_per_s": args.batch / s,
                      "gflops_per_s": train_flops / s / 1e9,
                      "peak_share": train_flops / s / 1e9 / peak_gflops,
                      "gflops_per_cpu_s": train_flops / c / 1e9,
                      "cpu_peak_share": train_flops / c / 1e9 / peak_cpu_gflops}
  torch_rate = measured["torch_eager"]["images_per_s"]
  result = {
      "devices": f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})",
      "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "torch": torch.__version__,
      "torch_threads": torch.get_num_threads(),
      "dtype": args.dtype,
      "batch": args.batch,
      "steps": args.steps,
      "repeats": args.repeats,
      "params": nasjax.count_params(arch),
      "forward_mflops_per_image": nasjax.flops(arch) / 1e6,
      "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
      "ratio_jax_over_torch": measured["jax_fit"]["images_per_s"] / torch_rate,
      "ratio_step_jax_over_torch": measured["jax_step"]["images_per_s"] / torch_rate,
      "ratio_one_device_jax_over_torch":
          measured["jax_one_device_step"]["images_per_s"] / torch_rate,
      "cpu_ratio_jax_over_torch": (measured["torch_eager"]["cpu_seconds_per_step"]
                                   / measured["jax_fit"]["cpu_seconds_per_step"]),
      "matmul_peak_gflops_per_s": peak_gflops,
      "matmul_peak_gflops_per_cpu_s": peak_cpu_gflops,
      "matmul": peak,
      **measured,
      "loss_check": check,
      "compile_seconds_median": statistics.median(compiles),
      "compile_seconds": compiles,
  }
  if args.json:
    print(json.dumps(result))
    return
  print(f"{result['devices']}, {result['cpu_count']} CPUs, jax {result['jax']}, "
        f"torch {result['torch']} ({result['torch_threads']} threads), dtype {args.dtype}, "
        f"batch {args.batch}")
  print(f"plain CNN: {result['params']} params, "
        f"{result['forward_mflops_per_image']:.1f} MFLOP/image forward (x3 per train step)")
  print(f"load average (1 min) before / after: {result['load_average']}")
  print(f"losses of 3 steps from the same weights: jax {check['jax']}, torch "
        f"{check['torch']} (max rel. diff {check['max_rel_diff']:.1e})")
  print(f"matmul peak: {peak_gflops:.1f} GFLOP/s, {peak_cpu_gflops:.1f} GFLOP per CPU-second "
        f"(jax {peak['jax']['gflops_per_s']:.1f}, torch {peak['torch']['gflops_per_s']:.1f})")
  for name, m in measured.items():
    print(f"{name:20s} {m['seconds_per_step'] * 1e3:7.1f} ms {m['images_per_s']:6.0f} images/s "
          f"{m['gflops_per_s']:5.1f} GFLOP/s ({100 * m['peak_share']:4.1f}% of peak) | "
          f"CPU {m['cpu_seconds_per_step'] * 1e3:5.0f} ms {m['gflops_per_cpu_s']:5.1f} "
          f"GFLOP/CPU-s ({100 * m['cpu_peak_share']:4.1f}%)")
  print(f"ratio_jax_over_torch {result['ratio_jax_over_torch']:.2f} (compiled step alone: "
        f"{result['ratio_step_jax_over_torch']:.2f}, one device: "
        f"{result['ratio_one_device_jax_over_torch']:.2f}; CPU time per step: "
        f"{result['cpu_ratio_jax_over_torch']:.2f})")
  print(f"compile per new architecture: median {result['compile_seconds_median']:.2f} s "
        f"({', '.join(f'{c:.2f}' for c in compiles)})")


if __name__ == "__main__":
  main()
