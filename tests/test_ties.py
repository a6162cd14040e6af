"""Tests for ekg_keras.ties: near-ties decided by index, not by rounding."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from ekg_keras import ties


def test_argmin_takes_the_lowest_index_among_near_ties():
    values = [3.0, 1.0 + 5e-6, 2.0, 1.0]
    assert ties.argmin(values) == 1
    assert ties.argmin(values, rtol=0.0) == 3
    # A real gap (1e-3 of the largest value) is not a tie.
    assert ties.argmin([3.0, 1.003, 2.0, 1.0]) == 3


def test_argmax_mirrors_argmin():
    assert ties.argmax([1.0, 5.0, 5.0 - 1e-6, 2.0]) == 1
    assert ties.argmax([1.0, 5.0 - 1e-6, 5.0, 2.0]) == 1
    assert ties.argmax([1.0, 4.0, 5.0, 2.0]) == 2


def test_argmin_refuses_an_empty_array():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        ties.argmin([])


def test_order_puts_near_ties_in_index_order():
    values = np.array([0.5, 1.0, 0.2, 1.0 - 1e-4, 0.2 + 1e-5])
    rtol = ties.SCORE_RTOL
    np.testing.assert_array_equal(ties.order(values, rtol), [2, 4, 0, 1, 3])
    np.testing.assert_array_equal(
        ties.order(values, rtol, descending=True), [1, 3, 0, 2, 4]
    )
    # Without a tolerance the last bits decide.
    np.testing.assert_array_equal(
        ties.order(values, rtol=0.0, descending=True), [1, 3, 0, 4, 2]
    )
    # The default is for scores of weights: only summation-order noise.
    np.testing.assert_array_equal(
        ties.order(values, descending=True), [1, 3, 0, 4, 2]
    )
    np.testing.assert_array_equal(
        ties.order(values + np.array([0, 0, 0, 1e-4, 0]), descending=True),
        [1, 3, 0, 4, 2],
    )


def test_order_puts_first_entries_ahead_within_a_tie():
    values = np.array([0.0, 0.0, 1.0, 0.0])
    alive = np.array([False, True, True, True])
    np.testing.assert_array_equal(
        ties.order(values, descending=True, first=alive), [2, 1, 3, 0]
    )


def test_ranks_invert_order():
    values = np.array([0.3, 0.9, 0.1, 0.9 + 1e-6])
    ranks = ties.ranks(values, ties.SCORE_RTOL)
    np.testing.assert_array_equal(ranks, [2, 0, 3, 1])
    np.testing.assert_array_equal(
        np.argsort(ranks), ties.order(values, ties.SCORE_RTOL, True)
    )


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    levels=st.lists(st.integers(0, 50), min_size=1, max_size=40),
    seed=st.integers(0, 2**31 - 1),
)
def test_rounding_noise_never_changes_the_order(levels, seed):
    """Values on a grid more than 15 tolerances apart, each moved by noise
    100x below the tolerance (what another CPU's kernels do to a score):
    the order, argmin and argmax stay as they were."""
    rng = np.random.default_rng(seed)
    values = np.asarray(levels, np.float64) * 0.1 + 1.0
    noisy = values * (1 + rng.uniform(-1e-5, 1e-5, len(values)))
    rtol = ties.SCORE_RTOL
    np.testing.assert_array_equal(
        ties.order(values, rtol), ties.order(noisy, rtol)
    )
    np.testing.assert_array_equal(
        ties.order(values, rtol, descending=True),
        ties.order(noisy, rtol, descending=True),
    )
    noisy_decision = values * (1 + rng.uniform(-1e-7, 1e-7, len(values)))
    assert ties.argmin(values) == ties.argmin(noisy_decision)
    assert ties.argmax(values) == ties.argmax(noisy_decision)
