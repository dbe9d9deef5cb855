"""Supernets: a path computes its stand-alone network, mixing weights, gradients to the
architecture parameters, batch-norm recalibration, scoring, one program for all paths."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nasjax
from nasjax import data as data_lib
from nasjax import train as train_lib
from nasjax.models import supernet as S
from nasjax.search import work
from nasjax.search.evaluators import run_shared
from nasjax.search.spaces import MacroSpace
from nasjax.search.strategies import oneshot
from nasjax.search.strategies.oneshot import cross_entropy

# Outputs are compared with this tolerance: the same float32 ops, summed in the same
# order, differ only by XLA's fusion choices (measured differences are ~2e-6).
RTOL = ATOL = 1e-5

NB201_PATHS = ([3, 3, 2, 1, 4, 0], [0, 0, 0, 0, 0, 0], [1, 0, 4, 0, 0, 3], [2, 4, 1, 3, 1, 2])


def _perturbed(sn, seed=0):
  """Nontrivial weights and running statistics, so inference-mode BN is tested too."""
  rng = np.random.default_rng(seed)
  jitter = lambda a, lo, hi: jnp.asarray(rng.uniform(lo, hi, a.shape), jnp.float32)
  state = jax.tree_util.tree_map(lambda a: jitter(a, 0.5, 1.5), sn.state)
  params = jax.tree_util.tree_map(lambda a: a + jitter(a, -0.1, 0.1), sn.params)
  return sn.replace(params=params, state=state)


@pytest.fixture(scope="module")
def nb201():
  spec = S.NB201Supernet(C=2, N=1, input_shape=(8, 8, 1), num_classes=3, affine=True)
  sn = _perturbed(spec.init(jax.random.key(0)))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 1)), jnp.float32)
  return sn, x


def test_nb201_paths_equal_stand_alone_networks_in_one_program(nb201):
  sn, x = nb201
  traces = []

  @jax.jit
  def run(sn, x, path):
    traces.append(1)  # runs only when jit traces
    return S.forward(sn, x, path=path, impl="switch")

  for path in NB201_PATHS:
    net = S.to_network(sn, path)
    assert net.arch == nasjax.models.nb201(sn.spec.arch_str(path), C=2, N=1,
                                           input_shape=(8, 8, 1), num_classes=3)
    ref = nasjax.forward(net, x)
    np.testing.assert_allclose(run(sn, x, jnp.asarray(path)), ref, rtol=RTOL, atol=ATOL)
    # The one-hot implementation (every op computed, weighted 0 or 1) agrees.
    np.testing.assert_allclose(S.forward(sn, x, path=jnp.asarray(path), impl="onehot"), ref,
                               rtol=RTOL, atol=ATOL)
  assert len(traces) == 1  # sampling a new path never recompiles


def test_nb201_train_mode_equals_stand_alone(nb201):
  sn, x = nb201
  path = NB201_PATHS[0]
  logits, state = S.forward(sn, x, path=jnp.asarray(path), impl="onehot", train=True)
  ref_logits, ref_state = nasjax.forward(S.to_network(sn, path), x, train=True)
  np.testing.assert_allclose(logits, ref_logits, rtol=RTOL, atol=ATOL)
  moved = S.to_network(sn.replace(state=state), path).state
  for node, arrays in ref_state.items():
    for k, v in arrays.items():
      np.testing.assert_allclose(moved[node][k], v, rtol=RTOL, atol=ATOL, err_msg=node)
  # Batch norms of ops off the path keep their statistics exactly.
  off = "s0_c0_e10_nor_conv_1x1_bn"  # edge 1<-0 runs nor_conv_3x3 on this path
  np.testing.assert_array_equal(state[off]["mean"], sn.state[off]["mean"])
  assert not np.allclose(state["s0_c0_e10_nor_conv_3x3_bn"]["mean"],
                         sn.state["s0_c0_e10_nor_conv_3x3_bn"]["mean"], atol=1e-3)


def test_one_hot_mixing_weights_equal_the_path(nb201):
  sn, x = nb201
  path = NB201_PATHS[3]
  weights = jax.nn.one_hot(jnp.asarray(path), 5)  # (E, K); a (1, E, K) works the same
  ref = nasjax.forward(S.to_network(sn, path), x)
  np.testing.assert_allclose(S.forward(sn, x, weights), ref, rtol=RTOL, atol=ATOL)
  # A mixture is not any single path.
  uniform = jnp.full((1, 6, 5), 0.2)
  assert float(jnp.max(jnp.abs(S.forward(sn, x, uniform) - ref))) > 1e-2


def test_darts_paths_equal_stand_alone_networks():
  spec = S.DartsSupernet(C=2, layers=3, steps=1, input_shape=(8, 8, 1), num_classes=3,
                         affine=True)
  sn = _perturbed(spec.init(jax.random.key(1)))
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 8, 1)), jnp.float32)
  # [input, op] per slot, normal cell then reduction cell; ops index DARTS_OPS[1:]. Cell 0
  # is normal, cells 1 and 2 reduce; the second code's normal cell applies two ops to
  # input 0 (its weights are multi-hot: the two ops add up).
  codes = ([0, 3, 1, 4, 1, 2, 0, 6], [0, 5, 0, 2, 0, 0, 1, 1], [1, 6, 0, 1, 1, 3, 0, 4])
  for code in codes:
    net = S.to_network(sn, code)
    ref = nasjax.forward(net, x)
    np.testing.assert_allclose(S.forward(sn, x, path=jnp.asarray(code)), ref, rtol=RTOL,
                               atol=ATOL)
  w = np.asarray(spec.path_weights(jnp.asarray(codes[1])))
  assert w.shape == (2, 2, 8) and w.sum() == 4
  assert w[0, 0, 6] == 1 and w[0, 0, 3] == 1 and w[0, 1].sum() == 0


# A supernet small enough that its gradient compiles in seconds: one reduction cell of
# one node (two mixed edges).
TINY_DARTS = S.DartsSupernet(C=2, layers=1, steps=1, input_shape=(8, 8, 1), num_classes=3,
                             affine=True)


def test_gradients_reach_architecture_parameters():
  sn = _perturbed(TINY_DARTS.init(jax.random.key(0)))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 8, 8, 1)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 1])
  alphas = 0.3 * jax.random.normal(jax.random.key(5), TINY_DARTS.weights_shape)

  def loss(a):
    logits, _ = S.forward(sn, x, jax.nn.softmax(a, -1), train=True)
    return jnp.mean(cross_entropy(logits, y))

  value_and_grad = jax.jit(jax.value_and_grad(loss))
  g = np.asarray(value_and_grad(alphas)[1])
  # layers=1: the only cell reduces, so the normal cell's parameters get no gradient.
  assert np.all(g[0] == 0)
  assert np.all(np.isfinite(g[1]))
  assert np.all(np.abs(g[1]) > 0)  # every op of every edge, none included (softmax)
  # Central differences on the two largest entries (float32 losses: small entries are
  # within rounding noise of a difference quotient).
  h = 1e-2
  for flat in np.argsort(-np.abs(g).ravel())[:2]:
    idx = np.unravel_index(flat, g.shape)
    e = jnp.zeros_like(alphas).at[idx].set(h)
    fd = (value_and_grad(alphas + e)[0] - value_and_grad(alphas - e)[0]) / (2 * h)
    assert float(fd) == pytest.approx(float(g[idx]), rel=0.02)


def test_remat_gives_the_same_values_and_gradients():
  sn = _perturbed(TINY_DARTS.init(jax.random.key(2)))
  x = jnp.asarray(np.random.default_rng(4).normal(size=(4, 8, 8, 1)), jnp.float32)
  y = jnp.asarray([0, 1, 2, 1])
  w = jax.nn.softmax(jax.random.normal(jax.random.key(6), TINY_DARTS.weights_shape), -1)
  remat = S.Supernet(dataclasses.replace(TINY_DARTS, remat=True), sn.params, sn.state)

  @jax.jit
  def grads(sn, remat):
    def loss(params, net):
      logits, _ = S.forward(net.replace(params=params), x, w, train=True)
      return jnp.mean(cross_entropy(logits, y))
    return (jax.value_and_grad(loss)(sn.params, sn),
            jax.value_and_grad(loss)(remat.params, remat))

  (l0, g0), (l1, g1) = grads(sn, remat)
  assert float(l0) == pytest.approx(float(l1), rel=1e-6)
  for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise(nb201):
  sn, x = nb201
  with pytest.raises(ValueError, match="exactly one of weights and path"):
    S.forward(sn, x)
  with pytest.raises(ValueError, match="weights must have shape"):
    S.forward(sn, x, jnp.ones((6, 4)))
  with pytest.raises(ValueError, match="impl must be one of"):
    S.forward(sn, x, path=jnp.zeros(6, jnp.int32), impl="vmap")
  with pytest.raises(ValueError, match="an NB201 path is 6 op indices"):
    S.to_network(sn, [0, 1, 2, 3, 4, 5])
  with pytest.raises(ValueError, match="C must be a positive int"):
    S.NB201Supernet(C=0)
  with pytest.raises(ValueError, match="no supernet for search space 'macro'"):
    S.supernet_for_space(MacroSpace(), (8, 8, 1), 3)


# The shapes of the `spos` smoke preset, so the compiled programs are shared with it.
SMOKE = S.NB201Supernet(C=2, N=1, input_shape=(28, 28, 1), num_classes=10)


@pytest.fixture(scope="module")
def smoke_data():
  d = data_lib.synthetic(num_train=64, num_val=64, num_test=8, input_shape=(28, 28, 1),
                         num_classes=10, seed=3)
  return d


def test_recalibration_pools_the_statistics_of_the_path(smoke_data):
  sn = _perturbed(SMOKE.init(jax.random.key(2)))
  path = np.array([3, 1, 0, 2, 4, 3])
  xs = S.calibration_batches(smoke_data.x_train, 2, 16, seed=0)
  new = S.recalibrate(sn, path, xs)
  # The stem's batch norm sees conv outputs that no other batch norm influences: its
  # pooled statistics are those of all 32 calibration images.
  h = jax.lax.conv_general_dilated(jnp.asarray(xs.reshape(32, 28, 28, 1)),
                                   sn.params["stem_conv"]["kernel"], (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(new.state["stem_bn"]["mean"], h.mean((0, 1, 2)), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(new.state["stem_bn"]["var"], h.var((0, 1, 2)), rtol=1e-4,
                             atol=1e-5)
  off, on = "s1_c0_e10_nor_conv_1x1_bn", "s1_c0_e10_nor_conv_3x3_bn"
  np.testing.assert_array_equal(new.state[off]["var"], sn.state[off]["var"])
  assert not np.allclose(new.state[on]["var"], sn.state[on]["var"], rtol=1e-2)


def test_score_paths_is_the_stand_alone_accuracy(smoke_data):
  sn = SMOKE.init(jax.random.key(4))
  paths = np.array([[3, 1, 0, 2, 4, 3], [1, 1, 1, 1, 1, 1]])
  # affine=False: cell batch norms have no parameters; a network gets scale 1, bias 0.
  assert "s0_c0_e10_nor_conv_3x3_bn" not in sn.params
  bn = S.to_network(sn, paths[0]).params["s0_c0_e10_bn"]
  np.testing.assert_array_equal(bn["scale"], np.ones(2))
  np.testing.assert_array_equal(bn["bias"], np.zeros(2))
  kw = dict(bn="recalibrate", calib_batches=2, calib_batch_size=16, max_examples=64)
  scores = S.score_paths(sn, paths, smoke_data, **kw)
  assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
  np.testing.assert_array_equal(S.score_paths(sn, paths, smoke_data, **kw), scores)
  xs = S.calibration_batches(smoke_data.x_train, 2, 16, seed=0)
  net = S.to_network(S.recalibrate(sn, paths[0], xs), paths[0])
  ref = train_lib.evaluate(net, smoke_data.x_val, smoke_data.y_val)["accuracy"]
  assert scores[0] == pytest.approx(ref, abs=1e-9)
  with pytest.raises(ValueError, match="bn must be one of"):
    S.score_paths(sn, paths, smoke_data, bn="none")


def test_a_score_request_scores_paths_on_the_evaluators_data(smoke_data):
  # One-shot strategies score with the data given to the request's score function.
  sn = SMOKE.init(jax.random.key(5))
  paths = np.array([[3, 1, 0, 2, 4, 3], [2, 2, 2, 2, 2, 2], [0, 3, 3, 0, 1, 4]])
  kw = dict(bn="recalibrate", calib_batches=2, calib_batch_size=16, max_examples=48)
  request = work.ScoreShared(oneshot.SharedWeights(sn, ()), paths,
                             functools.partial(oneshot.score_codes, **kw))
  result = run_shared(request, smoke_data)
  np.testing.assert_allclose(result.scores, S.score_paths(sn, paths, smoke_data, **kw),
                             rtol=0, atol=0)
  assert result.weights is request.weights and result.metrics == {}
