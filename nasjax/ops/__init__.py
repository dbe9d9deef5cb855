"""Network morphisms: change a trained network's architecture, keep what it learned.

Exact morphisms (the new network computes the same function in inference mode; given a
``batch`` of inputs, those that insert a batch norm keep it in training mode on that batch
too): :func:`net2wider`, :func:`net2deeper`, :func:`insert_conv_bn_relu`,
:func:`add_skip`, :func:`widen_kernel`. Approximate morphisms (LEMONADE's ANMs, followed by
:func:`distill`): :func:`remove_layer`, :func:`remove_skip`, :func:`prune_filters`,
:func:`to_sepconv`. :data:`MORPHISMS` is the registry that search strategies draw from.
"""

from nasjax.ops.approximate import (lowrank_sepconv, prune_filters, remove_layer, remove_skip,
                                    sepconv_error, to_sepconv)
from nasjax.ops.channels import Remap, channel_graph
from nasjax.ops.distill import agreement, distill
from nasjax.ops.exact import add_skip, insert_conv_bn_relu, widen_kernel
from nasjax.ops.net2net import batch_moments, net2deeper, net2wider
from nasjax.ops.plan import compiled_count
from nasjax.ops.registry import (APPROXIMATE, EXACT, MORPH_BATCH, MORPHISMS, WIDTH_LADDER,
                                 Morphism, next_width)

__all__ = ["net2wider", "net2deeper", "insert_conv_bn_relu", "add_skip", "widen_kernel",
           "remove_layer", "remove_skip", "prune_filters", "to_sepconv", "lowrank_sepconv",
           "sepconv_error", "distill", "agreement", "MORPHISMS", "EXACT", "APPROXIMATE",
           "Morphism", "Remap", "channel_graph", "compiled_count", "WIDTH_LADDER", "next_width",
           "batch_moments", "MORPH_BATCH"]
