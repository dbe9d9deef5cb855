"""Rank and linear correlation of two score vectors, as the experiments and benchmarks
report them (supernet or predictor scores against measured accuracy)."""

from __future__ import annotations

import math

import numpy as np


def kendall_tau(a, b) -> float:
  """Kendall's tau-b: concordant minus discordant pairs over the geometric mean of the
  pairs untied in each sequence (NaN when one sequence is constant)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  i, j = np.triu_indices(len(a), 1)
  sa, sb = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
  den = math.sqrt(np.count_nonzero(sa) * np.count_nonzero(sb))
  return float(np.sum(sa * sb) / den) if den else float("nan")


def pearson(a, b) -> float:
  """Pearson's correlation coefficient (NaN when one sequence is constant)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  a, b = a - a.mean(), b - b.mean()
  den = math.sqrt(np.sum(a * a) * np.sum(b * b))
  return float(np.sum(a * b) / den) if den else float("nan")
