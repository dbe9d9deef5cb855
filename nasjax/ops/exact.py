"""LEMONADE's network morphisms (Elsken et al., ICLR 2019, §3.1 and appendix A.1.1).

Each preserves the network's function in inference mode, up to float rounding:

* :func:`insert_conv_bn_relu` inserts an identity conv-BN-ReLU after a non-negative node
  (given a batch of inputs, it preserves the function in training mode on that batch too).
* :func:`add_skip` adds a skip connection whose new path starts at zero: by ``add``
  through a zero-initialised 1x1 conv (or dense) layer, or by ``concat`` with the
  readers' weights for the new channels zero.
* :func:`widen_kernel` grows a conv's kernel (3x3 -> 5x5) by zero-padding it.

Widening a layer, LEMONADE's third morphism, is :func:`nasjax.ops.net2wider`.
"""

from __future__ import annotations

import jax.numpy as jnp

from nasjax.arch import Arch, Node
from nasjax.network import Network
from nasjax.ops import channels, graph
from nasjax.ops.net2net import identity_chain, identity_chain_params, inserted_bn_moments
from nasjax.ops.plan import Plan, morph, planner


# --------------------------------------------------------------------- conv-BN-ReLU
@planner("insert_conv_bn_relu")
def _plan_insert(arch: Arch, *, after: str, kernel=3) -> Plan:
  what = f"insert_conv_bn_relu(after={after!r})"
  graph.check_node(arch, after, "insert_conv_bn_relu", "after")
  kernel = graph.kernel_pair(kernel, what)
  if len(arch.shape(after)) != 3:
    raise ValueError(f"{what}: node {after!r} outputs a vector {arch.shape(after)}, not a "
                     "feature map")
  if not graph.nonnegative(arch, after):
    raise ValueError(f"{what}: the output of {after!r} ({arch[after].op}) can be negative, "
                     "so a ReLU after it would change the function; insert after a ReLU")
  new, names = identity_chain(arch, after, kernel, "conv", True, what)

  def transform(params, state, key, mean=None, var=None):
    return identity_chain_params(new, after, names, params, state, mean, var)

  return Plan(new, transform, frozenset(names.values()))


def insert_conv_bn_relu(net: Network, key, *, after: str, kernel=3, batch=None) -> Network:
  """Insert an identity conv-BN-ReLU unit after the non-negative node ``after``.

  The conv kernel is the identity, the batch norm undoes its own normalisation and the
  ReLU is the identity on non-negative inputs (LEMONADE §3.1, "insert a
  Conv-BatchNorm-ReLU block"). The batch norm's statistics are set as
  :func:`nasjax.ops.net2deeper` sets them: with ``batch``, the training-mode mean ``mu``
  and biased variance ``sigma^2`` of ``after``'s output on it (running statistics ``mu``
  and ``sigma^2``, scale ``sqrt(sigma^2 + eps)``, bias ``mu``), so that the network is
  unchanged in inference mode and in training mode on ``batch``; without, running mean
  0 and variance 1, scale ``sqrt(1 + eps)`` and bias 0, exact in inference mode only.

  Args:
    net: the network.
    key: PRNG key (unused: the morphism is deterministic).
    after: a node whose output is non-negative (a ReLU, pooled ReLUs, ...).
    kernel: conv kernel size.
    batch: optional network inputs, shape ``(N, *net.arch.input_shape)`` (e.g. training
      images), for the batch norm's statistics.

  Raises:
    ValueError: unknown node, a node whose output may be negative or is not a feature
      map, a batch of the wrong shape.
  """
  moments = inserted_bn_moments("insert_conv_bn_relu", net, batch, after, kernel=kernel)
  return morph("insert_conv_bn_relu", net, key, moments, after=after, kernel=kernel)


# ----------------------------------------------------------------------------- skips
def _skip_stride(src_hw, dst_hw) -> tuple[int, int] | None:
  stride = []
  for s, d in zip(src_hw, dst_hw):
    fits = [k for k in range(1, s + 1) if -(-s // k) == d]
    if not fits:
      return None
    stride.append(fits[0])
  return tuple(stride)


@planner("add_skip")
def _plan_skip(arch: Arch, *, src: str, dst: str, mode: str = "add") -> Plan:
  what = f"add_skip(src={src!r}, dst={dst!r})"
  graph.check_node(arch, src, "add_skip", "src")
  graph.check_node(arch, dst, "add_skip", "dst")
  if mode not in ("add", "concat"):
    raise ValueError(f"{what}: mode must be 'add' or 'concat', got {mode!r}")
  if src in graph.descendants(arch, dst):
    raise ValueError(f"{what}: src is dst or downstream of it; the skip would create a "
                     "cycle")
  s, d = arch.shape(src), arch.shape(dst)
  if mode == "add":
    return _plan_skip_add(arch, src, dst, s, d, what)
  if len(s) != len(d) or s[:-1] != d[:-1]:
    raise ValueError(f"{what}: a concat skip needs equal spatial sizes, got src {s} and "
                     f"dst {d}")
  return _plan_skip_concat(arch, src, dst, s, d, what)


def _plan_skip_add(arch, src, dst, s, d, what) -> Plan:
  proj, add = graph.fresh_names(arch, f"{dst}_skip", f"{dst}_skip_add")
  if len(s) == 3 and len(d) == 3:
    stride = _skip_stride(s[:2], d[:2])
    if stride is None:
      raise ValueError(f"{what}: src {s} is smaller than dst {d}; a skip needs a source "
                       "at least as large as its destination")
    proj_node = Node(proj, "conv", [src], features=d[-1], kernel=1, stride=stride)
  elif len(s) == 1 and len(d) == 1:
    proj_node = Node(proj, "dense", [src], features=d[-1], use_bias=False)
  else:
    raise ValueError(f"{what}: incompatible shapes src {s} and dst {d} (a feature map "
                     "and a vector)")
  nodes = []
  for n in graph.rewire(arch.nodes, dst, add):
    nodes.append(n)
    if n.name == dst:
      nodes += [proj_node, Node(add, "add", [dst, proj])]
  new = Arch(nodes, add if arch.output == dst else arch.output)
  kernel_shape = (1, 1, s[-1], d[-1]) if len(s) == 3 else (s[-1], d[-1])

  def transform(params, state, key):
    # The new path starts at zero, so the sum is unchanged; its gradient is not zero.
    return dict(params, **{proj: {"kernel": jnp.zeros(kernel_shape, jnp.float32)}}), state

  return Plan(new, transform, frozenset({proj}))


def _plan_skip_concat(arch, src, dst, s, d, what) -> Plan:
  (cat,) = graph.fresh_names(arch, f"{dst}_skip_cat")
  anchored = graph.insert_identity(arch, dst, cat)
  c, extra = d[-1], s[-1]
  rp = channels.plan_remap(anchored, cat, c + extra, what)
  if channels.channel_graph(anchored).space[src] in rp.sizes:
    raise ValueError(f"{what}: the readers of dst also sum src's channels, which the "
                     "concatenation would have to widen; use mode='add'")
  new = rp.arch.replace_nodes(Node(cat, "concat", [dst, src]))

  def transform(params, state, key):
    params = dict(params, **{cat: graph.identity_params(anchored, cat)})
    # The new channels stand in for copies of channel 0 that every reader weights by 0;
    # whatever values src puts there, the readers ignore them until trained.
    idx = jnp.concatenate([jnp.arange(c), jnp.zeros((extra,), jnp.int32)])
    scale = jnp.concatenate([jnp.ones((c,)), jnp.zeros((extra,))])
    params, state = channels.apply_remap(rp, params, state, channels.Remap(idx, scale))
    del params[cat]
    return params, state

  return Plan(new, transform, rp.touched | {cat})


def add_skip(net: Network, key, *, src: str, dst: str, mode: str = "add") -> Network:
  """Add a skip connection from ``src`` to ``dst``, preserving the function.

  * ``mode="add"``: ``dst``'s readers read ``dst + proj(src)``, where ``proj`` is a 1x1 conv
    (strided if ``src`` is spatially larger) or a dense layer to ``dst``'s channels,
    initialised to zero.
  * ``mode="concat"``: ``dst``'s readers read ``concat(dst, src)`` (equal spatial sizes);
    every producer that reads the concatenation, directly or through channel-wise ops and
    adds, gets zero weights for the new channels.

  Args:
    net: the network.
    key: PRNG key (unused: the morphism is deterministic).
    src: the node the skip starts from; must not be ``dst`` or downstream of it.
    dst: the node whose readers receive the skip.
    mode: ``"add"`` or ``"concat"``.

  Raises:
    ValueError: unknown nodes, a cycle, incompatible shapes, or (concat) channels that
      cannot grow (they reach the network output or the input).
  """
  return morph("add_skip", net, key, src=src, dst=dst, mode=mode)


# ------------------------------------------------------------------------ kernel size
@planner("widen_kernel")
def _plan_widen_kernel(arch: Arch, *, node: str, kernel=5) -> Plan:
  what = f"widen_kernel(node={node!r})"
  n = graph.check_node(arch, node, "widen_kernel")
  if n.op not in ("conv", "sep_conv"):
    raise ValueError(f"{what}: node {node!r} is a {n.op!r}, not a conv or sep_conv")
  new_k = graph.kernel_pair(kernel, what)
  old_k = n["kernel"]
  if any(a < b for a, b in zip(new_k, old_k)) or new_k == old_k:
    raise ValueError(f"{what}: kernel {new_k} is not larger than the node's {old_k}")
  size = arch.in_shapes(node)[0][:2]
  offsets = []
  for axis in range(2):
    lo_old = graph.same_pad_lo(size[axis], old_k[axis], n["stride"][axis], n["dilation"][axis])
    lo_new = graph.same_pad_lo(size[axis], new_k[axis], n["stride"][axis], n["dilation"][axis])
    shift, rem = divmod(lo_new - lo_old, n["dilation"][axis])
    if rem or not 0 <= shift <= new_k[axis] - old_k[axis]:
      raise ValueError(f"{what}: with SAME padding a {new_k} kernel does not contain the "
                       f"old {old_k} taps at their positions (input size {size}, stride "
                       f"{n['stride']}); choose sizes that differ by an even number")
    offsets.append(shift)
  new = arch.replace_nodes(n.replace(kernel=new_k))
  key_name = "kernel" if n.op == "conv" else "depthwise"

  def transform(params, state, key):
    old = params[node][key_name]
    big = jnp.zeros(new_k + old.shape[2:], jnp.float32)
    big = big.at[offsets[0]:offsets[0] + old_k[0], offsets[1]:offsets[1] + old_k[1]].set(old)
    return dict(params, **{node: dict(params[node], **{key_name: big})}), state

  return Plan(new, transform, frozenset({node}))


def widen_kernel(net: Network, key, *, node: str, kernel=5) -> Network:
  """Grow the kernel of conv or sep_conv ``node`` to ``kernel``, zero-padding the old one.

  The old taps keep their positions relative to the SAME padding, so every output
  reads the same inputs with the same weights and the new taps read them with zero.

  Args:
    net: the network.
    key: PRNG key (unused: the morphism is deterministic).
    node: a conv or sep_conv node.
    kernel: the new kernel size (int or pair), at least the old one in both axes.

  Raises:
    ValueError: unknown node, not a conv, a kernel that is not larger.
  """
  return morph("widen_kernel", net, key, node=node, kernel=kernel)


__all__ = ["insert_conv_bn_relu", "add_skip", "widen_kernel"]
