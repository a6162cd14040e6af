"""Uniform allocation: every prunable group keeps the same fraction; and
its generalisation, widths proportional to given ones."""

import numpy as np

from ekg_keras.allocation.levels import top_up


def uniform(counter, target, scores, levels):
    """Keep counts with one keep fraction for all groups, meeting `target`.

    The rule (`follows_proportional_rule`): there is one fraction q such
    that every prunable group of n channels keeps between q * n and
    q * n + 1 channels (one `round_to` step), except that a group at its
    floor (`min_channels`) may keep more; groups kept whole (not prunable,
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
    return proportional(counter, target, levels.sizes, levels)


def proportional(counter, target, widths, levels):
    """Keep counts proportional to `widths`, scaled to meet `target`.

    The rule of `uniform` with the widths in place of the group sizes: one
    scale s such that every prunable group keeps between s * width and
    s * width + one step, except a group at its floor (it may keep more)
    or at its full size (it cannot follow a larger share). s is bisected,
    then the groups with the lowest share are raised one step while the
    budget allows and the rule holds. With `widths` = the group sizes this
    is `uniform`; a method that learned per-group widths (LFPC) keeps
    their shape.

    Args:
        counter: `FlopsCounter` of the model.
        target: MAC budget.
        widths: Desired keep count per group (positive; fixed groups keep
            everything whatever their entry).
        levels: `KeepLevels`.

    Returns:
        Int array of keep counts per group.
    """
    sizes = levels.sizes.astype(np.float64)
    widths = np.maximum(np.asarray(widths, np.float64), 1e-9)

    def keep_at(scale):
        return levels.at_least(np.ceil(scale * widths - 1e-9))

    low, high = 0.0, float(np.max(sizes / widths))
    if counter.macs(keep_at(high)) <= target:
        low = high
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
        priority=lambda group, keep: -keep[group] / widths[group],
        allowed=lambda keep: follows_proportional_rule(levels, keep, widths),
    )


def follows_proportional_rule(levels, keep, widths=None):
    """Whether keep counts follow the rule of `proportional` (`uniform`
    for `widths=None`, the group sizes).

    Some s must satisfy `s*w <= keep <= s*w + step` in every prunable
    group (`step` = `round_to`); the upper side is waived for a group at
    its floor, the lower side for a group at its full size.
    """
    free = levels.prunable
    if not free.any():
        return True
    widths = levels.sizes if widths is None else widths
    kept = np.asarray(keep, np.float64)[free]
    widths = np.maximum(np.asarray(widths, np.float64)[free], 1e-9)
    step = levels.round_to
    at_floor = kept <= levels.lowest[free]
    at_full = kept >= levels.sizes[free]
    lowest_scale = np.where(at_floor, -np.inf, (kept - step) / widths)
    highest_scale = np.where(at_full, np.inf, kept / widths)
    return bool(lowest_scale.max() <= highest_scale.min() + 1e-12)
