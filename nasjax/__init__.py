"""nasjax: neural architecture search in JAX.

The subpackages :mod:`nasjax.models`, :mod:`nasjax.ops` and :mod:`nasjax.search` are
attributes of ``nasjax`` imported on first access, so ``import nasjax`` stays light.
"""

import importlib

from nasjax import data, runtime, train, viz
from nasjax.arch import Arch, Node, sequential
from nasjax.layers import OPS
from nasjax.network import (
                            Network,
                            apply,
                            apply_train,
                            count_params,
                            flops,
                            forward,
                            init,
                            latency,
                            load,
                            param_shapes,
                            save,
                            state_shapes,
                            xla_flops,
)
from nasjax.train import History, TrainConfig, evaluate, fit

__version__ = "0.1.0"

runtime.enable_compilation_cache()
runtime.configure_cpu_devices()
runtime.start_compile_clock()

__all__ = ["Arch", "Node", "sequential", "OPS", "Network", "apply", "apply_train",
           "count_params", "flops", "forward", "init", "latency", "load",
           "param_shapes", "save", "state_shapes", "xla_flops", "data", "train", "TrainConfig",
           "History", "fit", "evaluate", "viz", "models", "ops", "search", "__version__"]

_LAZY_SUBPACKAGES = ("models", "ops", "search")


def __getattr__(name: str):
  # PEP 562: importing the subpackage also binds it as an attribute of this module, so
  # this runs once per subpackage.
  if name in _LAZY_SUBPACKAGES:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY_SUBPACKAGES))
