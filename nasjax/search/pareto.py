"""Pareto utilities shared by every strategy: dominance, fronts, hypervolume, crowding.

All objectives are minimised. A row containing NaN is a failed evaluation: it dominates
nothing, belongs to no front and adds no hypervolume.

Host-side functions take NumPy arrays ``F`` of shape ``(n, m)`` (n points, m objectives).
:func:`domination_counts`, :func:`front_ranks` and :func:`crowding_distances` are the
jittable counterparts (fixed shapes) used inside strategies.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _as_points(F) -> np.ndarray:
  F = np.asarray(F, dtype=np.float64)
  if F.ndim == 1:
    F = F[:, None]
  if F.ndim != 2:
    raise ValueError(f"expected points of shape (n, m), got shape {F.shape}")
  return F


def dominates(a, b) -> bool:
  """Whether point ``a`` Pareto-dominates ``b`` (no worse everywhere, better somewhere)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if np.isnan(a).any() or np.isnan(b).any():
    return False
  return bool(np.all(a <= b) and np.any(a < b))


def _margin(margin, m: int) -> np.ndarray | None:
  """``margin`` as an ``(m,)`` vector, or None where it is absent or all zero."""
  if margin is None:
    return None
  v = np.asarray(margin, np.float64)
  v = np.full(m, float(v)) if v.ndim == 0 else v
  if v.shape != (m,):
    raise ValueError(f"margin has {v.size} values, but the points have {m} objectives")
  if not np.all(np.isfinite(v)) or np.any(v < 0):
    raise ValueError(f"margin values must be finite and >= 0, got {v.tolist()}")
  return v if np.any(v > 0) else None


def dominance_matrix(F, margin=None) -> np.ndarray:
  """``D[i, j]`` is True when point i dominates point j.

  Args:
    F: ``(n, m)`` objective values.
    margin: optional ``(m,)`` (or scalar) non-negative tolerances: point i then dominates
      j only where it is better by at least ``margin`` in every objective (``F[i] +
      margin <= F[j]``, and better somewhere), so that differences within a measurement's
      noise decide nothing. Zero everywhere (the default): plain Pareto dominance. With a
      margin dominance is not transitive.

  Returns:
    ``(n, n)`` bool matrix; rows and columns of failed (NaN) points are all False.
  """
  F = _as_points(F)
  m = _margin(margin, F.shape[1])
  shifted = F if m is None else F + m
  le = np.all(shifted[:, None, :] <= F[None, :, :], axis=-1)
  lt = np.any(F[:, None, :] < F[None, :, :], axis=-1)
  ok = ~np.isnan(F).any(axis=1)
  return le & lt & ok[:, None] & ok[None, :]


def nondominated_sort(F) -> np.ndarray:
  """Front index of every point (0 = non-dominated), by repeatedly peeling fronts.

  Args:
    F: ``(n, m)`` objective values.

  Returns:
    ``(n,)`` int array of front ranks; -1 for failed (NaN) points.
  """
  F = _as_points(F)
  n = F.shape[0]
  ok = ~np.isnan(F).any(axis=1)
  D = dominance_matrix(F)
  count = D.sum(axis=0)  # how many points dominate each point
  rank = np.full(n, -1, dtype=np.int64)
  remaining = ok.copy()
  front = 0
  while remaining.any():
    current = remaining & (count == 0)
    rank[current] = front
    remaining &= ~current
    count = count - D[current].sum(axis=0)
    front += 1
  return rank


def _pareto_mask_2d(F: np.ndarray) -> np.ndarray:
  """O(n log n) non-dominated mask of finite 2-D points (duplicates all kept)."""
  n = len(F)
  order = np.lexsort((F[:, 1], F[:, 0]))
  x, y = F[order, 0], F[order, 1]
  starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
  group = np.cumsum(np.r_[True, x[1:] != x[:-1]]) - 1
  group_min = y[starts]  # sorted by y within a group: its first y is its minimum
  before = np.r_[np.inf, np.minimum.accumulate(group_min)[:-1]]  # min y at smaller x
  dominated = (before[group] <= y) | (group_min[group] < y)
  mask = np.zeros(n, bool)
  mask[order] = ~dominated
  return mask


def pareto_mask(F, margin=None) -> np.ndarray:
  """``(n,)`` bool: the finite points that no other point dominates (by more than
  ``margin``, see :func:`dominance_matrix`)."""
  F = _as_points(F)
  ok = ~np.isnan(F).any(axis=1)
  margin = _margin(margin, F.shape[1])
  if margin is not None:
    return ok & ~dominance_matrix(F, margin).any(axis=0)
  if F.shape[1] == 2:
    mask = np.zeros(len(F), bool)
    mask[ok] = _pareto_mask_2d(F[ok])
    return mask
  return ok & ~dominance_matrix(F).any(axis=0)


def pareto_front(F) -> np.ndarray:
  """The non-dominated points, duplicates removed, sorted by the first objective."""
  F = _as_points(F)
  P = np.unique(F[pareto_mask(F)], axis=0)
  return P[np.lexsort(P.T[::-1])] if len(P) else P


def crowding_distance(F) -> np.ndarray:
  """NSGA-II crowding distance of each point within the set ``F`` (one front).

  Each objective contributes the normalised gap between a point's two neighbours along
  that objective; the extreme points of every objective get ``inf``.

  Args:
    F: ``(n, m)`` objective values of one front (finite).

  Returns:
    ``(n,)`` float distances; NaN for failed points.
  """
  F = _as_points(F)
  n, m = F.shape
  out = np.zeros(n)
  ok = ~np.isnan(F).any(axis=1)
  out[~ok] = np.nan
  idx = np.flatnonzero(ok)
  if len(idx) <= 2:
    out[idx] = np.inf
    return out
  G = F[idx]
  dist = np.zeros(len(idx))
  for j in range(m):
    order = np.argsort(G[:, j], kind="stable")
    v = G[order, j]
    span = v[-1] - v[0]
    dist[order[0]] = dist[order[-1]] = np.inf
    if span > 0:
      dist[order[1:-1]] += (v[2:] - v[:-2]) / span
  out[idx] = dist
  return out


def _hv2(P: np.ndarray, ref: np.ndarray) -> float:
  """Exact 2-D hypervolume of points already strictly inside the reference box."""
  P = P[np.lexsort((P[:, 1], P[:, 0]))]
  area, y_prev = 0.0, ref[1]
  for x, y in P:
    if y < y_prev:
      area += (ref[0] - x) * (y_prev - y)
      y_prev = y
  return area


def _hv(P: np.ndarray, ref: np.ndarray) -> float:
  """Exact hypervolume by slicing along the last objective (HSO), any dimension."""
  m = P.shape[1]
  if len(P) == 0:
    return 0.0
  if m == 1:
    return float(ref[0] - P[:, 0].min())
  if m == 2:
    return _hv2(P, ref)
  P = P[np.argsort(P[:, -1], kind="stable")]
  z = np.append(P[:, -1], ref[-1])
  total = 0.0
  for i in range(len(P)):
    depth = z[i + 1] - z[i]
    if depth > 0:
      sl = P[:i + 1, :-1]
      sl = sl[pareto_mask(sl)]
      total += depth * _hv(sl, ref[:-1])
  return total


def hypervolume(F, ref) -> float:
  """Exact hypervolume dominated by ``F`` and bounded by the reference point ``ref``.

  The volume of the union of boxes ``[f, ref]`` over the points ``f`` of ``F`` that are
  strictly better than ``ref`` in every objective. 2-D is a sort and a sweep;
  higher dimensions slice along the last objective (O(n^(m-1) log n)), fine for fronts
  of a few thousand points in 3-D.

  Args:
    F: ``(n, m)`` objective values; NaN rows are ignored.
    ref: ``(m,)`` reference point.

  Returns:
    The hypervolume (0.0 when no point is inside the reference box).
  """
  F = _as_points(F)
  ref = np.asarray(ref, np.float64).ravel()
  if ref.shape[0] != F.shape[1]:
    raise ValueError(f"reference point has {ref.shape[0]} coordinates but the points have "
                     f"{F.shape[1]} objectives")
  ok = ~np.isnan(F).any(axis=1) & np.all(F < ref, axis=1)
  P = F[ok]
  P = P[pareto_mask(P)] if len(P) else P
  return float(_hv(np.unique(P, axis=0), ref))


def normalize(F, lo, hi) -> np.ndarray:
  """``(F - lo) / (hi - lo)`` per objective; a constant objective maps to 0."""
  F = _as_points(F)
  lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
  span = np.where(hi > lo, hi - lo, 1.0)
  return (F - lo) / span


def domination_counts(F: jnp.ndarray) -> jnp.ndarray:
  """For each point, how many points of ``F`` dominate it (jittable).

  Args:
    F: ``(n, m)`` objective values; NaN rows dominate nothing and count as dominated
      by every finite point.

  Returns:
    ``(n,)`` int32 counts; 0 marks the non-dominated points.
  """
  bad = jnp.isnan(F).any(axis=1)
  dom = _dominance(F) & ~bad[:, None] | (~bad[:, None] & bad[None, :])
  return dom.sum(axis=0).astype(jnp.int32)


def _dominance(F: jnp.ndarray) -> jnp.ndarray:
  """``D[i, j]``: point ``i`` dominates point ``j`` (minimising; NaN compares false)."""
  le = jnp.all(F[:, None, :] <= F[None, :, :], axis=-1)
  lt = jnp.any(F[:, None, :] < F[None, :, :], axis=-1)
  return le & lt


def front_ranks(F: jax.Array) -> jax.Array:
  """Non-domination rank of every point (0 = non-dominated), jittable.

  Args:
    F: ``(n, m)`` objective values; rows with NaN are failed points.

  Returns:
    ``(n,)`` int32 ranks; failed points get ``n`` (behind every front).
  """
  n = F.shape[0]
  ok = ~jnp.isnan(F).any(axis=1)
  D = _dominance(F) & ok[:, None] & ok[None, :]

  def cond(carry):
    _, remaining, _ = carry
    return remaining.any()

  def body(carry):
    rank, remaining, r = carry
    dominated = jnp.any(D & remaining[:, None], axis=0)
    current = remaining & ~dominated
    return jnp.where(current, r, rank), remaining & ~current, r + 1

  rank0 = jnp.full((n,), n, jnp.int32)
  rank, _, _ = jax.lax.while_loop(cond, body, (rank0, ok, jnp.int32(0)))
  return rank


def crowding_distances(F: jax.Array, rank: jax.Array) -> jax.Array:
  """NSGA-II crowding distance of every point within its own front, jittable.

  Per objective, the gap between a point's neighbours in its front, divided by the
  front's range in that objective; the extreme points of a front get ``inf``.

  Args:
    F: ``(n, m)`` objective values.
    rank: ``(n,)`` front ranks from :func:`front_ranks`.

  Returns:
    ``(n,)`` float32 distances (0 for failed points).
  """
  n = F.shape[0]
  ok = ~jnp.isnan(F).any(axis=1)
  Fz = jnp.where(ok[:, None], F, 0.0).astype(jnp.float32)
  same = rank[:, None] == rank[None, :]

  def one(f):
    order = jnp.lexsort((f, rank))  # by rank, then by value
    fs, rs = f[order], rank[order]
    prev_ok = jnp.concatenate([jnp.array([False]), rs[1:] == rs[:-1]])
    next_ok = jnp.concatenate([rs[:-1] == rs[1:], jnp.array([False])])
    prev_f = jnp.concatenate([fs[:1], fs[:-1]])
    next_f = jnp.concatenate([fs[1:], fs[-1:]])
    lo = jnp.min(jnp.where(same, f[None, :], jnp.inf), axis=1)[order]
    hi = jnp.max(jnp.where(same, f[None, :], -jnp.inf), axis=1)[order]
    span = hi - lo
    gap = jnp.where(span > 0, (next_f - prev_f) / jnp.where(span > 0, span, 1.0), 0.0)
    d = jnp.where(prev_ok & next_ok, gap, jnp.inf)
    return jnp.zeros(n, jnp.float32).at[order].set(d)

  dist = jax.vmap(one, in_axes=1)(Fz).sum(axis=0)
  return jnp.where(ok, dist, 0.0)

