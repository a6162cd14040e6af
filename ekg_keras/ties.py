"""Near-ties decided by a fixed rule, so that rounding never chooses.

The same network scored on two CPUs (AVX2 or AVX-512 kernels, oneDNN on or
off) gives losses and importance scores that differ in their last bits.
Where a method picks the best of several candidates, or orders channels by
importance, two values that close would be ordered by rounding noise, and
a search would take another path from its first step on another machine.

The functions here treat values closer than a small tolerance as equal and
order equal values by index, the lower first. The tolerance is relative to
the largest magnitude among the values compared, so it is an absolute
tolerance within one comparison and independent of the values' units.

Measured on this project's EKG search of a ResNet-20 (oneDNN on against
off, same weights): candidate objectives differ by at most 1.1e-6 of their
value while the best and second-best candidate stand at least 5.7e-4
apart; Taylor importance scores differ by at most 6.5e-5 of the group's
largest score. Hence three tolerances: `DECISION_RTOL` for losses and
objectives, `SCORE_RTOL` for per-channel scores computed from data through
the framework's kernels (gradients, noisier), and `WEIGHT_RTOL` for scores
of the weights alone (norms, distances: NumPy in float64, where only the
order of a summation can differ).
"""

import numpy as np

#: Relative tolerance under which two candidates' losses are tied.
DECISION_RTOL = 1e-5
#: Relative tolerance under which two data-driven channel scores are tied.
SCORE_RTOL = 1e-3
#: Relative tolerance under which two scores of weights alone are tied.
WEIGHT_RTOL = 1e-9


def _tolerance(values, rtol):
    finite = np.abs(values[np.isfinite(values)])
    return rtol * (finite.max() if finite.size else 0.0)


def argmin(values, rtol=DECISION_RTOL):
    """Index of the smallest value, near-ties to the lowest index.

    Args:
        values: 1-D array-like of floats.
        rtol: Values within `rtol * max|values|` of the minimum tie with it.

    Returns:
        The lowest index whose value is within the tolerance of the minimum.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or not values.size:
        raise ValueError(
            "`values` should be a non-empty 1-D array. Received shape "
            f"{values.shape}."
        )
    best = np.nanmin(values)
    return int(np.flatnonzero(values <= best + _tolerance(values, rtol))[0])


def argmax(values, rtol=DECISION_RTOL):
    """Index of the largest value, near-ties to the lowest index."""
    return argmin(-np.asarray(values, dtype=np.float64), rtol)


def order(values, rtol=WEIGHT_RTOL, descending=False, first=None):
    """Indices that sort `values`, near-ties in index order.

    Values are sorted, then split into runs wherever two neighbours stand
    more than `rtol * max|values|` apart; within a run every value counts
    as equal. Values that close keep the same run on any CPU unless a gap
    sits right at the tolerance, so the order no longer depends on their
    last bits.

    Args:
        values: 1-D array-like of floats.
        rtol: Relative tolerance of a tie.
        descending: Largest first instead of smallest first.
        first: Optional boolean array; within a run, entries marked True
            come before the others (e.g. live channels before masked ones).

    Returns:
        Int array: a permutation of `range(len(values))`.
    """
    values = np.asarray(values, dtype=np.float64)
    key = -values if descending else values
    by_value = np.argsort(key, kind="stable")
    gaps = np.diff(key[by_value])
    run = np.empty(len(values), dtype=np.int64)
    run[by_value] = np.concatenate(
        [[0], np.cumsum(gaps > _tolerance(values, rtol))]
    ).astype(np.int64)
    index = np.arange(len(values))
    if first is None:
        return np.lexsort((index, run))
    return np.lexsort((index, ~np.asarray(first, dtype=bool), run))


def ranks(values, rtol=WEIGHT_RTOL, descending=True, first=None):
    """Rank of each value in `order(...)` (0 = first)."""
    permutation = order(values, rtol, descending, first)
    result = np.empty(len(permutation), dtype=np.int64)
    result[permutation] = np.arange(len(permutation))
    return result
