"""How a morphism runs: a structural plan in Python, a parameter transform under ``jit``.

A morphism has two halves. The structural half turns the old :class:`~nasjax.Arch` and
the morphism's structural arguments (node names, widths, kernel sizes) into the new
Arch and checks them; it is plain Python on hashable data and is cached. The parameter
half is a pure function ``(params, state, key, **dynamic) -> (params, state)`` of the
old arrays; it is jit-compiled with the old Arch and the structural arguments static,
so applying the same morphism to another network of the same structure reuses the
compiled function. Random choices (which channels Net2Wider copies) are drawn from the
key inside the compiled function, so a new key never recompiles either.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nasjax import runtime
from nasjax.arch import Arch
from nasjax.network import Network, param_shapes, state_shapes

Transform = Callable[..., tuple[dict, dict]]


@dataclasses.dataclass(frozen=True)
class Plan:
  """The structural result of a morphism and the parameter transform that goes with it.

  Attributes:
    arch: the new architecture.
    transform: ``(params, state, key, **dynamic) -> (params, state)``; receives the old
      arrays of the ``touched`` nodes and returns the arrays of the ``touched`` nodes
      of the new architecture; traced under ``jax.jit``.
    touched: the nodes whose arrays the transform reads or writes. Every other node of
      the new architecture keeps its old arrays as they are, without passing through
      the compiled function (which stays small however big the network).
  """

  arch: Arch
  transform: Transform
  touched: frozenset = frozenset()


_PLANNERS: dict[str, Callable[..., Plan]] = {}


def planner(name: str):
  """Register ``fn(arch, **static) -> Plan`` as the structural half of morphism ``name``."""
  def register(fn):
    _PLANNERS[name] = fn
    return fn
  return register


def _hashable(value):
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.floating):
    return float(value)
  return value


def static_key(**static) -> tuple:
  """The morphism's structural arguments as a sorted, hashable tuple."""
  return tuple(sorted((k, _hashable(v)) for k, v in static.items()))


@functools.lru_cache(maxsize=1024)
def plan(name: str, arch: Arch, static: tuple) -> Plan:
  """The (cached) plan of morphism ``name`` on ``arch``; raises ValueError for bad arguments."""
  return _PLANNERS[name](arch, **dict(static))


def try_plan(name: str, arch: Arch, **static) -> Plan | None:
  """The plan, or None where the morphism does not apply with these arguments."""
  try:
    return plan(name, arch, static_key(**static))
  except ValueError:
    return None


def _check_tree(what: str, tree: dict, shapes: dict) -> None:
  # A mismatch here is a bug in a planner, not a user error: fail loudly.
  got = {n: {k: tuple(v.shape) for k, v in d.items()} for n, d in tree.items()}
  if got != shapes:
    bad = sorted(set(got) ^ set(shapes)) or sorted(n for n in got if got[n] != shapes[n])
    raise RuntimeError(f"morphism produced {what} that do not match the new architecture "
                       f"at node(s) {bad[:5]}: got {[got.get(n) for n in bad[:5]]}, want "
                       f"{[shapes.get(n) for n in bad[:5]]}")


def _run(params, state, key, dynamic, *, name: str, arch: Arch, static: tuple):
  p = plan(name, arch, static)
  new_params, new_state = p.transform(params, state, key, **dynamic)

  def touched(tree):
    return {n: {k: jnp.asarray(v, jnp.float32) for k, v in d.items()}
            for n, d in tree.items() if d and n in p.touched and n in p.arch}

  return touched(new_params), touched(new_state)


_STATIC = ("name", "arch", "static")
_run_jit = jax.jit(_run, static_argnames=_STATIC)


@functools.cache
def _run_jit_cpu():
  # A transform runs once per network on small arrays, so on CPU compiling it quickly
  # matters more than the speed of the code: skip XLA's backend optimisations there.
  # Compiler options are for top-level programs only: inside a caller's transformation
  # morph() traces _run_jit, which becomes part of the caller's program.
  return jax.jit(_run, static_argnames=_STATIC,
                 compiler_options={"xla_backend_optimization_level": 0,
                                   **(runtime.compiler_options() or {})})


def compiled_count() -> int:
  """How many parameter transforms have been compiled so far (one per structure)."""
  return _run_jit._cache_size() + _run_jit_cpu()._cache_size()


def morph(name: str, net: Network, key, dynamic: dict[str, Any] | None = None,
          **static) -> Network:
  """Apply morphism ``name`` to ``net``.

  Composes with JAX transformations: inside the caller's ``jax.jit``, ``grad``, ``vmap``
  or ``scan`` the parameter transform is traced into the caller's program.

  Args:
    name: a registered planner.
    net: the network; not modified.
    key: a ``jax.random`` key for the morphism's random choices.
    dynamic: numeric options passed to the transform as traced scalars (no recompile).
    **static: structural arguments (hashable; part of the compilation cache key).

  Returns:
    The new network.
  """
  if not isinstance(net, Network):
    raise ValueError(f"{name}: expected a nasjax.Network, got {type(net).__name__}")
  static_t = static_key(**static)
  p = plan(name, net.arch, static_t)  # structural errors surface here, before tracing
  dyn = {k: jnp.asarray(v, jnp.float32) for k, v in (dynamic or {}).items()}
  sub_params = {n: d for n, d in net.params.items() if n in p.touched}
  sub_state = {n: d for n, d in net.state.items() if n in p.touched}
  run = _run_jit_cpu() if runtime.top_level() and jax.default_backend() == "cpu" else _run_jit
  new_params, new_state = run(sub_params, sub_state, key, dyn, name=name, arch=net.arch,
                              static=static_t)
  pshapes, sshapes = param_shapes(p.arch), state_shapes(p.arch)
  params = {n: new_params.get(n, {}) if n in p.touched else net.params[n] for n in pshapes}
  state = {n: new_state.get(n, {}) if n in p.touched else net.state[n] for n in sshapes}
  _check_tree("parameters", params, pshapes)
  _check_tree("state", state, sshapes)
  return Network(p.arch, params, state)


__all__ = ["Plan", "planner", "plan", "try_plan", "static_key", "morph", "compiled_count"]
