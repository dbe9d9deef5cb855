"""Kernel density estimates over cheap objectives, and sampling that favours sparse regions.

LEMONADE (Elsken et al., ICLR 2019, §4) picks parents, and then the children it trains,
with probability inversely proportional to a kernel density estimate ``p_KDE`` of the
population's cheap objectives (model size, FLOPs, latency), so the search spends its
expensive evaluations where the Pareto front is thin. Objectives that span orders of
magnitude are compared on a log scale (:func:`transform`).

The estimate is a product of Gaussian kernels with one bandwidth per dimension, Scott's
rule ``h_j = sigma_j * n^(-1 / (d + 4))``, floored at ``min_bandwidth`` so that a
population of one point, or of points equal in some objective, still has a proper
density. Densities are kept as logarithms (``logsumexp``), so far-away points whose
density underflows still get a finite weight.

These are host-side NumPy functions: the population changes size every generation, and
a compiled version would recompile for each size. Randomness comes from an explicit
``jax.random`` key (turned into a NumPy generator), so the same key draws the same
sample.
"""

from __future__ import annotations

import numpy as np

from nasjax.network import key_seed


def _points(values, what: str) -> np.ndarray:
  v = np.asarray(values, np.float64)
  if v.ndim != 2:
    raise ValueError(f"expected {what} of shape (n, d), got shape {v.shape}")
  return v


def transform(values, log_scale) -> np.ndarray:
  """Map raw cheap objectives into the space the density is estimated in.

  Args:
    values: ``(n, d)`` raw objective values (e.g. parameter counts).
    log_scale: one bool, or ``(d,)`` bools: natural log of that column (values clipped
      below at ``1e-12`` so that zero stays finite).

  Returns:
    ``(n, d)`` float64.
  """
  v = _points(values, "cheap objectives")
  log_scale = np.broadcast_to(np.asarray(log_scale, bool), v.shape[1:])
  return np.where(log_scale, np.log(np.maximum(v, 1e-12)), v)


def scott_bandwidth(points, min_bandwidth: float = 0.1) -> np.ndarray:
  """Per-dimension bandwidth by Scott's rule, floored at ``min_bandwidth``.

  Args:
    points: ``(n, d)`` points (already transformed).
    min_bandwidth: the smallest bandwidth, in the units of ``points``.

  Returns:
    ``(d,)`` bandwidths.
  """
  x = _points(points, "points")
  if not min_bandwidth > 0:
    raise ValueError(f"min_bandwidth must be positive, got {min_bandwidth!r}")
  n, d = x.shape
  sigma = x.std(axis=0, ddof=1) if n > 1 else np.zeros(d)
  return np.maximum(sigma * max(n, 1) ** (-1.0 / (d + 4)), min_bandwidth)


def log_density(points, queries, bandwidth) -> np.ndarray:
  """Log of the Gaussian KDE fitted on ``points``, evaluated at ``queries``.

  Args:
    points: ``(n, d)`` the data of the estimate (n >= 1).
    queries: ``(q, d)`` where to evaluate it.
    bandwidth: ``(d,)`` kernel widths.

  Returns:
    ``(q,)`` log densities (normalised: the density integrates to one).
  """
  x = _points(points, "points")
  q = _points(queries, "queries")
  h = np.asarray(bandwidth, np.float64)
  if len(x) == 0:
    raise ValueError("a density needs at least one point")
  if q.shape[1] != x.shape[1] or h.shape != (x.shape[1],):
    raise ValueError(f"dimensions disagree: points {x.shape}, queries {q.shape}, "
                     f"bandwidth {h.shape}")
  z = (q[:, None, :] - x[None, :, :]) / h
  log_k = -0.5 * np.sum(z * z, axis=-1)
  top = log_k.max(axis=1, keepdims=True)
  lse = top[:, 0] + np.log(np.exp(log_k - top).sum(axis=1))
  return lse - np.log(len(x)) - np.log(h).sum() - 0.5 * x.shape[1] * np.log(2 * np.pi)


def inverse_density_probs(log_dens, mask=None) -> np.ndarray:
  """Probabilities proportional to ``1 / p_KDE`` (over the entries where ``mask`` holds).

  Args:
    log_dens: ``(n,)`` log densities of the candidates.
    mask: optional ``(n,)`` bools; False entries get probability 0.

  Returns:
    ``(n,)`` probabilities summing to one.
  """
  logits = -np.asarray(log_dens, np.float64)
  if mask is not None:
    logits = np.where(np.asarray(mask, bool), logits, -np.inf)
  if not np.isfinite(logits).any():
    raise ValueError("no eligible entry to sample from")
  w = np.exp(logits - logits[np.isfinite(logits)].max())
  return w / w.sum()


def sample_sparse(key, log_dens, num: int, *, replace: bool, mask=None) -> np.ndarray:
  """Draw ``num`` indices with probability proportional to ``1 / p_KDE``.

  Without replacement this is successive sampling: the first index has exactly the
  probabilities of :func:`inverse_density_probs`, each later one the same probabilities
  renormalised over the indices not drawn yet.

  Args:
    key: a ``jax.random`` key.
    log_dens: ``(n,)`` log densities.
    num: how many indices (at most the number of eligible entries when not replacing).
    replace: sample with replacement (parents) or without (accepted children).
    mask: optional ``(n,)`` bools of the eligible entries.

  Returns:
    ``(num,)`` int indices.
  """
  p = inverse_density_probs(log_dens, mask)
  eligible = int((p > 0).sum())
  if not replace and num > eligible:
    raise ValueError(f"cannot draw {num} distinct indices from {eligible} eligible entries")
  rng = np.random.default_rng(key_seed(key))
  if replace:
    return rng.choice(len(p), size=num, replace=True, p=p).astype(np.int64)
  # Gumbel top-k: the order of log p + Gumbel noise is exactly successive sampling.
  with np.errstate(divide="ignore"):
    scores = np.log(p) + rng.gumbel(size=len(p))
  return np.argsort(-scores, kind="stable")[:num].astype(np.int64)


__all__ = ["transform", "scott_bandwidth", "log_density", "inverse_density_probs",
           "sample_sparse"]
