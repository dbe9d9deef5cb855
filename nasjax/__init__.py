"""nasjax: neural architecture search in JAX."""

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
           "History", "fit", "evaluate", "viz", "__version__"]
