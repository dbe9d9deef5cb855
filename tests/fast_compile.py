"""The XLA settings of the test session.

The suite compiles hundreds of small programs and runs most of them for a few steps, so
most of its time is XLA's CPU backend compiling, much of that in LLVM. ``conftest.py``
turns LLVM's optimisation off (``--xla_backend_optimization_level=0``) for the test
processes and the subprocesses that inherit their environment, before any test starts
JAX: the programs compute the same functions up to floating-point rounding, and the
suite takes about 0.8x the time (``benchmarks/README.md``, "Test suite"). A level given
in ``XLA_FLAGS`` already is kept. Tests that give a subprocess an ``XLA_FLAGS`` of their
own (several CPU devices) replace the setting there.

Tests whose figures were measured with XLA's defaults and train for hundreds of steps
(the planted-solution rankings) run in a fresh process with the ``XLA_FLAGS`` the
session started with (:func:`xla_defaults`). This concerns the tests only: nasjax sets
no compiler option on the functions users call, and the benchmarks run with XLA's
defaults.
"""

import os

FLAG = "--xla_backend_optimization_level"
# Where the session keeps XLA_FLAGS as it found them, for its workers and subprocesses.
SESSION = "NASJAX_TEST_SESSION_XLA_FLAGS"


def environ(base: dict | None = None) -> dict:
  """``base`` (default: this process's environment) with LLVM optimisation level 0 added
  to ``XLA_FLAGS``, unless it sets a level already."""
  env = dict(os.environ if base is None else base)
  if FLAG not in env.get("XLA_FLAGS", ""):
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FLAG}=0".strip()
  return env


def start_session() -> None:
  """Remember ``XLA_FLAGS`` as the session found them (a pytest-xdist worker keeps what
  the controller, whose environment it inherits, remembered), then set :func:`environ`'s."""
  if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault(SESSION, os.environ.get("XLA_FLAGS", ""))
  else:
    os.environ[SESSION] = os.environ.get("XLA_FLAGS", "")
  os.environ["XLA_FLAGS"] = environ()["XLA_FLAGS"]


def xla_defaults(base: dict | None = None) -> dict:
  """``base`` (default: this process's environment) with ``XLA_FLAGS`` as the session
  found them."""
  env = dict(os.environ if base is None else base)
  flags = env.get(SESSION, env.get("XLA_FLAGS", ""))
  env.pop("XLA_FLAGS", None)
  if flags:
    env["XLA_FLAGS"] = flags
  return env
