"""The EKG search's decision rules, as pure functions.

Lines 3-10 of Alg. 1 of the EKG paper (Lee and Song, ECCV 2022), as the
EKG reference code implements them. Kept apart from the search loop so
that each rule can be checked on known numbers. Widths are kept fractions
per group, as the reference code's gate `rate` variables; scores are
per-channel importances (higher = keep).
"""

import math

import numpy as np

from ekg_keras import ties

#: Fraction cut from each end of the candidate costs before Otsu's split.
OTSU_TRIM = 0.2
#: Cost given to groups that cannot shrink further, so they are never picked.
UNAVAILABLE = 1e12


def step_sizes(sizes, num_producers, search_step=0.2):
    """Per-group width steps: `max(1/C, search_step / producers)`.

    A group shared by several producers (a residual stream) shrinks by a
    smaller fraction per step, since each of its channels costs more.

    Args:
        sizes: Channels per group, C.
        num_producers: Producers per group (the code's `num_call`).
        search_step: The base step (0.2 in the reference).

    Returns:
        `(search_steps, fine_steps)` float arrays; the fine step is `1/C`.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    producers = np.maximum(np.asarray(num_producers, dtype=np.float64), 1)
    return np.maximum(1 / sizes, search_step / producers), 1 / sizes


def kept_count(size, width):
    """Channels a gate keeps at `width`: those ranked below max(C*w, 1).

    Ranks are integers 0..C-1, so this is ceil(C*w) (C*w when integral),
    and at least one channel always survives.
    """
    return int(min(size, max(1, math.ceil(size * width - 1e-9))))


def ranks(scores, alive=None):
    """Rank of each channel by descending score (0 = most important).

    Scores within `ties.SCORE_RTOL` of each other count as tied, so that
    the rounding of another CPU's kernels cannot reorder them. Ties rank
    live channels first (`alive`, e.g. the current keep mask), so a masked
    channel (score 0) never overtakes a live channel that also scores 0
    and the masks stay nested; remaining ties keep their channel order.
    """
    alive = np.ones(len(scores), bool) if alive is None else alive
    return ties.ranks(scores, ties.SCORE_RTOL, first=alive)


def keep_mask(rank, width):
    """Boolean keep mask of a gate with channel ranks `rank` at `width`."""
    return np.asarray(rank) < kept_count(len(rank), width)


def candidate_cost(scores, width, step):
    """Summed importance of the channels the next step of a group removes.

    The reference sorts the scores ascending and sums
    `s[round((1-w)*C) : round((1-w+step)*C)]` (Python's round: ties to
    even), i.e. the `step*C` weakest channels still alive.
    """
    values = np.sort(np.asarray(scores, dtype=np.float64))
    size = len(values)
    low = round((1 - width) * size)
    high = round((1 - width + step) * size)
    return float(values[low:high].sum())


def trimmed_otsu(values, cut=OTSU_TRIM):
    """Otsu's threshold of `values` after trimming `ceil(cut*n)` at each end.

    Returns the midpoint between the last value of the lower class and the
    first of the upper class at the split that maximises the (unnormalised)
    between-class variance, as the reference code does; splits within
    `ties.SCORE_RTOL` of the best count as tied and the lowest wins.

    Raises:
        ValueError: When fewer than 3 values remain after trimming (the
            reference crashes there; callers check every group instead).
    """
    values = np.sort(np.asarray(values, dtype=np.float64))
    trim = math.ceil(len(values) * cut)
    values = values[trim : len(values) - trim]
    if len(values) < 3:
        raise ValueError(
            f"trimmed_otsu needs at least 3 values after trimming; "
            f"{len(values)} remain."
        )
    between = []
    for split in range(1, len(values) - 1):
        low, high = values[:split], values[split:]
        between.append(
            split * (len(values) - split) * (low.mean() - high.mean()) ** 2
        )
    best = ties.argmax(between, ties.SCORE_RTOL)
    return (values[best] + values[best + 1]) / 2


def groups_to_check(costs):
    """Which groups to evaluate this step (the EKG reference code's rule).

    Groups whose cost is at or below the trimmed Otsu threshold of the
    available costs are checked, with a slack of `ties.SCORE_RTOL` times
    the largest available cost (costs are sums of importance scores), so
    that rounding cannot move a group across the threshold. When too few
    costs remain for the threshold, or the threshold leaves none, every
    available group is checked, so the search always moves (this fallback
    is this library's; the reference code has none).

    Args:
        costs: Candidate cost per group; `UNAVAILABLE` for groups that
            cannot shrink.

    Returns:
        Boolean array.
    """
    costs = np.asarray(costs, dtype=np.float64)
    available = costs < UNAVAILABLE
    try:
        threshold = trimmed_otsu(costs[available])
    except ValueError:
        return available
    slack = ties.SCORE_RTOL * np.abs(costs[available]).max()
    checked = available & (costs <= threshold + slack)
    return checked if checked.any() else available


def fine_width(candidate, step, fine_step, fraction_at, target):
    """The width a group gets when its regular step overshoots the target.

    Starting from the overshooting `candidate`, widen by `fine_step` while
    the FLOPs stay at or below the target, as the reference does (its grid
    rounds each trial width to 2 decimals; kept for fidelity).

    Args:
        candidate: The overshooting width.
        step: The base search step (the loop spans `candidate + step`).
        fine_step: `1/C` of the group.
        fraction_at: Function from a width of this group to the FLOPs
            fraction of the network.
        target: The FLOPs fraction to reach.

    Returns:
        The largest grid width whose FLOPs fraction is <= `target`.
    """
    width = candidate
    for trial in np.arange(candidate, candidate + step, fine_step):
        width = round(float(trial), 2)
        if fraction_at(width) > target:
            return round(float(trial) - fine_step, 5)
    return width


def level_step(allowed, kept, step_channels):
    """The keep count one search step below `kept`, on allowed counts.

    With hardware-friendly widths (`round_to` > 1) a group may keep only
    some counts (`allowed`, ascending; see `KeepLevels`). A step removes
    about `step_channels` channels: it lands on the largest allowed count
    at most `kept - step_channels`, and never below the smallest one.

    Returns:
        The new count, or `kept` when no allowed count is below it.
    """
    allowed = np.asarray(allowed)
    below = allowed[allowed < kept]
    if not len(below):
        return int(kept)
    reachable = below[below <= kept - step_channels + 1e-9]
    return int(reachable[-1] if len(reachable) else below[0])


def level_fine_count(allowed, kept, new, fraction_at, target):
    """The count a step gets when landing on `new` overshoots the target:
    the largest allowed count in [new, kept) whose FLOPs fraction is at
    most `target` (the level-grid form of `fine_width`)."""
    allowed = np.asarray(allowed)
    best = int(new)
    for count in allowed[(allowed > new) & (allowed < kept)]:
        if fraction_at(int(count)) > target:
            break
        best = int(count)
    return best


def removal_cost(scores, kept, new):
    """Summed importance of the `kept - new` weakest channels still alive
    (masked channels score 0 and sort first, as in `candidate_cost`)."""
    values = np.sort(np.asarray(scores, dtype=np.float64))
    size = len(values)
    return float(values[size - int(kept) : size - int(new)].sum())


def running_mean(ensemble, count, logits):
    """The ensemble knowledge after adding one more sub-network's logits."""
    return (ensemble * count + logits) / (count + 1)
