"""The ``nasjax`` command line (also ``python -m nasjax``).

Subcommands: ``info`` (versions, devices, cache), ``train`` (train one architecture),
``data get`` (download and build the benchmark tables, :mod:`nasjax.search.table_sources`)
and the search commands ``search``, ``resume``, ``report`` and ``bench`` from
:mod:`nasjax.search.cli`.

Bad input (an unknown name, a bad value, a path that cannot be read or written) is a
``ValueError`` or ``OSError``; :func:`main` prints it as one line,
``nasjax COMMAND: error: MESSAGE``, and exits with status 2, as argparse does for bad
arguments. Other exceptions are bugs and propagate with their traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shlex
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

# The seeds jax.random.key takes (int64); the data split's NumPy generator takes no negative.
SEED_RANGE = (-2**63, 2**63 - 1)


def check_seed(seed: int, flag: str = "--seed", count: int = 1, low: int = SEED_RANGE[0]
               ) -> None:
  """Raise ``ValueError`` unless seeds ``seed .. seed + count - 1`` lie in
  ``[low, 2**63 - 1]``: a seed out of range would fail only after a run has begun."""
  high = SEED_RANGE[1] - (count - 1)
  if not low <= seed <= high:
    lo = "0" if low == 0 else "-2**63"
    hi = (f"2**63 - {count} (its {count} runs use seeds {flag} to {flag} + {count - 1})"
          if count > 1 else "2**63 - 1")
    raise ValueError(f"{flag} must be an integer from {lo} to {hi}, got {seed}")


def check_output_dir(path: str | os.PathLike, flag: str) -> None:
  """Raise ``ValueError`` unless ``path`` is a directory or one can be made there.

  Nothing is created: the check runs before any work whose result would be written.
  """
  p = Path(path)
  if p.exists() and not p.is_dir():
    raise ValueError(f"{flag} {str(path)!r} is a file, not a directory")
  # The nearest existing ancestor must be a writable directory for makedirs to work.
  for parent in (p, *p.absolute().parents):
    if parent.exists():
      if not parent.is_dir():
        raise ValueError(f"{flag} {str(path)!r} lies under the file {str(parent)!r}")
      if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {str(path)!r}: {str(parent)!r} is not writable")
      return


def error_line(e: BaseException) -> str:
  """The message of ``e`` on one line (an ``OSError`` as ``path: reason``)."""
  if isinstance(e, OSError) and e.strerror and e.filename is not None:
    msg = f"{os.fsdecode(e.filename)}: {e.strerror}"
  elif isinstance(e, OSError) and e.strerror:
    msg = e.strerror  # without the "[Errno N]" that str() puts first
  else:
    msg = str(e) or type(e).__name__
  return " ".join(msg.split())


def run_command(args) -> int:
  """Run the command of parsed ``args``; bad input becomes one line on stderr, exit 2, and
  each warning (a damaged checkpoint set aside, say) one line too."""
  def show(message, category, filename, lineno, file=None, line=None):
    print(f"nasjax {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

  with warnings.catch_warnings():
    warnings.showwarning = show
    try:
      return int(args.func(args) or 0)
    except (ValueError, OSError) as e:
      print(f"nasjax {args.command}: error: {error_line(e)}", file=sys.stderr)
      return 2


def _version(pkg: str) -> str:
  try:
    return metadata.version(pkg)
  except metadata.PackageNotFoundError:
    return "not installed"


def cmd_info(args) -> int:
  import jax

  import nasjax
  from nasjax import runtime

  info = {
      "nasjax": nasjax.__version__,
      "python": platform.python_version(),
      **{p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "numpy",
                                  "tensorflow-datasets")},
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "local_device_count": jax.local_device_count(),
      "process_count": jax.process_count(),
      "compilation_cache": runtime.cache_dir() or "off",
  }
  if args.json:
    print(json.dumps(info, indent=2))
  else:
    width = max(map(len, info))
    for k, v in info.items():
      print(f"{k:<{width}}  {', '.join(v) if isinstance(v, list) else v}")
  return 0


# Keywords of every model family that the data set decides.
DATA_KEYWORDS = ("input_shape", "num_classes")


def _family_args(args) -> dict:
  """The checked ``--family`` keyword arguments (``{}`` with ``--arch``)."""
  from nasjax import models

  if args.arch:
    if args.family_args:
      raise ValueError("--family-args applies to --family, not to --arch")
    return {}
  if args.family not in models.FAMILIES:
    raise ValueError(f"unknown --family {args.family!r}; choose from {sorted(models.FAMILIES)}")
  try:
    kwargs = json.loads(args.family_args) if args.family_args else {}
  except json.JSONDecodeError as e:
    raise ValueError(f"--family-args is not valid JSON ({e}): {args.family_args!r}") from None
  if not isinstance(kwargs, dict):
    raise ValueError(f"--family-args must be a JSON object, got {args.family_args!r}")
  params = inspect.signature(models.FAMILIES[args.family]).parameters
  for k in kwargs:
    if k in DATA_KEYWORDS:
      raise ValueError(f"--family-args key {k!r} comes from --dataset; leave it out")
    if k not in params:
      known = sorted(set(params) - set(DATA_KEYWORDS))
      raise ValueError(f"--family-args key {k!r} is not an option of family {args.family!r}; "
                       f"it takes {known}")
  return kwargs


def _load_arch(args, kwargs, input_shape, num_classes):
  from nasjax import models
  from nasjax.arch import Arch

  if args.arch:
    with open(args.arch) as f:
      text = f.read()
    try:
      arch = Arch.from_json(text)
    except ValueError as e:
      raise ValueError(f"--arch {args.arch!r}: {e}") from None
    if arch.input_shape != tuple(input_shape):
      raise ValueError(f"the input shape {arch.input_shape} of --arch {args.arch!r} does not "
                       f"match the images of --dataset {args.dataset!r}, {tuple(input_shape)}")
    return arch
  return models.FAMILIES[args.family](input_shape=tuple(input_shape),
                                      num_classes=num_classes, **kwargs)


def cmd_train(args) -> int:
  import jax

  import nasjax
  from nasjax import data as data_lib
  from nasjax import train as train_lib

  # Every argument is checked before the data is loaded and the network trained.
  check_seed(args.seed, low=0)
  if args.out:
    check_output_dir(args.out, "--out")
  data_lib.check_options(args.dataset, limit=args.limit)
  kwargs = _family_args(args)
  config = train_lib.TrainConfig(
      epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
      learning_rate=args.lr, weight_decay=args.weight_decay, augment=args.augment,
      dtype=args.dtype)
  ds = data_lib.load(args.dataset, limit=args.limit, seed=args.seed,
                     data_dir=args.data_dir)
  arch = _load_arch(args, kwargs, ds.input_shape, ds.num_classes)
  key_init, key_fit = jax.random.split(jax.random.key(args.seed))
  net = nasjax.init(arch, key_init)
  t0 = time.perf_counter()
  net, hist = train_lib.fit(net, ds, config, key_fit)
  seconds = time.perf_counter() - t0
  val = train_lib.evaluate(net, ds.x_val, ds.y_val)
  test = train_lib.evaluate(net, ds.x_test, ds.y_test)
  result = {
      "dataset": ds.name, "status": hist.status, "epochs": args.epochs,
      "val_accuracy": val["accuracy"], "test_accuracy": test["accuracy"],
      "params": nasjax.count_params(arch), "flops": nasjax.flops(arch),
      "latency_ms": 1e3 * nasjax.latency(net), "train_seconds": seconds,
      "compile_seconds": hist.compile_seconds,
  }
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    nasjax.save(net, os.path.join(args.out, "net.npz"), metadata=result)
    with open(os.path.join(args.out, "arch.json"), "w") as f:
      f.write(arch.to_json(indent=1))
    result["saved"] = os.path.join(args.out, "net.npz")
  if args.json:
    print(json.dumps(result))
  else:
    for k, v in result.items():
      print(f"{k:<16} {v:.4f}" if isinstance(v, float) else f"{k:<16} {v}")
  return 0 if hist.status == "ok" else 1


def cmd_data_get(args) -> int:
  from nasjax.search import table_sources, tabular

  # Every argument is checked before anything is downloaded.
  names = [table_sources.table(name).name for name in args.tables]
  if not args.timeout > 0:
    raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
  out = Path(args.dir) if args.dir else table_sources.default_dir()
  check_output_dir(out, "--dir")
  table_sources.get(names, out, timeout=args.timeout)
  print(f"export {tabular.ENV_VAR}={shlex.quote(str(out.resolve()))}")
  return 0


def _add_data_parser(sub) -> None:
  p = sub.add_parser("data", help="the benchmark tables (NAS-Bench-201, NAS-Bench-Macro)")
  actions = p.add_subparsers(dest="action", metavar="ACTION")
  actions.required = True
  p = actions.add_parser("get", help="download the public sources of benchmark tables, check "
                         "them and build the tables")
  p.add_argument("tables", nargs="+", metavar="TABLE", help="nb201 and/or macro")
  p.add_argument("--dir", help="the data directory to write (default $NASJAX_DATA_DIR, else "
                 "$XDG_DATA_HOME/nasjax or ~/.local/share/nasjax)")
  p.add_argument("--timeout", type=float, default=60.0,
                 help="seconds to wait for each server response")
  p.set_defaults(func=cmd_data_get)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="nasjax", description="Neural architecture search in JAX.")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True

  p = sub.add_parser("info", help="versions, devices and the compilation cache")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  p.set_defaults(func=cmd_info)

  p = sub.add_parser("train", help="train one architecture and report its metrics")
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--arch", help="architecture JSON file (Arch.to_json)")
  src.add_argument("--family", help="model family name, e.g. plain_cnn, resnet, nb201")
  p.add_argument("--family-args", help='JSON keyword arguments of the family, e.g. '
                 '\'{"blocks": [[16], [32]]}\'')
  p.add_argument("--dataset", default="fashion_mnist_small")
  p.add_argument("--data-dir", default=None, help="dataset directory (tfds data_dir)")
  p.add_argument("--limit", type=int, default=None, help="use at most this many training images")
  p.add_argument("--epochs", type=float, default=1.0)
  p.add_argument("--batch-size", type=int, default=128)
  p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
  p.add_argument("--lr", type=float, default=0.05)
  p.add_argument("--weight-decay", type=float, default=5e-4)
  p.add_argument("--augment", action="store_true", help="random crop and flip")
  p.add_argument("--dtype", default="float32", help="compute dtype (bfloat16 on accelerators)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", help="directory to save the trained network")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  p.set_defaults(func=cmd_train)
  _add_data_parser(sub)

  try:
    from nasjax.search import cli as search_cli
  except ImportError as e:  # the package is incomplete; keep the core commands usable
    if "nasjax.search" not in str(e):
      raise
  else:
    search_cli.register(sub)
  return parser


def main(argv=None) -> int:
  return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
