"""Pareto utilities against brute force on random point sets."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.search import pareto


def _brute_dominates(a, b):
  return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def _brute_ranks(F):
  """Front k = points not dominated by any point outside fronts < k."""
  n = len(F)
  rank = [-1] * n
  left = [i for i in range(n) if not np.isnan(F[i]).any()]
  k = 0
  while left:
    front = [i for i in left if not any(_brute_dominates(F[j], F[i]) for j in left)]
    for i in front:
      rank[i] = k
    left = [i for i in left if i not in front]
    k += 1
  return np.array(rank)


def _inclusion_exclusion_hv(F, ref):
  """Volume of the union of boxes [f, ref] by inclusion-exclusion (exact, small n)."""
  F = [f for f in F if np.all(f < ref)]
  total = 0.0
  for k in range(1, len(F) + 1):
    for subset in itertools.combinations(F, k):
      corner = np.max(subset, axis=0)
      total += (-1) ** (k + 1) * np.prod(np.maximum(ref - corner, 0.0))
  return total


@pytest.mark.parametrize("m", [2, 3])
def test_nondominated_sort_matches_brute_force(m):
  rng = np.random.default_rng(m)
  for trial in range(20):
    # Integer coordinates make ties and duplicates frequent.
    F = rng.integers(0, 5, size=(12, m)).astype(float)
    if trial % 3 == 0:
      F[rng.integers(0, 12)] = np.nan
    np.testing.assert_array_equal(pareto.nondominated_sort(F), _brute_ranks(F))
    np.testing.assert_array_equal(pareto.pareto_mask(F), _brute_ranks(F) == 0)


@pytest.mark.parametrize("m", [2, 3])
def test_jittable_front_ranks_match_brute_force(m):
  # NSGA-II's fixed-shape ranks: failed points rank n, behind every front.
  rng = np.random.default_rng(20 + m)
  ranks = jax.jit(pareto.front_ranks)
  for trial in range(10):
    F = rng.integers(0, 5, size=(12, m)).astype(np.float32)
    if trial % 3 == 0:
      F[rng.integers(0, 12)] = np.nan
    brute = _brute_ranks(F)
    np.testing.assert_array_equal(np.asarray(ranks(jnp.asarray(F))),
                                  np.where(brute >= 0, brute, 12))


@pytest.mark.parametrize("m", [2, 3])
def test_jittable_crowding_matches_the_host_version_per_front(m):
  rng = np.random.default_rng(30 + m)
  for _ in range(10):
    F = rng.random((12, m)).astype(np.float32)  # no ties: neighbours are unambiguous
    rank = pareto.front_ranks(jnp.asarray(F))
    crowd = np.asarray(jax.jit(pareto.crowding_distances)(jnp.asarray(F), rank))
    rank = np.asarray(rank)
    for r in range(rank.max() + 1):
      front = rank == r
      np.testing.assert_allclose(crowd[front], pareto.crowding_distance(F[front]),
                                 rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_matches_inclusion_exclusion(m):
  rng = np.random.default_rng(10 + m)
  ref = np.full(m, 1.1)
  for _ in range(15):
    F = rng.random((8, m))
    F[rng.integers(0, 8)] = 1.2  # outside the reference box: no volume
    assert pareto.hypervolume(F, ref) == pytest.approx(_inclusion_exclusion_hv(F, ref),
                                                        rel=1e-12, abs=1e-12)


def test_hypervolume_3d_matches_monte_carlo_on_a_larger_front():
  rng = np.random.default_rng(3)
  F = rng.random((60, 3))
  ref = np.ones(3)
  samples = rng.random((400_000, 3))
  P = F[pareto.pareto_mask(F)]
  covered = np.zeros(len(samples), bool)
  for p in P:
    covered |= np.all(samples >= p, axis=1)
  # Monte Carlo standard error is about sqrt(v(1-v)/n) < 8e-4.
  assert pareto.hypervolume(F, ref) == pytest.approx(covered.mean(), abs=4e-3)


def test_hypervolume_known_values_and_nan():
  assert pareto.hypervolume([[0.0, 0.0]], [1.0, 1.0]) == pytest.approx(1.0, abs=1e-15)
  assert pareto.hypervolume([[0.5, 0.0], [0.0, 0.5], [np.nan, -5.0]],
                            [1.0, 1.0]) == pytest.approx(0.75, abs=1e-15)
  assert pareto.hypervolume([[2.0, 0.0]], [1.0, 1.0]) == 0.0
  with pytest.raises(ValueError, match="reference point"):
    pareto.hypervolume([[0.0, 0.0]], [1.0, 1.0, 1.0])


def test_crowding_distance_matches_definition():
  F = np.array([[0.0, 4.0], [1.0, 2.0], [2.0, 1.5], [4.0, 0.0]])
  d = pareto.crowding_distance(F)
  assert np.isinf(d[0]) and np.isinf(d[3])
  # interior: sum over objectives of (next - prev) / range
  assert d[1] == pytest.approx((2.0 - 0.0) / 4 + (4.0 - 1.5) / 4, abs=1e-12)
  assert d[2] == pytest.approx((4.0 - 1.0) / 4 + (2.0 - 0.0) / 4, abs=1e-12)


def test_domination_counts_jittable_matches_numpy():
  rng = np.random.default_rng(7)
  F = rng.integers(0, 4, size=(15, 2)).astype(np.float32)
  F[3] = np.nan
  counts = np.asarray(pareto.domination_counts(jnp.asarray(F)))
  D = pareto.dominance_matrix(F)
  finite = ~np.isnan(F).any(axis=1)
  expected = D.sum(axis=0) + np.where(finite, 0, finite.sum())
  np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize("m", [2, 3])
def test_pareto_mask_with_a_margin_matches_brute_force(m):
  rng = np.random.default_rng(10 + m)
  margin = np.array([0.5] + [0.0] * (m - 1))
  for trial in range(20):
    F = rng.integers(0, 5, size=(12, m)).astype(float) + rng.choice([0.0, 0.3], (12, m))
    if trial % 3 == 0:
      F[rng.integers(0, 12)] = np.nan

    def beats(a, b):
      return (all(x + t <= y for x, t, y in zip(a, margin, b))
              and any(x < y for x, y in zip(a, b)))

    ok = ~np.isnan(F).any(axis=1)
    brute = [bool(ok[i]) and not any(ok[j] and beats(F[j], F[i]) for j in range(len(F)))
             for i in range(len(F))]
    np.testing.assert_array_equal(pareto.pareto_mask(F, margin), brute)
    # A margin only keeps more points: the plain front is inside the tolerant one.
    assert np.all(pareto.pareto_mask(F, margin) >= pareto.pareto_mask(F))
    np.testing.assert_array_equal(pareto.pareto_mask(F, np.zeros(m)), pareto.pareto_mask(F))


def test_margin_keeps_a_point_only_within_its_tolerance():
  # (error, size): the larger network is 0.01 worse than a smaller one.
  F = np.array([[9.42, 37722.0], [9.43, 556730.0], [9.60, 600000.0]])
  np.testing.assert_array_equal(pareto.pareto_mask(F), [True, False, False])
  np.testing.assert_array_equal(pareto.pareto_mask(F, [0.15, 0.0]), [True, True, False])
  np.testing.assert_array_equal(pareto.pareto_mask(F, [0.2, 0.0]), [True, True, True])
  assert pareto.dominance_matrix(F, [0.15, 0.0])[0, 2]
  assert not pareto.dominance_matrix(F, [0.15, 0.0])[0, 1]
  with pytest.raises(ValueError, match=r"margin has 3 values, but the points have 2"):
    pareto.pareto_mask(F, [0.1, 0.0, 0.0])
  with pytest.raises(ValueError, match=r"finite and >= 0, got \[-0.1, 0.0\]"):
    pareto.pareto_mask(F, [-0.1, 0.0])
