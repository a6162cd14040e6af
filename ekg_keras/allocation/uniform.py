"""Uniform allocation: every prunable group keeps the same fraction."""

import numpy as np

from ekg_keras.allocation.levels import top_up


def uniform(counter, target, scores, levels):
    """Keep counts with one keep fraction for all groups, meeting `target`.

    The rule: every prunable group keeps `ceil(q * size)` channels, raised
    to the next allowed count (`round_to`, `min_channels`), for one common
    fraction q, or one allowed count less. So any two groups' keep
    fractions are within one channel of q (one `round_to` step), except
    where a floor (`min_channels`) or a group kept whole (not prunable,
    `ignored_layers`) says otherwise.

    q is the largest fraction whose counts meet the budget (bisected);
    then, while the budget allows, the groups that would step up first
    above q (the lowest fractions first) get that one step. No group goes
    further, so the leftover budget can be up to the cost of one step of
    one group.

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
        ceiling=keep_at(high),
    )
