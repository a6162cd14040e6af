"""Uniform allocation: every prunable group keeps the same fraction; and
its generalisation, widths proportional to given ones."""

import bisect

import numpy as np

from ekg_keras import ties
from ekg_keras.allocation.levels import top_up

#: Most cost evaluations `fill_band` spends looking for a fuller allocation
#: than the greedy one before it keeps the best found (10-25 ms with the
#: `FlopsCounter` of a ResNet-56 or a ResNet50).
MAX_EVALUATIONS = 1000
#: Slack of the rule's inequalities, as in `follows_proportional_rule`.
_EPSILON = 1e-12


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
    are raised one step; finally `fill_band` looks for the counts within
    the rule that come closest to the budget from below (a group may
    then keep one step less than the greedy gave it, so that another can
    keep one more). That search is exact on small networks, where single
    channels are coarse (the greedy top-up alone left up to 14 points of
    the budget unused on networks of 8-16 channels per layer), and on
    large ones stops after `MAX_EVALUATIONS` cost evaluations with the
    best found, never worse than the greedy.

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


def proportional(counter, target, widths, levels, slack=None):
    """Keep counts proportional to `widths`, scaled to meet `target`.

    The rule of `uniform` with the widths in place of the group sizes: one
    scale s such that every prunable group keeps between s * width and
    s * width + one step, except a group at its floor (it may keep more)
    or at its full size (it cannot follow a larger share). s is bisected,
    then the groups with the lowest share are raised one step while the
    budget allows and the rule holds, then `fill_band` comes as close to
    the budget as the rule allows. With `widths` = the group sizes this
    is `uniform`; a method that learned per-group widths (LFPC) keeps
    their shape. With `slack`, a result the rule leaves more than `slack`
    MACs below the budget (narrow networks, whose one proportional step
    is worth more) is raised further, the lowest share first, one level
    at a time while the budget allows, outside the rule.

    Args:
        counter: `FlopsCounter` of the model.
        target: MAC budget.
        widths: Desired keep count per group (positive; fixed groups keep
            everything whatever their entry).
        levels: `KeepLevels`.
        slack: MACs below `target` past which the rule gives way (None:
            the rule always holds).

    Returns:
        Int array of keep counts per group.
    """
    sizes = levels.sizes.astype(np.float64)
    widths = np.maximum(np.asarray(widths, np.float64), 1e-9)

    def lowest_share(group, keep):
        return -keep[group] / widths[group]

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
    greedy = top_up(
        keep_at(low),
        levels,
        counter.macs,
        target,
        priority=lowest_share,
        allowed=lambda keep: follows_proportional_rule(levels, keep, widths),
    )
    keep = fill_band(counter, target, widths, levels, greedy)
    if slack is not None and counter.macs(keep) < target - slack:
        keep = top_up(keep, levels, counter.macs, target, lowest_share)
    return keep


def fill_band(
    counter, target, widths, levels, start, max_evaluations=MAX_EVALUATIONS
):
    """The keep counts within the rule of `proportional` that come closest
    to `target` from below.

    A depth-first branch and bound over the groups' allowed counts. A
    partial choice of counts narrows the scales s the rule still allows;
    every group left then has a range of counts compatible with them, and
    all of them at the top (or all at the bottom) of their range again
    follow the rule. With a cost that never falls when a group keeps more
    (MACs), those two corners bound every completion: a branch whose
    bottom corner exceeds `target` holds nothing that fits, one whose top
    corner fits holds nothing better than that corner, and one whose top
    corner is no better than the best found is dropped.

    Groups are decided those whose step costs most first (near-ties in
    index order), each from its largest count down. The search starts
    from `start` (the greedy top-up) and replaces the best so far only by
    counts that cost more than `ties.WEIGHT_RTOL` of `target` more, so
    near-ties stay with the greedy answer, then with the first found. It
    is exact when it ends within `max_evaluations` cost evaluations, which
    it does on small networks (five groups of 8-16 channels: tens to a few
    hundred) and at some budgets on large ones (MobileNetV2,
    EfficientNetB0); otherwise (ResNet-56, ResNet50) it keeps the best
    found, never worse than `start`. Costs that can fall when a
    group keeps more (the extra ones channel of `FlopsCounter`'s constant
    folds goes when the group is whole; measured latency tables) make the
    bounds approximate: the result still follows the rule and meets
    `target`, but may not be the fullest.

    Args:
        counter: The cost (`FlopsCounter`, or anything with `macs(keep)`).
        target: The budget.
        widths: Desired keep count per group (`proportional`).
        levels: `KeepLevels`.
        start: Keep counts that follow the rule and meet `target`.
        max_evaluations: Most cost evaluations to spend.

    Returns:
        Int array of keep counts per group.
    """
    best = np.array(start, dtype=np.int64)
    best_cost = counter.macs(best)
    tolerance = ties.WEIGHT_RTOL * abs(target)
    free = np.flatnonzero(levels.prunable)
    if not len(free) or best_cost >= target - tolerance:
        return best
    band = _Band(levels, widths, _by_step_cost(counter, levels, best, free))
    evaluations = 1 + len(free)

    def visit(depth, keep, low, high):
        nonlocal best, best_cost, evaluations
        if evaluations >= max_evaluations:
            return
        top, bottom, ranges = band.corners(depth, keep, low, high)
        top_cost = counter.macs(top)
        evaluations += 1
        if min(top_cost, target) <= best_cost + tolerance:
            return
        if top_cost <= target and band.follows(top):
            best, best_cost = top, top_cost
            return
        if depth == len(band.groups):
            return
        evaluations += 1
        if counter.macs(bottom) > target:
            return
        group = band.groups[depth]
        first, last = ranges[0]
        for j in range(last, first - 1, -1):
            keep = keep.copy()
            keep[group] = band.counts[depth][j]
            visit(
                depth + 1,
                keep,
                max(low, band.low[depth][j]),
                min(high, band.high[depth][j]),
            )

    visit(0, best.copy(), -np.inf, np.inf)
    return best


def _by_step_cost(counter, levels, keep, free):
    """The groups of `free`, those whose next count up (down at the top)
    changes the cost most first; near-ties in index order."""
    base = counter.macs(keep)
    changes = []
    for group in free:
        trial = keep.copy()
        up = levels.next_level(group, keep[group])
        if up is None:
            position = np.searchsorted(levels.levels[group], keep[group])
            trial[group] = levels.levels[group][max(position - 1, 0)]
        else:
            trial[group] = up
        changes.append(abs(counter.macs(trial) - base))
    return free[ties.order(changes, descending=True)]


class _Band:
    """The prunable groups' allowed counts and the scales each admits.

    Group `groups[i]` may keep `counts[i][j]`, which admits the scales s
    with `low[i][j] <= s <= high[i][j]`: `low = (k - step) / width` (-inf
    at the group's floor) and `high = k / width` (+inf at its full size).
    Both grow with the count, so the counts that admit some s in an
    interval are a contiguous run.
    """

    def __init__(self, levels, widths, groups):
        self.levels = levels
        self.widths = widths
        self.groups = groups
        self.counts, self.low, self.high = [], [], []
        for group in groups:
            counts = levels.levels[group]
            self.counts.append(counts.tolist())
            low = (counts - levels.round_to) / widths[group]
            low[counts <= levels.lowest[group]] = -np.inf
            high = counts / widths[group]
            high[counts >= levels.sizes[group]] = np.inf
            self.low.append(low.tolist())
            self.high.append(high.tolist())

    def corners(self, depth, keep, low, high):
        """`keep` with the groups from `depth` on at the largest, and at
        the smallest, counts that admit a scale in [low, high]; and the
        (first, last) positions of those counts per group."""
        top, bottom, ranges = keep.copy(), keep.copy(), []
        for i in range(depth, len(self.groups)):
            first = bisect.bisect_left(self.high[i], low - _EPSILON)
            last = bisect.bisect_right(self.low[i], high + _EPSILON) - 1
            top[self.groups[i]] = self.counts[i][last]
            bottom[self.groups[i]] = self.counts[i][first]
            ranges.append((first, last))
        return top, bottom, ranges

    def follows(self, keep):
        return follows_proportional_rule(self.levels, keep, self.widths)


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
