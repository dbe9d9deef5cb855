"""LEMONADE's approximate network morphisms (Elsken et al., ICLR 2019, §3.2).

Network morphisms only grow a network. The approximate morphisms shrink it while
keeping as much of the learned function as a direct initialisation allows; the child
is then distilled from its parent (:func:`nasjax.ops.distill`) to recover the rest.

* :func:`remove_layer` removes a shape-preserving layer (a conv-BN-ReLU unit or any
  single node whose output has its input's shape).
* :func:`remove_skip` disconnects one input of an ``add`` or ``concat``.
* :func:`prune_filters` keeps the filters of a layer with the largest L1 norms.
* :func:`to_sepconv` replaces a conv by a depthwise-separable conv fitted to it
  (:func:`lowrank_sepconv`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nasjax.arch import Arch, Node
from nasjax.network import Network
from nasjax.ops import channels, graph
from nasjax.ops.plan import Plan, morph, planner


# ----------------------------------------------------------------------- remove layer
def _unit(arch: Arch, node: str) -> list[str]:
  """``node`` and, for a producer, the BN and ReLU that follow it alone."""
  unit = [node]
  if arch[node].op in channels.PRODUCERS:
    for op in ("batchnorm", "relu"):
      readers = arch.consumers(unit[-1])
      if unit[-1] == arch.output or len(readers) != 1 or arch[readers[0]].op != op:
        break
      unit.append(readers[0])
  return unit


@planner("remove_layer")
def _plan_remove_layer(arch: Arch, *, node: str) -> Plan:
  what = f"remove_layer(node={node!r})"
  n = graph.check_node(arch, node, "remove_layer")
  if n.op == "input":
    raise ValueError(f"{what}: the input node cannot be removed")
  if len(n.inputs) != 1:
    raise ValueError(f"{what}: node {node!r} ({n.op}) has {len(n.inputs)} inputs; use "
                     "remove_skip to disconnect a merge's input")
  unit = _unit(arch, node)
  src = n.inputs[0]
  if arch.shape(unit[-1]) != arch.shape(src):
    raise ValueError(f"{what}: the layer maps {arch.shape(src)} to {arch.shape(unit[-1])}; "
                     "only a layer whose output has its input's shape can be removed")
  output = src if unit[-1] == arch.output else arch.output
  if arch[output].op == "input":
    raise ValueError(f"{what}: removing it would leave the network without layers")
  nodes = [m for m in graph.rewire(arch.nodes, unit[-1], src) if m.name not in unit]
  new = Arch(nodes, output)

  def transform(params, state, key):
    return graph.keep_only(new, params, state)

  return Plan(new, transform)


def remove_layer(net: Network, key, *, node: str) -> Network:
  """Remove layer ``node``: its readers read its input instead.

  A conv, sep_conv or dense node is removed together with the BN and ReLU that follow it
  (and read nothing else), as LEMONADE removes a conv-BN-ReLU unit; any other
  single-input node (a BN, a pooling with stride 1, ...) is removed alone. The removed
  part must map its input's shape to the same shape.

  Args:
    net: the network.
    key: PRNG key (unused).
    node: the layer to remove.

  Raises:
    ValueError: unknown node, the input node, a merge node, a shape-changing layer.
  """
  return morph("remove_layer", net, key, node=node)


# ------------------------------------------------------------------------ remove skip
@planner("remove_skip")
def _plan_remove_skip(arch: Arch, *, node: str, src: str) -> Plan:
  what = f"remove_skip(node={node!r}, src={src!r})"
  n = graph.check_node(arch, node, "remove_skip")
  if n.op not in ("add", "concat"):
    raise ValueError(f"{what}: node {node!r} is a {n.op!r}, not an add or concat")
  if src not in n.inputs:
    raise ValueError(f"{what}: {src!r} is not an input of {node!r} (inputs {list(n.inputs)})")
  drop = len(n.inputs) - 1 - n.inputs[::-1].index(src)
  rest = n.inputs[:drop] + n.inputs[drop + 1:]
  if n.op == "add":
    if len(rest) > 1:
      nodes = [m.replace(inputs=rest) if m.name == node else m for m in arch.nodes]
      output = arch.output
    else:
      nodes = [m for m in graph.rewire(arch.nodes, node, rest[0]) if m.name != node]
      output = rest[0] if arch.output == node else arch.output
    new = Arch(graph.prune_dead(nodes, output), output)

    def transform(params, state, key):
      return graph.keep_only(new, params, state)

    return Plan(new, transform)
  return _plan_drop_concat_input(arch, node, drop, rest, what)


def _plan_drop_concat_input(arch, node, drop, rest, what) -> Plan:
  widths = [arch.shape(i)[-1] for i in arch[node].inputs]
  start = sum(widths[:drop])
  keep = [c for c in range(sum(widths)) if not start <= c < start + widths[drop]]
  (anchor,) = graph.fresh_names(arch, f"{node}_anchor")
  anchored = graph.insert_identity(arch, node, anchor)
  rp = channels.plan_remap(anchored, anchor, len(keep), what)
  g = channels.channel_graph(anchored)
  if any(g.space[i] in rp.sizes for i in rest):
    raise ValueError(f"{what}: the concatenation's readers share channels with its other "
                     "inputs; dropping an input would change them")
  target = rest[0] if len(rest) == 1 else node
  nodes = [m for m in graph.rewire(rp.arch.nodes, anchor, target) if m.name != anchor]
  if len(rest) == 1:
    nodes = [m for m in nodes if m.name != node]
  else:
    nodes = [m.replace(inputs=rest) if m.name == node else m for m in nodes]
  output = target if rp.arch.output == anchor else rp.arch.output
  new = Arch(graph.prune_dead(nodes, output), output)

  def transform(params, state, key):
    params = dict(params, **{anchor: graph.identity_params(anchored, anchor)})
    seed = channels.Remap(jnp.asarray(keep), jnp.ones((len(keep),)))
    params, state = channels.apply_remap(rp, params, state, seed)
    return graph.keep_only(new, params, state)

  return Plan(new, transform, rp.touched | {anchor})


def remove_skip(net: Network, key, *, node: str, src: str) -> Network:
  """Disconnect input ``src`` of the merge ``node`` (an add or a concat).

  An add with one input left is removed (its readers read that input). For a concat,
  every producer reading it, directly or through channel-wise ops and adds, loses the
  weights of the dropped channels. Nodes that no longer reach the output are removed.

  Args:
    net: the network.
    key: PRNG key (unused).
    node: an ``add`` or ``concat`` node.
    src: one of its inputs.

  Raises:
    ValueError: unknown node, not a merge, ``src`` not among its inputs.
  """
  return morph("remove_skip", net, key, node=node, src=src)


# ----------------------------------------------------------------------------- pruning
def filter_norms(arch: Arch, params: dict, nodes) -> jax.Array:
  """Summed L1 norm of each output filter of the producers ``nodes``: shape ``(C,)``."""
  total = 0.0
  for name in nodes:
    p = params[name]
    w = p["pointwise"] if arch[name].op == "sep_conv" else p["kernel"]
    total = total + jnp.sum(jnp.abs(w.reshape(-1, w.shape[-1])), axis=0)
  return total


@planner("prune_filters")
def _plan_prune(arch: Arch, *, node: str, keep: float = 0.5) -> Plan:
  what = f"prune_filters(node={node!r})"
  n = graph.check_node(arch, node, "prune_filters")
  if n.op not in channels.PRODUCERS:
    raise ValueError(f"{what}: node {node!r} is a {n.op!r}; only conv, sep_conv and dense "
                     "layers have filters to prune")
  if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 1:
    raise ValueError(f"{what}: keep must be a fraction in (0, 1), got {keep!r}")
  old = n["features"]
  kept = int(old * keep)
  if kept < 1:
    raise ValueError(f"{what}: keeping {keep} of the node's {old} filters leaves zero "
                     "filters")
  rp = channels.plan_remap(arch, node, kept, what)
  roots = rp.seed_roots

  def transform(params, state, key):
    norms = filter_norms(arch, params, roots)
    idx = jnp.sort(jax.lax.top_k(norms, kept)[1])
    return channels.apply_remap(rp, params, state, channels.Remap(idx, jnp.ones((kept,))))

  return Plan(rp.arch, transform, rp.touched)


def prune_filters(net: Network, key, *, node: str, keep: float = 0.5) -> Network:
  """Keep the ``floor(keep * C)`` filters of layer ``node`` with the largest L1 norms.

  Every producer sharing ``node``'s channels through adds is pruned to the same filters
  (ranked by their summed L1 norms); batch norms are sliced and readers lose the input
  slices of the pruned channels. LEMONADE §3.2 removes 1/2 or 1/4 of a conv's filters:
  ``keep=0.5`` or ``keep=0.75``, the two fractions the registry's sampler draws.

  Args:
    net: the network.
    key: PRNG key (unused: the choice is by norm).
    node: a conv, sep_conv or dense node that is not the network output.
    keep: the fraction of filters kept, in (0, 1).

  Raises:
    ValueError: unknown node, not a layer with filters, a fraction that keeps no filter.
  """
  return morph("prune_filters", net, key, node=node, keep=keep)


# ---------------------------------------------------------------------- separable conv
def lowrank_sepconv(kernel: jax.Array, multiplier: int = 1):
  """Fit a depthwise-separable conv to a full conv kernel, per input channel by SVD.

  A separable conv computes ``y_o = sum_c sum_r P[c, r, o] (D[:, c, r] * x_c)``, i.e. the
  full kernel ``K[t, c, o] = sum_r D[t, c, r] P[c, r, o]``: for each input channel ``c``
  the ``(kh * kw, cout)`` slice ``K[:, c, :]`` has rank at most ``multiplier``. The best
  such fit in the Frobenius norm (Eckart-Young) is the truncated SVD ``U S V^T`` of each
  slice: depthwise filter ``r`` of channel ``c`` is ``U[:, r] sqrt(S[r])`` and its pointwise
  weights are ``sqrt(S[r]) V[:, r]``.

  Args:
    kernel: ``(kh, kw, cin, cout)`` conv kernel.
    multiplier: depthwise filters per input channel (the rank of the fit).

  Returns:
    ``(depthwise, pointwise, rel_error)``: ``(kh, kw, 1, cin * multiplier)``,
    ``(1, 1, cin * multiplier, cout)`` and ``||K - fit||_F / ||K||_F`` (a scalar; 0 when
    ``multiplier >= min(kh * kw, cout)``).
  """
  kh, kw, cin, cout = kernel.shape
  slices = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(cin, kh * kw, cout)
  u, s, vt = jnp.linalg.svd(slices, full_matrices=False)
  rank = min(multiplier, s.shape[-1])
  root = jnp.sqrt(s[:, :rank])
  dw = u[:, :, :rank] * root[:, None, :]  # (cin, kh*kw, rank)
  pw = vt[:, :rank, :] * root[:, :, None]  # (cin, rank, cout)
  pad = multiplier - rank
  dw = jnp.pad(dw, ((0, 0), (0, 0), (0, pad)))
  pw = jnp.pad(pw, ((0, 0), (0, pad), (0, 0)))
  fit = jnp.einsum("ctr,cro->cto", dw, pw)
  err = jnp.linalg.norm(fit - slices) / jnp.maximum(jnp.linalg.norm(slices), 1e-30)
  depthwise = jnp.transpose(dw, (1, 0, 2)).reshape(kh, kw, 1, cin * multiplier)
  pointwise = pw.reshape(1, 1, cin * multiplier, cout)
  return depthwise, pointwise, err


@planner("to_sepconv")
def _plan_sepconv(arch: Arch, *, node: str, multiplier: int = 1) -> Plan:
  what = f"to_sepconv(node={node!r})"
  n = graph.check_node(arch, node, "to_sepconv")
  if n.op != "conv" or n["groups"] != 1:
    raise ValueError(f"{what}: node {node!r} is not an ungrouped conv ({n.op}"
                     f"{', groups=%d' % n['groups'] if n.op == 'conv' else ''})")
  multiplier = graph.check_int(multiplier, what, "multiplier")
  new = arch.replace_nodes(Node(node, "sep_conv", n.inputs, features=n["features"],
                                kernel=n["kernel"], stride=n["stride"],
                                dilation=n["dilation"], multiplier=multiplier,
                                use_bias=n["use_bias"]))

  def transform(params, state, key):
    dw, pw, _ = lowrank_sepconv(params[node]["kernel"], multiplier)
    p = {"depthwise": dw, "pointwise": pw}
    if "bias" in params[node]:
      p["bias"] = params[node]["bias"]
    return dict(params, **{node: p}), state

  return Plan(new, transform, frozenset({node}))


def to_sepconv(net: Network, key, *, node: str, multiplier: int = 1) -> Network:
  """Replace conv ``node`` by a depthwise-separable conv fitted to it.

  The fit is :func:`lowrank_sepconv` (per input channel, the best rank-``multiplier``
  approximation of the kernel); its relative error is what the function loses before
  distillation. Stride, dilation and bias are kept.

  Args:
    net: the network.
    key: PRNG key (unused).
    node: an ungrouped conv node.
    multiplier: depthwise filters per input channel.

  Raises:
    ValueError: unknown node, not an ungrouped conv, a multiplier below 1.
  """
  return morph("to_sepconv", net, key, node=node, multiplier=multiplier)


def sepconv_error(net: Network, node: str, multiplier: int = 1) -> float:
  """Relative Frobenius error of :func:`to_sepconv`'s fit of conv ``node``."""
  n = graph.check_node(net.arch, node, "sepconv_error")
  if n.op != "conv":
    raise ValueError(f"sepconv_error: node {node!r} is a {n.op!r}, not a conv")
  return float(lowrank_sepconv(net.params[node]["kernel"], multiplier)[2])


__all__ = ["remove_layer", "remove_skip", "prune_filters", "to_sepconv", "lowrank_sepconv",
           "sepconv_error", "filter_norms"]
