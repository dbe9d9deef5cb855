"""Small residual networks: the trivial start nets of LEMONADE (Elsken et al., ICLR 2019).

LEMONADE needs no well-performing initial architecture: it starts from small, shallow
networks and lets network morphisms (insert conv-BN-ReLU, widen, add a skip) and
approximate morphisms (remove a layer, prune, swap in a separable conv) grow and shrink
them. The start net here is a conv-BN-ReLU stem followed by stages of basic residual
blocks, each ``conv-BN-ReLU-conv-BN`` plus an additive skip and a ReLU. The first block of
every stage after the first halves the resolution (stride-2 first conv); when a block
changes the shape, its skip is a 1x1 conv (stride 2 if the resolution halves) followed by
BN, otherwise the identity.

Node names, for stage ``s`` and block ``k`` (both from 0)::

    stem_conv, stem_bn, stem_relu
    s{s}_b{k}_conv1, s{s}_b{k}_bn1, s{s}_b{k}_relu1, s{s}_b{k}_conv2, s{s}_b{k}_bn2
    s{s}_b{k}_proj, s{s}_b{k}_proj_bn       # only where the shape changes
    s{s}_b{k}_add, s{s}_b{k}_relu
    gap, logits
"""

from __future__ import annotations

from typing import Sequence

from nasjax.arch import Arch, Node
from nasjax.models._checks import check_io, positive


def residual_block(prefix: str, src: str, in_channels: int, features: int, stride: int = 1,
                   kernel: int = 3) -> list[Node]:
  """A basic residual block reading ``src``; its output node is ``{prefix}_relu``.

  Args:
    prefix: name prefix of the block's nodes.
    src: name of the input node, ``(H, W, in_channels)``.
    in_channels: channels of ``src``.
    features: output channels.
    stride: stride of the first conv and of the projection.
    kernel: square kernel size of both convs.

  Returns:
    The block's nodes, output ``(ceil(H / stride), ceil(W / stride), features)``.
  """
  nodes = [
      Node(f"{prefix}_conv1", "conv", [src], features=features, kernel=kernel, stride=stride),
      Node(f"{prefix}_bn1", "batchnorm", [f"{prefix}_conv1"]),
      Node(f"{prefix}_relu1", "relu", [f"{prefix}_bn1"]),
      Node(f"{prefix}_conv2", "conv", [f"{prefix}_relu1"], features=features, kernel=kernel),
      Node(f"{prefix}_bn2", "batchnorm", [f"{prefix}_conv2"]),
  ]
  skip = src
  if stride != 1 or in_channels != features:
    nodes += [Node(f"{prefix}_proj", "conv", [src], features=features, kernel=1,
                   stride=stride),
              Node(f"{prefix}_proj_bn", "batchnorm", [f"{prefix}_proj"])]
    skip = f"{prefix}_proj_bn"
  nodes += [Node(f"{prefix}_add", "add", [f"{prefix}_bn2", skip]),
            Node(f"{prefix}_relu", "relu", [f"{prefix}_add"])]
  return nodes


def resnet(stages: Sequence[tuple[int, int]] = ((16, 1), (32, 1)), stem: int | None = None,
           kernel: int = 3, *, input_shape: Sequence[int] = (32, 32, 3),
           num_classes: int = 10) -> Arch:
  """A small ResNet: conv-BN-ReLU stem, residual stages, global pooling, logits.

  Args:
    stages: ``(channels, num_blocks)`` per stage; every stage after the first starts by
      halving the resolution.
    stem: channels of the stem conv; defaults to the first stage's channels.
    kernel: square kernel size of the stem and block convs.
    input_shape: ``(H, W, C)`` of one input image.
    num_classes: width of the ``logits`` output.

  Returns:
    The architecture; output ``logits`` of shape ``(num_classes,)``.

  Raises:
    ValueError: for an empty stage list or a non-positive width, block count or kernel.
  """
  shape = check_io(input_shape, num_classes)
  if not stages:
    raise ValueError("resnet needs at least one stage, got stages=()")
  for s, stage in enumerate(stages):
    if not isinstance(stage, (tuple, list)) or len(stage) != 2:
      raise ValueError(f"stage {s} must be a (channels, num_blocks) pair, got {stage!r}")
    positive(stage[0], f"stage {s} channels")
    positive(stage[1], f"stage {s} num_blocks")
  positive(kernel, "kernel")
  channels = positive(stages[0][0] if stem is None else stem, "stem")
  nodes = [Node("input", "input", shape=shape),
           Node("stem_conv", "conv", ["input"], features=channels, kernel=kernel),
           Node("stem_bn", "batchnorm", ["stem_conv"]),
           Node("stem_relu", "relu", ["stem_bn"])]
  prev = "stem_relu"
  for s, (features, num_blocks) in enumerate(stages):
    for k in range(num_blocks):
      stride = 2 if s > 0 and k == 0 else 1
      nodes += residual_block(f"s{s}_b{k}", prev, channels, features, stride, kernel)
      prev, channels = f"s{s}_b{k}_relu", features
  nodes += [Node("gap", "gap", [prev]),
            Node("logits", "dense", ["gap"], features=num_classes)]
  return Arch(nodes, output="logits")


__all__ = ["resnet", "residual_block"]
