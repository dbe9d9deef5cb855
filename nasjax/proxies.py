"""Zero-cost proxies: scores of an untrained network that are cheap to compute and are
used to rank architectures without training them.

:func:`synflow` is SynFlow (Tanaka et al., "Pruning neural networks without any data by
iteratively conserving synaptic flow", NeurIPS 2020), as Abdelfattah et al. ("Zero-Cost
Proxies for Lightweight NAS", ICLR 2021) use it to rank architectures: every parameter
is replaced by its absolute value, batch norm is left out (an identity), an all-ones
input goes through the network, and the score is ``sum |theta * dR / dtheta|`` over the
parameters, ``R`` the sum of the outputs. The score needs no data and no labels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.network import Network, forward


def _without_batchnorm(net: Network) -> tuple[dict, dict, set[str]]:
  """``(params, state, names)``: batch norms set to the identity (scale 1, bias 0,
  running mean 0 and variance ``1 - eps``), and the names of their nodes."""
  params, state, names = dict(net.params), dict(net.state), set()
  for node in net.arch.nodes_of("batchnorm"):
    c = net.arch.shape(node.name)[-1]
    eps = float(node.attr_dict["eps"])
    if not eps < 1:
      raise ValueError(f"synflow needs batch-norm eps < 1; node {node.name!r} has {eps!r}")
    params[node.name] = {"scale": jnp.ones((c,), jnp.float32),
                         "bias": jnp.zeros((c,), jnp.float32)}
    state[node.name] = {"mean": jnp.zeros((c,), jnp.float32),
                        "var": jnp.full((c,), 1.0 - eps, jnp.float32)}
    names.add(node.name)
  return params, state, names


def synflow(net: Network) -> float:
  """The SynFlow score of ``net`` (see the module docstring); larger is better.

  Computed in float32: a network deep or wide enough to overflow gives ``inf``. Batch
  norms count as identities and their parameters are not scored.

  Args:
    net: a network (usually freshly initialised); its parameters are not changed.

  Returns:
    ``sum |theta * dR/dtheta|`` over every parameter outside batch norms, with
    ``R = sum(net(1))`` computed with ``|theta|``.
  """
  params, state, bn = _without_batchnorm(net)
  scored = {n: jax.tree_util.tree_map(jnp.abs, p) for n, p in params.items() if n not in bn}
  fixed = {n: p for n, p in params.items() if n in bn}
  x = jnp.ones((1,) + tuple(net.arch.input_shape), jnp.float32)

  def total(p):
    return jnp.sum(forward(net.replace(params={**p, **fixed}, state=state), x))

  grads = jax.grad(total)(scored)
  terms = jax.tree_util.tree_map(lambda a, g: jnp.sum(jnp.abs(a * g)), scored, grads)
  return float(np.sum([float(t) for t in jax.tree_util.tree_leaves(terms)]))


__all__ = ["synflow"]
