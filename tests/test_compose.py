"""nasjax's functions inside the user's JAX transformations: jit, grad, vmap, scan, remat.

Every model family and the output of every exact morphism run under each transformation
and give what the untransformed call gives, to explicit tolerances.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nasjax as nj
from nasjax import models, ops
from test_morphisms import randomize  # random BN parameters and running statistics

SHAPE = (8, 8, 1)
BATCH = 4
# Transformed against untransformed calls: max |a - b| <= TOL * max(1, max |b|), float32.
TOL = 1e-5
# A directional derivative against its central difference with step EPS along a unit
# direction: training-mode batch norm over a few values curves sharply (NB201's is off by
# 2% at a step of 1e-3), and float32 rounding of losses of size ~1 adds ~1e-7 / EPS.
EPS, FD_TOL = 1e-4, 1e-2
# Small cells of every op of their family: NB201's five edge ops; a DARTS normal cell
# with sep and dil convs, reduction cells with both pools (the families' default cells
# take several times longer to compile).
NB201_SMALL = ("|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|"
               "+|none~0|skip_connect~1|nor_conv_1x1~2|")
DARTS_SMALL = models.Genotype(
    normal=(("sep_conv_3x3", 0), ("dil_conv_3x3", 1)), normal_concat=(2,),
    reduce=(("max_pool_3x3", 0), ("avg_pool_3x3", 1)), reduce_concat=(2,))


def tiny_families():
  return {
      "plain_cnn": models.plain_cnn(((4, 4), (6,)), dense=(8,), input_shape=SHAPE),
      "eas_start_net": models.eas_start_net("tiny", num_blocks=2, input_shape=SHAPE),
      "densenet": models.densenet(3, (1, 1), init_features=4, input_shape=SHAPE),
      "resnet": models.resnet(((4, 1), (6, 1)), input_shape=SHAPE),
      "nb201": models.nb201(NB201_SMALL, C=4, N=1, input_shape=SHAPE),
      "darts_cell": models.darts_cell(DARTS_SMALL, C=4, layers=3, steps=1,
                                      stem_multiplier=1, input_shape=SHAPE),
  }


FAMILIES = sorted(tiny_families())


@pytest.fixture(autouse=True, scope="module")
def _highest_precision():
  with jax.default_matmul_precision("highest"):
    yield


def images(seed: int, n: int = BATCH) -> jax.Array:
  return jax.random.normal(jax.random.key(seed), (n,) + SHAPE)


def assert_close(got, want, tol=TOL):
  # On the host: eager jnp ops would compile a program for every new shape.
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want),
                  strict=True):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    assert g.shape == w.shape
    err = np.max(np.abs(g - w)) / max(1.0, np.max(np.abs(w)))
    assert err <= tol, err


@jax.jit
def weighted_sum(logits):
  # Fixed, uneven weights: every logit and example has its own share of the gradient.
  w = jnp.linspace(-1.0, 1.0, logits.size).reshape(logits.shape)
  return jnp.sum(logits * w) / logits.shape[0]


def check_gradient(loss, params, grads, seed=0):
  """``grads`` is finite and matches central differences of ``loss`` along the gradient
  and along a random direction (steps taken on the host)."""
  leaves, treedef = jax.tree_util.tree_flatten(grads)
  leaves = [np.asarray(g, np.float64) for g in leaves]
  points = [np.asarray(p, np.float64) for p in jax.tree_util.tree_leaves(params)]
  assert all(np.all(np.isfinite(g)) for g in leaves)
  norm = np.sqrt(sum(np.sum(g ** 2) for g in leaves))
  assert norm > 1e-3
  rng = np.random.default_rng(seed)
  for direction in (leaves, [rng.standard_normal(g.shape) for g in leaves]):
    scale = np.sqrt(sum(np.sum(d ** 2) for d in direction))
    d = [v / scale for v in direction]
    at = lambda s: jax.tree_util.tree_unflatten(
        treedef, [(p + s * v).astype(np.float32) for p, v in zip(points, d)])
    fd = (float(loss(at(EPS))) - float(loss(at(-EPS)))) / (2 * EPS)
    exact = sum(float(np.vdot(g, v)) for g, v in zip(leaves, d))
    assert abs(fd - exact) <= FD_TOL * norm, (fd, exact, norm)


# The user's own top-level options (here: fewer XLA optimisations, so these many small
# programs compile quickly) go with nasjax's functions traced inside.
user_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def test_every_family_is_covered():
  assert set(FAMILIES) == set(models.FAMILIES)


def test_outside_jit_on_a_plain_cnn():
  # grad and checkpoint called directly (not under jit), vmap too, and a plain jax.jit.
  net = randomize(nj.init(tiny_families()["plain_cnn"], jax.random.key(0)))
  x = images(1)
  y, (y_train, state) = nj.apply(net, x), nj.apply_train(net, x)
  assert_close(jax.jit(lambda x: nj.apply(net, x))(x), y)
  assert_close(jax.jit(lambda x: nj.apply_train(net, x))(x), (y_train, state))
  assert_close(jax.checkpoint(lambda x: nj.apply(net, x))(x), y)
  assert_close(jax.vmap(lambda xi: nj.apply(net, xi[None])[0])(x), y)
  grads = jax.grad(lambda p: loss(net, p, x))(net.params)
  check_gradient(lambda p: loss_untransformed(net, p, x), net.params, grads)


def train_loss(net, params, x):
  """Training mode through a rematerialised apply_train."""
  return weighted_sum(jax.checkpoint(lambda p: nj.apply_train(net.replace(params=p), x)[0])(
      params))


def loss(net, params, x):
  """Inference mode plus :func:`train_loss`."""
  return weighted_sum(nj.apply(net.replace(params=params), x)) + train_loss(net, params, x)


def loss_untransformed(net, params, x, infer=True):
  """:func:`loss` (or with ``infer=False`` :func:`train_loss`) through the top-level
  apply and apply_train, without checkpoint."""
  n = net.replace(params=params)
  return weighted_sum(nj.apply(n, x)) * infer + weighted_sum(nj.apply_train(n, x)[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_transformations_inside_jit(family):
  """jit around grad, checkpoint, vmap and scan of apply, apply_train and forward: one
  program per family."""
  arch = tiny_families()[family]
  net, other = (randomize(nj.init(arch, jax.random.key(s)), seed=s) for s in (0, 1))
  x, xs = images(1), jnp.stack([images(2 + t) for t in range(3)])

  def step(state, x):
    n = net.replace(state=state)
    logits, new_state = nj.apply_train(n, x)
    return new_state, (logits, nj.apply(n, x), nj.forward(n, x))

  @user_jit
  def everything(net, other, x, xs):
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), net, other)
    return {
        "jit": (nj.apply(net, x), nj.apply_train(net, x), nj.forward(net, x),
                nj.forward(net, x, train=True)),
        "grad": jax.grad(lambda p: train_loss(net, p, x))(net.params),
        "vmap": jax.vmap(lambda n, x: (nj.apply(n, x), nj.apply_train(n, x),
                                       nj.forward(n, x)))(stacked, xs[:2]),
        "scan": jax.lax.scan(step, net.state, xs),
    }

  got = everything(net, other, x, xs)
  y, (y_train, state) = nj.apply(net, x), nj.apply_train(net, x)
  assert float(jnp.max(jnp.abs(y - y_train))) > 1e-3  # the two modes differ here
  assert_close(got["jit"], (y, (y_train, state), y, (y_train, state)))
  check_gradient(lambda p: loss_untransformed(net, p, x, infer=False), net.params,
                 got["grad"])
  for i, n in enumerate((net, other)):
    want = nj.apply(n, xs[i])
    assert_close(jax.tree_util.tree_map(lambda a: a[i], got["vmap"]),
                 (want, nj.apply_train(n, xs[i]), want))
  final, (train_out, eval_out, fwd_out) = got["scan"]
  state = net.state
  for t in range(3):
    n = net.replace(state=state)
    logits, state = nj.apply_train(n, xs[t])
    assert_close((train_out[t], eval_out[t], fwd_out[t]),
                 (logits, nj.apply(n, xs[t]), nj.apply(n, xs[t])))
  assert_close(final, state)


# Every exact morphism on the plain CNN (node names as in tests/test_morphisms.py).
MORPHISM_CASES = [
    ("net2wider", {"node": "b0_l0_conv", "width": 7}),
    ("net2deeper", {"after": "b0_pool", "kernel": 3}),
    ("insert_conv_bn_relu", {"after": "b0_l1_relu", "kernel": 3}),
    ("add_skip", {"src": "b0_l0_relu", "dst": "b1_l0_bn"}),
    ("widen_kernel", {"node": "b1_l0_conv", "kernel": (5, 3)}),
    # The inserted batch norm initialised from a batch's statistics (``batch=True``: the
    # test's images).
    ("net2deeper", {"after": "b0_pool", "kernel": 3, "batch": True}),
    ("insert_conv_bn_relu", {"after": "b0_l1_relu", "kernel": 3, "batch": True}),
]


def test_every_exact_morphism_is_covered():
  assert {name for name, _ in MORPHISM_CASES} == set(ops.EXACT)


@pytest.fixture(scope="module")
def parent():
  """A plain CNN, a batch, its outputs and the gradient of their :func:`weighted_sum`
  (through forward under grad under jit)."""
  net = randomize(nj.init(tiny_families()["plain_cnn"], jax.random.key(0)))
  x = images(8)
  grads = user_jit(jax.grad(lambda p: weighted_sum(nj.forward(net.replace(params=p), x))))(
      net.params)
  return net, x, nj.apply(net, x), grads


@pytest.mark.parametrize("name,kwargs", MORPHISM_CASES,
                         ids=[c[0] + ("_batch" if "batch" in c[1] else "")
                              for c in MORPHISM_CASES])
def test_exact_morphisms_compose(name, kwargs, parent):
  morphism = ops.MORPHISMS[name]
  net, x, y, parent_grads = parent
  if kwargs.get("batch"):
    kwargs = {**kwargs, "batch": x}
  key = jax.random.key(9)
  child = morphism(net, key, **kwargs)
  assert child.arch != net.arch

  @user_jit
  def under_jit(net, child, x):
    def through(params):
      return weighted_sum(nj.apply(morphism(net.replace(params=params), key, **kwargs), x))
    return (morphism(net, key, **kwargs), nj.apply(child, x),
            jax.vmap(lambda xi: nj.apply(child, xi[None])[0])(x),
            jax.grad(through)(net.params))

  traced, y_jit, y_vmap, grads = under_jit(net, child, x)
  # The morphism traced inside jit gives the same network as called at top level.
  assert traced.arch == child.arch
  assert_close((traced.params, traced.state), (child.params, child.state), tol=1e-6)
  # Its output under jit and vmap computes the parent's function.
  assert_close(y_jit, y)
  assert_close(y_vmap, y)
  # The child equals the parent for all parent parameters, so the gradient through the
  # morphism is the parent's gradient.
  assert_close(grads, parent_grads, tol=1e-4)
