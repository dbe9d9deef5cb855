"""Net2WiderNet and Net2DeeperNet on any DAG (Chen et al., 2016; EAS, Cai et al., 2018).

Both are function-preserving: the new network computes the same function as the old one
in inference mode (batch norm with running statistics), up to float rounding. Given a
batch of inputs, :func:`net2deeper` also preserves it in training mode on that batch.

* :func:`net2wider` (EAS §3.1, eq. 1-3; §3.2 for DenseNet) gives a layer more filters by
  copying randomly chosen ones and dividing the copies' outgoing weights by the number of
  copies. The copies flow through every channel-wise op (batch norm parameters and
  running statistics are copied too), through adds (every layer feeding the same add is
  widened with the same copies), into concatenations (every later reader's slice for
  this layer is remapped, as EAS §3.2 does for DenseNet) and into dense layers after
  global pooling or flattening (per spatial position).
* :func:`net2deeper` (EAS §3.1) inserts an identity-initialised layer, and the batch norm
  after a new conv undoes the normalisation it applies (EAS §3.1). In a DenseNet block
  (``after`` is a concatenation) the new layer instead adds channels to the
  concatenation whose filters copy chosen input channels, and every later reader treats
  them as copies (EAS §3.2).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from nasjax import runtime
from nasjax.arch import Arch, Node
from nasjax.network import Network, forward
from nasjax.ops import channels, graph
from nasjax.ops.plan import Plan, morph, plan, planner, static_key


def widen_remap(key, old: int, new: int, noise) -> channels.Remap:
  """Net2WiderNet's random mapping: channels ``[0, old)`` kept, ``new - old`` random copies.

  Args:
    key: PRNG key.
    old: channels before.
    new: channels after (> old).
    noise: symmetry-breaking strength. Copy ``j`` of channel ``i`` gets the share
      ``(1 + noise * (e_j - mean of e over i's copies)) / copies(i)`` of ``i``'s outgoing
      weights, ``e ~ N(0, 1)``; the shares of a channel's copies still sum to 1, so the
      function is preserved whatever the noise, while the copies receive different
      gradients and drift apart in training.

  Returns:
    The remap: ``idx`` of shape ``(new,)``, ``scale`` of shape ``(new,)``.
  """
  k_map, k_noise = jax.random.split(key)
  extra = jax.random.randint(k_map, (new - old,), 0, old)
  idx = jnp.concatenate([jnp.arange(old), extra])
  counts = jnp.zeros((old,), jnp.float32).at[idx].add(1.0)
  e = jax.random.normal(k_noise, (new,), jnp.float32)
  mean_e = jnp.zeros((old,), jnp.float32).at[idx].add(e)[idx] / counts[idx]
  return channels.Remap(idx, (1.0 + noise * (e - mean_e)) / counts[idx])


@planner("net2wider")
def _plan_wider(arch: Arch, *, node: str, width: int) -> Plan:
  what = f"net2wider(node={node!r})"
  n = graph.check_node(arch, node, "net2wider")
  if n.op not in channels.PRODUCERS:
    raise ValueError(f"{what}: node {node!r} is a {n.op!r}; only conv, sep_conv and dense "
                     "layers can be widened")
  width = graph.check_int(width, what, "width")
  old = n["features"]
  if width <= old:
    raise ValueError(f"{what}: width={width} is not wider than the node's {old} filters")
  rp = channels.plan_remap(arch, node, width, what)

  def transform(params, state, key, noise=0.0):
    return channels.apply_remap(rp, params, state, widen_remap(key, old, width, noise))

  return Plan(rp.arch, transform, rp.touched)


def net2wider(net: Network, key, *, node: str, width: int, noise: float = 0.0) -> Network:
  """Widen layer ``node`` to ``width`` filters (units), preserving the function.

  Every producer that shares ``node``'s channels through adds (e.g. all convs feeding the
  residual sums of a ResNet stage) is widened with the same copies. The new filters are
  copies of randomly chosen old ones (EAS §3.1 eq. 1); readers divide the copies' weights
  by the number of copies (eq. 3).

  Args:
    net: the network.
    key: PRNG key choosing the copied filters (and the noise).
    node: a conv (ungrouped), sep_conv or dense node that is not the network output.
    width: the new number of filters, > the current number.
    noise: symmetry-breaking strength for the copies' weight shares (see
      :func:`widen_remap`); the function is preserved for any value.

  Returns:
    The widened network.

  Raises:
    ValueError: unknown node, a width that is not larger, a node whose channels reach
      the network output or are shared with a node whose channels cannot be copied (the
      input, a grouped conv).
  """
  return morph("net2wider", net, key, {"noise": noise}, node=node, width=width)


def identity_chain(arch: Arch, after: str, kernel, op: str, relu: bool,
                   what: str) -> tuple[Arch, dict]:
  """``arch`` with an identity conv-BN(-ReLU) or dense(-ReLU) inserted after ``after``.

  Returns:
    The new arch and the names of the new nodes: ``{"layer", "bn", "relu"}`` (those
    inserted).
  """
  shape = arch.shape(after)
  if op == "conv":
    if len(shape) != 3:
      raise ValueError(f"{what}: node {after!r} outputs a vector {shape}; insert "
                       "op='dense' there")
    base = f"{after}_deeper"
    layer, bn, act = graph.fresh_names(arch, f"{base}_conv", f"{base}_bn", f"{base}_relu")
    nodes = [Node(layer, "conv", [after], features=shape[-1], kernel=kernel),
             Node(bn, "batchnorm", [layer])]
    names = {"layer": layer, "bn": bn}
  else:
    if len(shape) != 1:
      raise ValueError(f"{what}: node {after!r} outputs a feature map {shape}; insert "
                       "op='conv' there")
    layer, act = graph.fresh_names(arch, f"{after}_deeper_dense", f"{after}_deeper_relu")
    nodes = [Node(layer, "dense", [after], features=shape[-1])]
    names = {"layer": layer}
  if relu:
    nodes.append(Node(act, "relu", [nodes[-1].name]))
    names["relu"] = act
  return arch.insert_after(after, *nodes), names


def identity_chain_params(arch: Arch, after: str, names: dict, params: dict, state: dict,
                          mean=None, var=None) -> tuple[dict, dict]:
  """Identity arrays for the nodes made by :func:`identity_chain` (added to copies).

  The batch norm undoes its own normalisation: with running mean ``mean`` and variance
  ``var`` (shape ``(C,)``; default 0 and 1), scale ``sqrt(var + eps)`` and bias ``mean``,
  it maps ``x`` to ``(x - mean) / sqrt(var + eps) * sqrt(var + eps) + mean = x`` in
  inference mode; in training mode too where ``mean`` and ``var`` are the statistics of
  the batch it normalises (:func:`batch_moments`).
  """
  params, state = dict(params), dict(state)
  layer = arch[names["layer"]]
  c = layer["features"]
  if layer.op == "conv":
    params[layer.name] = {"kernel": graph.identity_kernel(arch, after, layer["kernel"], c)}
    eps = arch[names["bn"]]["eps"]
    mean = jnp.zeros((c,), jnp.float32) if mean is None else mean
    var = jnp.ones((c,), jnp.float32) if var is None else var
    params[names["bn"]] = {"scale": jnp.sqrt(var + eps), "bias": mean}
    state[names["bn"]] = {"mean": mean, "var": var}
  else:
    params[layer.name] = {"kernel": jnp.eye(c, dtype=jnp.float32),
                          "bias": jnp.zeros((c,), jnp.float32)}
  return params, state


def batch_moments(net: Network, batch, node: str) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and variance of node ``node``'s output on ``batch``, training mode.

  These are the statistics that a batch norm reading ``node`` normalises with in training
  mode: every batch norm up to ``node`` normalises with the batch's own statistics, and the
  mean and the biased variance are taken over every axis but the channels, the variance
  as ``E[x^2] - E[x]^2`` like :mod:`nasjax.layers`' batch norm, so that the two agree to
  float rounding.

  Args:
    net: the network.
    batch: network inputs, shape ``(N, *net.arch.input_shape)``.
    node: a node of ``net``.

  Returns:
    ``(mean, var)``, each of shape ``(C,)`` for the ``C`` channels of ``node``'s output.
  """
  sub = graph.upstream(net.arch, node)
  params, state = graph.keep_only(sub, net.params, net.state)
  cpu = runtime.top_level() and jax.default_backend() == "cpu"
  run = _moments_jit_cpu() if cpu else _moments_jit
  return run(Network(sub, params, state), jnp.asarray(batch, jnp.float32))


def _moments(net: Network, batch):
  x, _ = forward(net, batch, train=True)
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  return mean, jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)


_moments_jit = runtime.jit(_moments)


@functools.cache
def _moments_jit_cpu():
  # Run once per morphed network on one batch: on CPU, compiling quickly matters more
  # than the speed of the code (as for the parameter transforms, nasjax.ops.plan). Only
  # at top level: inside a caller's transformation _moments_jit joins the caller's program.
  return jax.jit(_moments, compiler_options={"xla_backend_optimization_level": 0,
                                             **(runtime.compiler_options() or {})})


def check_batch(net: Network, batch, what: str) -> jax.Array:
  """``batch`` as a float32 array, or a ValueError if it is not a batch of ``net``'s inputs."""
  batch = jnp.asarray(batch, jnp.float32)
  shape = net.arch.input_shape
  if batch.ndim != len(shape) + 1 or tuple(batch.shape[1:]) != shape or not batch.shape[0]:
    raise ValueError(f"{what}: batch must hold network inputs of shape (N, "
                     f"{', '.join(map(str, shape))}) with N >= 1, got {tuple(batch.shape)}")
  return batch


def inserted_bn_moments(name: str, net: Network, batch, after: str, **static) -> dict:
  """The ``mean`` and ``var`` to give the batch norm that morphism ``name`` inserts after
  ``after``: :func:`batch_moments` of ``after`` on ``batch``; ``{}`` without a batch or
  where the morphism inserts no batch norm."""
  if batch is None or not isinstance(net, Network):
    return {}
  batch = check_batch(net, batch, f"{name}(after={after!r})")
  new = plan(name, net.arch, static_key(after=after, **static)).arch
  if not any(n.op == "batchnorm" and n.name not in net.arch for n in new.nodes):
    return {}
  # The batch norm reads the identity conv on ``after``, whose output is ``after``'s.
  mean, var = batch_moments(net, batch, after)
  return {"mean": mean, "var": var}


@planner("net2deeper")
def _plan_deeper(arch: Arch, *, after: str, kernel=3, op: str = "conv") -> Plan:
  what = f"net2deeper(after={after!r})"
  n = graph.check_node(arch, after, "net2deeper", "after")
  if op not in ("conv", "dense"):
    raise ValueError(f"{what}: op must be 'conv' or 'dense', got {op!r}")
  kernel = graph.kernel_pair(kernel, what)
  if n.op == "concat":
    return _plan_dense_block(arch, after, kernel, op, what)
  new, names = identity_chain(arch, after, kernel, op, graph.nonnegative(arch, after), what)

  def transform(params, state, key, mean=None, var=None):
    return identity_chain_params(new, after, names, params, state, mean, var)

  return Plan(new, transform, frozenset(names.values()))


def _plan_dense_block(arch: Arch, after: str, kernel, op: str, what: str) -> Plan:
  """A new DenseNet layer reading concatenation ``after``, its output concatenated on.

  The new layer's filters copy randomly chosen channels of its input (EAS §3.2, eq. 5),
  so to every later reader the grown concatenation is the old one plus copies: the
  Net2Wider remap of the concatenation's space. The layer is a bare conv (or dense): a
  BN-ReLU in front of it, as in the other DenseNet layers, could not pass signed inputs
  through unchanged.
  """
  shape = arch.shape(after)
  if (op == "conv") != (len(shape) == 3):
    raise ValueError(f"{what}: op={op!r} does not fit the output of {after!r}, shape "
                     f"{shape}")
  growth = arch.shape(arch[after].inputs[-1])[-1]
  c = shape[-1]
  cat, layer = graph.fresh_names(arch, f"{after}_deeper_cat", f"{after}_deeper_{op}")
  anchored = graph.insert_identity(arch, after, cat)
  rp = channels.plan_remap(anchored, cat, c + growth, what)
  if op == "conv":
    new_layer = Node(layer, "conv", [after], features=growth, kernel=kernel)
  else:
    new_layer = Node(layer, "dense", [after], features=growth, use_bias=False)
  nodes = []
  for node in rp.arch.nodes:
    if node.name == cat:
      nodes += [new_layer, Node(cat, "concat", [after, layer])]
    else:
      nodes.append(node)
  new = Arch(nodes, rp.arch.output)

  def transform(params, state, key):
    chosen = jax.random.randint(key, (growth,), 0, c)
    params = dict(params, **{cat: graph.identity_params(anchored, cat)})
    seed = channels.Remap.replicate(jnp.concatenate([jnp.arange(c), chosen]), c)
    params, state = channels.apply_remap(rp, params, state, seed)
    del params[cat]
    cols = jnp.arange(growth)
    if op == "conv":
      h, w = shape[:2]
      ph, pw = graph.same_pad_lo(h, kernel[0], 1, 1), graph.same_pad_lo(w, kernel[1], 1, 1)
      k = jnp.zeros(kernel + (c, growth), jnp.float32).at[ph, pw, chosen, cols].set(1.0)
    else:
      k = jnp.zeros((c, growth), jnp.float32).at[chosen, cols].set(1.0)
    params[layer] = {"kernel": k}
    return params, state

  return Plan(new, transform, rp.touched | {cat, layer})


def net2deeper(net: Network, key, *, after: str, kernel=3, op: str = "conv",
               batch=None) -> Network:
  """Insert an identity-initialised layer after node ``after``, preserving the function.

  * Feature map, ``op="conv"``: a ``kernel`` x ``kernel`` conv whose kernel is the identity
    (a one at the centre tap of each channel's own filter), then a batch norm that undoes
    its own normalisation (EAS §3.1: its scale and bias are set to undo it), then a ReLU
    only if ``after``'s output is known to be non-negative (a ReLU, or pooled ReLUs),
    where ReLU is the identity.
  * Vector, ``op="dense"``: a dense layer with identity weights (and a ReLU likewise).
  * ``after`` is a ``concat`` (a DenseNet block): a new layer of the block's growth rate
    (the channels of the concatenation's last input) reads the concatenation and its
    output is concatenated on; its filters copy random input channels and every later
    reader treats them as copies (EAS §3.2).

  The new batch norm's statistics: with ``batch``, the mean ``mu`` and biased variance
  ``sigma^2`` per channel of ``after``'s output on that batch in training mode
  (:func:`batch_moments`); it gets running mean ``mu``, running variance ``sigma^2``, scale
  ``sqrt(sigma^2 + eps)`` and bias ``mu``. The child then equals the parent in inference
  mode and in training mode on ``batch`` (on other batches of the same data nearly), so
  training starts from the parent's function. Without ``batch``: running mean 0, variance
  1, scale ``sqrt(1 + eps)``, bias 0, exact in inference mode only; in training mode the
  batch norm normalises ``after``'s output to zero mean and unit variance, which changes
  the function.

  Args:
    net: the network.
    key: PRNG key (the copied channels in a DenseNet block).
    after: the node after which to insert.
    kernel: conv kernel size (an int or an ``(h, w)`` pair).
    op: ``"conv"`` or ``"dense"``, matching ``after``'s output.
    batch: optional network inputs, shape ``(N, *net.arch.input_shape)`` (e.g. training
      images), for the new batch norm's statistics; unused where none is inserted.

  Returns:
    The deeper network.

  Raises:
    ValueError: unknown node, an op that does not fit the node's output, a bad kernel, a
      batch of the wrong shape.
  """
  moments = inserted_bn_moments("net2deeper", net, batch, after, kernel=kernel, op=op)
  return morph("net2deeper", net, key, moments, after=after, kernel=kernel, op=op)


__all__ = ["net2wider", "net2deeper", "widen_remap", "identity_chain",
           "identity_chain_params", "batch_moments", "check_batch", "inserted_bn_moments"]
