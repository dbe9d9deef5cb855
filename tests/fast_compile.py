"""The environment of test subprocesses that compile many small programs and run each
for a step or two (smoke searches killed and resumed, the GPU check's quick mode).

XLA's CPU backend then spends most of the time in LLVM; with its optimisation level 0 these
processes take about a fifth less time (``benchmarks/README.md``, "Test suite"). The
programs compute the same functions; what the tests compare (histories, checkpoints)
comes from runs with the same setting. In-process tests keep XLA's defaults: their
training runs hundreds of steps, which level 0 slows down.
"""

import os

FLAG = "--xla_backend_optimization_level"


def environ(base: dict | None = None) -> dict:
  """``base`` (default: this process's environment) with LLVM optimisation level 0 added
  to ``XLA_FLAGS``, unless it sets a level already."""
  env = dict(os.environ if base is None else base)
  if FLAG not in env.get("XLA_FLAGS", ""):
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FLAG}=0".strip()
  return env
