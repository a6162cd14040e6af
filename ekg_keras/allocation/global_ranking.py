"""Global allocation: rank every channel of every group on one scale."""

import numpy as np

from ekg_keras import ties
from ekg_keras.allocation.levels import top_up


def global_ranking(counter, target, scores, levels):
    """Removes the globally least important channels until MACs <= target.

    Scores are divided by their group's mean so that groups of different
    scale compete on relative importance (the mean normalisation of
    Torch-Pruning's group pruner). Channels are removed in increasing
    normalised score; the number removed is bisected so that the allowed
    keep counts meet the budget, and the budget left over is filled back
    with the best removed channels.

    Args:
        counter: `FlopsCounter` of the model.
        target: MAC budget.
        scores: Per-group importance arrays (None for fixed groups).
        levels: `KeepLevels`.

    Returns:
        Int array of keep counts per group.
    """
    sizes = levels.sizes
    normalised, owners = [], []
    ranked = {}
    for group in np.flatnonzero(levels.prunable):
        values = np.asarray(scores[group], dtype=np.float64)
        values = values / max(values.mean(), 1e-12)
        ranked[group] = np.sort(values)
        normalised.append(values)
        owners.append(np.full(len(values), group))
    order = ties.order(np.concatenate(normalised))
    owner_sorted = np.concatenate(owners)[order]

    def keep_after(removed):
        counts = np.bincount(owner_sorted[:removed], minlength=len(sizes))
        return levels.at_least(sizes - counts)

    low, high = 0, len(order)
    while low < high:
        middle = (low + high) // 2
        if counter.macs(keep_after(middle)) <= target:
            high = middle
        else:
            low = middle + 1

    def priority(group, keep):
        # Score of the best channel the group would get back.
        return ranked[group][sizes[group] - keep[group] - 1]

    return top_up(keep_after(low), levels, counter.macs, target, priority)
