"""Tests for the EKG search rules (ekg_keras.methods.ekg.rules)."""

import numpy as np
import pytest

from ekg_keras.methods.ekg import rules


def test_step_sizes_match_the_resnet56_examples():
    # EKG reference code, ResNet-56: conv1 gates 0.2; stage groups of
    # 16/32/64 channels shared by 10 producers: 0.0625, 0.03125, 0.02.
    steps, fine = rules.step_sizes([16, 16, 32, 64], [1, 10, 10, 10])
    np.testing.assert_allclose(steps, [0.2, 0.0625, 0.03125, 0.02])
    np.testing.assert_allclose(fine, [1 / 16, 1 / 16, 1 / 32, 1 / 64])


def test_kept_count_and_masks():
    assert rules.kept_count(16, 1.0) == 16
    assert rules.kept_count(16, 0.8) == 13  # ceil(12.8)
    assert rules.kept_count(16, 0.75) == 12  # exact
    assert rules.kept_count(16, 0.0) == 1  # at least one channel
    assert rules.kept_count(16, -0.2) == 1
    ranks = rules.ranks([0.5, 3.0, 0.0, 2.0])
    np.testing.assert_array_equal(ranks, [2, 0, 3, 1])
    np.testing.assert_array_equal(
        rules.keep_mask(ranks, 0.5), [False, True, False, True]
    )
    # Ties: live channels rank before masked ones, then channel order.
    np.testing.assert_array_equal(
        rules.ranks([0.0, 0.0, 1.0, 0.0], alive=[False, True, True, True]),
        [3, 1, 0, 2],
    )


def test_candidate_cost_sums_the_next_weakest_live_channels():
    scores = [0.0, 0.0, 5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0]
    # Width 0.8: two channels gone (scores 0); a step of 0.2 removes the
    # next two weakest, 1 and 2.
    assert rules.candidate_cost(scores, 0.8, 0.2) == 3.0
    # Python's round: ties go to even, so (1 - 0.5 + 0.125) * 4 = 2.5
    # rounds to 2 (nothing removed) and 3.5 rounds to 4.
    assert rules.candidate_cost([1.0, 2.0, 3.0, 4.0], 0.5, 0.125) == 0.0
    assert rules.candidate_cost([1.0, 2.0, 3.0, 4.0], 0.5, 0.375) == 7.0


def test_trimmed_otsu_on_known_values():
    # Ten values: ceil(2) dropped at each end leaves [2, 3, 4, 10, 11, 12];
    # the best split is between 4 and 10.
    values = [0, 1, 2, 3, 4, 10, 11, 12, 50, 60]
    assert rules.trimmed_otsu(values) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="at least 3"):
        rules.trimmed_otsu([1.0, 2.0, 3.0, 4.0])


def test_groups_to_check_and_edge_cases():
    costs = np.array(
        [0, 1, 2, 3, 4, 10, 11, 12, 50, 60, rules.UNAVAILABLE], dtype=np.float64
    )
    checked = rules.groups_to_check(costs)
    np.testing.assert_array_equal(np.flatnonzero(checked), [0, 1, 2, 3, 4])
    # Too few costs for the threshold: every available group is checked.
    few = np.array([5.0, 1.0, rules.UNAVAILABLE])
    np.testing.assert_array_equal(
        rules.groups_to_check(few), [True, True, False]
    )
    none = np.full(3, rules.UNAVAILABLE)
    assert not rules.groups_to_check(none).any()


def test_fine_width_lands_within_one_channel_of_the_target():
    size = 50
    fine = 1 / size

    def fraction_at(width):  # FLOPs proportional to kept channels
        return rules.kept_count(size, width) / size

    width = rules.fine_width(0.4, 0.2, fine, fraction_at, target=0.5)
    assert fraction_at(width) <= 0.5
    assert fraction_at(width + fine) > 0.5


def test_running_mean_is_the_mean_of_all_members():
    rng = np.random.default_rng(0)
    logits = [rng.standard_normal((4, 3)) for _ in range(5)]
    ensemble = logits[0]
    for count, new in enumerate(logits[1:], start=1):
        ensemble = rules.running_mean(ensemble, count, new)
    np.testing.assert_allclose(ensemble, np.mean(logits, axis=0))
