"""Weight inheritance through exact network morphisms, on Fashion-MNIST.

    python experiments/inheritance.py [--tiny] [--full] [--stats-batch N] [--json PATH]

Trains a parent (the EAS start net: one conv-BN-ReLU per block, max pools, a dense
layer), derives children from it by exact morphisms (Net2Wider doubling every layer,
Net2Deeper in every block, and Net2Deeper plus a residual skip around each new layer), then
trains every child twice with the same budget and hyperparameters: from the inherited
weights and from scratch (a fresh initialisation of the child's architecture). Both runs
train in chunks of ``chunk`` epochs and record the validation accuracy after each.

The parent trains at a constant learning rate, as a network part way through a search
would; every child then follows a cosine from that same rate to zero over its budget
(held constant within a chunk), inherited and scratch alike (SGD, momentum 0.9).
``--parent-schedule cosine`` anneals the parent to zero instead, and ``--child-lr``
changes the peak rate of the inherited runs: a child restarted at a high rate from an
annealed parent first leaves its parent's minimum.

The morphisms that insert a batch norm (Net2Deeper) take its statistics on a fixed
batch of training images (``stats_batch``, the first of the training split): the child
then computes its parent's function in training mode too, where the batch norm
normalises with batch statistics (``--stats-batch 0``: running mean 0 and variance 1,
exact in inference mode only).

Reported per child: the largest change of the logits relative to the parent's, in
inference mode on validation images and in training mode on a training batch other than
the statistics batch, validation accuracy at inheritance (equal to the parent's, the
morphisms being exact) and after the first chunk of training, epochs of training until
the child's validation accuracy first reaches the parent's (inherited and scratch;
``>B`` if never within the budget ``B``), and the accuracy after the whole budget.

``--tiny`` shrinks everything (256 training images, a two-block tiny start net, half an
epoch) for a quick end-to-end run; ``--full`` uses the full Fashion-MNIST (training
images from the Debian idx files or TFDS) instead of the embedded 8,000-image subset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time

import jax
import jax.numpy as jnp

import nasjax
from nasjax import data as data_lib
from nasjax import models, ops, train


@dataclasses.dataclass(frozen=True)
class Config:
  """One variant of the experiment.

  Attributes:
    dataset: name for :func:`nasjax.data.load`.
    limit: training images kept (None: all).
    parent: :func:`nasjax.models.eas_start_net` variant of the parent.
    num_blocks: conv blocks of the parent (None: the variant's).
    val_fraction: share of the training split held out for validation.
    parent_epochs: epochs the parent trains.
    budget: epochs each child trains, inherited and from scratch.
    chunk: epochs between two validations of a child.
    batch_size: training batch size.
    parent_schedule: ``"constant"`` or ``"cosine"`` learning rate of the parent.
    learning_rate: the parent's (peak) SGD learning rate and the children's peak.
    child_lr: peak learning rate of children from inherited weights; None: the same.
    noise: Net2Wider symmetry-breaking noise (copies' weight shares; exact for any value).
    stats_batch: training images on which inserted batch norms take their statistics (0:
      none).
    children: recipes from :data:`RECIPES`.
    seed: seed of every key.
  """

  dataset: str = "fashion_mnist_small"
  limit: int | None = None
  val_fraction: float = 0.2
  parent: str = "small"
  num_blocks: int | None = None
  parent_epochs: float = 4.0
  budget: float = 6.0
  chunk: float = 0.25
  batch_size: int = 128
  parent_schedule: str = "constant"
  learning_rate: float = 0.02
  child_lr: float | None = None
  noise: float = 0.5
  stats_batch: int = 256
  children: tuple[str, ...] = ("wider", "deeper", "deeper+skip")
  seed: int = 0


VARIANTS = {
    "default": Config(),
    "tiny": Config(limit=256, parent="tiny", num_blocks=2, parent_epochs=2.0, budget=0.5,
                   chunk=0.25, batch_size=32, children=("deeper+skip",)),
}


# -------------------------------------------------------------------------- children
def _blocks(arch: nasjax.Arch) -> list[str]:
  """Block prefixes ``b{b}_l0`` of an EAS start net, in order."""
  return [n.name[:-len("_conv")] for n in arch.nodes_of("conv")]


def wider(net, key, noise, batch):
  """Net2Wider: every conv and dense hidden layer twice as wide."""
  layers = [f"{b}_conv" for b in _blocks(net.arch)] + [
      n.name for n in net.arch.nodes_of("dense") if n.name != net.arch.output]
  for k, name in zip(jax.random.split(key, len(layers)), layers):
    net = ops.net2wider(net, k, node=name, width=2 * net.arch[name]["features"], noise=noise)
  return net


def deeper(net, key, noise, batch):
  """Net2Deeper: an identity conv-BN-ReLU after every block's ReLU, its batch norm's
  statistics taken on ``batch``."""
  for k, b in zip(jax.random.split(key, len(_blocks(net.arch))), _blocks(net.arch)):
    net = ops.net2deeper(net, k, after=f"{b}_relu", batch=batch)
  return net


def deeper_skip(net, key, noise, batch):
  """Net2Deeper, then a residual skip around each new layer (zero-initialised add)."""
  blocks = _blocks(net.arch)
  net = deeper(net, key, noise, batch)
  for b in blocks:
    # net2deeper names the inserted ReLU after the node it follows.
    net = ops.add_skip(net, key, src=f"{b}_relu", dst=f"{b}_relu_deeper_relu")
  return net


def wider_deeper_skip(net, key, noise, batch):
  k1, k2 = jax.random.split(key)
  return deeper_skip(wider(net, k1, noise, batch), k2, noise, batch)


RECIPES = {"wider": wider, "deeper": deeper, "deeper+skip": deeper_skip,
           "wider+deeper+skip": wider_deeper_skip}


# -------------------------------------------------------------------------- training
def train_curve(net, data, cfg: Config, key, peak_lr: float
                ) -> tuple[nasjax.Network, list[tuple[float, float]]]:
  """Train ``cfg.budget`` epochs in chunks; ``[(epochs so far, val accuracy)]`` per chunk."""
  chunks = max(1, round(cfg.budget / cfg.chunk))
  curve = []
  for i in range(chunks):
    lr = peak_lr * 0.5 * (1 + math.cos(math.pi * (i + 0.5) / chunks))
    tc = train.TrainConfig(epochs=cfg.chunk, batch_size=cfg.batch_size, learning_rate=lr,
                           schedule="constant")
    net, hist = train.fit(net, data, tc, jax.random.fold_in(key, i))
    if hist.status != "ok":
      break
    curve.append(((i + 1) * cfg.chunk, hist.val_accuracy[-1]))
  return net, curve


def epochs_to_reach(curve, target: float) -> float | None:
  """First epoch count at which validation accuracy is >= ``target`` (None: never)."""
  for epochs, acc in curve:
    if acc >= target:
      return epochs
  return None


def run(cfg: Config, log=print) -> dict:
  """Run the experiment; returns the parent's numbers and one row per child."""
  start = time.perf_counter()
  if cfg.parent_schedule not in ("constant", "cosine"):
    raise ValueError("parent_schedule must be 'constant' or 'cosine', got "
                     f"{cfg.parent_schedule!r}")
  data = data_lib.load(cfg.dataset, limit=cfg.limit, seed=cfg.seed,
                       val_fraction=cfg.val_fraction)
  key = jax.random.key(cfg.seed)
  k_parent, k_train, k_child = jax.random.split(key, 3)
  arch = models.eas_start_net(cfg.parent, num_blocks=cfg.num_blocks,
                              input_shape=data.input_shape,
                              num_classes=data.num_classes)
  parent, hist = train.fit(
      nasjax.init(arch, k_parent), data,
      train.TrainConfig(epochs=cfg.parent_epochs, batch_size=cfg.batch_size,
                        learning_rate=cfg.learning_rate, schedule=cfg.parent_schedule),
      k_train)
  parent_acc = train.evaluate(parent, data.x_val, data.y_val)["accuracy"]
  log(f"parent: {nasjax.count_params(arch)} params, val accuracy {parent_acc:.4f} after "
      f"{cfg.parent_epochs:g} epochs ({hist.seconds:.0f} s)")
  x_check = jnp.asarray(data.x_val[:256])
  stats = jnp.asarray(data.x_train[:cfg.stats_batch]) if cfg.stats_batch else None
  # A training batch as training sees it, not the one the statistics were taken on.
  x_train_check = jnp.asarray(data.x_train[-cfg.batch_size:])
  rows = []
  for i, name in enumerate(cfg.children):
    k_make, k_init, k_fit = jax.random.split(jax.random.fold_in(k_child, i), 3)
    child = RECIPES[name](parent, k_make, cfg.noise, stats)
    preserve = _change(nasjax.apply(parent, x_check), nasjax.apply(child, x_check))
    preserve_train = _change(nasjax.apply_train(parent, x_train_check)[0],
                             nasjax.apply_train(child, x_train_check)[0])
    at_birth = train.evaluate(child, data.x_val, data.y_val)["accuracy"]
    t = time.perf_counter()
    child_lr = cfg.learning_rate if cfg.child_lr is None else cfg.child_lr
    _, inherited = train_curve(child, data, cfg, k_fit, child_lr)
    _, scratch = train_curve(nasjax.init(child.arch, k_init), data, cfg, k_fit,
                             cfg.learning_rate)
    row = {"child": name, "params": nasjax.count_params(child.arch),
           "preservation_error": preserve, "preservation_error_train": preserve_train,
           "acc_at_inheritance": at_birth,
           "epochs_inherited": epochs_to_reach(inherited, parent_acc),
           "epochs_scratch": epochs_to_reach(scratch, parent_acc),
           "acc_inherited": inherited[-1][1] if inherited else float("nan"),
           "acc_scratch": scratch[-1][1] if scratch else float("nan"),
           "curve_inherited": inherited, "curve_scratch": scratch}
    rows.append(row)
    log(f"{name}: {row['params']} params, inherited reaches the parent after "
        f"{_fmt(row['epochs_inherited'], cfg.budget)} epochs, scratch after "
        f"{_fmt(row['epochs_scratch'], cfg.budget)} ({time.perf_counter() - t:.0f} s)")
  return {"config": dataclasses.asdict(cfg), "parent_params": nasjax.count_params(arch),
          "parent_acc": parent_acc, "rows": rows,
          "seconds": time.perf_counter() - start}


def _change(y0, y1) -> float:
  """Largest change of the logits relative to the parent's largest (at least 1)."""
  return float(jnp.max(jnp.abs(y0 - y1)) / max(1.0, float(jnp.max(jnp.abs(y0)))))


def _fmt(epochs, budget) -> str:
  return f">{budget:g}" if epochs is None else f"{epochs:g}"


def table(result: dict) -> str:
  """A markdown table of :func:`run`'s result."""
  cfg = result["config"]
  b = cfg["budget"]
  lines = [
      f"Parent: EAS start net ({cfg['parent']}), {result['parent_params']} parameters, "
      f"validation accuracy {result['parent_acc']:.4f} after {cfg['parent_epochs']:g} "
      f"epochs on {cfg['dataset']} ({cfg['parent_schedule']} learning rate "
      f"{cfg['learning_rate']:g}, SGD with momentum 0.9, batch {cfg['batch_size']}); "
      f"children train {b:g} epochs, learning rate cosine from "
      + (f"{cfg['learning_rate']:g} to 0." if cfg["child_lr"] is None else
         f"{cfg['learning_rate']:g} (scratch) or {cfg['child_lr']:g} (inherited) to 0."),
      "",
      "| child | params | max rel. change of logits | same, training mode "
      f"| val acc at inheritance | val acc after {cfg['chunk']:g} ep., inherited "
      "| epochs to parent acc, inherited | epochs to parent acc, scratch "
      f"| val acc after {b:g} ep., inherited | val acc after {b:g} ep., scratch |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in result["rows"]:
    first = r["curve_inherited"][0][1] if r["curve_inherited"] else float("nan")
    lines.append(
        f"| {r['child']} | {r['params']} | {r['preservation_error']:.1e} "
        f"| {r['preservation_error_train']:.1e} | {r['acc_at_inheritance']:.4f} "
        f"| {first:.4f} | {_fmt(r['epochs_inherited'], b)} "
        f"| {_fmt(r['epochs_scratch'], b)} | {r['acc_inherited']:.4f} "
        f"| {r['acc_scratch']:.4f} |")
  return "\n".join(lines)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tiny", action="store_true", help="the quick variant")
  parser.add_argument("--full", action="store_true",
                      help="full Fashion-MNIST (Debian idx files or TFDS)")
  parser.add_argument("--budget", type=float, help="epochs per child run")
  parser.add_argument("--parent-epochs", type=float, help="epochs of the parent")
  parser.add_argument("--seed", type=int)
  parser.add_argument("--parent-schedule", choices=("constant", "cosine"))
  parser.add_argument("--learning-rate", type=float)
  parser.add_argument("--child-lr", type=float,
                      help="learning rate of children from inherited weights")
  parser.add_argument("--stats-batch", type=int,
                      help="training images for inserted batch norms' statistics (0: none)")
  parser.add_argument("--json", help="also write the result (with curves) to this file")
  args = parser.parse_args(argv)
  cfg = VARIANTS["tiny" if args.tiny else "default"]
  changes = {"dataset": "fashion_mnist"} if args.full else {}
  for field, value in (("budget", args.budget), ("parent_epochs", args.parent_epochs),
                       ("seed", args.seed), ("parent_schedule", args.parent_schedule),
                       ("learning_rate", args.learning_rate), ("child_lr", args.child_lr),
                       ("stats_batch", args.stats_batch)):
    if value is not None:
      changes[field] = value
  cfg = dataclasses.replace(cfg, **changes)
  result = run(cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
  print(table(result))
  print(f"\n({result['seconds']:.0f} s)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
