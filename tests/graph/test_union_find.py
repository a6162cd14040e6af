"""Tests for ekg_keras.graph.union_find: array-at-a-time disjoint sets."""

import numpy as np

from ekg_keras.graph.union_find import UnionFind


def _reference_roots(size, pairs):
    """Smallest member of each id's set, by merging sets one pair at a time."""
    sets = [{i} for i in range(size)]
    for a, b in pairs:
        if sets[a] is not sets[b]:
            merged = sets[a] | sets[b]
            for member in merged:
                sets[member] = merged
    return np.array([min(s) for s in sets])


def test_union_joins_pairs_and_the_smallest_id_is_the_root():
    sets = UnionFind()
    np.testing.assert_array_equal(sets.add(4), [0, 1, 2, 3])
    np.testing.assert_array_equal(sets.add(3), [4, 5, 6])

    sets.union(np.array([5, 6, 0]), np.array([1, 3, 6]))

    np.testing.assert_array_equal(sets.roots(), [0, 1, 2, 0, 4, 1, 0])
    assert len(sets) == 7


def test_a_root_named_twice_in_one_union_joins_every_partner():
    # 0 is the root of both pairs; a single scatter would keep one parent.
    sets = UnionFind()
    sets.add(6)

    sets.union(np.array([3, 4, 5]), np.array([0, 0, 0]))

    np.testing.assert_array_equal(sets.roots(), [0, 1, 2, 0, 0, 0])


def test_random_unions_match_merging_one_pair_at_a_time():
    rng = np.random.default_rng(0)
    sets = UnionFind()
    sets.add(40)
    pairs = []
    for _ in range(15):
        a = rng.integers(0, 40, size=rng.integers(1, 6))
        b = rng.integers(0, 40, size=len(a))
        sets.union(a, b)
        pairs.extend(zip(a.tolist(), b.tolist()))
        np.testing.assert_array_equal(sets.roots(), _reference_roots(40, pairs))
