"""One soft-pruning step: how many filters it zeroes, and its record."""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class PruningStep:
    """What one soft-pruning step did.

    Attributes:
        epoch: Completed epochs when it ran (0 = before training).
        rate: The filter rate P it applied.
        zeroed: Dict mapping layer path to the number of filters zeroed.
    """

    epoch: int
    rate: float
    zeroed: dict


def pruned_count(size, rate):
    """Filters zeroed in a layer of `size` filters at `rate`: floor(N*P)."""
    # The epsilon keeps e.g. 10 * 0.3 = 2.9999999999999996 from flooring
    # to 2.
    return min(size - 1, int(math.floor(size * rate + 1e-9)))
