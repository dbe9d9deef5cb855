"""The registry of morphisms that search strategies draw from.

``MORPHISMS[name]`` is a :class:`Morphism`: call it like the function it wraps,
``entry(net, key, batch=None, **kwargs)``, where ``batch`` (network inputs, e.g. a fixed
slice of the training images) reaches the morphisms that insert a batch norm
(``entry.uses_batch``), whose statistics it sets, and is ignored by the others;
``entry.exact`` says whether it preserves the function;
``entry.sample(key, net)`` draws keyword arguments that are valid for ``net`` (None where
the morphism applies nowhere in it). Samplers only propose arguments whose structural
plan succeeds, so a sampled call does not raise.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from nasjax.arch import Arch
from nasjax.network import Network, key_seed
from nasjax.ops import approximate, channels, exact, graph, net2net
from nasjax.ops.plan import try_plan

Sampler = Callable[[np.random.Generator, Arch], "dict | None"]

# The widths the Net2Wider sampler proposes: a ladder of steps of 1.33x to 1.5x. Children
# widened from the same width get the same width, so the networks of a search repeat
# shapes (and compiled programs: arrays, morphisms and, for equal architectures, train
# steps) instead of scattering over every count; from 8 up every width is a multiple of
# 4, from 32 up a multiple of 16, which vector units prefer. Pruning a ladder width to a
# half stays on it, and so does pruning a power of two to three quarters.
WIDTH_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768,
                1024, 1536, 2048, 3072, 4096)


# How many inputs search strategies pass as ``batch``: enough for a batch norm's statistics
# to be close to those of any training batch, few enough to cost little next to training.
MORPH_BATCH = 256


def next_width(c: int) -> int:
  """The smallest :data:`WIDTH_LADDER` width above ``c`` (``c`` times 1.5 past it)."""
  for w in WIDTH_LADDER:
    if w > c:
      return w
  return c + max(1, c // 2)


@dataclasses.dataclass(frozen=True)
class Morphism:
  """A registered morphism.

  Attributes:
    name: registry name (also the name of its planner).
    fn: ``fn(net, key, **kwargs) -> Network``.
    exact: whether the new network computes the same function (inference mode).
    sampler: ``sampler(rng, arch) -> kwargs | None``.
    uses_batch: whether ``fn`` takes ``batch=``: network inputs on which the batch norm it
      inserts takes its statistics, so that the function is kept in training mode too.
  """

  name: str
  fn: Callable[..., Network]
  exact: bool
  sampler: Sampler = dataclasses.field(repr=False)
  uses_batch: bool = False

  def __call__(self, net: Network, key, *, batch=None, **kwargs) -> Network:
    if self.uses_batch:
      kwargs["batch"] = batch
    return self.fn(net, key, **kwargs)

  def sample(self, key, net: Network | Arch) -> dict | None:
    """Random keyword arguments valid for ``net`` (or its arch), or None if there are none."""
    arch = net.arch if isinstance(net, Network) else net
    return self.sampler(np.random.default_rng(key_seed(key)), arch)


def _first_valid(name: str, arch: Arch, candidates) -> dict | None:
  for kwargs in candidates:
    if try_plan(name, arch, **kwargs) is not None:
      return kwargs
  return None


def _shuffled(rng, items):
  items = list(items)
  return [items[i] for i in rng.permutation(len(items))]


def _layers(arch: Arch) -> list[str]:
  return [n.name for n in arch.nodes_of(*channels.PRODUCERS) if n.name != arch.output]


def _sample_wider(rng, arch):
  def candidates():
    for node in _shuffled(rng, _layers(arch)):
      c = arch[node]["features"]
      yield {"node": node, "width": next_width(c)}
  return _first_valid("net2wider", arch, candidates())


def _sample_deeper(rng, arch):
  def candidates():
    for node in _shuffled(rng, [n for n in arch.topo_order if n != arch.output]):
      if len(arch.shape(node)) == 3:
        yield {"after": node, "kernel": int(rng.choice([1, 3])), "op": "conv"}
      else:
        yield {"after": node, "kernel": 1, "op": "dense"}
  return _first_valid("net2deeper", arch, candidates())


def _sample_insert(rng, arch):
  nodes = [n for n in arch.topo_order if n != arch.output and len(arch.shape(n)) == 3
           and graph.nonnegative(arch, n)]
  return _first_valid("insert_conv_bn_relu", arch,
                      ({"after": n, "kernel": int(rng.choice([1, 3]))}
                       for n in _shuffled(rng, nodes)))


def _sample_skip(rng, arch, tries: int = 64):
  order = arch.topo_order

  def candidates():
    dsts = [n for n in order if n != arch.output and arch[n].op != "input"]
    for dst in _shuffled(rng, dsts)[:tries]:
      below = graph.descendants(arch, dst)
      srcs = [s for s in order if s not in below]
      for src in _shuffled(rng, srcs)[:4]:
        yield {"src": src, "dst": dst, "mode": str(rng.choice(["add", "concat"]))}
  return _first_valid("add_skip", arch, candidates())


def _sample_widen_kernel(rng, arch):
  nodes = [n.name for n in arch.nodes_of("conv", "sep_conv") if max(n["kernel"]) < 7]
  return _first_valid("widen_kernel", arch,
                      ({"node": n, "kernel": max(arch[n]["kernel"]) + 2}
                       for n in _shuffled(rng, nodes)))


def _sample_remove_layer(rng, arch):
  nodes = [n.name for n in arch.nodes_of("conv", "sep_conv", "dense", "max_pool", "avg_pool",
                                         "batchnorm", "identity")]
  return _first_valid("remove_layer", arch, ({"node": n} for n in _shuffled(rng, nodes)))


def _sample_remove_skip(rng, arch):
  def candidates():
    for n in _shuffled(rng, [m.name for m in arch.nodes_of("add", "concat")]):
      for src in _shuffled(rng, dict.fromkeys(arch[n].inputs)):
        yield {"node": n, "src": src}
  return _first_valid("remove_skip", arch, candidates())


def _sample_prune(rng, arch):
  def candidates():
    for node in _shuffled(rng, _layers(arch)):
      c = arch[node]["features"]
      # LEMONADE §3.2 removes 1/2 or 1/4 of the filters.
      for keep in _shuffled(rng, [0.5, 0.75]):
        if int(c * keep) >= 1:
          yield {"node": node, "keep": keep}
  return _first_valid("prune_filters", arch, candidates())


def _sample_sepconv(rng, arch):
  nodes = [n.name for n in arch.nodes_of("conv") if n["groups"] == 1 and max(n["kernel"]) > 1]
  return _first_valid("to_sepconv", arch, ({"node": n} for n in _shuffled(rng, nodes)))


MORPHISMS: dict[str, Morphism] = {m.name: m for m in (
    Morphism("net2wider", net2net.net2wider, True, _sample_wider),
    Morphism("net2deeper", net2net.net2deeper, True, _sample_deeper, uses_batch=True),
    Morphism("insert_conv_bn_relu", exact.insert_conv_bn_relu, True, _sample_insert,
             uses_batch=True),
    Morphism("add_skip", exact.add_skip, True, _sample_skip),
    Morphism("widen_kernel", exact.widen_kernel, True, _sample_widen_kernel),
    Morphism("remove_layer", approximate.remove_layer, False, _sample_remove_layer),
    Morphism("remove_skip", approximate.remove_skip, False, _sample_remove_skip),
    Morphism("prune_filters", approximate.prune_filters, False, _sample_prune),
    Morphism("to_sepconv", approximate.to_sepconv, False, _sample_sepconv),
)}

EXACT = tuple(name for name, m in MORPHISMS.items() if m.exact)
APPROXIMATE = tuple(name for name, m in MORPHISMS.items() if not m.exact)

__all__ = ["Morphism", "MORPHISMS", "EXACT", "APPROXIMATE", "WIDTH_LADDER", "next_width",
           "MORPH_BATCH"]
