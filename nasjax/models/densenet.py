"""DenseNet and DenseNet-BC (Huang et al., 2017), the second space EAS explores (§3.2).

Layers are pre-activation, as in DenseNet: BN-ReLU-conv. Every layer of a dense block
reads the concatenation of the block input and all earlier layer outputs and adds
``growth_rate`` channels to it; the concatenation is an explicit ``concat`` node, so a
morphism that widens layer ``l`` sees every later consumer of its output. With
``bottleneck`` (the "B" of DenseNet-BC) a layer first maps its input to
``4 * growth_rate`` channels with BN-ReLU-1x1 conv. Transitions between blocks are
BN-ReLU-1x1 conv to ``floor(compression * channels)`` (the "C") and a 2x2 average pool.

Node names, for block ``b`` and layer ``l`` (both from 0)::

    stem_conv                                           # 3x3 conv, init_features
    b{b}_l{l}_bn1, b{b}_l{l}_relu1, b{b}_l{l}_conv1     # bottleneck only
    b{b}_l{l}_bn, b{b}_l{l}_relu, b{b}_l{l}_conv        # 3x3 conv, growth_rate
    b{b}_l{l}_cat                                       # concat(layer input, conv)
    t{b}_bn, t{b}_relu, t{b}_conv, t{b}_pool            # transition after block b
    final_bn, final_relu, gap, logits
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

from nasjax.arch import Arch, Node
from nasjax.models._checks import check_io, is_count


def _bn_relu_conv(prefix: str, suffix: str, src: str, features: int,
                  kernel: int) -> list[Node]:
  return [Node(f"{prefix}_bn{suffix}", "batchnorm", [src]),
          Node(f"{prefix}_relu{suffix}", "relu", [f"{prefix}_bn{suffix}"]),
          Node(f"{prefix}_conv{suffix}", "conv", [f"{prefix}_relu{suffix}"],
               features=features, kernel=kernel)]


def densenet(growth_rate: int = 12, block_layers: Sequence[int] = (4, 4),
             init_features: int = 16, bottleneck: bool = False, compression: float = 1.0, *,
             input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> Arch:
  """A DenseNet(-BC) for small images.

  With ``block_layers=(n, n, n)``, ``bottleneck=True``, ``compression=0.5`` and
  ``init_features=2 * growth_rate`` this is DenseNet-BC with depth ``6n + 4``; with
  ``bottleneck=False``, ``compression=1`` and ``init_features=16`` it is the original
  DenseNet of depth ``3n + 4``.

  Args:
    growth_rate: channels each dense layer adds (k).
    block_layers: number of layers in each dense block.
    init_features: channels of the 3x3 stem conv.
    bottleneck: put a BN-ReLU-1x1 conv to ``4 * growth_rate`` before each 3x3 conv.
    compression: fraction of channels a transition keeps, in (0, 1].
    input_shape: ``(H, W, C)`` of one input image.
    num_classes: width of the ``logits`` output.

  Returns:
    The architecture; output ``logits`` of shape ``(num_classes,)``.

  Raises:
    ValueError: for a non-positive growth rate, layer count or width, or a compression
      outside (0, 1].
  """
  shape = check_io(input_shape, num_classes)
  if not is_count(growth_rate):
    raise ValueError(f"growth_rate must be a positive int, got {growth_rate!r}")
  if not is_count(init_features):
    raise ValueError(f"init_features must be a positive int, got {init_features!r}")
  if not block_layers or not all(is_count(n) for n in block_layers):
    raise ValueError(f"block_layers must be positive ints, got {block_layers!r}")
  if not isinstance(compression, numbers.Real) or not 0.0 < compression <= 1.0:
    raise ValueError(f"compression must be in (0, 1], got {compression!r}")
  nodes = [Node("input", "input", shape=shape),
           Node("stem_conv", "conv", ["input"], features=init_features, kernel=3)]
  prev, channels = "stem_conv", init_features
  for b, num_layers in enumerate(block_layers):
    for l in range(num_layers):
      p = f"b{b}_l{l}"
      src = prev
      if bottleneck:
        nodes += _bn_relu_conv(p, "1", src, 4 * growth_rate, 1)
        src = f"{p}_conv1"
      nodes += _bn_relu_conv(p, "", src, growth_rate, 3)
      nodes.append(Node(f"{p}_cat", "concat", [prev, f"{p}_conv"]))
      prev, channels = f"{p}_cat", channels + growth_rate
    if b < len(block_layers) - 1:
      channels = max(1, math.floor(compression * channels))
      nodes += _bn_relu_conv(f"t{b}", "", prev, channels, 1)
      nodes.append(Node(f"t{b}_pool", "avg_pool", [f"t{b}_conv"], window=2, stride=2,
                        padding="SAME"))
      prev = f"t{b}_pool"
  nodes += [Node("final_bn", "batchnorm", [prev]),
            Node("final_relu", "relu", ["final_bn"]),
            Node("gap", "gap", ["final_relu"]),
            Node("logits", "dense", ["gap"], features=num_classes)]
  return Arch(nodes, output="logits")


__all__ = ["densenet"]
