"""Networks: initialisation, application, cost model, save/load."""

import json
import os
import re
import tracemalloc
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nasjax as nj
from nasjax import Arch, Node


def tiny_arch(features=4):
  return Arch([
      Node("x", "input", shape=(8, 8, 3)),
      Node("c1", "conv", ["x"], features=features),
      Node("bn1", "batchnorm", ["c1"]),
      Node("r1", "relu", ["bn1"]),
      Node("p", "avg_pool", ["r1"], window=3, stride=1, padding="SAME"),
      Node("s", "add", ["r1", "p"]),
      Node("g", "gap", ["s"]),
      Node("logits", "dense", ["g"], features=5),
  ])


def test_param_count_by_hand():
  a = tiny_arch()
  # conv 3x3x3x4 = 108 (no bias); BN scale+bias 2*4 = 8; dense 4*5 + 5 = 25.
  assert nj.count_params(a) == 108 + 8 + 25
  net = nj.init(a, jax.random.key(0))
  assert net.num_params == nj.count_params(a)
  assert set(net.params) == {"c1", "bn1", "logits"} and set(net.state) == {"bn1"}
  sep = Arch([Node("x", "input", shape=(8, 8, 6)),
              Node("s", "sep_conv", ["x"], features=10, kernel=5, multiplier=2),
              Node("g", "gap", ["s"])])
  # depthwise 5*5*1*(6*2) = 300; pointwise 1*1*12*10 = 120.
  assert nj.count_params(sep) == 420
  grouped = Arch([Node("x", "input", shape=(8, 8, 6)),
                  Node("c", "conv", ["x"], features=9, groups=3, use_bias=True)])
  assert nj.count_params(grouped) == 3 * 3 * 2 * 9 + 9


def test_flops_by_hand():
  a = Arch([Node("x", "input", shape=(8, 8, 3)),
            Node("c", "conv", ["x"], features=4),
            Node("r", "relu", ["c"]),
            Node("g", "gap", ["r"]),
            Node("d", "dense", ["g"], features=2)])
  # 2 * Cout * Cin * (valid 3x3 taps over the 8x8 SAME-padded outputs): per axis the
  # edge outputs see 2 of 3 taps, so 2 + 6 * 3 + 2 = 22 taps, 22 * 22 in 2-D.
  conv = 2 * 4 * 3 * 22 * 22
  relu = 8 * 8 * 4
  gap = 8 * 8 * 4
  dense = 2 * 4 * 2 + 2
  assert nj.flops(a) == conv + relu + gap + dense


def _families_for_flops():
  yield tiny_arch(16)
  yield nj.sequential((16, 16, 3), [("conv", {"features": 16}), ("batchnorm", {}),
                                    ("relu", {}), ("max_pool", {}),
                                    ("conv", {"features": 32, "kernel": 5}), ("batchnorm", {}),
                                    ("relu", {}), ("gap", {}), ("dense", {"features": 10})])
  yield Arch([Node("x", "input", shape=(16, 16, 8)),
              Node("s", "sep_conv", ["x"], features=16, stride=2),
              Node("bn", "batchnorm", ["s"]),
              Node("c", "conv", ["x"], features=8, kernel=1),
              Node("p", "max_pool", ["c"]),
              Node("cat", "concat", ["bn", "p"]),
              Node("g", "gap", ["cat"]), Node("d", "dense", ["g"], features=10)])


@pytest.mark.parametrize("arch", list(_families_for_flops()))
def test_flops_match_xla_cost_analysis(arch):
  net = nj.init(arch, jax.random.key(0))
  ours, xla = nj.flops(arch), nj.xla_flops(net)
  assert abs(ours - xla) <= 0.10 * xla, (ours, xla)


def test_init_deterministic_and_stable_under_insertion():
  a = tiny_arch()
  n1, n2 = nj.init(a, jax.random.key(3)), nj.init(a, jax.random.key(3))
  n3 = nj.init(a, jax.random.key(4))
  np.testing.assert_array_equal(n1.params["c1"]["kernel"], n2.params["c1"]["kernel"])
  assert float(jnp.max(jnp.abs(n1.params["c1"]["kernel"] - n3.params["c1"]["kernel"]))) > 1e-3
  # A new node does not change any other node's initial values.
  b = a.insert_after("r1", Node("c_new", "conv", ["r1"], features=4))
  nb = nj.init(b, jax.random.key(3))
  for name in n1.params:
    for k in n1.params[name]:
      np.testing.assert_array_equal(n1.params[name][k], nb.params[name][k])
  # Raw uint32 keys work and agree with typed keys of the same data.
  raw = nj.init(a, jax.random.PRNGKey(3))
  np.testing.assert_array_equal(raw.params["c1"]["kernel"], n1.params["c1"]["kernel"])


def test_init_scale():
  a = nj.sequential((8, 8, 64), [("conv", {"features": 256})])
  k = np.asarray(nj.init(a, jax.random.key(0)).params["l0_conv"]["kernel"])
  # He normal: std = sqrt(2 / fan_in), fan_in = 3 * 3 * 64.
  assert abs(k.std() - np.sqrt(2 / 576)) < 0.02 * np.sqrt(2 / 576)


def test_init_under_vmap_and_jit_makes_an_ensemble():
  a = tiny_arch()
  keys = jax.random.split(jax.random.key(5), 3)
  ens = jax.vmap(lambda k: nj.init(a, k))(keys)
  assert ens.params["c1"]["kernel"].shape == (3, 3, 3, 3, 4)
  # Each member is what jit(init) draws for its key; members differ.
  for i in range(3):
    one = jax.jit(lambda k: nj.init(a, k))(keys[i])
    for x, y in zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(ens)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y)[i], rtol=0, atol=1e-6)
  k = np.asarray(ens.params["c1"]["kernel"])
  assert float(np.abs(k[0] - k[1]).max()) > 1e-2
  # Constants are the host draw's; batch-norm state too.
  np.testing.assert_array_equal(np.asarray(ens.params["bn1"]["scale"]), np.ones((3, 4)))
  np.testing.assert_array_equal(np.asarray(ens.state["bn1"]["var"]), np.ones((3, 4)))
  np.testing.assert_array_equal(np.asarray(ens.params["logits"]["bias"]), np.zeros((3, 5)))
  # The ensemble runs under vmap: three different functions of the same inputs.
  x = np.random.default_rng(0).standard_normal((6, 8, 8, 3)).astype(np.float32)
  out = jax.vmap(lambda k: nj.apply(nj.init(a, k), x))(keys)
  assert out.shape == (3, 6, 5)
  assert float(jnp.abs(out[0] - out[1]).max()) > 1e-2
  # Raw uint32 keys trace too, and a new node leaves the others' draws unchanged.
  b = a.insert_after("r1", Node("c_new", "conv", ["r1"], features=4))
  pa = jax.jit(lambda k: nj.init(a, k).params)(jax.random.PRNGKey(3))
  pb = jax.jit(lambda k: nj.init(b, k).params)(jax.random.PRNGKey(3))
  for name in pa:
    for leaf in pa[name]:
      np.testing.assert_array_equal(np.asarray(pa[name][leaf]), np.asarray(pb[name][leaf]))


def test_traced_init_scale():
  a = nj.sequential((8, 8, 64), [("conv", {"features": 256}), ("gap", {}),
                                 ("dense", {"features": 512})])
  params = jax.jit(lambda k: nj.init(a, k).params)(jax.random.key(0))
  conv, dense = np.asarray(params["l0_conv"]["kernel"]), np.asarray(params["l2_dense"]["kernel"])
  # He normal for the convolution (fan_in 3 * 3 * 64), LeCun normal for the dense layer.
  assert abs(conv.std() - np.sqrt(2 / 576)) < 0.02 * np.sqrt(2 / 576)
  assert abs(dense.std() - np.sqrt(1 / dense.shape[0])) < 0.02 * np.sqrt(1 / dense.shape[0])
  assert abs(conv.mean()) < 0.02 * np.sqrt(2 / 576)


def test_apply_modes():
  a = tiny_arch()
  net = nj.init(a, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (6, 8, 8, 3)) * 2 + 1
  y = nj.apply(net, x)
  assert y.shape == (6, 5) and bool(jnp.all(jnp.isfinite(y)))
  logits, state = nj.apply_train(net, x)
  assert logits.shape == (6, 5)
  # BN running statistics move towards the batch statistics (momentum 0.9).
  h = jax.lax.conv_general_dilated(x, net.params["c1"]["kernel"], (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(state["bn1"]["mean"], 0.1 * h.mean((0, 1, 2)), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(state["bn1"]["var"], 0.9 + 0.1 * h.var((0, 1, 2)), rtol=1e-4)
  # Inference with the running statistics of a fully-adapted BN equals train mode.
  adapted = net.replace(state={"bn1": {"mean": h.mean((0, 1, 2)), "var": h.var((0, 1, 2))}})
  np.testing.assert_allclose(nj.apply(adapted, x), logits, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="does not match the architecture's input shape"):
    nj.apply(net, jnp.zeros((2, 9, 8, 3)))


def test_bfloat16_compute_close_to_float32():
  a = tiny_arch(16)
  net = nj.init(a, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  y32, y16 = nj.apply(net, x), nj.apply(net, x, dtype="bfloat16")
  assert y16.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(y32 - y16))) <= 0.05 * max(1.0, float(jnp.max(jnp.abs(y32))))


def test_same_arch_compiles_once():
  a = tiny_arch(6)
  x = jnp.ones((2, 8, 8, 3))
  nj.apply(nj.init(a, jax.random.key(0)), x)
  before = nj.network._apply._cache_size()
  for seed in range(3):
    nj.apply(nj.init(tiny_arch(6), jax.random.key(seed)), x)
  assert nj.network._apply._cache_size() == before


def test_save_load_round_trip(tmp_path):
  a = tiny_arch()
  net = nj.init(a, jax.random.key(0))
  _, state = nj.apply_train(net, jnp.ones((2, 8, 8, 3)))
  net = net.replace(state=state)
  path = tmp_path / "net.npz"
  nj.save(net, path, metadata={"accuracy": 0.5})
  back, meta = nj.load(path, with_metadata=True)
  assert back.arch == a and meta == {"accuracy": 0.5}
  for t1, t2 in ((net.params, back.params), (net.state, back.state)):
    leaves1, tree1 = jax.tree_util.tree_flatten(t1)
    leaves2, tree2 = jax.tree_util.tree_flatten(t2)
    assert tree1 == tree2
    for u, v in zip(leaves1, leaves2):
      np.testing.assert_array_equal(u, v)
  with pytest.raises(FileNotFoundError, match="no saved network"):
    nj.load(tmp_path / "missing.npz")


def test_latency_positive():
  net = nj.init(tiny_arch(), jax.random.key(0))
  t = nj.latency(net, repeats=3, warmup=1)
  assert 0 < t < 1.0


# ------------------------------------------------------------------ hardened load
def _write_npz(path, header: dict, arrays: dict, compress: bool = False) -> None:
  """A .npz laid out as save() writes it, from any header and arrays."""
  blob = np.frombuffer(json.dumps(header).encode(), np.uint8)
  (np.savez_compressed if compress else np.savez)(path, __header__=blob, **arrays)


def _saved_arrays(net):
  """``(index, arrays)`` as save() writes them."""
  index, arrays = [], {}
  for tree, entries in (("params", net.params), ("state", net.state)):
    for node, named in entries.items():
      for name, value in named.items():
        key = f"a{len(index)}"
        index.append([tree, node, name, key])
        arrays[key] = np.asarray(value)
  return index, arrays


class _Mkdir:
  """Unpickling this creates a directory: proof that a file was unpickled."""

  def __init__(self, path):
    self.path = str(path)

  def __reduce__(self):
    return (os.mkdir, (self.path,))


def test_load_never_unpickles(tmp_path):
  net = nj.init(tiny_arch(), jax.random.key(0))
  index, arrays = _saved_arrays(net)
  marker = tmp_path / "unpickled"
  arrays[index[0][3]] = np.array([_Mkdir(marker)], dtype=object)
  path = tmp_path / "evil.npz"
  _write_npz(path, {"arch": net.arch.to_dict(), "index": index, "metadata": {}}, arrays)
  with pytest.raises(ValueError, match=r"evil\.npz.*Python objects"):
    nj.load(path)
  assert not marker.exists()


def test_load_checks_every_array_against_the_architecture(tmp_path):
  a = tiny_arch()
  net = nj.init(a, jax.random.key(0))
  header = {"arch": a.to_dict(), "metadata": {}}

  def refused(name, edit, match):
    index, arrays = _saved_arrays(net)
    index, arrays = edit(index, arrays)
    path = tmp_path / f"{name}.npz"
    _write_npz(path, dict(header, index=index), arrays)
    with pytest.raises(ValueError, match=match) as e:
      nj.load(path)
    assert f"{name}.npz" in str(e.value)

  def reshape(index, arrays):  # c1's kernel with 5 output channels instead of 4
    k = next(e[3] for e in index if e[1:3] == ["c1", "kernel"])
    arrays[k] = np.zeros((3, 3, 3, 5), np.float32)
    return index, arrays

  def integer(index, arrays):
    k = next(e[3] for e in index if e[1:3] == ["logits", "bias"])
    arrays[k] = np.zeros((5,), np.int32)
    return index, arrays

  def missing(index, arrays):
    k = next(e for e in index if e[1:3] == ["bn1", "var"])
    index.remove(k)
    arrays.pop(k[3])
    return index, arrays

  def extra(index, arrays):
    index.append(["params", "r1", "kernel", "extra"])
    arrays["extra"] = np.zeros((1,), np.float32)
    return index, arrays

  def unindexed(index, arrays):
    arrays["stray"] = np.zeros((1,), np.float32)
    return index, arrays

  refused("shape", reshape,
          r"node 'c1', parameter 'kernel' has shape \(3, 3, 3, 5\); the architecture "
          r"implies \(3, 3, 3, 4\)")
  refused("dtype", integer, r"node 'logits', parameter 'bias' has dtype int32")
  refused("missing", missing, r"lacks state of node 'bn1', parameter 'var'")
  refused("extra", extra, r"node 'r1', parameter 'kernel', which the architecture does not")
  refused("unindexed", unindexed, r"arrays \['stray.npy'\] that its index does not name")
  # The same arrays, unedited, load.
  index, arrays = _saved_arrays(net)
  _write_npz(tmp_path / "good.npz", dict(header, index=index), arrays)
  assert nj.load(tmp_path / "good.npz").arch == a


def test_load_refuses_bad_files(tmp_path):
  text = tmp_path / "text.npz"
  text.write_text("not an archive")
  with pytest.raises(ValueError, match=r"text\.npz.*not an \.npz archive"):
    nj.load(text)
  np.savez(tmp_path / "plain.npz", x=np.zeros(3))
  with pytest.raises(ValueError, match=r"plain\.npz.*no header"):
    nj.load(tmp_path / "plain.npz")
  _write_npz(tmp_path / "arch.npz", {"arch": {"nodes": "x"}, "index": [], "metadata": {}}, {})
  with pytest.raises(ValueError, match=r"arch\.npz.*bad architecture"):
    nj.load(tmp_path / "arch.npz")


def test_load_caps_the_header(tmp_path, monkeypatch):
  net = nj.init(tiny_arch(), jax.random.key(0))
  nj.save(net, tmp_path / "net.npz")
  size = len(json.dumps({"arch": net.arch.to_dict()}))
  monkeypatch.setattr(nj.network, "MAX_HEADER_BYTES", size // 2)
  with pytest.raises(ValueError, match=r"net\.npz.*the header claims \d+ bytes"):
    nj.load(tmp_path / "net.npz")


def _bomb(path, header: dict, arrays: dict, member: str, shape, data_bytes: int) -> None:
  """A .npz of ``arrays`` and ``member``, an .npy header claiming ``shape`` (float32)
  followed by ``data_bytes`` of zeros, deflated (a few KB on disk)."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    arrays = dict(arrays, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8))
    for name, array in arrays.items():
      with zf.open(f"{name}.npy", "w") as f:
        np.lib.format.write_array(f, array)
    with zf.open(f"{member}.npy", "w", force_zip64=True) as f:
      np.lib.format.write_array_header_1_0(
          f, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
      chunk = bytes(1 << 20)
      for _ in range(data_bytes >> 20):
        f.write(chunk)


def _load_peak_bytes(path):
  """``(the ValueError nasjax.load raised, peak bytes it allocated)``."""
  tracemalloc.start()
  try:
    with pytest.raises(ValueError) as e:
      nj.load(path)
    return e.value, tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_load_refuses_a_zip_bomb_before_reading_it(tmp_path):
  a = Arch([Node("x", "input", shape=(4,)), Node("d", "dense", ["x"], features=2)])
  index = [["params", "d", "kernel", "a0"], ["params", "d", "bias", "a1"]]
  header = {"arch": a.to_dict(), "index": index, "metadata": {}}
  path = tmp_path / "bomb.npz"
  # d's kernel claims 2**28 floats (1 GiB) over 16 MiB of compressed zeros.
  _bomb(path, header, {"a1": np.zeros(2, np.float32)}, "a0", (1 << 28,), 16 << 20)
  assert path.stat().st_size < 1 << 20
  error, peak = _load_peak_bytes(path)
  assert "bomb.npz" in str(error) and "node 'd', parameter 'kernel'" in str(error)
  assert "(268435456,)" in str(error)
  assert peak < 4 << 20  # the data was never read


def test_load_refuses_arrays_much_larger_than_the_file(tmp_path, monkeypatch):
  # An architecture of big layers whose arrays are compressed zeros: each array has the
  # shape the architecture implies, but together they far outgrow the file.
  a = Arch([Node("x", "input", shape=(256,)), Node("d", "dense", ["x"], features=1024)])
  header = {"arch": a.to_dict(), "index": [["params", "d", "kernel", "a0"],
                                           ["params", "d", "bias", "a1"]], "metadata": {}}
  path = tmp_path / "inflated.npz"
  _bomb(path, header, {"a1": np.zeros(1024, np.float32)}, "a0", (256, 1024), 1 << 20)
  monkeypatch.setattr(nj.network, "MIN_INFLATE_BYTES", 1 << 16)
  error, peak = _load_peak_bytes(path)
  assert re.search(r"inflated\.npz': its arrays take 1052672 bytes, more than \d+ \(64 "
                   r"times the file's size\)", str(error)), error
  assert peak < 512 << 10
