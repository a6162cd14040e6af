"""Uniform allocation: every prunable group keeps the same fraction."""

import numpy as np

from ekg_keras.allocation.levels import top_up


def uniform(counter, target, scores, levels):
    """Keep counts with one keep fraction for all groups, meeting `target`.

    The rule (`follows_uniform_rule`): there is one fraction q such that
    every prunable group of n channels keeps between q * n and q * n + 1
    channels (one `round_to` step), except that a group at its floor
    (`min_channels`) may keep more; groups kept whole (not prunable,
    `ignored_layers`) do not take part. So any two groups' keep fractions
    are within one channel of each other.

    q is bisected as the largest fraction whose counts (`ceil(q * n)`,
    raised to an allowed count) meet the budget; then, while the budget
    allows and the rule holds, the groups with the lowest keep fraction
    are raised one step. The leftover budget is at most what one more
    step of such a group would cost (small for wide groups; a single
    channel of a narrow, expensive group can be several percent of a
    small network).

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
        allowed=lambda keep: follows_uniform_rule(levels, keep),
    )


def follows_uniform_rule(levels, keep):
    """Whether keep counts follow the uniform rule (see `uniform`).

    Some q must satisfy `q*n <= keep <= q*n + step` in every prunable
    group (`step` = `round_to`), the upper side waived for a group at its
    floor.
    """
    free = levels.prunable
    if not free.any():
        return True
    kept = np.asarray(keep, np.float64)[free]
    sizes = levels.sizes[free].astype(np.float64)
    step = levels.round_to
    at_floor = kept <= levels.lowest[free]
    lowest_q = np.where(at_floor, -np.inf, (kept - step) / sizes)
    highest_q = kept / sizes
    return bool(lowest_q.max() <= highest_q.min() + 1e-12)
