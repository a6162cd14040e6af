"""The final structure: noise-free gates, then exactly the FLOPs target."""

import numpy as np

from ekg_keras import ties
from ekg_keras.allocation.levels import TARGET_TOLERANCE
from ekg_keras.allocation.levels import top_up
from ekg_keras.methods.base import keep_top

#: A learned structure further below the target than this (a fraction of
#: the original FLOPs) gets its strongest pruned channels back.
TOLERANCE = TARGET_TOLERANCE


def final_structure(logits, setup, tolerance=TOLERANCE):
    """Keep masks from the gate logits that meet `setup`'s FLOPs target.

    The noise-free structure keeps the channels with `sigmoid(w / tau) >
    1/2` (`w > 0`), raised to each group's floor and `round_to` level. The
    paper stops near the target; here the result is guaranteed at or below
    it: while it is above, the group whose weakest kept channel has the
    lowest logit drops to its next lower level; if it ends more than
    `tolerance` below, the pruned channels with the highest logits come
    back, one level at a time, while the target still holds (so it ends
    within `tolerance`, or as close as single levels allow where one
    channel is worth more, as in tiny networks).

    Args:
        logits: Per group of `setup.graph`, the gate logits (None for
            groups without gates).
        setup: The method's `PruningSetup` (counter, levels, target).
        tolerance: How far below the target the result may stay.

    Returns:
        `(keep, record)`: boolean keep masks per group, and a dict saying
        what was done: `noise_free_fraction`, `removed_channels`,
        `added_channels`, `fraction`.

    Raises:
        RuntimeError: If the floors leave the target out of reach (the
            set-up checks this first, so it does not happen).
    """
    levels = setup.levels
    gated = [values is not None for values in logits]
    order = [
        ties.order(values, descending=True) if values is not None else None
        for values in logits
    ]
    learned = np.array(
        [
            np.sum(values > 0) if values is not None else size
            for values, size in zip(logits, setup.graph.sizes)
        ],
        dtype=np.int64,
    )
    counts = levels.at_least(learned)
    budget = setup.target_macs * (1 + 1e-12)
    removed = 0
    while setup.counter.macs(counts) > budget:
        group, lower = _weakest(logits, order, counts, levels, gated)
        if group is None:
            raise RuntimeError(
                "Every gated group is at its floor, yet the structure keeps "
                f"{setup.fraction(counts):.4f} > {setup.target} of the FLOPs."
            )
        removed += int(counts[group] - lower)
        counts[group] = lower
    added = 0
    if setup.fraction(counts) < setup.target - tolerance:
        before = counts.copy()

        def strongest_pruned(group, keep):
            return logits[group][order[group][keep[group]]]

        counts = top_up(
            counts, levels, setup.counter.macs, budget, strongest_pruned
        )
        added = int(np.sum(counts - before))
    keep = keep_top(logits, counts, setup.graph.sizes)
    return keep, {
        "noise_free_fraction": setup.fraction(learned),
        "removed_channels": removed,
        "added_channels": added,
        "fraction": setup.fraction(counts),
    }


def _weakest(logits, order, counts, levels, gated):
    """The group whose weakest kept channel has the lowest logit among
    those that can drop a level, and that lower level."""
    best, best_logit, best_level = None, np.inf, None
    for group in np.flatnonzero(gated):
        allowed = levels.levels[group]
        position = np.searchsorted(allowed, counts[group], side="left") - 1
        if position < 0:
            continue
        weakest = logits[group][order[group][counts[group] - 1]]
        if weakest < best_logit:
            best, best_logit, best_level = group, weakest, allowed[position]
    return best, best_level
