"""The architecture IR: validation, shapes, identity and JSON."""

import pytest

import nasjax as nj
from nasjax import Arch, Node


def small_arch(**over):
  nodes = [
      Node("x", "input", shape=(16, 16, 3)),
      Node("c1", "conv", ["x"], features=8),
      Node("bn1", "batchnorm", ["c1"]),
      Node("r1", "relu", ["bn1"]),
      Node("c2", "conv", ["r1"], features=8, kernel=5, stride=2),
      Node("p1", "max_pool", ["r1"]),
      Node("s", "add", ["c2", "p1"]),
      Node("sc", "sep_conv", ["s"], features=12),
      Node("cat", "concat", ["sc", "s"]),
      Node("g", "gap", ["cat"]),
      Node("logits", "dense", ["g"], features=10),
  ]
  return Arch(nodes, **over)


def test_shape_inference():
  a = small_arch()
  assert a.shape("x") == (16, 16, 3)
  assert a.shape("c2") == (8, 8, 8)  # SAME padding, stride 2
  assert a.shape("p1") == (8, 8, 8)  # 2x2 VALID max pool
  assert a.shape("cat") == (8, 8, 20)
  assert a.shape("g") == (20,)
  assert a.output_shape == (10,)
  assert a.input_shape == (16, 16, 3)
  assert a.consumers("r1") == ("c2", "p1")
  assert a.topo_order[0] == "x" and a.topo_order[-1] == "logits"


def test_hash_and_equality():
  a, b = small_arch(), small_arch()
  assert a == b and hash(a) == hash(b)
  assert len({a, b}) == 1
  c = a.replace_nodes(a["sc"].replace(features=16))
  assert c != a and c["sc"]["features"] == 16 and a["sc"]["features"] == 12
  assert c.shape("cat") == (8, 8, 24)
  # Defaults are canonical: an explicit default equals an omitted one.
  assert Node("c", "conv", ["x"], features=4, kernel=3) == Node("c", "conv", ["x"], features=4)
  assert Node("c", "conv", ["x"], features=4, kernel=(3, 5))["kernel"] == (3, 5)


def test_json_round_trip():
  a = small_arch()
  s = a.to_json()
  b = Arch.from_json(s)
  assert b == a and b.to_json() == s
  assert Arch.from_json(a.to_json(indent=2)) == a


def test_immutable():
  a = small_arch()
  with pytest.raises(Exception):
    a.output = "g"
  with pytest.raises(Exception):
    a["c1"].op = "dense"


@pytest.mark.parametrize("nodes, match", [
    ([Node("x", "input", shape=(8, 8, 3)), Node("y", "conv", ["x"], features=4),
      Node("y", "relu", ["x"])], "duplicate node name 'y'"),
    ([Node("x", "input", shape=(8, 8, 3)), Node("y", "conv", ["nope"], features=4)],
     "node 'y': input 'nope' does not exist"),
    ([Node("x", "input", shape=(8, 8, 3)), Node("a", "add", ["x", "b"]),
      Node("b", "relu", ["a"]), Node("out", "gap", ["b"])], "cycle"),
    ([Node("x", "input", shape=(8, 8, 3)), Node("c", "conv", ["x"], features=4),
      Node("s", "add", ["x", "c"])], "node 's' \\(add\\): add needs equal input shapes"),
    ([Node("x", "input", shape=(2, 2, 3)), Node("p", "max_pool", ["x"], window=3)],
     "node 'p' \\(max_pool\\).*below 1"),
    ([Node("x", "input", shape=(8, 8, 3)), Node("c", "conv", ["x"], features=4),
      Node("d", "relu", ["x"])], "node 'c' has no path to the output"),
    ([Node("x", "input", shape=(8, 8, 3)), Node("d", "dense", ["x"], features=4)],
     "node 'd' \\(dense\\): dense needs a vector input"),
    ([Node("x", "input", shape=(8, 8, 3)), Node("c", "conv", ["x"], features=4, groups=2)],
     "node 'c' \\(conv\\): groups=2"),
    ([Node("x", "input", shape=(8, 8, 3)), Node("s", "add", ["x"])],
     "node 's': op 'add' takes 2..any inputs"),
])
def test_validation_errors(nodes, match):
  with pytest.raises(ValueError, match=match):
    Arch(nodes)


def test_node_errors():
  with pytest.raises(ValueError, match="node 'c': unknown op 'convolution'"):
    Node("c", "convolution", ["x"])
  with pytest.raises(ValueError, match="node 'c': op 'conv' needs attribute 'features'"):
    Node("c", "conv", ["x"])
  with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['width'\]"):
    Node("c", "conv", ["x"], features=3, width=2)
  with pytest.raises(ValueError, match="exactly one 'input' node"):
    Arch([Node("c", "relu", ["c"])])
  with pytest.raises(ValueError, match="output node 'zz' does not exist"):
    small_arch(output="zz")
  with pytest.raises(ValueError, match="does not parse"):
    Arch.from_json("{not json")


def test_edits():
  a = small_arch()
  b = a.insert_after("r1", Node("r1_id", "identity", ["r1"]))
  assert b["c2"].inputs == ("r1_id",) and b["p1"].inputs == ("r1_id",)
  assert b.shape("r1_id") == a.shape("r1")
  assert a.fresh_name("c1") == "c1_1" and a.fresh_name("new") == "new"
  # Removing a node whose consumers were not rewired leaves a dangling input.
  with pytest.raises(ValueError, match="input 'r1_id' does not exist"):
    b.remove_nodes("r1_id")
  back = Arch([n.replace(inputs=tuple("r1" if i == "r1_id" else i for i in n.inputs))
               for n in b.nodes if n.name != "r1_id"])
  assert back == a
  tail = a.insert_after("logits", Node("extra", "relu", ["logits"]))
  assert tail.output == "extra"


def test_sequential():
  a = nj.sequential((8, 8, 1), [("conv", {"features": 4}), ("relu", {}), ("gap", {}),
                                ("dense", {"features": 3})])
  assert a.output_shape == (3,) and len(a) == 5
  assert a.nodes[1].name == "l0_conv"


def test_pickle_round_trip():
  import pickle
  a = small_arch()
  assert pickle.loads(pickle.dumps(a)) == a
  assert pickle.loads(pickle.dumps(a["c1"])) == a["c1"]


def test_subpackages_are_lazy_attributes():
  import subprocess
  import sys
  code = ("import sys, nasjax\n"
          "assert 'nasjax.search' not in sys.modules\n"
          "assert 'nasjax.models' not in sys.modules\n"
          "assert {'models', 'ops', 'search'} <= set(dir(nasjax))\n"
          "assert callable(nasjax.models.resnet)\n"
          "nasjax.ops, nasjax.search\n"
          "assert 'nasjax.search' in sys.modules\n"
          "try:\n  nasjax.nope\nexcept AttributeError as e:\n  print(e)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "module 'nasjax' has no attribute 'nope'"
