"""Uniform allocation: every prunable group keeps the same fraction."""

import numpy as np

from ekg_keras.allocation.levels import top_up


def uniform(counter, target, scores, levels):
    """Keep counts with one keep fraction for all groups, meeting `target`.

    Bisects the fraction q so that each group keeps the smallest allowed
    count >= q * size and the total MACs are at most `target`, then raises
    the groups furthest below the common fraction while the budget allows.

    Args:
        counter: `FlopsCounter` of the model.
        target: MAC budget.
        scores: Per-group importance (unused: uniform ignores them).
        levels: `KeepLevels`.

    Returns:
        Int array of keep counts per group.
    """
    del scores
    sizes = levels.sizes.astype(np.float64)

    def keep_at(fraction):
        return levels.at_least(np.ceil(fraction * sizes - 1e-9))

    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if counter.macs(keep_at(middle)) <= target:
            low = middle
        else:
            high = middle
    return top_up(
        keep_at(low),
        levels,
        counter.macs,
        target,
        priority=lambda group, keep: -keep[group] / sizes[group],
    )
