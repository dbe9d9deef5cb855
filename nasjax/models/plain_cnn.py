"""Plain CNNs: conv-BN-ReLU layers in blocks separated by max pooling (the EAS space).

A plain CNN has no skip connections and no branches: a chain of conv-BN-ReLU layers,
grouped into blocks with a 2x2 max pool after every block but the last, then global
average pooling, optional dense-ReLU layers and the classifier. This is the space that
EAS (Cai et al., AAAI 2018, §3.1, §4.1) explores with Net2Wider and Net2Deeper: a block
is the unit into which Net2Deeper inserts a layer.

Node names, for block ``b`` and layer ``l`` (both from 0)::

    b{b}_l{l}_conv, b{b}_l{l}_bn, b{b}_l{l}_relu   # one conv-BN-ReLU layer
    b{b}_pool                                      # after every block but the last
    gap, fc{i}, fc{i}_relu, logits                 # the head
"""

from __future__ import annotations

from typing import Sequence

from nasjax.arch import Arch, Node
from nasjax.models._checks import check_io, is_count

LayerSpec = int | tuple[int, int]


def _layer(spec, kernel: int, where: str) -> tuple[int, int]:
  """``(filters, kernel)`` of one layer given as an int or a ``(filters, kernel)`` pair."""
  if isinstance(spec, (tuple, list)) and len(spec) == 2:
    filters, k = spec
  else:
    filters, k = spec, kernel
  if not is_count(filters):
    raise ValueError(f"{where}: filters must be a positive int, got {spec!r}")
  if not is_count(k):
    raise ValueError(f"{where}: kernel must be a positive int, got {spec!r}")
  return filters, k


def conv_bn_relu(prefix: str, src: str, features: int, kernel: int = 3,
                 stride: int = 1) -> list[Node]:
  """Nodes ``{prefix}_conv`` (no bias), ``{prefix}_bn``, ``{prefix}_relu`` reading ``src``."""
  return [Node(f"{prefix}_conv", "conv", [src], features=features, kernel=kernel,
               stride=stride),
          Node(f"{prefix}_bn", "batchnorm", [f"{prefix}_conv"]),
          Node(f"{prefix}_relu", "relu", [f"{prefix}_bn"])]


def plain_cnn(blocks: Sequence[Sequence[LayerSpec]] = ((16, 16), (32, 32)), kernel: int = 3,
              dense: Sequence[int] = (), *, input_shape: Sequence[int] = (32, 32, 3),
              num_classes: int = 10) -> Arch:
  """A plain CNN: conv-BN-ReLU blocks, 2x2 max pools between blocks, GAP, dense, logits.

  Args:
    blocks: one sequence per block; each layer is its number of filters (``kernel`` sized)
      or a ``(filters, kernel)`` pair.
    kernel: default square kernel size of a conv layer.
    dense: widths of the dense-ReLU layers between global pooling and the classifier.
    input_shape: ``(H, W, C)`` of one input image.
    num_classes: width of the ``logits`` output.

  Returns:
    The architecture; input ``(H, W, C)``, output ``logits`` of shape ``(num_classes,)``.
    Pools use SAME padding so that odd sizes round up and the map never vanishes.

  Raises:
    ValueError: for an empty block list or block, or a non-positive width or kernel.
  """
  shape = check_io(input_shape, num_classes)
  if not blocks:
    raise ValueError("plain_cnn needs at least one block, got blocks=()")
  nodes = [Node("input", "input", shape=shape)]
  prev = "input"
  for b, block in enumerate(blocks):
    if isinstance(block, (int, str)) or not block:
      raise ValueError(f"block {b} must be a non-empty sequence of layers, got {block!r}")
    for l, spec in enumerate(block):
      filters, k = _layer(spec, kernel, f"block {b} layer {l}")
      nodes += conv_bn_relu(f"b{b}_l{l}", prev, filters, k)
      prev = nodes[-1].name
    if b < len(blocks) - 1:
      nodes.append(Node(f"b{b}_pool", "max_pool", [prev], window=2, stride=2,
                        padding="SAME"))
      prev = f"b{b}_pool"
  nodes.append(Node("gap", "gap", [prev]))
  prev = "gap"
  for i, units in enumerate(dense):
    if not is_count(units):
      raise ValueError(f"dense layer {i}: units must be a positive int, got {units!r}")
    nodes += [Node(f"fc{i}", "dense", [prev], features=units),
              Node(f"fc{i}_relu", "relu", [f"fc{i}"])]
    prev = f"fc{i}_relu"
  nodes.append(Node("logits", "dense", [prev], features=num_classes))
  return Arch(nodes, output="logits")


# EAS searches widths on a discrete ladder (filters 16, 32, 64, ...; dense units 64, 128,
# ...) and starts from a small net whose every layer sits on the lowest rung: blocks of a
# single 3x3 conv separated by max pools, global pooling, one hidden dense layer. "tiny"
# is the same shape on the reduced ladder (filters 4, 8, ...; units 8, 16, ...) used for
# quick runs.
EAS_START_NETS = {
    "small": {"num_blocks": 4, "filters": 16, "units": 64},
    "tiny": {"num_blocks": 4, "filters": 4, "units": 8},
}


def eas_start_net(variant: str = "small", *, num_blocks: int | None = None,
                  filters: int | None = None, units: int | None = None, kernel: int = 3,
                  input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> Arch:
  """The small plain CNN from which EAS starts its search (Cai et al., 2018, §4.1).

  ``num_blocks`` blocks of one conv-BN-ReLU layer each (``filters`` wide), a 2x2 max
  pool between blocks, global average pooling, one dense-ReLU layer of ``units`` and the
  classifier. Net2Deeper grows the blocks, Net2Wider the widths.

  Args:
    variant: ``"small"`` (4 blocks of 16 filters, 64 units) or ``"tiny"`` (4 blocks of 4
      filters, 8 units); the keyword arguments below override the variant's values.
    num_blocks: number of conv blocks (pooling stages + 1).
    filters: width of every conv layer.
    units: width of the hidden dense layer (0 for none).
    kernel: square kernel size of the conv layers.
    input_shape: ``(H, W, C)`` of one input image.
    num_classes: width of the ``logits`` output.

  Returns:
    A :func:`plain_cnn` architecture.
  """
  if variant not in EAS_START_NETS:
    raise ValueError(f"unknown EAS start net variant {variant!r}; known: "
                     f"{sorted(EAS_START_NETS)}")
  cfg = dict(EAS_START_NETS[variant])
  for key, value in (("num_blocks", num_blocks), ("filters", filters), ("units", units)):
    if value is not None:
      cfg[key] = value
  if not is_count(cfg["num_blocks"]):
    raise ValueError(f"num_blocks must be a positive int, got {cfg['num_blocks']!r}")
  if cfg["units"] != 0 and not is_count(cfg["units"]):
    raise ValueError(f"units must be a non-negative int, got {cfg['units']!r}")
  blocks = tuple((cfg["filters"],) for _ in range(cfg["num_blocks"]))
  dense = (cfg["units"],) if cfg["units"] else ()
  return plain_cnn(blocks, kernel=kernel, dense=dense, input_shape=input_shape,
                   num_classes=num_classes)


__all__ = ["plain_cnn", "eas_start_net", "conv_bn_relu", "EAS_START_NETS"]
