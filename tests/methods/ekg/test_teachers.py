"""Tests for the EKG teacher selection (EKG paper, Eq. 10)."""

import numpy as np
import pytest

from ekg_keras.methods.ekg.teachers import select_teachers


def test_code_variant_spreads_losses_and_excludes_the_student():
    # History losses theta_0..theta_6; theta_6 (the student) is excluded.
    losses = [0.10, 0.12, 0.20, 0.31, 0.38, 0.52, 0.90]
    # Targets: 0.10 + j * 0.084 = 0.10, 0.184, 0.268, 0.352, 0.436.
    assert select_teachers(losses, 5) == [0, 2, 3, 4, 5]
    assert select_teachers(losses, 1) == [0]


def test_no_entry_is_taken_twice():
    # Targets crowd the low end (0, .25, .5, .75): no entry is reused.
    losses = [0.0, 0.01, 0.02, 1.0, 5.0]
    assert select_teachers(losses, 4) == [0, 1, 2, 3]


def test_short_history_and_equal_losses_are_clamped():
    assert select_teachers([0.3, 0.5], 5) == [0]
    assert select_teachers([0.4, 0.2, 0.6], 5) == [1, 0]
    assert select_teachers([0.2, 0.2, 0.2, 0.2, 0.9], 3) == [0, 1, 2]


def test_poster_variant_targets_span_student_to_unpruned():
    losses = [0.1, 0.2, 0.35, 0.5, 0.62, 0.75, 0.9]
    # Targets (K=3): 0.9 - k/3 * 0.8 for k = 1..3: 0.633, 0.367, 0.1.
    assert select_teachers(losses, 3, variant="poster") == [0, 2, 4]
    # Lowest-loss first, as the fine-tuning's "top" teacher.
    chosen = select_teachers(losses, 5, variant="poster")
    assert chosen == sorted(chosen, key=lambda i: losses[i])
    assert len(set(chosen)) == 5 and 6 not in chosen


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"losses": [0.1]}, "at least two"),
        ({"losses": [0.1, 0.2], "num_teachers": 0}, "num_teachers=0"),
        ({"losses": [0.1, 0.2], "variant": "paper"}, "variant='paper'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_teachers(**kwargs)


def test_losses_as_numpy():
    losses = np.linspace(0.1, 1.0, 10)
    assert select_teachers(losses, 5)[0] == 0
