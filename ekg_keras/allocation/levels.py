"""Allowed keep counts per group and the greedy top-up shared by
allocations."""

import math

import numpy as np


def check_min_channels(min_channels):
    """Validates a channel floor: an int >= 1, or a fraction in (0, 1).

    Returns:
        `min_channels` unchanged.

    Raises:
        ValueError: For anything else (including booleans and 1.0).
    """
    is_int = isinstance(min_channels, (int, np.integer)) and not isinstance(
        min_channels, bool
    )
    is_fraction = isinstance(min_channels, (float, np.floating))
    if (is_int and min_channels >= 1) or (is_fraction and 0 < min_channels < 1):
        return min_channels
    raise ValueError(
        "`min_channels` should be an integer >= 1 (fewest channels per "
        "group) or a float in (0, 1) (fewest channels as a fraction of each "
        f"group's width). Received: min_channels={min_channels!r}"
    )


def channel_floor(size, min_channels):
    """Fewest channels a group of `size` may keep under `min_channels`.

    An integer is a count, a float in (0, 1) a fraction of `size` (rounded
    up); the floor is at least 1 and at most `size`.
    """
    if isinstance(min_channels, (float, np.floating)):
        floor = math.ceil(size * min_channels - 1e-9)
    else:
        floor = int(min_channels)
    return int(min(max(floor, 1), size))


class KeepLevels:
    """The keep counts each prunable group may take.

    A group may keep a multiple of `round_to` channels, or all of them, and
    never fewer than its floor (`channel_floor`, at least one). Groups that
    are not prunable have a single level, their full size.

    Args:
        sizes: Channels per group.
        prunable: Boolean per group.
        min_channels: Smallest count a prunable group may keep, or a
            fraction in (0, 1) of each group's width.
        round_to: Keep counts are multiples of this (or the full size).
    """

    def __init__(self, sizes, prunable, min_channels=1, round_to=1):
        if int(round_to) < 1:
            raise ValueError(
                f"`round_to` should be a positive integer. Received: "
                f"round_to={round_to!r}"
            )
        check_min_channels(min_channels)
        self.round_to = int(round_to)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.prunable = np.asarray(prunable, dtype=bool)
        self.levels = [
            _levels(size, min_channels, round_to) if free else np.array([size])
            for size, free in zip(self.sizes, self.prunable)
        ]

    @property
    def lowest(self):
        """The smallest keep count of every group."""
        return np.array([levels[0] for levels in self.levels], dtype=np.int64)

    def at_least(self, wanted):
        """Per group, the smallest level that is >= `wanted` (clipped)."""
        result = np.empty(len(self.levels), dtype=np.int64)
        for i, (levels, want) in enumerate(zip(self.levels, wanted)):
            position = np.searchsorted(levels, want, side="left")
            result[i] = levels[min(position, len(levels) - 1)]
        return result

    def next_level(self, group, keep):
        """The level above `keep` for `group`, or None at the top."""
        levels = self.levels[group]
        position = np.searchsorted(levels, keep, side="right")
        return int(levels[position]) if position < len(levels) else None


#: How `width_counts` turns a width times a group's size into a count.
ROUNDINGS = ("ceil", "nearest")


def width_counts(levels, widths, rounding="ceil"):
    """Each group's allowed keep counts at the given widths of its size.

    A width times a group's size is rounded ("ceil": up, as LFPC's
    candidate widths; "nearest": to the nearest integer, halves to even,
    as SP's width ratios), kept at least 1 and raised to the nearest count
    `levels` allows (`KeepLevels.at_least`); duplicates collapse. A fixed
    group has one count, its size.

    Args:
        levels: The `KeepLevels` of the groups.
        widths: Fractions in (0, 1] of each group's channels, or None for
            every count each group allows.
        rounding: One of `ROUNDINGS`.

    Returns:
        One ascending int64 array per group.

    Raises:
        ValueError: For an unknown `rounding`.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(
            f"`rounding` should be one of {ROUNDINGS}. Received: "
            f"rounding={rounding!r}"
        )
    if widths is None:
        return list(levels.levels)
    sizes = levels.sizes.astype(np.float64)
    counts = []
    for width in widths:
        if rounding == "ceil":
            # The epsilon keeps e.g. 0.3 * 10 = 3.0000000000000004 at 3.
            wanted = np.ceil(width * sizes - 1e-9)
        else:
            wanted = np.round(width * sizes)
        counts.append(levels.at_least(np.maximum(1, wanted)))
    snapped = np.stack(counts)
    return [
        np.unique(snapped[:, g]) if levels.prunable[g] else levels.levels[g]
        for g in range(len(sizes))
    ]


def _levels(size, min_channels, round_to):
    steps = np.arange(round_to, size + 1, round_to)
    levels = np.unique(np.concatenate([steps, [size]]))
    floor = channel_floor(size, min_channels)
    above = levels[levels >= floor]
    return above if len(above) else np.array([size])


#: How far below its target (a fraction of the original cost) a learned
#: structure may land before it gets channels back (`top_up`): half a
#: point, the band the comparison holds every method to.
TARGET_TOLERANCE = 0.005


def top_up(keep, levels, macs, target, priority, allowed=None):
    """Raises keep counts one level at a time while MACs stay <= target.

    At each step the group with the highest `priority(group, keep)` among
    those whose next level still fits (and gives keep counts that
    `allowed` accepts) is raised, so an allocation lands as close below
    the target as single levels allow.

    Args:
        keep: Starting keep counts (not modified).
        levels: `KeepLevels`.
        macs: Function from keep counts to MACs.
        target: MAC budget.
        priority: Function `(group, keep) -> float`.
        allowed: Optional function `keep -> bool`, a rule the raised keep
            counts must follow.

    Returns:
        The raised keep counts.
    """
    keep = np.array(keep, dtype=np.int64)
    while True:
        best, best_priority = None, -np.inf
        for group in np.flatnonzero(levels.prunable):
            up = levels.next_level(group, keep[group])
            if up is None:
                continue
            trial = keep.copy()
            trial[group] = up
            if (allowed is None or allowed(trial)) and macs(trial) <= target:
                value = priority(group, keep)
                if value > best_priority:
                    best, best_priority = (group, up), value
        if best is None:
            return keep
        keep[best[0]] = best[1]
