"""nasjax on an accelerator: one command that measures what a GPU run needs to know.

    python benchmarks/gpu_check.py --out gpu_check.json           # a GPU host, <= 8 minutes
    python benchmarks/gpu_check.py --quick --out quick.json       # any machine, tiny sizes

Writes one JSON file (after every section, so a run cut short still leaves one) and
prints a table. Each section is one function returning a dict; a section that fails
records its error instead of stopping the others. Every figure is measured against a
baseline in the same command:

1. ``environment``: Python, JAX, jaxlib, CUDA plugin and PyTorch versions, the devices,
   nasjax's process settings (:mod:`nasjax.runtime`: CPU device count, compiler
   options, compilation cache), and on a GPU whether nasjax's CPU-device setting
   changes the GPU device count (a second process with ``NASJAX_CPU_DEVICES=off``).
2. ``train_throughput``: images/s of nasjax's compiled train step (``jax_step``, batch
   already on the device) and of :func:`nasjax.train.fit` (``jax_fit``, as users call
   it), for ``benchmarks/train_throughput.py``'s plain CNN and ResNet-20, at two batch
   sizes, in float32 and bfloat16 (:class:`nasjax.train.TrainConfig`'s ``dtype``),
   against PyTorch eager on the same device with the same network and weights
   (``torch_eager``; bfloat16 through ``torch.autocast``), with achieved TFLOP/s
   (``3 * nasjax.flops(arch) * batch / step time``) and the share of the device's dense
   bf16 or tf32 peak where the device is known.
3. ``compile``: ``History.compile_seconds`` (train and validation programs) of a
   one-step ``fit`` for architectures new to the process, in a process with an empty
   persistent compilation cache, in a second process reading that cache, and on a GPU
   in a third with XLA's autotuning off (``--xla_gpu_autotune_level=0``).
4. ``search_speed``: candidates per hour and compile share of ``random``, ``lemonade``
   and ``eas`` on the embedded Fashion-MNIST (their ``--preset smoke`` plans: small
   networks, 4 to 15 training steps each; 6 evaluations), each in its own process with an
   empty compilation cache. So short a search compiles far more than it trains: its
   compile share is an upper bound, not what a long search spends.
5. ``packing``: N small candidates of one architecture trained together (``jax.vmap`` of
   the train step over stacked parameters) against one at a time, and two different
   architectures trained from two threads against one after another.
6. ``supernet``: the NB201 supernet's shared-weight step (C=16, N=5, 32x32x3): a sampled
   path through ``lax.switch`` against its one-hot weights, and the DARTS mixed step with
   and without rematerialisation: time per step and the memory XLA plans for it.

The table ends with the goals (met / not met; ``n/a (CPU)`` off a GPU). ``--quick``
shrinks every size and repeat (half a minute to a minute on 2 CPU cores; the supernet is
compiled for one variant and only traced for the others, one strategy searches); its
numbers show that the script runs, not how fast anything is. ``--max-seconds`` bounds the
run: a section starts no new measurement past its share of it, and records what it
skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

# Every compilation this script times must be a new program's: its own process gets an
# empty persistent cache (set before nasjax is imported; workers get theirs from here).
_OWN_CACHE = None
if __name__ == "__main__" and "--worker" not in sys.argv:
  _OWN_CACHE = tempfile.mkdtemp(prefix="nasjax-gpu-check-")
  os.environ["NASJAX_CACHE_DIR"] = _OWN_CACHE

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import nasjax  # noqa: E402
from nasjax import data, models, runtime, train  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_throughput  # noqa: E402  (its plain CNN is the model measured there on CPU)

PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin",
            "jax-cuda12-pjrt", "flax", "optax", "chex", "numpy", "ml_dtypes", "torch",
            "tensorflow-datasets")

# Dense (not sparse) peak TFLOP/s by device_kind (substring match, first hit): NVIDIA's
# data sheets for the SXM and PCIe H100 and the H200.
PEAK_TFLOPS = (("H100 PCIe", {"bfloat16": 756.0, "tf32": 378.0}),
               ("H100 NVL", {"bfloat16": 835.0, "tf32": 418.0}),
               ("H100", {"bfloat16": 989.0, "tf32": 494.0}),
               ("H200", {"bfloat16": 989.0, "tf32": 494.0}))

# Environment of every process this script starts: JAX reserves 75% of a GPU's memory in
# the first process that uses it (this one), so the others allocate as they go.
CHILD_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}

SECTIONS = ("environment", "train_throughput", "compile", "search_speed", "packing",
            "supernet")
# Seconds each section may start new measurements in, as shares of --max-seconds (a
# measurement that starts in time may run past it).
SHARES = {"environment": 0.04, "train_throughput": 0.24, "compile": 0.18,
          "search_speed": 0.2, "packing": 0.08, "supernet": 0.26}


@dataclasses.dataclass(frozen=True)
class Sizes:
  """What each section measures; :data:`FULL` on a GPU, :data:`QUICK` anywhere."""

  cnn_width: int = 32  # train_throughput.plain_cnn's width (32: its benchmark's CNN)
  resnet_stages: tuple = ((16, 3), (32, 3), (64, 3))  # ResNet-20
  # (model, batch, dtype) of each train-step measurement.
  runs: tuple = tuple((m, b, d) for m in ("plain_cnn", "resnet") for b in (128, 512)
                      for d in ("float32", "bfloat16"))
  steps: int = 50
  repeats: int = 5
  compile_widths: tuple = (20, 24, 28, 36, 40)
  compile_warmup_width: int = 12
  compile_batch: int = 128
  strategies: tuple = ("lemonade", "random", "eas")  # the goal's strategy first
  search_evals: int = 6
  pack_counts: tuple = (1, 4, 16)
  pack_blocks: tuple = ((16,), (32,))
  pack_other_blocks: tuple = ((24,), (48,))
  pack_batch: int = 128
  pack_steps: int = 20
  supernet_C: int = 16
  supernet_N: int = 5
  supernet_batches: tuple = (64, 256)
  supernet_steps: int = 10
  # Variants compiled and timed; the others are only traced and lowered (a quick check
  # that their code still runs: the supernet compiles for 15-40 s per program on a CPU).
  supernet_timed: tuple = ("spos_switch", "spos_onehot", "darts_mixed", "darts_mixed_remat")


FULL = Sizes()
QUICK = Sizes(cnn_width=8, resnet_stages=((8, 1), (16, 1)),
              runs=(("plain_cnn", 16, "float32"), ("resnet", 16, "bfloat16")), steps=2,
              repeats=1, compile_widths=(6,), compile_warmup_width=0, compile_batch=16,
              strategies=("lemonade",), search_evals=2, pack_counts=(1, 4),
              pack_blocks=((4,), (8,)), pack_other_blocks=((6,), (12,)), pack_batch=16,
              pack_steps=2, supernet_C=2, supernet_N=1, supernet_batches=(8,),
              supernet_steps=2, supernet_timed=("spos_switch",))


class Clock:
  """Wall time since the start, and whether a section may still start a measurement."""

  def __init__(self, max_seconds: float):
    self.start = time.perf_counter()
    self.max_seconds = max_seconds
    self.section_end = math.inf

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def begin(self, name: str) -> None:
    # Sections end at cumulative shares, so time a section leaves unused passes on.
    done = sum(SHARES[s] for s in SECTIONS[:SECTIONS.index(name) + 1])
    self.section_end = self.start + done * self.max_seconds

  def left(self) -> float:
    return self.section_end - time.perf_counter()


def on_gpu() -> bool:
  return jax.default_backend() == "gpu"


def _error(e: BaseException) -> str:
  return f"{type(e).__name__}: {e}"


def median_seconds(runners: dict, steps: int, repeats: int) -> dict:
  """``{name: median seconds per step}`` of ``run(steps)`` for each runner, interleaved
  (one repeat of each in turn), so that a change in load falls on all alike."""
  times = {k: [] for k in runners}
  for _ in range(repeats):
    for name, run in runners.items():
      t = time.perf_counter()
      run(steps)
      times[name].append((time.perf_counter() - t) / steps)
  return {k: statistics.median(v) for k, v in times.items()}


# ----------------------------------------------------------------------- 1. environment
def environment(sizes: Sizes, clock: Clock) -> dict:
  """Versions, devices and nasjax's process settings."""
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  try:
    import tensorflow_datasets  # noqa: F401
    tfds = True
  except ImportError:
    tfds = False
  devices = jax.devices()
  out = {
      "python": platform.python_version(), "machine": platform.machine(),
      "cpu_count": os.cpu_count(), "versions": versions, "tensorflow_datasets_importable": tfds,
      "backend": jax.default_backend(), "platform": devices[0].platform,
      "device_kind": devices[0].device_kind, "device_count": len(devices),
      "devices": [f"{d.id}: {d.device_kind} ({d.platform})" for d in devices],
      "cpu_device_count": len(jax.devices("cpu")),
      "runtime": {"cpu_devices": runtime.cpu_devices(),
                  "default_cpu_devices": runtime.default_cpu_devices(),
                  "compiler_options": runtime.compiler_options(),
                  "cache_dir": runtime.cache_dir(),
                  "cache_dir_fresh_for_this_run": runtime.cache_dir() == _OWN_CACHE},
      "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "NASJAX_CPU_DEVICES",
                                             "NASJAX_CPU_COMPILER_OPTIONS",
                                             "XLA_PYTHON_CLIENT_PREALLOCATE",
                                             "XLA_PYTHON_CLIENT_MEM_FRACTION")},
      "peak_tflops": peak_tflops(devices[0].device_kind),
  }
  stats = devices[0].memory_stats() if hasattr(devices[0], "memory_stats") else None
  out["memory_bytes_limit"] = (stats or {}).get("bytes_limit")
  try:
    out["jax_environment_info"] = jax.print_environment_info(return_string=True)
  except Exception as e:  # only informative
    out["jax_environment_info"] = _error(e)
  try:
    import torch
    out["torch"] = {"version": torch.__version__, "cuda": torch.cuda.is_available(),
                    "device": (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                               else None)}
  except ImportError as e:
    out["torch"] = {"skipped": _error(e)}
  # nasjax asks JAX for 8 CPU devices when imported; that must leave an accelerator's
  # devices alone. A second process without the setting says what JAX gives by itself.
  if on_gpu():
    code = ("import json, jax, nasjax; print(json.dumps({'backend': jax.default_backend(), "
            "'device_count': len(jax.devices()), 'cpu_device_count': len(jax.devices('cpu')),"
            " 'nasjax_cpu_devices': nasjax.runtime.cpu_devices()}))")
    env = {**os.environ, **CHILD_ENV, "NASJAX_CPU_DEVICES": "off"}
    try:
      proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=max(60.0, clock.left()))
      if proc.returncode:
        raise RuntimeError(proc.stderr.strip()[-500:])
      other = json.loads(proc.stdout.strip().splitlines()[-1])
      out["without_nasjax_cpu_devices"] = other
      out["gpu_device_count_unchanged"] = (other["backend"] == out["backend"]
                                           and other["device_count"] == len(devices))
    except Exception as e:  # the rest of the section still stands
      out["without_nasjax_cpu_devices"] = {"error": _error(e)}
      out["gpu_device_count_unchanged"] = None
  else:
    out["gpu_device_count_unchanged"] = "n/a (CPU)"
  return out


def peak_tflops(device_kind: str) -> dict | None:
  """``{"bfloat16": ..., "tf32": ...}`` dense peak TFLOP/s of ``device_kind``, or None."""
  for name, peaks in PEAK_TFLOPS:
    if name in device_kind:
      return dict(peaks)
  return None


# ------------------------------------------------------------------- 2. train throughput
def jax_step_runner(net, config, x, y, devices):
  """``(run(steps), compile seconds, first loss)`` for nasjax's train step on ``devices``
  with the batch ``x``, ``y`` (one-hot) already there: the program :func:`train.fit`
  compiles and caches (so a later ``fit`` with this config reuses it)."""
  mesh, replicated, sharding = train._placement(devices)
  net_d, opt = train._prepare(net, config, replicated)
  t = time.perf_counter()
  step = train._compiled_step(config, mesh, net_d, opt, x.shape[1:], y.shape[1], sharding)
  compile_seconds = time.perf_counter() - t
  xb, yb = jax.device_put((x, y), sharding)
  lr, temperature = np.float32(config.learning_rate), np.float32(1.0)
  carry = [net_d, opt]

  def run(steps):
    loss = None
    for _ in range(steps):
      carry[0], carry[1], loss, _ = step(carry[0], carry[1], xb, yb, lr, temperature)
      if mesh is not None:
        loss.block_until_ready()  # collectives over host devices must not overlap steps
    return float(loss)

  first_loss = run(1)
  return run, compile_seconds, first_loss


def jax_fit_runner(net, ds, config):
  """``run(steps)``: :func:`nasjax.train.fit` for ``steps`` steps (its train step
  compiled by an earlier call)."""

  def run(steps):
    cfg = dataclasses.replace(config, max_steps=steps, epochs=1e6)
    train.fit(net, ds, cfg, jax.random.key(steps))

  run(1)
  return run


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """XLA's "SAME" padding (low, high) of one spatial dimension."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def torch_model(net):
  """``net`` as a PyTorch module with the same weights and batch-norm state.

  Runs the architecture's graph node by node (NCHW), for the ops the plain CNN and the
  ResNet use: conv (XLA's SAME padding, also for stride 2), batchnorm, relu, max_pool,
  gap, dense and add. Extends ``train_throughput.torch_model`` (chains only) to graphs.
  """
  import torch

  nn, F = torch.nn, torch.nn.functional
  arch = net.arch
  mods, plan = {}, []
  for name in arch.topo_order:
    node = arch[name]
    a, p, s = node.attr_dict, net.params.get(name, {}), net.state.get(name, {})
    pad, fill = None, 0.0
    if node.op in ("input", "add"):
      plan.append((name, node.op, tuple(node.inputs), None, 0.0))
      continue
    if node.op == "conv":
      h, w, _ = arch.in_shapes(name)[0]
      if a["groups"] != 1:
        raise ValueError(f"{name}: grouped convs are not supported")
      kernel = np.asarray(p["kernel"])  # HWIO
      eff = [(k - 1) * d + 1 for k, d in zip(a["kernel"], a["dilation"])]
      ph = _same_pads(h, eff[0], a["stride"][0])
      pw = _same_pads(w, eff[1], a["stride"][1])
      symmetric = ph[0] == ph[1] and pw[0] == pw[1]
      layer = nn.Conv2d(kernel.shape[2], kernel.shape[3], tuple(a["kernel"]),
                        stride=tuple(a["stride"]), dilation=tuple(a["dilation"]),
                        padding=(ph[0], pw[0]) if symmetric else 0, bias=a["use_bias"])
      if not symmetric:
        pad = (pw[0], pw[1], ph[0], ph[1])
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
      stride = a["stride"] or a["window"]
      if a["padding"] == "SAME":
        h, w, _ = arch.in_shapes(name)[0]
        ph, pw = _same_pads(h, a["window"][0], stride[0]), _same_pads(w, a["window"][1],
                                                                      stride[1])
        if any(ph + pw):
          pad, fill = (pw[0], pw[1], ph[0], ph[1]), -math.inf
      layer = nn.MaxPool2d(tuple(a["window"]), tuple(stride))
    elif node.op == "gap":
      layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    elif node.op == "dense":
      kernel = np.asarray(p["kernel"])
      layer = nn.Linear(kernel.shape[0], kernel.shape[1], bias=a["use_bias"])
      layer.weight.data = torch.from_numpy(kernel.T.copy())
      if a["use_bias"]:
        layer.bias.data = torch.from_numpy(np.array(p["bias"]))
    else:
      raise ValueError(f"{name}: op {node.op!r} is not supported")
    mods[name] = layer
    plan.append((name, node.op, tuple(node.inputs), pad, fill))

  class Graph(nn.Module):
    def __init__(self):
      super().__init__()
      self.layers = nn.ModuleDict(mods)

    def forward(self, x):
      values = {}
      for name, op, inputs, pad, fill in plan:
        if op == "input":
          values[name] = x
        elif op == "add":
          values[name] = functools.reduce(torch.add, [values[i] for i in inputs])
        else:
          y = values[inputs[0]]
          if pad is not None:
            y = F.pad(y, pad, value=fill)
          values[name] = self.layers[name](y)
      return values[arch.output]

  return Graph()


def torch_runner(net, config, x, labels, device: str):
  """``(run(steps), first loss)``: PyTorch eager training of ``net`` on one batch on
  ``device``: SGD with the same momentum, L2 weight decay on kernels only (as
  :func:`nasjax.train.optimizer`), bfloat16 through ``torch.autocast``; waits for the
  device once per ``run``, as ``jax_step`` does."""
  import torch

  model = torch_model(net).to(device).train()
  xb = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
  if device == "cuda":
    model = model.to(memory_format=torch.channels_last)  # cuDNN's fast layout
    xb = xb.contiguous(memory_format=torch.channels_last)
  yb = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
  kernels = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                 torch.nn.Linear))]
  ids = {id(k) for k in kernels}
  others = [q for q in model.parameters() if id(q) not in ids]
  opt = torch.optim.SGD([{"params": kernels, "weight_decay": config.weight_decay},
                         {"params": others, "weight_decay": 0.0}],
                        lr=config.learning_rate, momentum=config.momentum)
  autocast = config.dtype == "bfloat16"

  def run(steps):
    loss = None
    for _ in range(steps):
      opt.zero_grad(set_to_none=True)
      with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        loss = torch.nn.functional.cross_entropy(model(xb).float(), yb)
      loss.backward()
      opt.step()
    if device == "cuda":
      torch.cuda.synchronize()
    return loss.item()

  first_loss = run(1)
  return run, first_loss


def _torch_device():
  """``(device or None, why not)`` of PyTorch on JAX's platform."""
  try:
    import torch
  except ImportError as e:
    return None, f"torch is not importable ({e})"
  if on_gpu():
    if not torch.cuda.is_available():
      return None, f"torch {torch.__version__} has no CUDA device"
    torch.backends.cudnn.benchmark = True
    # XLA computes float32 convolutions and dots in TF32 on these GPUs by default.
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    return "cuda", None
  if jax.default_backend() != "cpu":
    return None, f"no PyTorch baseline on {jax.default_backend()}"
  torch.set_num_threads(os.cpu_count())
  return "cpu", None


def train_throughput_section(sizes: Sizes, clock: Clock) -> dict:
  """Train-step images/s and TFLOP/s of nasjax against PyTorch on the same device."""
  shape = train_throughput.INPUT_SHAPE
  archs = {"plain_cnn": train_throughput.plain_cnn(sizes.cnn_width),
           "resnet": models.resnet(sizes.resnet_stages, input_shape=shape, num_classes=10)}
  device, torch_skip = _torch_device()
  peaks = peak_tflops(jax.devices()[0].device_kind)
  nets = {}
  rows, skipped = [], []
  for model_name, batch, dtype in sizes.runs:
    if clock.left() <= 0:
      skipped.append(f"{model_name} batch {batch} {dtype}")
      continue
    arch = archs[model_name]
    net = nets.setdefault(model_name, nasjax.init(arch, jax.random.key(0)))
    ds = data.synthetic(num_train=2 * batch, num_val=0, num_test=0, input_shape=shape,
                        num_classes=10)
    x, labels = ds.x_train[:batch], ds.y_train[:batch]
    devices = train.data_parallel_devices(batch)
    config = train.TrainConfig(batch_size=batch, learning_rate=0.01, dtype=dtype,
                               schedule="constant")
    label = model_name
    if model_name == "resnet":  # ResNet-(2 + 2 x blocks): ResNet-20 for 3 x 3 blocks
      label = f"resnet{2 + 2 * sum(n for _, n in sizes.resnet_stages)}"
    row = {"model": label, "batch": batch, "dtype": dtype,
           "params": nasjax.count_params(arch),
           "forward_mflops_per_image": nasjax.flops(arch) / 1e6, "devices": len(devices)}
    step, row["jax_compile_seconds"], jax_loss = jax_step_runner(
        net, config, x, train.one_hot(labels, 10), devices)
    runners = {"jax_step": step, "jax_fit": jax_fit_runner(net, ds, config)}
    if device is not None:
      runners["torch_eager"], torch_loss = torch_runner(net, config, x, labels, device)
      # Same weights, same batch: the first losses agree unless the models differ.
      row["first_loss"] = {"jax": jax_loss, "torch": torch_loss,
                           "rel_diff": abs(jax_loss - torch_loss) / abs(torch_loss)}
    seconds = median_seconds(runners, sizes.steps, sizes.repeats)
    flop = 3 * nasjax.flops(arch) * batch
    peak = None if peaks is None else peaks["bfloat16" if dtype == "bfloat16" else "tf32"]
    for name, sec in seconds.items():
      row[name] = {"ms_per_step": 1e3 * sec, "images_per_s": batch / sec,
                   "tflops_per_s": flop / sec / 1e12,
                   "peak_share": None if peak is None else flop / sec / 1e12 / peak}
    if device is not None:
      row["step_ratio_jax_over_torch"] = seconds["torch_eager"] / seconds["jax_step"]
      row["fit_ratio_jax_over_torch"] = seconds["torch_eager"] / seconds["jax_fit"]
    rows.append(row)
  if device == "cuda":
    import torch

    torch.cuda.empty_cache()  # leave the GPU's memory to the processes started next
  return {"rows": rows, "skipped_for_time": skipped, "torch_device": device,
          "torch_skipped": torch_skip, "steps": sizes.steps, "repeats": sizes.repeats,
          "resnet_stages": [list(st) for st in sizes.resnet_stages],
          "peak_tflops": peaks, "float32_peak": "tf32 (XLA's and cuDNN's default on GPUs)",
          "timing": "median over repeats of the mean step time of `steps` steps; jax_step "
                    "and torch_eager wait for the device once per repeat, jax_fit waits "
                    "every step (its divergence check)"}


# ----------------------------------------------------------------------------- 3. compile
def compile_worker(widths, warmup_width: int, batch: int) -> dict:
  """In this (fresh) process: ``History.compile_seconds`` of a one-step ``fit`` of a plain
  CNN of each width, then the train-step time of the last one."""
  ds = data.synthetic(num_train=batch, num_val=64, num_test=0,
                      input_shape=train_throughput.INPUT_SHAPE, num_classes=10)
  config = train.TrainConfig(batch_size=batch, max_steps=1, schedule="constant")
  t0, c0 = time.perf_counter(), runtime.compile_seconds()
  if warmup_width:  # the process's first compilation also starts the backend: not counted
    train.fit(nasjax.init(train_throughput.plain_cnn(warmup_width), jax.random.key(0)), ds,
              config, jax.random.key(0))
  first = time.perf_counter() - t0
  seconds, net = [], None
  for w in widths:
    net = nasjax.init(train_throughput.plain_cnn(w), jax.random.key(0))
    _, hist = train.fit(net, ds, config, jax.random.key(0))
    seconds.append(hist.compile_seconds)
  x, y = ds.x_train[:batch], train.one_hot(ds.y_train[:batch], 10)
  run, _, _ = jax_step_runner(net, config, x, y, train.data_parallel_devices(batch))
  t = time.perf_counter()
  run(5)
  return {"seconds": seconds, "median": statistics.median(seconds), "max": max(seconds),
          "warmup_seconds": first, "step_ms_last": (time.perf_counter() - t) / 5 * 1e3,
          "process_compile_seconds": runtime.compile_seconds() - c0,
          "backend": jax.default_backend()}


def _worker(args: list[str], env: dict, timeout: float) -> dict:
  """Run this script with ``--worker ...`` in a fresh process; its last line of JSON."""
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *args],
                        env={**os.environ, **CHILD_ENV, **env}, capture_output=True,
                        text=True, timeout=max(timeout, 60.0))
  if proc.returncode:
    lines = proc.stderr.strip().splitlines()
    raise RuntimeError(lines[-1] if lines else f"exit status {proc.returncode}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def compile_section(sizes: Sizes, clock: Clock) -> dict:
  """Compile time of new architectures: empty cache, warm cache, autotuning off."""
  args = ["compile", "--widths", ",".join(map(str, sizes.compile_widths)),
          "--warmup-width", str(sizes.compile_warmup_width),
          "--batch", str(sizes.compile_batch)]
  out = {"widths": list(sizes.compile_widths), "batch": sizes.compile_batch,
         "what": "History.compile_seconds of a one-step fit: train step and validation "
                 "program of a plain CNN (train_throughput.plain_cnn) of each width"}
  runs = [("cold_cache", {}, True), ("warm_cache", {}, False)]
  if on_gpu():
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_autotune_level=0").strip()
    runs.append(("autotune_off_cold_cache", {"XLA_FLAGS": flags}, True))
  else:
    out["autotune_off_cold_cache"] = "n/a (CPU)"
  cache = tempfile.mkdtemp(prefix="nasjax-gpu-check-compile-")
  try:
    for name, env, fresh in runs:
      if clock.left() <= 0:
        out[name] = {"skipped": "time"}
        continue
      if fresh:
        shutil.rmtree(cache, ignore_errors=True)
        os.makedirs(cache)
      try:
        out[name] = _worker(args, {"NASJAX_CACHE_DIR": cache, **env}, clock.left() + 30)
      except Exception as e:  # the other runs still say something
        out[name] = {"error": _error(e)}
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  return out


# ------------------------------------------------------------------------ 4. search speed
def search_worker(strategy: str, evals: int) -> dict:
  """In this (fresh) process: ``strategy``'s smoke-preset search for ``evals`` evaluations."""
  from nasjax.search import cli as search_cli
  from nasjax.search import runner

  evaluator, config, _ = search_cli._smoke_plan(strategy)
  _ = evaluator.data  # loading the images is not the strategy's cost
  c0 = runtime.compile_seconds()
  with tempfile.TemporaryDirectory() as workdir:
    t = time.perf_counter()
    result = runner.run(strategy, evaluator, runner.Budget(max_evals=evals), workdir,
                        seed=0, config=config, quiet=True)
    wall = time.perf_counter() - t
  history = result.history
  compiled = runtime.compile_seconds() - c0
  last = history[-1]
  return {"strategy": strategy, "space": getattr(evaluator.space, "name", None),
          "evals": len(history), "ok": sum(h["status"] == "ok" for h in history),
          "wall_seconds": wall, "candidates_per_hour": 3600.0 * len(history) / wall,
          "compile_seconds": compiled, "compile_share": compiled / wall,
          "runner_wall": last["wall"], "runner_compile": last["compile"],
          "train_share": result.elapsed / wall, "strategy_config": config,
          "train": evaluator.config().get("train")}


def search_section(sizes: Sizes, clock: Clock) -> dict:
  """Candidates per hour and compile share of three strategies' smoke-preset searches."""
  out = {"evals": sizes.search_evals, "dataset": "fashion_mnist_small (the smoke presets)",
         "rows": {}}
  for name in sizes.strategies:
    if clock.left() <= 0:
      out["rows"][name] = {"skipped": "time"}
      continue
    with tempfile.TemporaryDirectory(prefix="nasjax-gpu-check-search-") as cache:
      try:
        out["rows"][name] = _worker(["search", "--strategy", name, "--evals",
                                     str(sizes.search_evals)], {"NASJAX_CACHE_DIR": cache},
                                    clock.left() + 30)
      except Exception as e:
        out["rows"][name] = {"error": _error(e)}
  return out


# ----------------------------------------------------------------------------- 5. packing
def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)


def packing_section(sizes: Sizes, clock: Clock) -> dict:
  """N candidates of one small architecture in one vmapped step against one at a time;
  two architectures from two threads against one after another."""
  device = jax.devices()[0]
  shape, batch = (28, 28, 1), sizes.pack_batch
  config = train.TrainConfig(batch_size=batch, learning_rate=0.01, schedule="constant")
  tx = train.optimizer(config)
  body = functools.partial(train._step_body, tx=tx, dtype=config.dtype, axis_name=None)
  options = runtime.compiler_options()  # as nasjax compiles its own train step
  single = jax.jit(body, donate_argnums=(0, 1), compiler_options=options)
  packed = jax.jit(jax.vmap(body, in_axes=(0, 0, None, None, None, None)),
                   donate_argnums=(0, 1), compiler_options=options)
  ds = data.synthetic(num_train=batch, num_val=0, num_test=0, input_shape=shape,
                      num_classes=10)
  x, y = jax.device_put((ds.x_train, train.one_hot(ds.y_train, 10)), device)
  lr, temp = np.float32(0.01), np.float32(1.0)
  arch = models.plain_cnn(blocks=sizes.pack_blocks, input_shape=shape, num_classes=10)

  def nets(a, n):
    return [nasjax.init(a, jax.random.key(i)) for i in range(n)]

  def runner(fn, net, opt):
    # Copies through the host: the step donates its inputs, and ``net`` stays valid.
    carry = list(jax.device_put(jax.tree_util.tree_map(np.asarray, (net, opt)), device))

    def run(steps, wait_each=True):
      loss = None
      for _ in range(steps):
        carry[0], carry[1], loss, _ = fn(carry[0], carry[1], x, y, lr, temp)
        if wait_each:  # as fit does (its divergence check reads every step's result)
          loss.block_until_ready()
      loss.block_until_ready()

    run(1)  # compile
    return run

  one = nets(arch, 1)[0]
  one_run = runner(single, one, train._initial_opt_state(config, one.params))
  rows = []
  for n in sizes.pack_counts:
    if clock.left() <= 0:
      rows.append({"n": n, "skipped": "time"})
      continue
    members = nets(arch, n)
    stacked = _stack(members)
    opt = _stack([train._initial_opt_state(config, m.params) for m in members])
    pack_run = runner(packed, stacked, opt)
    # One at a time: n steps of the single program (waiting for each, as fit does, or
    # queueing them all); packed: one step of n candidates.
    s = median_seconds({"one_at_a_time": lambda k: one_run(k * n),
                        "one_at_a_time_queued": lambda k: one_run(k * n, wait_each=False),
                        "packed": pack_run}, sizes.pack_steps, sizes.repeats)
    rows.append({"n": n, "one_at_a_time_images_per_s": n * batch / s["one_at_a_time"],
                 "one_at_a_time_queued_images_per_s": n * batch / s["one_at_a_time_queued"],
                 "packed_images_per_s": n * batch / s["packed"],
                 "speedup": s["one_at_a_time"] / s["packed"],
                 "speedup_vs_queued": s["one_at_a_time_queued"] / s["packed"]})
  out = {"arch": str(sizes.pack_blocks), "params": nasjax.count_params(arch),
         "input_shape": shape, "batch": batch, "device": str(device), "rows": rows,
         "method": "jax.vmap of nasjax's train step body over stacked params, optimiser "
                   "states and BN states; all candidates see the same batch; speedup "
                   "is against one candidate at a time waiting for each step (as fit "
                   "trains), speedup_vs_queued against the same steps queued without "
                   "waiting"}
  if clock.left() > 0:
    other = models.plain_cnn(blocks=sizes.pack_other_blocks, input_shape=shape,
                             num_classes=10)
    b = nets(other, 1)[0]
    a_run = runner(single, nasjax.init(arch, jax.random.key(7)),
                   train._initial_opt_state(config, one.params))
    b_run = runner(single, b, train._initial_opt_state(config, b.params))

    def sequential(k):
      a_run(k)
      b_run(k)

    def threads(k):
      ts = [threading.Thread(target=r, args=(k,)) for r in (a_run, b_run)]
      for t in ts:
        t.start()
      for t in ts:
        t.join()

    s = median_seconds({"sequential": sequential, "threads": threads}, sizes.pack_steps,
                       sizes.repeats)
    out["two_archs"] = {"archs": [str(sizes.pack_blocks), str(sizes.pack_other_blocks)],
                        "sequential_ms_per_pair": 1e3 * s["sequential"],
                        "threads_ms_per_pair": 1e3 * s["threads"],
                        "speedup": s["sequential"] / s["threads"],
                        "method": "two Python threads, each dispatching its own jitted "
                                  "step and waiting for it, against the same steps one "
                                  "after another in one thread"}
  else:
    out["two_archs"] = {"skipped": "time"}
  return out


# ---------------------------------------------------------------------------- 6. supernet
def supernet_section(sizes: Sizes, clock: Clock) -> dict:
  """Shared-weight steps of the NB201 supernet: time per step and planned memory.

  For each batch size, the variants' programs are traced and lowered first, then compiled
  concurrently (threads: XLA compiles outside the interpreter lock; a program of C=16,
  N=5 takes tens of seconds), then timed one after another.
  """
  import concurrent.futures

  from nasjax.models import supernet as sn_lib
  from nasjax.search.strategies import oneshot

  spec = sn_lib.NB201Supernet(C=sizes.supernet_C, N=sizes.supernet_N,
                              input_shape=(32, 32, 3), num_classes=10)
  tx = oneshot.sgd(0.01)
  rng = np.random.default_rng(0)
  path = jnp.asarray(rng.integers(0, 5, spec.weights_shape[1]), jnp.int32)
  weights = jax.nn.softmax(jnp.asarray(1e-3 * rng.standard_normal(spec.weights_shape),
                                       jnp.float32), -1)
  variants = {"spos_switch": (spec, True, "switch", path),
              "spos_onehot": (spec, True, "onehot", path),
              "darts_mixed": (spec, False, "switch", weights),
              "darts_mixed_remat": (dataclasses.replace(spec, remat=True), False, "switch",
                                    weights)}
  device = jax.devices()[0]
  rows, compile_wall = [], {}
  workers = max(1, min(len(sizes.supernet_timed), (os.cpu_count() or 2) // 4))
  group_seconds = 0.0  # what the last batch size took: the next starts only if it fits
  for batch in sizes.supernet_batches:  # per batch: lower all, compile together, time
    x = jnp.asarray(rng.standard_normal((batch, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, batch), jnp.int32)
    todo, group_start = [], time.perf_counter()
    fits = clock.left() > group_seconds
    for name, (s, by_path, impl, arch) in variants.items():
      row = {"variant": name, "batch": batch}
      rows.append(row)
      if not fits or clock.left() <= 0:
        row["skipped"] = "time"
        continue
      sn = sn_lib.init(s, jax.random.key(0))
      t = time.perf_counter()
      lowered = oneshot.weight_step_fn(tx, by_path, impl).lower(sn, tx.init(sn.params), x,
                                                                y, arch)
      row["lower_seconds"] = time.perf_counter() - t
      if name in sizes.supernet_timed:
        todo.append((row, lowered, sn, arch))
      else:
        row["lowered_only"] = True
    if not todo:
      continue
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      compiled = list(pool.map(lambda item: item[1].compile(), todo))
    compile_wall[batch] = time.perf_counter() - t
    for (row, _, sn, arch), step in zip(todo, compiled):
      m = step.memory_analysis()
      if m is not None:
        row["planned_peak_bytes"] = (m.temp_size_in_bytes + m.argument_size_in_bytes
                                     + m.output_size_in_bytes - m.alias_size_in_bytes)
        row["temp_bytes"] = m.temp_size_in_bytes
      carry = [sn, tx.init(sn.params)]

      def run(steps, step=step, carry=carry, x=x, y=y, arch=arch):
        loss = None
        for _ in range(steps):
          carry[0], carry[1], loss, _ = step(carry[0], carry[1], x, y, arch)
        loss.block_until_ready()

      run(1)
      sec = median_seconds({"step": run}, sizes.supernet_steps, sizes.repeats)["step"]
      stats = device.memory_stats() if hasattr(device, "memory_stats") else None
      row.update({"ms_per_step": 1e3 * sec, "images_per_s": batch / sec,
                  "device_peak_bytes_in_use": (stats or {}).get("peak_bytes_in_use")})
    group_seconds = time.perf_counter() - group_start
  return {"C": spec.C, "N": spec.N, "input_shape": [32, 32, 3],
          "params": sn_lib.init(spec, jax.random.key(0)).num_params, "rows": rows,
          "compile_wall_seconds": compile_wall, "compile_threads": workers,
          "memory": "planned_peak_bytes: XLA's memory_analysis of the compiled step "
                    "(temp + arguments + outputs - aliased); device_peak_bytes_in_use: "
                    "the device allocator's peak over the whole process so far (None on "
                    "CPU), not this step's alone",
          "darts_step": "the weight step under softmax mixing weights (the architecture "
                        "step is not timed)"}


# ------------------------------------------------------------------------------- goals
def goals(result: dict) -> list[dict]:
  """The GPU goals: ``status`` is met / not met / not measured, or n/a (CPU)."""
  cpu = result.get("environment", {}).get("platform", jax.devices()[0].platform) != "gpu"

  def verdict(value, ok):
    if cpu:
      return "n/a (CPU)"
    if value is None:
      return "not measured"
    return "met" if ok else "not met"

  rows = result.get("train_throughput", {}).get("rows", [])
  ratios = [r["step_ratio_jax_over_torch"] for r in rows if "step_ratio_jax_over_torch" in r]
  worst = min(ratios) if ratios else None
  warm = result.get("compile", {}).get("warm_cache", {})
  warm_max = warm.get("max") if isinstance(warm, dict) else None
  packs = [r for r in result.get("packing", {}).get("rows", []) if r.get("n") == 16]
  pack16 = packs[0].get("speedup") if packs else None
  lemonade = result.get("search_speed", {}).get("rows", {}).get("lemonade", {})
  share = lemonade.get("compile_share")
  return [
      {"goal": "nasjax train step >= PyTorch's (same model, precision)",
       "value": worst, "unit": "min jax/torch speed ratio", "status":
           verdict(worst, worst is not None and worst >= 1.0)},
      {"goal": "a new architecture compiles in < 2 s with a warm cache", "value": warm_max,
       "unit": "max s", "status": verdict(warm_max, warm_max is not None and warm_max < 2.0)},
      {"goal": "16 small candidates packed >= 4x one at a time", "value": pack16,
       "unit": "speedup", "status": verdict(pack16, pack16 is not None and pack16 >= 4.0)},
      {"goal": "LEMONADE compile share < 10 %", "value": share, "unit": "share (short run)",
       "status": verdict(share, share is not None and share < 0.10)},
  ]


# ------------------------------------------------------------------------------- table
def _f(v, digits=3) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:,.0f}"
  return str(v)


def table(result: dict) -> str:
  """The result as Markdown tables."""
  lines = []
  env = result.get("environment", {})
  lines.append(f"# nasjax GPU check ({result['mode']}, {_f(result.get('wall_seconds'))} s)")
  if "error" in env:
    lines.append(f"environment: {env['error']}")
  else:
    v = env["versions"]
    lines.append(f"{env['device_count']} x {env['device_kind']} ({env['platform']}); "
                 f"python {env['python']}, jax {v['jax']}, jaxlib {v['jaxlib']}, cuda plugin "
                 f"{v['jax-cuda13-plugin'] or v['jax-cuda12-plugin']}, torch {v['torch']}; "
                 f"nasjax CPU devices {env['runtime']['cpu_devices']}, compiler options "
                 f"{env['runtime']['compiler_options']}; GPU count unchanged by nasjax: "
                 f"{env['gpu_device_count_unchanged']}")
  tp = result.get("train_throughput", {})
  lines += ["", "## train step (images/s; TFLOP/s; share of peak)"]
  if "error" in tp:
    lines.append(tp["error"])
  else:
    lines += ["| model | batch | dtype | jax_step | jax_fit | torch_eager | step jax/torch "
              "| TFLOP/s jax | peak share jax | loss rel diff |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in tp.get("rows", []):
      torch_r = r.get("torch_eager", {})
      lines.append(
          f"| {r['model']} | {r['batch']} | {r['dtype']} | "
          f"{_f(r['jax_step']['images_per_s'])} | {_f(r['jax_fit']['images_per_s'])} | "
          f"{_f(torch_r.get('images_per_s'))} | {_f(r.get('step_ratio_jax_over_torch'))} | "
          f"{_f(r['jax_step']['tflops_per_s'])} | {_f(r['jax_step']['peak_share'])} | "
          f"{_f(r.get('first_loss', {}).get('rel_diff'), 2)} |")
    if tp.get("torch_skipped"):
      lines.append(f"torch skipped: {tp['torch_skipped']}")
  cp = result.get("compile", {})
  lines += ["", "## compile of new architectures (s per architecture)"]
  if "error" in cp:
    lines.append(cp["error"])
  else:
    lines += ["| run | median | max | step ms |", "| --- | ---: | ---: | ---: |"]
    for name in ("cold_cache", "warm_cache", "autotune_off_cold_cache"):
      r = cp.get(name)
      if isinstance(r, dict) and "median" in r:
        lines.append(f"| {name} | {_f(r['median'])} | {_f(r['max'])} | "
                     f"{_f(r['step_ms_last'])} |")
      else:
        lines.append(f"| {name} | {r if isinstance(r, str) else json.dumps(r)} | | |")
  ss = result.get("search_speed", {})
  lines += ["", f"## search ({ss.get('evals')} evaluations, smoke presets)"]
  if "error" in ss:
    lines.append(ss["error"])
  else:
    lines += ["| strategy | wall s | candidates / hour | compile share | train share |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in ss.get("rows", {}).items():
      if "wall_seconds" in r:
        lines.append(f"| {name} | {_f(r['wall_seconds'])} | {_f(r['candidates_per_hour'])} "
                     f"| {_f(r['compile_share'])} | {_f(r['train_share'])} |")
      else:
        lines.append(f"| {name} | {json.dumps(r)} | | | |")
  pk = result.get("packing", {})
  lines += ["", "## packed candidates (images/s over all candidates)"]
  if "error" in pk:
    lines.append(pk["error"])
  else:
    lines += ["| N | one at a time | queued | packed | speedup | vs queued |",
              "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in pk.get("rows", []):
      if "speedup" in r:
        lines.append(f"| {r['n']} | {_f(r['one_at_a_time_images_per_s'])} | "
                     f"{_f(r['one_at_a_time_queued_images_per_s'])} | "
                     f"{_f(r['packed_images_per_s'])} | {_f(r['speedup'])} | "
                     f"{_f(r['speedup_vs_queued'])} |")
    two = pk.get("two_archs", {})
    if "speedup" in two:
      lines.append(f"two architectures from two threads: {_f(two['speedup'])}x one after "
                   f"another ({_f(two['sequential_ms_per_pair'])} -> "
                   f"{_f(two['threads_ms_per_pair'])} ms per pair of steps)")
  sn = result.get("supernet", {})
  lines += ["", f"## NB201 supernet step (C={sn.get('C')}, N={sn.get('N')})"]
  if "error" in sn:
    lines.append(sn["error"])
  else:
    lines += ["| variant | batch | ms / step | images/s | planned MiB |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for r in sn.get("rows", []):
      if "ms_per_step" in r:
        mib = r.get("planned_peak_bytes")
        lines.append(f"| {r['variant']} | {r['batch']} | {_f(r['ms_per_step'])} | "
                     f"{_f(r['images_per_s'])} | {_f(None if mib is None else mib / 2**20)} |")
      else:
        why = "traced and lowered only" if r.get("lowered_only") else r.get("skipped")
        lines.append(f"| {r['variant']} | {r['batch']} | {why} | | |")
    walls = ", ".join(f"batch {b}: {_f(w)} s" for b, w in
                      sn.get("compile_wall_seconds", {}).items())
    lines.append(f"compile wall time on {sn.get('compile_threads')} threads: {walls}")
  lines += ["", "## goals", "| goal | value | status |", "| --- | ---: | --- |"]
  for g in result.get("goals", []):
    lines.append(f"| {g['goal']} | {_f(g['value'])} ({g['unit']}) | {g['status']} |")
  return "\n".join(lines)


# -------------------------------------------------------------------------------- main
SECTION_FNS = {"environment": environment, "train_throughput": train_throughput_section,
               "compile": compile_section, "search_speed": search_section,
               "packing": packing_section, "supernet": supernet_section}


def _write(path: str, result: dict) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1, default=str)
  os.replace(tmp, path)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="gpu_check.json", help="the JSON file to write")
  parser.add_argument("--quick", action="store_true", help="tiny sizes and repeats")
  parser.add_argument("--max-seconds", type=float, default=None,
                      help="no new measurement starts after this (default 400; quick 300)")
  parser.add_argument("--sections", help=f"comma-separated subset of {','.join(SECTIONS)}")
  parser.add_argument("--worker", choices=("compile", "search"), help=argparse.SUPPRESS)
  parser.add_argument("--widths", help=argparse.SUPPRESS)
  parser.add_argument("--warmup-width", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
  parser.add_argument("--strategy", help=argparse.SUPPRESS)
  parser.add_argument("--evals", type=int, default=4, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker == "compile":
    print(json.dumps(compile_worker([int(w) for w in args.widths.split(",")],
                                    args.warmup_width, args.batch)))
    return 0
  if args.worker == "search":
    print(json.dumps(search_worker(args.strategy, args.evals)))
    return 0
  sections = SECTIONS if not args.sections else tuple(args.sections.split(","))
  unknown = sorted(set(sections) - set(SECTIONS))
  if unknown:
    parser.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
  sizes = QUICK if args.quick else FULL
  clock = Clock(args.max_seconds or (300.0 if args.quick else 400.0))
  result = {"script": "benchmarks/gpu_check.py", "mode": "quick" if args.quick else "full",
            "argv": sys.argv[1:], "sizes": dataclasses.asdict(sizes),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
  try:
    for name in SECTIONS:
      if name not in sections:
        continue
      clock.begin(name)
      t = time.perf_counter()
      try:
        out = SECTION_FNS[name](sizes, clock)
      except Exception as e:  # one section's failure must not cost the others
        out = {"error": _error(e), "traceback": traceback.format_exc()[-3000:]}
      out["seconds"] = time.perf_counter() - t
      result[name] = out
      print(f"[{clock.elapsed():6.1f} s] {name}" + (f": {out['error']}" if "error" in out
                                                     else ""), file=sys.stderr, flush=True)
      result["goals"] = goals(result)  # each time: a run cut short keeps what it measured
      result["wall_seconds"] = clock.elapsed()
      _write(args.out, result)
    print(table(result))
  finally:
    if _OWN_CACHE:
      shutil.rmtree(_OWN_CACHE, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
