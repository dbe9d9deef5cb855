"""Zero-cost proxies: SynFlow against its formula on a network small enough to compute by
hand, batch norm left out, and the ranking it gives NB201 cells."""

import jax
import numpy as np
import pytest

import nasjax
from nasjax import proxies
from nasjax.search.spaces import NB201Space


def _mlp(batchnorm: bool):
  layers = [("dense", {"features": 3})]
  if batchnorm:
    layers.append(("batchnorm", {}))
  layers += [("relu", {}), ("dense", {"features": 2})]
  return nasjax.sequential((4,), layers)


def _random(net, seed):
  rng = np.random.default_rng(seed)
  fill = lambda a: np.asarray(rng.standard_normal(a.shape), np.float32)  # noqa: E731
  return net.replace(params=jax.tree_util.tree_map(fill, net.params),
                     state=jax.tree_util.tree_map(lambda a: np.abs(fill(a)) + 0.5, net.state))


def test_synflow_matches_the_formula_of_a_two_layer_network():
  net = _random(nasjax.init(_mlp(False), jax.random.key(0)), 1)
  w1, b1 = (np.abs(np.asarray(net.params["l0_dense"][k], np.float64)) for k in ("kernel", "bias"))
  w2, b2 = (np.abs(np.asarray(net.params["l2_dense"][k], np.float64)) for k in ("kernel", "bias"))
  # R = sum(|W2|^T (|W1|^T 1 + |b1|) + |b2|): every activation is positive, ReLU passes it.
  h = w1.sum(0) + b1  # (3,)
  s = w2.sum(1)  # dR/dh, (3,)
  expected = (w2 * h[:, None]).sum() + b2.sum() + (w1 * s[None, :]).sum() + (b1 * s).sum()
  assert proxies.synflow(net) == pytest.approx(expected, rel=1e-5)
  before = jax.tree_util.tree_map(np.array, net.params)
  proxies.synflow(net)
  for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(net.params)):
    np.testing.assert_array_equal(a, b)  # the network is not changed


def test_synflow_leaves_batch_norm_out():
  plain = _random(nasjax.init(_mlp(False), jax.random.key(0)), 1)
  with_bn = _random(nasjax.init(_mlp(True), jax.random.key(0)), 2)  # BN params random
  with_bn = with_bn.replace(params={**with_bn.params, "l0_dense": plain.params["l0_dense"],
                                    "l3_dense": plain.params["l2_dense"]})
  assert proxies.synflow(with_bn) == pytest.approx(proxies.synflow(plain), rel=1e-6)


def test_synflow_ranks_nb201_cells_by_their_parametrised_paths():
  space = NB201Space(C=4, N=1)
  score = lambda code: proxies.synflow(nasjax.init(  # noqa: E731
      space.build(np.asarray(code), (8, 8, 3), 4), jax.random.key(0)))
  convs = score([3, 3, 3, 3, 3, 3])
  ones = score([2, 2, 2, 2, 2, 2])
  skips = score([1, 1, 1, 1, 1, 1])
  assert np.isfinite(convs) and convs > ones > skips > 0
  # A cell whose output node gets only zeros stops all flow after it (the classifier's
  # bias starts at zero).
  assert score([3, 0, 0, 0, 0, 3]) < 1e-3 * skips
