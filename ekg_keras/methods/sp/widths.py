"""Widths of the super-net: the allowed channel counts and channel order.

Every prunable group may take a count from a short table: the width ratios
(31 ratios from 0.1 to 1.0, as MetaPruning and SP) times the group's size,
snapped to the counts the set-up allows (`min_channels`, `round_to`). A
sub-network keeps a *prefix* of each group in the order of an importance
criterion (`ekg_keras.criteria`), so a narrower width is always a subset of
a wider one and the shared weights mean the same thing at every width.
"""

import numpy as np

from ekg_keras import criteria as criteria_lib
from ekg_keras import ties
from ekg_keras.allocation.levels import width_counts

#: Number and smallest of SP's width ratios (0.1, 0.13, ..., 1.0).
NUM_RATIOS = 31
SMALLEST_RATIO = 0.1


def width_ratios(num_ratios=NUM_RATIOS, smallest=SMALLEST_RATIO):
    """`num_ratios` evenly spaced ratios from `smallest` to 1.0.

    Raises:
        ValueError: For fewer than 2 ratios or `smallest` outside (0, 1).
    """
    if isinstance(num_ratios, bool) or int(num_ratios) < 2:
        raise ValueError(
            "`num_ratios` should be an integer >= 2. Received: "
            f"num_ratios={num_ratios!r}"
        )
    if not 0 < smallest < 1:
        raise ValueError(
            "`smallest_ratio` should be in (0, 1). Received: "
            f"smallest_ratio={smallest!r}"
        )
    return np.linspace(smallest, 1.0, int(num_ratios))


def count_tables(levels, ratios):
    """Allowed keep counts per group, ascending.

    Each ratio times a group's size is rounded and raised to the nearest
    count `levels` allows; duplicates collapse. A fixed group has one
    count, its size.

    Args:
        levels: The set-up's `KeepLevels`.
        ratios: Width ratios in (0, 1].

    Returns:
        One int64 array per group.
    """
    return width_counts(levels, ratios, rounding="nearest")


def channel_ranks(setup, criterion, data=None, loss=None):
    """Each channel's rank in its group (0 = most important).

    Args:
        setup: The `PruningSetup` (its masked model and graph).
        criterion: A name from `ekg_keras.criteria.names()` or a callable.
        data: Data for criteria that need it ("taylor").
        loss: Their loss (default: cross-entropy).

    Returns:
        One int64 array per group; fixed groups rank in channel order.

    Raises:
        ValueError: For a criterion that needs data when there is none.
    """
    chosen = criteria_lib.get(criterion)
    prepared = None
    if chosen.requires_data:
        if data is None:
            raise ValueError(
                f"criterion={criterion!r} scores channels from data, and "
                "none was given."
            )
        prepared = chosen.prepare(setup.model, setup.graph, data, loss)
    ranks = []
    for group in setup.graph.groups:
        if not group.prunable:
            ranks.append(np.arange(group.size, dtype=np.int64))
            continue
        weights = criteria_lib.group_weights(setup.graph, group, prepared)
        scores = criteria_lib.checked_scores(chosen, weights)
        ranks.append(ranks_of(scores, chosen.tie_rtol))
    return ranks


def ranks_of(scores, rtol=ties.WEIGHT_RTOL):
    """Rank of each score, 0 for the highest; scores within `rtol` of the
    largest tie and keep channel order (see `ekg_keras.ties`)."""
    return ties.ranks(scores, rtol)


def prefix_keep(ranks, counts):
    """Boolean keep masks: each group keeps its `counts[g]` best ranks."""
    return [rank < int(count) for rank, count in zip(ranks, counts)]
