"""Uniform allocation: every prunable group keeps the same fraction; and
its generalisation, widths proportional to given ones."""

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
    return proportional(counter, target, levels.sizes, levels)


def proportional(counter, target, widths, levels):
    """Keep counts proportional to `widths`, scaled to meet `target`.

    Bisects a scale s so that each group keeps the smallest allowed count
    >= s * widths (at most its size) and the total MACs are at most
    `target`, then raises the groups furthest below their share while the
    budget allows. With `widths` = the group sizes this is `uniform`; a
    method that learned per-group widths (LFPC) keeps their shape.

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
        priority=lambda group, keep: (
            (widths[group] - keep[group]) / sizes[group]
        ),
    )
