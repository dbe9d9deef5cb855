"""Tests of the model families in nasjax.models."""

import jax
import numpy as np
import pytest

import nasjax
from nasjax import models
from nasjax.arch import Arch, Node
from nasjax.models.darts_cell import Genotype, cell
from nasjax.models.nb201 import nb201_cell

# Tiny configurations of every family, small enough to compile in about a second.
TINY = {
    "plain_cnn": dict(blocks=((4,), ((8, 5), 8)), dense=(6,)),
    "eas_start_net": dict(variant="tiny"),
    "densenet": dict(growth_rate=4, block_layers=(2, 2), init_features=8, bottleneck=True,
                     compression=0.5),
    "resnet": dict(stages=((4, 1), (8, 1))),
    "nb201": dict(C=4, N=1),
    "darts_cell": dict(C=4, layers=3),
}

NB201_BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
              "+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
NB201_ALL_CONV = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                  "+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
NB201_ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
NB201_STRINGS = [
    NB201_BEST, NB201_ALL_CONV, NB201_ALL_NONE,
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
    "skip_connect~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|"
    "skip_connect~2|",
    "|nor_conv_1x1~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
    "|none~0|+|skip_connect~0|none~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|",
]


def test_registry_lists_every_family():
  assert set(models.FAMILIES) == set(TINY)


@pytest.mark.parametrize("name", sorted(models.FAMILIES))
def test_family_builds_with_defaults(name):
  arch = models.FAMILIES[name]()
  assert arch.input_shape == (32, 32, 3)
  assert arch.output == "logits"
  assert arch.output_shape == (10,)
  assert arch["logits"].op == "dense"
  assert arch["gap"].op == "gap"
  assert len(arch.in_shapes("logits")[0]) == 1


@pytest.mark.parametrize("name", sorted(models.FAMILIES))
def test_family_takes_input_shape_and_classes(name):
  arch = models.FAMILIES[name](input_shape=(28, 28, 1), num_classes=7)
  assert arch.input_shape == (28, 28, 1)
  assert arch.output_shape == (7,)
  # The same layers, whatever the input and the number of classes.
  base = models.FAMILIES[name]()
  assert arch.names == base.names


@pytest.mark.parametrize("name", sorted(models.FAMILIES))
def test_family_rejects_bad_io(name):
  fn = models.FAMILIES[name]
  with pytest.raises(ValueError, match="num_classes"):
    fn(num_classes=0)
  with pytest.raises(ValueError, match="input_shape"):
    fn(input_shape=(28, 28))


@pytest.mark.parametrize("name", sorted(models.FAMILIES))
def test_family_applies(name):
  arch = models.FAMILIES[name](input_shape=(12, 12, 1), num_classes=5, **TINY[name])
  net = nasjax.init(arch, jax.random.key(0))
  x = np.random.default_rng(0).standard_normal((2, 12, 12, 1)).astype(np.float32)
  y = np.asarray(nasjax.apply(net, x))
  assert y.shape == (2, 5)
  assert np.isfinite(y).all()
  assert np.abs(y).max() > 1e-6  # the logits are not trivially zero
  y_train, state = nasjax.apply_train(net, x)
  assert np.isfinite(np.asarray(y_train)).all()
  assert set(state) == set(net.state)


@pytest.mark.parametrize("name", sorted(models.FAMILIES))
def test_family_json_round_trip(name):
  arch = models.FAMILIES[name](**TINY[name])
  back = Arch.from_json(arch.to_json())
  assert back == arch
  assert hash(back) == hash(arch)
  assert nasjax.count_params(back) == nasjax.count_params(arch)


# ----------------------------------------------------------------------- plain CNN
def test_plain_cnn_param_count_and_layout():
  arch = models.plain_cnn(blocks=((4,), ((8, 5), 8)), dense=(6,), input_shape=(16, 16, 3),
                          num_classes=5)
  # b0_l0: conv 3*3*3*4 = 108 + BN 2*4 = 116
  # b1_l0: conv 5*5*4*8 = 800 + BN 16 = 816 (per-layer kernel 5)
  # b1_l1: conv 3*3*8*8 = 576 + BN 16 = 592
  # fc0: 8*6 + 6 = 54; logits: 6*5 + 5 = 35
  assert nasjax.count_params(arch) == 116 + 816 + 592 + 54 + 35
  assert arch["b1_l0_conv"]["kernel"] == (5, 5)
  assert arch["b1_l0_conv"]["use_bias"] is False
  assert [n.name for n in arch.nodes_of("max_pool")] == ["b0_pool"]  # none after the last
  assert arch.shape("b1_l1_relu") == (8, 8, 8)
  assert arch.consumers("gap") == ("fc0",)
  assert arch.consumers("fc0") == ("fc0_relu",)


def test_plain_cnn_rejects_bad_layers():
  with pytest.raises(ValueError, match="block 1 layer 0"):
    models.plain_cnn(blocks=((4,), (0,)))
  with pytest.raises(ValueError, match="at least one block"):
    models.plain_cnn(blocks=())
  with pytest.raises(ValueError, match="dense layer 0"):
    models.plain_cnn(dense=(-3,))


def test_eas_start_net():
  arch = models.eas_start_net("tiny")
  # 4 blocks of one conv (4 filters), 3 pools, GAP, dense 8 + ReLU, logits:
  # b0: 3*3*3*4 + 2*4 = 116; b1..b3: 3 * (3*3*4*4 + 2*4) = 3 * 152 = 456
  # fc0: 4*8 + 8 = 40; logits: 8*10 + 10 = 90
  assert nasjax.count_params(arch) == 116 + 456 + 40 + 90
  assert len(arch.nodes_of("conv")) == 4
  assert len(arch.nodes_of("max_pool")) == 3
  assert arch.shape("b3_l0_relu") == (4, 4, 4)
  small = models.eas_start_net()
  assert [n["features"] for n in small.nodes_of("conv")] == [16] * 4
  assert small["fc0"]["features"] == 64
  wide = models.eas_start_net("small", filters=32, units=0, num_blocks=3)
  assert [n["features"] for n in wide.nodes_of("conv")] == [32] * 3
  assert [n.name for n in wide.nodes_of("dense")] == ["logits"]
  with pytest.raises(ValueError, match="'huge'"):
    models.eas_start_net("huge")


# ------------------------------------------------------------------------- DenseNet
def test_densenet_param_count():
  arch = models.densenet(growth_rate=4, block_layers=(2, 2), init_features=8,
                         bottleneck=True, compression=0.5, input_shape=(16, 16, 3),
                         num_classes=5)
  # stem: 3*3*3*8 = 216
  # layer reading c channels: BN 2c + 1x1 conv c*16 + BN 2*16 + 3x3 conv 9*16*4 = 576
  #   c = 8: 16 + 128 + 32 + 576 = 752;  c = 12: 24 + 192 + 32 + 576 = 824
  # transition from 16 channels: BN 32 + 1x1 conv 16*8 = 128 -> 160
  # final BN 2*16 = 32; logits 16*5 + 5 = 85
  expected = 216 + (752 + 824) + 160 + (752 + 824) + 32 + 85
  assert nasjax.count_params(arch) == expected


def test_densenet_concatenates_every_layer():
  k, c0 = 3, 5
  arch = models.densenet(growth_rate=k, block_layers=(3, 2), init_features=c0,
                         compression=0.5)
  for l in range(3):
    # Layer l reads the block input and all l earlier outputs.
    assert arch.shape(f"b0_l{l}_bn")[-1] == c0 + l * k
    assert arch[f"b0_l{l}_cat"].inputs == (
        "stem_conv" if l == 0 else f"b0_l{l - 1}_cat", f"b0_l{l}_conv")
  assert arch.shape("t0_conv")[-1] == (c0 + 3 * k) // 2  # floor(0.5 * 14) = 7
  assert arch.shape("t0_pool") == (16, 16, 7)
  assert arch.shape("b1_l1_cat")[-1] == 7 + 2 * k
  # Pre-activation order: BN -> ReLU -> conv.
  assert arch["b0_l1_relu"].inputs == ("b0_l1_bn",)
  assert arch["b0_l1_conv"].inputs == ("b0_l1_relu",)
  bc = models.densenet(growth_rate=k, bottleneck=True)
  assert bc["b0_l0_conv1"]["features"] == 4 * k
  assert bc["b0_l0_conv1"]["kernel"] == (1, 1)
  with pytest.raises(ValueError, match="compression"):
    models.densenet(compression=0.0)


# --------------------------------------------------------------------------- ResNet
def test_resnet_param_count_and_projection():
  arch = models.resnet(stages=((4, 1), (8, 1)), input_shape=(16, 16, 3), num_classes=5)
  # stem: 3*3*3*4 + 2*4 = 116
  # s0_b0 (4 -> 4, identity skip): 2 * (3*3*4*4 + 2*4) = 304
  # s1_b0 (4 -> 8, stride 2): 3*3*4*8 + 16 + 3*3*8*8 + 16 + proj 4*8 + BN 16 = 944
  # logits: 8*5 + 5 = 45
  assert nasjax.count_params(arch) == 116 + 304 + 944 + 45
  assert "s0_b0_proj" not in arch
  assert arch["s0_b0_add"].inputs == ("s0_b0_bn2", "stem_relu")
  assert arch["s1_b0_proj"]["stride"] == (2, 2)
  assert arch.shape("s1_b0_relu") == (8, 8, 8)
  with pytest.raises(ValueError, match="stage 1"):
    models.resnet(stages=((4, 1), (8,)))


# ---------------------------------------------------------------------------- NB201
@pytest.mark.parametrize("arch_str", NB201_STRINGS)
def test_nb201_string_round_trip(arch_str):
  ops = models.parse_nb201(arch_str)
  assert len(ops) == 6
  assert models.nb201_str(ops) == arch_str


def test_nb201_parse_edge_order():
  ops = models.parse_nb201("|nor_conv_1x1~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
                           "+|skip_connect~0|none~1|nor_conv_3x3~2|")
  assert ops == ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "none",
                 "nor_conv_3x3")
  assert models.parse_nb201(NB201_ALL_NONE) == ("none",) * 6


@pytest.mark.parametrize("bad, token", [
    ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "conv_3x3~0"),
    ("|none~0|+|none~0|none-1|+|none~0|none~1|none~2|", "none-1"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "none~1"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "none~0"),
    ("|none~0|+|none~0|none~1|", r"3 '\+'-separated"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2"),
])
def test_nb201_bad_string_raises(bad, token):
  with pytest.raises(ValueError, match=token):
    models.parse_nb201(bad)
  with pytest.raises(ValueError):
    models.nb201(bad)


def test_nb201_str_rejects_bad_ops():
  with pytest.raises(ValueError, match="'sep_conv_3x3'"):
    models.nb201_str(("sep_conv_3x3",) + ("none",) * 5)
  with pytest.raises(ValueError, match="6 edges"):
    models.nb201_str(("none",) * 5)


def test_nb201_param_count_small():
  arch = models.nb201(NB201_BEST, C=8, N=1)
  # stem: 3*3*3*8 + 2*8 = 232
  # cell at C: 5 nor_conv_3x3 edges of 9*C*C + 2*C; the skip edge has none
  #   C=8: 5 * 592 = 2960;  C=16: 5 * 2336 = 11680;  C=32: 5 * 9280 = 46400
  # reduction a -> b: 9*a*b + 2b + 9*b*b + 2b + 1x1 shortcut a*b
  #   8 -> 16: 1152 + 32 + 2304 + 32 + 128 = 3648
  #   16 -> 32: 4608 + 64 + 9216 + 64 + 512 = 14464
  # final BN 2*32 = 64; logits 32*10 + 10 = 330
  expected = 232 + 2960 + 3648 + 11680 + 14464 + 46400 + 64 + 330
  assert nasjax.count_params(arch) == expected == 79778


def test_nb201_param_counts_match_nb201_at_full_size():
  # NATS-Bench reports 1.531546 M parameters for the all-nor_conv_3x3 cell (the largest
  # cell of the space) at C=16, N=5 on CIFAR-10: convs without bias, affine BNs.
  assert nasjax.count_params(models.nb201(NB201_ALL_CONV)) == 1531546
  # The best CIFAR-10 cell swaps edge (3 <- 0) for skip_connect: one 3x3 conv fewer per
  # cell, 5 cells per stage: 5 * ((2304 + 32) + (9216 + 64) + (36864 + 128)) = 243040.
  assert nasjax.count_params(models.nb201(NB201_BEST)) == 1531546 - 243040
  # All-none cells: stem 464 + reductions 14464 + 57600 + final BN 128 + logits 650.
  assert nasjax.count_params(models.nb201(NB201_ALL_NONE)) == 73306


def _cell_net(ops, channels=3, hw=5, prune_dead=False):
  nodes = [Node("x", "input", shape=(hw, hw, channels))]
  nodes += nb201_cell("c", "x", ops, channels, prune_dead)
  net = nasjax.init(Arch(nodes, output="c_n3"), jax.random.key(1))
  x = np.random.default_rng(1).standard_normal((2, hw, hw, channels)).astype(np.float32)
  return net, x, np.asarray(nasjax.apply(net, x))


def test_nb201_cell_sums_edges():
  # Skip everywhere: n1 = x, n2 = x + n1 = 2x, n3 = x + n1 + n2 = 4x.
  _, x, y = _cell_net(("skip_connect",) * 6)
  np.testing.assert_allclose(y, 4 * x, rtol=1e-6, atol=1e-6)
  _, x, y = _cell_net(models.parse_nb201(NB201_ALL_NONE))
  np.testing.assert_array_equal(y, np.zeros_like(x))
  # n1 = avg_pool(x) (3x3, stride 1, padding excluded); n3 = n1 through skip (3 <- 1).
  _, x, y = _cell_net(models.parse_nb201(
      "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|"))
  pad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ones = np.pad(np.ones(x.shape[1:3]), 1)
  want = np.zeros_like(x)
  for i in range(x.shape[1]):
    for j in range(x.shape[2]):
      want[:, i, j] = pad[:, i:i + 3, j:j + 3].sum((1, 2)) / ones[i:i + 3, j:j + 3].sum()
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_nb201_nor_conv_is_relu_conv_bn():
  # (3 <- 0) nor_conv_1x1 only: n3 = BN(conv1x1(relu(x))), BN at its initial statistics.
  net, x, y = _cell_net(models.parse_nb201(
      "|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|none~2|"))
  kernel = np.asarray(net.params["c_e30_conv"]["kernel"])[0, 0]
  want = np.maximum(x, 0) @ kernel / np.sqrt(1 + 1e-5)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_nb201_dead_nodes_kept_or_pruned():
  # Node 1's conv feeds only 'none' edges; NB201 still runs it and counts its weights.
  ops = models.parse_nb201("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
  kept, x, y_kept = _cell_net(ops, channels=4)
  pruned, _, y_pruned = _cell_net(ops, channels=4, prune_dead=True)
  np.testing.assert_allclose(y_kept, x, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(y_pruned, x, rtol=1e-6, atol=1e-6)
  # The dead conv: 3*3*4*4 + BN 2*4 = 152 parameters.
  assert kept.num_params - pruned.num_params == 152
  assert "c_e31_zero" in kept.arch and "c_n1" not in pruned.arch


def test_nb201_network_layout():
  arch = models.nb201(NB201_BEST, C=8, N=2)
  assert arch.shape("s0_c1_n3") == (32, 32, 8)
  assert arch.shape("r1_add") == (16, 16, 16)
  assert arch.shape("s2_c1_n3") == (8, 8, 32)
  assert arch["s1_c0_e10_relu"].inputs == ("r1_add",)
  assert arch["s1_c1_e10_relu"].inputs == ("s1_c0_n3",)
  assert arch["r2_proj"].inputs == ("r2_pool",)
  assert sorted(arch["s0_c0_n3"].inputs) == ["s0_c0_e31_bn", "s0_c0_e32_bn", "stem_bn"]
  # An official string and its op tuple give the same network.
  assert models.nb201(models.parse_nb201(NB201_BEST), C=8, N=2) == arch


# ---------------------------------------------------------------------------- DARTS
TINY_GENOTYPE = Genotype(
    normal=[("sep_conv_3x3", 0), ("dil_conv_5x5", 1)], normal_concat=[2],
    reduce=[("skip_connect", 0), ("max_pool_3x3", 1)], reduce_concat=[2])


def test_darts_param_count_small():
  arch = models.darts_cell(TINY_GENOTYPE, C=4, layers=3, steps=1)
  # stem: 3*3*3*12 + 2*12 = 348 (stem_multiplier 3)
  # cell 0, normal, C=4: pre0, pre1 = 12*4 + 8 = 56 each
  #   sep_conv_3x3: 2 * (dw 9*4 + pw 4*4 + BN 8) = 120; dil_conv_5x5: 25*4 + 16 + 8 = 124
  # cell 1, reduce, C=8: pre0 12*8 + 16 = 112, pre1 4*8 + 16 = 48
  #   skip at stride 2 = factorized reduce 8 -> 8: 2 * (8*4) + BN 16 = 80; max pool: 0
  # cell 2, reduce, C=16, after a reduction: pre0 = factorized reduce 4 -> 16:
  #   2 * (4*8) + 32 = 96; pre1 8*16 + 32 = 160; skip at stride 2: 2 * (16*8) + 32 = 288
  # logits: 16*10 + 10 = 170
  expected = 348 + (56 + 56 + 120 + 124) + (112 + 48 + 80) + (96 + 160 + 288) + 170
  assert nasjax.count_params(arch) == expected == 1658
  assert arch.shape("c0_out") == (32, 32, 4)
  assert arch.shape("c1_out") == (16, 16, 8)
  assert arch.shape("c2_pre0_bn") == (16, 16, 16)
  assert arch.shape("c2_out") == (8, 8, 16)


def test_darts_v2_full_size_param_count():
  # DARTS's CIFAR-10 evaluation network (C=36, 20 cells, no auxiliary head): DARTS
  # reports "3.3M" parameters; its training log prints 3.349342 MB.
  arch = models.darts_cell(C=36, layers=20)
  assert nasjax.count_params(arch) == 3349342


def test_darts_default_layout():
  arch = models.darts_cell()
  assert arch.shape("stem_bn") == (32, 32, 48)
  assert arch.shape("c0_out") == (32, 32, 64)  # 4 nodes * C
  assert arch.shape("c1_out") == (16, 16, 128)  # reduction at layers // 3 = 1
  assert arch.shape("c3_out") == (8, 8, 256)  # reduction at 2 * layers // 3 = 3
  assert "c2_pre0_cat" in arch and "c4_pre0_cat" in arch  # factorized reduce after both
  # DARTS_V2 normal node 3 (state 5) = skip(s0) + dil_conv_3x3(node 0).
  assert sorted(arch["c0_n5"].inputs) == ["c0_n5_e1_bn", "c0_pre0_bn"]
  assert arch["c0_n5_e1_sep"]["dilation"] == (2, 2)
  assert arch["c0_n5_e1_relu"].inputs == ("c0_n2",)
  assert arch["c1_n2_e0_pool"]["stride"] == (2, 2)
  # Reduce node 3 (state 3) = skip(node 2), stride 1 as it reads a node, + max_pool(s1).
  assert arch["c1_n3"].inputs == ("c1_n2", "c1_n3_e1_pool")
  assert arch["c1_n4_e0_pool"]["stride"] == (2, 2)
  assert arch["c0_n2_e0_sep1"]["kernel"] == (3, 3)


def test_darts_cell_computes_sums():
  # One step: node 2 = skip(pre0) + skip(pre1); pre_k = BN(conv1x1(relu(s_k))).
  nodes = [Node("x", "input", shape=(4, 4, 3)),
           Node("x2", "relu", ["x"])]
  nodes += cell("c", "x", "x2", (("skip_connect", 0), ("skip_connect", 1)), (2,),
                      channels=2, reduction=False, reduction_prev=False)
  net = nasjax.init(Arch(nodes, output="c_out"), jax.random.key(2))
  x = np.random.default_rng(2).standard_normal((3, 4, 4, 3)).astype(np.float32)
  y = np.asarray(nasjax.apply(net, x))
  k0 = np.asarray(net.params["c_pre0_conv"]["kernel"])[0, 0]
  k1 = np.asarray(net.params["c_pre1_conv"]["kernel"])[0, 0]
  relu = np.maximum(x, 0)
  want = (relu @ k0 + relu @ k1) / np.sqrt(1 + 1e-5)
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_darts_none_edges():
  genotype = Genotype(
      normal=[("none", 0), ("sep_conv_3x3", 1), ("none", 0), ("none", 2)],
      normal_concat=[2, 3],
      reduce=[("none", 0), ("none", 1), ("avg_pool_3x3", 2), ("skip_connect", 1)],
      reduce_concat=[2, 3])
  arch = models.darts_cell(genotype, C=4, layers=3, steps=2)
  assert arch["c0_n2"].op == "identity"  # one real edge
  assert arch["c0_n3"].op == "zero"
  assert arch["c1_n2"].op == "zero"  # all-none node of a reduction cell ...
  assert arch.shape("c1_n2") == (16, 16, 8)  # ... is zeros at the reduced size
  net = nasjax.init(arch, jax.random.key(0))
  y = np.asarray(nasjax.apply(net, np.ones((1, 32, 32, 3), np.float32)))
  assert np.isfinite(y).all()


@pytest.mark.parametrize("genotype, steps, match", [
    (TINY_GENOTYPE._replace(normal=[("conv_7x7", 0), ("skip_connect", 1)]), 1, "conv_7x7"),
    (TINY_GENOTYPE._replace(normal=[("skip_connect", 2), ("skip_connect", 1)]), 1,
     r"normal\[0\]"),
    (TINY_GENOTYPE, 2, "4 \\(op, input\\) pairs"),
    (TINY_GENOTYPE._replace(reduce_concat=[3]), 1, "reduce_concat"),
])
def test_darts_bad_genotype_raises(genotype, steps, match):
  with pytest.raises(ValueError, match=match):
    models.darts_cell(genotype, steps=steps)


def test_darts_cells_that_read_only_their_first_input_build():
  # A normal cell reading only cell k-2 leaves cell k-1 unread; such codes are in the
  # DARTS space (key 5 draws one) and must build, without the unread cell.
  from nasjax.search.spaces import DartsCellSpace

  space = DartsCellSpace(C=4, layers=5)
  built = [space.build(space.sample(jax.random.key(k)), input_shape=(8, 8, 3))
           for k in range(40)]
  assert len(built) == 40
  pairs = tuple(("skip_connect", 0) for _ in range(8))
  first_only = Genotype(normal=pairs, normal_concat=(2, 3, 4, 5),
                        reduce=models.DARTS_V2.reduce, reduce_concat=(2, 3, 4, 5))
  arch = models.darts_cell(first_only, C=4, layers=5, input_shape=(8, 8, 3))
  outs = sorted(n for n in arch.names if n.endswith("_out"))
  # Cells 1 and 3 reduce (layers // 3, 2 * layers // 3); normal cells 2 and 4 read only
  # cells 0 and 2, so cells 1 and 3 are unread (and cell 0 is read by cell 2).
  assert outs == ["c0_out", "c2_out", "c4_out"]
  net = nasjax.init(arch, jax.random.key(0))
  y = nasjax.apply(net, np.ones((2, 8, 8, 3), np.float32))
  assert y.shape == (2, 10) and bool(np.all(np.isfinite(np.asarray(y))))
  # A genotype reading both inputs keeps every cell.
  full = models.darts_cell(None, C=4, layers=5, input_shape=(8, 8, 3))
  assert sorted(n for n in full.names if n.endswith("_out")) == [f"c{k}_out" for k in range(5)]
