"""Whether a latency budget is reachable, decided by measurement.

The smallest latency a pruning can reach is that of the floor network:
every prunable group at its floor width (`min_channels`, `round_to`).
The latency model predicts it, but on some devices it over-predicts the
narrow widths (a budget the device meets is predicted out of reach), on
others it under-predicts them. So a budget below the *predicted* floor
is not refused on the prediction: the floor network and the original
are timed against each other in the scope's runtime and batch size, in
interleaved rounds (so a shift in the machine's load touches both
alike), and the budget is refused only if the measured floor is above
it. Within it, the method budgets by the predicted fraction that the
measured floor and the unpruned network (1.0 either way) put at the
user's budget.
"""

import dataclasses
import os

from ekg_keras import _logging as log


@dataclasses.dataclass(frozen=True)
class FloorTiming:
    """The floor network timed against the original.

    Attributes:
        predicted: Its latency as a fraction of the original's, predicted
            by the latency model.
        measured: The same fraction, measured.
        load: The 1-minute load average when it was measured (None where
            the platform has none).
        cores: Logical CPU cores of the machine.
        runtime: The runtime it was timed in.
        batch_size: Samples per timed call.
    """

    predicted: float
    measured: float
    load: float
    cores: int
    runtime: str
    batch_size: int

    def reaches(self, goal):
        """Whether the measured floor is within `goal`."""
        return self.measured <= goal

    def predicted_budget(self, goal):
        """The predicted fraction a method budgets by for a measured
        `goal` at or above the measured floor.

        The secant between the floor (predicted, measured) and the
        unpruned network (1, 1), read at `goal`: at least the predicted
        floor, so the method's allocation can reach it. The measured
        loop after the pruning (`ekg_keras.methods.measured_latency`)
        corrects what the secant misses.
        """
        if self.measured >= 1.0:
            return 1.0
        slope = (1.0 - self.predicted) / (1.0 - self.measured)
        budget = self.predicted + (goal - self.measured) * slope
        return min(1.0, max(self.predicted, budget))

    def conditions(self):
        """Where it was measured, e.g. "tf at batch 64, 1-min load 1.93
        on 2 cores"."""
        load = "unknown" if self.load is None else f"{self.load:.2f}"
        return (
            f"{self.runtime} at batch {self.batch_size}, 1-min load "
            f"{load} on {self.cores} cores"
        )


def time_floor(counter, floor_counts, verbose=1):
    """Times the floor network against the original.

    Args:
        counter: The set-up's `LatencyCounter` (with its `network`).
        floor_counts: Keep counts of every group at its floor.
        verbose: 1 for a progress line.

    Returns:
        A `FloorTiming`.
    """
    predicted = counter.macs(floor_counts) / counter.macs(counter.full)
    if verbose:
        log.info(
            f"ekg_keras: the latency model predicts the floor network at "
            f"{predicted:.1%} of the latency; timing it against the "
            f"original ({counter.runtime}, batch {counter.batch_size})"
        )
    measured = counter.measured_fraction(floor_counts)
    timing = FloorTiming(
        predicted=float(predicted),
        measured=float(measured),
        load=load_average(),
        cores=os.cpu_count(),
        runtime=counter.runtime,
        batch_size=counter.batch_size,
    )
    if verbose:
        log.info(
            f"ekg_keras: the floor network measured {measured:.1%} of the "
            f"latency ({timing.conditions()})"
        )
    return timing


def load_average():
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
