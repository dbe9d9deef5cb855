"""Structural helpers shared by the morphisms: rewiring, reachability, sign analysis."""

from __future__ import annotations

from typing import Iterable, Sequence

import jax.numpy as jnp
import numpy as np

from nasjax.arch import Arch, Node


def check_node(arch: Arch, name, what: str, arg: str = "node") -> Node:
  """The node ``name``, or a ValueError naming the unknown node."""
  if not isinstance(name, str) or name not in arch:
    raise ValueError(f"{what}: unknown {arg} {name!r}; the architecture has no such node")
  return arch[name]


def check_int(value, what: str, arg: str, low: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{what}: {arg} must be an int >= {low}, got {value!r}")
  return int(value)


def kernel_pair(kernel, what: str) -> tuple[int, int]:
  """``kernel`` (an int or an ``(h, w)`` pair of positive ints) as a pair."""
  pair = tuple(kernel) if isinstance(kernel, (tuple, list)) else (kernel, kernel)
  if len(pair) != 2:
    raise ValueError(f"{what}: kernel must be an int or a pair, got {kernel!r}")
  return tuple(check_int(k, what, "kernel") for k in pair)


def fresh_names(arch: Arch, *bases: str) -> list[str]:
  """``arch.fresh_name`` of each base; the names must come out distinct."""
  out = [arch.fresh_name(base) for base in bases]
  if len(set(out)) != len(out):
    raise ValueError(f"new node names collide: {out}")
  return out


def rewire(nodes: Iterable[Node], old: str, new: str, exclude: Sequence[str] = ()) -> list[Node]:
  """``nodes`` with every input ``old`` replaced by ``new``, except in nodes ``exclude``."""
  out = []
  for n in nodes:
    if old in n.inputs and n.name not in exclude:
      n = n.replace(inputs=tuple(new if i == old else i for i in n.inputs))
    out.append(n)
  return out


def descendants(arch: Arch, name: str) -> set[str]:
  """``name`` and every node that reads it, directly or not."""
  seen, stack = set(), [name]
  while stack:
    n = stack.pop()
    if n not in seen:
      seen.add(n)
      stack.extend(arch.consumers(n))
  return seen


def prune_dead(nodes: Sequence[Node], output: str) -> list[Node]:
  """``nodes`` without those from which no path leads to ``output``."""
  by_name = {n.name: n for n in nodes}
  live, stack = set(), [output]
  while stack:
    n = stack.pop()
    if n not in live:
      live.add(n)
      stack.extend(by_name[n].inputs)
  return [n for n in nodes if n.name in live]


def upstream(arch: Arch, name: str) -> Arch:
  """The part of ``arch`` that computes node ``name``: its ancestors, ``name`` the output."""
  return Arch(prune_dead(arch.nodes, name), name)


def nonnegative(arch: Arch, name: str) -> bool:
  """Whether node ``name``'s output is >= 0 for every input (a ReLU, or pooled ReLUs ...)."""
  n = arch[name]
  if n.op in ("relu", "zero"):
    return True
  if n.op in ("max_pool", "avg_pool", "gap", "identity", "flatten", "crop", "add", "concat"):
    return all(nonnegative(arch, i) for i in n.inputs)
  return False


def same_pad_lo(size: int, kernel: int, stride: int, dilation: int) -> int:
  """Padding before the first element of a SAME-padded conv (XLA's convention)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
  return total // 2


def identity_kernel(arch: Arch, name: str, kernel: tuple[int, int], channels: int):
  """A ``(kh, kw, C, C)`` conv kernel that copies its input, for a stride-1 conv on ``name``."""
  h, w = arch.shape(name)[:2]
  ph = same_pad_lo(h, kernel[0], 1, 1)
  pw = same_pad_lo(w, kernel[1], 1, 1)
  k = jnp.zeros(tuple(kernel) + (channels, channels), jnp.float32)
  c = jnp.arange(channels)
  return k.at[ph, pw, c, c].set(1.0)


def insert_identity(arch: Arch, after: str, name: str) -> Arch:
  """``arch`` with a producer ``name`` (1x1 conv or dense) on ``after`` taking its readers.

  The producer is the anchor of a channel remap: remapping its filters remaps the channels
  that ``after``'s former readers see, without touching ``after`` itself.
  """
  shape = arch.shape(after)
  if len(shape) == 3:
    node = Node(name, "conv", [after], features=shape[-1], kernel=1)
  else:
    node = Node(name, "dense", [after], features=shape[-1], use_bias=False)
  return arch.insert_after(after, node)


def identity_params(arch: Arch, name: str) -> dict:
  """Arrays of the producer made by :func:`insert_identity`."""
  c = arch[name]["features"]
  eye = jnp.eye(c, dtype=jnp.float32)
  return {"kernel": eye[None, None] if arch[name].op == "conv" else eye}


def keep_only(arch: Arch, params: dict, state: dict) -> tuple[dict, dict]:
  """``params``/``state`` restricted to the nodes of ``arch``."""
  return ({k: v for k, v in params.items() if k in arch},
          {k: v for k, v in state.items() if k in arch})


__all__ = ["check_node", "check_int", "kernel_pair", "fresh_names", "rewire", "descendants",
           "prune_dead", "upstream", "nonnegative", "same_pad_lo", "identity_kernel",
           "insert_identity", "identity_params", "keep_only"]
