"""Architecture JSON from untrusted sources: every bad field is a one-line ValueError.

Each hostile case must raise ``ValueError`` (never ``TypeError``, ``RecursionError`` or
``ZeroDivisionError``, and never be accepted), with a message naming the node and the
field, so that a user can find the mistake in the file. Sizes are checked on shapes,
so shape inference, parameter counts and FLOPs never allocate a tensor's worth of memory.
"""

import copy
import json
import math
import tracemalloc

import numpy as np
import pytest

import nasjax as nj
from nasjax import Arch, Node, layers
from nasjax.arch import MAX_JSON_CHARS


def _doc() -> dict:
  """input x -> conv c -> gap g -> dense d, as :meth:`Arch.to_dict` writes it."""
  return Arch([
      Node("x", "input", shape=(8, 8, 4)),
      Node("c", "conv", ["x"], features=4),
      Node("g", "gap", ["c"]),
      Node("d", "dense", ["g"], features=10),
  ]).to_dict()


def _with(node: str | None = None, **fields) -> str:
  """The JSON of :func:`_doc` with ``fields`` set on ``node`` (or at the top level)."""
  d = _doc()
  target = d if node is None else next(n for n in d["nodes"] if n["name"] == node)
  target.update(fields)
  return json.dumps(d)


def _swap(node: str, op: str, **attrs) -> str:
  """The JSON of :func:`_doc` with ``node`` replaced by an ``op`` node with ``attrs``."""
  d = _doc()
  for n in d["nodes"]:
    if n["name"] == node:
      inputs = n["inputs"]
      n.clear()
      n.update(name=node, op=op, inputs=inputs, **attrs)
  return json.dumps(d)


def _without(node: str, field: str) -> str:
  d = _doc()
  del next(n for n in d["nodes"] if n["name"] == node)[field]
  return json.dumps(d)


def _entry(i: int, value) -> str:
  d = _doc()
  d["nodes"][i] = value
  return json.dumps(d)


# (text, substrings the message must contain: the node and the field, where there is one)
HOSTILE = {
    # Formerly RecursionError, ZeroDivisionError and TypeError.
    "deep_nesting": ("[" * 100_000 + "]" * 100_000, ["nested too deeply"]),
    "deep_nesting_in_field": (_with("c", features=None).replace(
        "null", "[" * 100_000 + "]" * 100_000), ["nested too deeply"]),
    "conv_stride_0": (_with("c", stride=0), ["'c'", "'stride'"]),
    "conv_groups_0": (_with("c", groups=0), ["'c'", "'groups'"]),
    "features_null": (_with("c", features=None), ["'c'", "'features'"]),
    "features_string": (_with("c", features="4"), ["'c'", "'features'"]),
    "features_dict": (_with("c", features={}), ["'c'", "'features'"]),
    "nodes_not_a_list": (_with(nodes=3), ["'nodes'"]),
    "nodes_a_dict": (_with(nodes={"x": {}}), ["'nodes'"]),
    "op_a_list": (_with("c", op=["conv"]), ["'c'", "'op'"]),
    "output_a_list": (_with(output=["d"]), ["'output'", "'d'"]),
    "attribute_named_self": (_with("c", self=1), ["'c'", "'self'"]),
    "entry_not_a_dict": (_entry(1, 3), ["nodes[1]"]),
    "name_a_list": (_with("c", name=["c"]), ["nodes[1]", "'name'"]),
    # Formerly accepted.
    "kernel_negative": (_with("c", kernel=-1), ["'c'", "'kernel'"]),
    "kernel_0": (_with("c", kernel=0), ["'c'", "'kernel'"]),
    "kernel_pair_with_0": (_with("c", kernel=[3, 0]), ["'c'", "'kernel'"]),
    "dilation_0": (_with("c", dilation=0), ["'c'", "'dilation'"]),
    "dilation_negative": (_with("c", dilation=-2), ["'c'", "'dilation'"]),
    "groups_negative": (_with("c", groups=-1), ["'c'", "'groups'"]),
    "features_float_1e12": (_with("c", features=1e12), ["'c'", "'features'"]),
    "features_true": (_with("c", features=True), ["'c'", "'features'"]),
    "inputs_a_dict": (_with("c", inputs={"x": 1}), ["'c'", "'inputs'"]),
    # Every other attribute of every op, and the other fields.
    "features_float_4": (_with("d", features=4.0), ["'d'", "'features'"]),
    "features_0": (_with("d", features=0), ["'d'", "'features'"]),
    "use_bias_string": (_with("d", use_bias="yes"), ["'d'", "'use_bias'"]),
    "use_bias_1": (_with("d", use_bias=1), ["'d'", "'use_bias'"]),
    "stride_float": (_with("c", stride=1.5), ["'c'", "'stride'"]),
    "kernel_triple": (_with("c", kernel=[3, 3, 3]), ["'c'", "'kernel'"]),
    "kernel_over_2_40": (_with("c", kernel=2**41), ["'c'", "'kernel'"]),
    "sep_multiplier_0": (_swap("c", "sep_conv", features=4, multiplier=0),
                         ["'c'", "'multiplier'"]),
    "sep_dilation_0": (_swap("c", "sep_conv", features=4, dilation=0),
                       ["'c'", "'dilation'"]),
    "pool_window_0": (_swap("c", "max_pool", window=0), ["'c'", "'window'"]),
    "pool_stride_0": (_swap("c", "avg_pool", stride=[1, 0]), ["'c'", "'stride'"]),
    "pool_padding": (_swap("c", "max_pool", padding="FULL"), ["'c'", "'padding'"]),
    "pool_padding_list": (_swap("c", "max_pool", padding=["SAME"]), ["'c'", "'padding'"]),
    "bn_eps_0": (_swap("c", "batchnorm", eps=0), ["'c'", "'eps'"]),
    "bn_eps_nan": (_swap("c", "batchnorm", eps=float("nan")), ["'c'", "'eps'"]),
    "bn_eps_string": (_swap("c", "batchnorm", eps="1e-5"), ["'c'", "'eps'"]),
    "bn_momentum_2": (_swap("c", "batchnorm", momentum=2), ["'c'", "'momentum'"]),
    "crop_negative": (_swap("c", "crop", top=-1), ["'c'", "'top'"]),
    "crop_float": (_swap("c", "crop", left=1.0), ["'c'", "'left'"]),
    "input_shape_empty": (_with("x", shape=[]), ["'x'", "'shape'"]),
    "input_shape_0": (_with("x", shape=[8, 0, 4]), ["'x'", "'shape'"]),
    "input_shape_float": (_with("x", shape=[8.0, 8, 4]), ["'x'", "'shape'"]),
    "input_shape_string": (_with("x", shape="8x8x4"), ["'x'", "'shape'"]),
    "input_shape_null": (_with("x", shape=None), ["'x'", "'shape'"]),
    "inputs_a_string": (_with("c", inputs="x"), ["'c'", "'inputs'"]),
    "inputs_of_ints": (_with("c", inputs=[0]), ["'c'", "'inputs'"]),
    "unknown_op": (_with("c", op="convolution"), ["'c'", "unknown op 'convolution'"]),
    "unknown_attribute": (_with("c", width=2), ["'c'", "'width'"]),
    "missing_required": (_without("c", "features"), ["'c'", "'features'"]),
    "missing_op": (_without("c", "op"), ["'c'", "'op'"]),
    "missing_name": (_without("c", "name"), ["nodes[1]", "'name'"]),
    "bad_format": (_with(format=["x"]), ["format"]),
    # Sizes over layers.MAX_ELEMENTS = 2**40 elements.
    "input_1e15_elements": (_with("x", shape=[100_000] * 3), ["'x'", "shape", "2**40"]),
    "conv_output_over_2_40": (_with("c", features=10**12), ["'c'", "output", "2**40"]),
    "dense_kernel_over_2_40": (_with("d", features=10**12), ["'d'", "'kernel'", "2**40"]),
}


@pytest.mark.parametrize("text, names", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_json_is_a_value_error_naming_node_and_field(text, names):
  with pytest.raises(ValueError) as info:
    Arch.from_json(text)
  message = str(info.value)
  for name in names:
    assert name in message, f"{name!r} not in {message!r}"
  assert "\n" not in message and len(message) < 400


def test_hostile_dicts_give_short_messages():
  # Python structures (no json.loads depth limit): the message stays one short line.
  deep = []
  for _ in range(50_000):
    deep = [deep]
  d = _doc()
  d["nodes"][1]["features"] = deep
  with pytest.raises(ValueError, match=r"^node 'c': attribute 'features' must be an int"
                     ) as info:
    Arch.from_dict(d)
  assert len(str(info.value)) < 200
  d = _doc()
  d["nodes"][1]["features"] = "9" * 1_000_000
  with pytest.raises(ValueError, match="'features'") as info:
    Arch.from_dict(d)
  assert len(str(info.value)) < 200


def test_json_text_size_and_type_are_bounded():
  with pytest.raises(ValueError, match=f"over the limit of {MAX_JSON_CHARS}"):
    Arch.from_json(" " * (MAX_JSON_CHARS + 1))
  with pytest.raises(ValueError, match="must be a string, got int"):
    Arch.from_json(3)
  with pytest.raises(ValueError, match="does not parse"):
    Arch.from_json(b"\xff\xfe{")


def test_sizes_at_the_bound_are_accepted_and_over_it_refused():
  a = nj.sequential((2**20, 2**20, 1), [("relu", {})])
  assert math.prod(a.output_shape) == layers.MAX_ELEMENTS
  with pytest.raises(ValueError, match=r"node 'input' \(input\): output of shape "
                     r"\(1048576, 1048576, 2\) has 2199023255552 elements"):
    nj.sequential((2**20, 2**20, 2), [("relu", {})])
  # Parameters: a 2**20 x 2**20 dense kernel is at the bound, one more row is over it.
  nj.sequential((2**20,), [("dense", {"features": 2**20, "use_bias": False})])
  with pytest.raises(ValueError, match=r"node 'l0_dense' \(dense\): parameter 'kernel'"):
    nj.sequential((2**20 + 1,), [("dense", {"features": 2**20})])


def _taps_brute_force(size, kernel, stride, dilation):
  # The definition: every (output, tap) pair of a SAME-padded convolution in the input.
  out = -(-size // stride)
  lo = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0) // 2
  pos = (np.arange(out) * stride - lo)[:, None] + np.arange(kernel)[None, :] * dilation
  return int(np.sum((pos >= 0) & (pos < size)))


def test_valid_taps_closed_form_matches_the_definition():
  for size in range(1, 14):
    for kernel in range(1, 9):
      for stride in range(1, 5):
        for dilation in range(1, 5):
          assert layers.valid_taps(size, kernel, stride, dilation) == _taps_brute_force(
              size, kernel, stride, dilation), (size, kernel, stride, dilation)


def test_valid_taps_and_flops_do_not_allocate_tensors():
  tracemalloc.start()
  try:
    # Stride 1, kernel k <= n: n * k taps minus lo(lo+1)/2 + hi(hi+1)/2 on the padding.
    assert layers.valid_taps(2**13, 2**10, 1, 1) == 2**23 - (511 * 512 + 512 * 513) // 2
    # A 3x3 conv on a map of 2**40 elements, the largest allowed.
    a = nj.sequential((2**20, 2**20, 1), [("conv", {"features": 1})])
    assert nj.flops(a) == 2 * (3 * 2**20 - 2) ** 2
    # 10**9 features: 2.7e10 parameters, counted without allocating any.
    b = nj.sequential((8, 8, 3), [("conv", {"features": 10**9})])
    assert nj.count_params(b) == 27 * 10**9
    assert nj.flops(b) == 2 * 22 * 22 * 3 * 10**9
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 2**20, f"peak {peak} bytes"


# Every op, with attributes other than the defaults, survives JSON unchanged.
def _every_op() -> Arch:
  return Arch([
      Node("x", "input", shape=(12, 12, 4)),
      Node("c", "conv", ["x"], features=8, kernel=(3, 5), stride=(1, 2), dilation=2,
           groups=2, use_bias=True),
      Node("bn", "batchnorm", ["c"], eps=1e-3, momentum=0.99),
      Node("r", "relu", ["bn"]),
      Node("i", "identity", ["r"]),
      Node("z", "zero", ["r"]),
      Node("s", "add", ["i", "z"]),
      Node("sep", "sep_conv", ["s"], features=8, kernel=5, stride=1, dilation=(1, 2),
           multiplier=2, use_bias=True),
      Node("mp", "max_pool", ["sep"], window=3, stride=1, padding="SAME"),
      Node("ap", "avg_pool", ["sep"], window=(3, 3), stride=(1, 1), padding="SAME"),
      Node("cat", "concat", ["mp", "ap"]),
      Node("cr", "crop", ["cat"], top=1, bottom=0, left=1, right=1),
      Node("g", "gap", ["cr"]),
      Node("f", "flatten", ["cr"]),
      Node("dg", "dense", ["g"], features=3),
      Node("df", "dense", ["f"], features=3, use_bias=False),
      Node("out", "add", ["dg", "df"]),
  ])


def test_every_op_round_trips_through_json():
  a = _every_op()
  assert {n.op for n in a.nodes} == set(layers.OPS)
  text = a.to_json()
  b = Arch.from_json(text)
  assert b == a and hash(b) == hash(a) and b.to_json() == text
  assert b.shapes == a.shapes and b.shape("cr") == (11, 4, 16)
  # NumPy integers and floats are accepted and stored as Python ones.
  n = Node("c", "conv", ["x"], features=np.int64(8), kernel=(np.int32(3), 5))
  assert n["features"] == 8 and type(n["features"]) is int and n["kernel"] == (3, 5)
  bn = Node("bn", "batchnorm", ["c"], eps=np.float32(0.5), momentum=1)
  assert type(bn["eps"]) is float and bn["momentum"] == 1.0


def test_every_op_declares_a_check_for_each_attribute():
  for name, spec in layers.OPS.items():
    assert set(spec.checks) == set(spec.attrs), name
    for key, default in spec.attrs.items():
      if default is not layers.REQUIRED:
        assert layers.normalize_attr(name, key, copy.deepcopy(default)) == default

