"""Argument checks the network builders share."""

from __future__ import annotations

import numbers
from typing import Sequence


def is_count(value) -> bool:
  """Whether ``value`` is an int >= 1 (not a bool)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def positive(value, what: str) -> int:
  """``value`` if it is an int >= 1; otherwise a ValueError naming ``what``."""
  if not is_count(value):
    raise ValueError(f"{what} must be a positive int, got {value!r}")
  return value


def check_io(input_shape: Sequence[int], num_classes: int) -> tuple[int, ...]:
  """``input_shape`` as a tuple of ints, after checking it and ``num_classes``."""
  shape = tuple(input_shape)
  if len(shape) != 3 or not all(is_count(d) for d in shape):
    raise ValueError(f"input_shape must be (H, W, C) of positive ints, got {input_shape!r}")
  if not is_count(num_classes):
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
  return tuple(int(d) for d in shape)
