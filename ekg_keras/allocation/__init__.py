"""Keep-count solvers: how many channels each group keeps for a budget.

An allocation is a function `(counter, target, scores, levels) -> keep` that
returns per-group keep counts whose MACs (by `counter`) are at most `target`.
"""

from ekg_keras.allocation.global_ranking import global_ranking
from ekg_keras.allocation.levels import TARGET_TOLERANCE
from ekg_keras.allocation.levels import KeepLevels
from ekg_keras.allocation.levels import top_up
from ekg_keras.allocation.levels import width_counts
from ekg_keras.allocation.uniform import proportional
from ekg_keras.allocation.uniform import uniform

_ALLOCATIONS = {"uniform": uniform, "global": global_ranking}


def names():
    """Names of the built-in allocations."""
    return tuple(_ALLOCATIONS)


def get(allocation):
    """Resolves an allocation name or callable.

    Raises:
        ValueError: For an unknown name.
    """
    if callable(allocation):
        return allocation
    if allocation not in _ALLOCATIONS:
        raise ValueError(
            f"`allocation` should be one of {names()} or a callable. "
            f"Received: allocation={allocation!r}"
        )
    return _ALLOCATIONS[allocation]
