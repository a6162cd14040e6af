"""Which filters a soft-pruning step zeroes (SFP, ASFP, FPGM, FPGM-mix)."""

import math

import numpy as np

from ekg_keras import criteria

#: Criteria of soft pruning. "l2+fpgm" is FPGM-mix (SPEC 4.3): part of the
#: filters by L2 norm, the rest by geometric median among the survivors.
SOFT_CRITERIA = ("l1", "l2", "fpgm", "l2+fpgm")


def check_criterion(criterion):
    """Returns `criterion` if soft pruning knows it, else raises."""
    if callable(criterion) or criterion in SOFT_CRITERIA:
        return criterion
    raise ValueError(
        f"`criterion` should be one of {SOFT_CRITERIA} or a callable. "
        f"Received: criterion={criterion!r}"
    )


def pruned_count(size, rate):
    """Filters zeroed in a layer of `size` filters at `rate`: floor(N*P)."""
    # The epsilon keeps e.g. 10 * 0.3 = 2.9999999999999996 from flooring
    # to 2.
    return min(size - 1, int(math.floor(size * rate + 1e-9)))


def select_pruned(weights, count, criterion, fpgm_share=0.25):
    """Indices of the `count` filters of a group to zero.

    Args:
        weights: `GroupWeights` of the group (or of one producer).
        count: Number of filters to zero.
        criterion: One of `SOFT_CRITERIA` or a callable scoring
            `GroupWeights` (higher = more important).
        fpgm_share: For "l2+fpgm", the fraction of `count` chosen by the
            geometric median (FPGM-mix 40% = 30% L2 + 10% GM: 0.25).

    Returns:
        Sorted int array of `count` channel indices.
    """
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    if criterion == "l2+fpgm":
        return _fpgm_mix(weights, count, fpgm_share)
    name = {"l1": "l1", "l2": "l2", "fpgm": "fpgm"}.get(criterion, criterion)
    scores = np.asarray(criteria.get(name)(weights), dtype=np.float64)
    return np.sort(np.argsort(scores, kind="stable")[:count])


def _fpgm_mix(weights, count, fpgm_share):
    by_median = int(math.floor(count * fpgm_share + 1e-9))
    by_norm = count - by_median
    norms = criteria.l2_norm(weights)
    order = np.argsort(norms, kind="stable")
    pruned = list(order[:by_norm])
    survivors = order[by_norm:]
    if by_median:
        matrix = np.concatenate(
            [np.asarray(f, np.float64) for f in weights.filters], axis=1
        )[survivors]
        sums = criteria.pairwise_distances(matrix).sum(axis=1)
        pruned += list(survivors[np.argsort(sums, kind="stable")[:by_median]])
    return np.sort(np.asarray(pruned, dtype=np.int64))
