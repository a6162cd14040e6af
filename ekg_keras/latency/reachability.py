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
it in every one of a few timings (`TIMINGS`: on a loaded machine one
timing of the same two networks can be 50% off the next, and a refusal
stops the user, while a pruning that misses is measured again after it).
Within it, the method budgets by the predicted fraction that the
measured floor and the unpruned network (1.0 either way) put at the
user's budget.
"""

import dataclasses
import os

from ekg_keras import _logging as log

#: Timings of the floor network at most before a budget is refused.
TIMINGS = 3


@dataclasses.dataclass(frozen=True)
class FloorTiming:
    """The floor network timed against the original.

    Attributes:
        predicted: Its latency as a fraction of the original's, predicted
            by the latency model.
        measured: The same fraction, measured: the lowest of `timings`.
        load: The 1-minute load average when it was measured (None where
            the platform has none).
        cores: Logical CPU cores of the machine.
        runtime: The runtime it was timed in.
        batch_size: Samples per timed call.
        timings: Every measured fraction, in order.
    """

    predicted: float
    measured: float
    load: float
    cores: int
    runtime: str
    batch_size: int
    timings: tuple = ()

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
        on 2 cores" (and "lowest of 3 timings" when there were more)."""
        load = "unknown" if self.load is None else f"{self.load:.2f}"
        timings = ""
        if len(self.timings) > 1:
            timings = f", lowest of {len(self.timings)} timings (" + (
                ", ".join(f"{t:.3f}" for t in self.timings) + ")"
            )
        return (
            f"{self.runtime} at batch {self.batch_size}, 1-min load "
            f"{load} on {self.cores} cores{timings}"
        )


def time_floor(counter, floor_counts, goal=None, verbose=1):
    """Times the floor network against the original.

    Args:
        counter: The set-up's `LatencyCounter` (with its `network`).
        floor_counts: Keep counts of every group at its floor.
        goal: The budget, or None: while the floor measures above it, it
            is timed again, up to `TIMINGS` times in all.
        verbose: 1 for progress lines.

    Returns:
        A `FloorTiming` (`measured` is the lowest timing).
    """
    predicted = counter.macs(floor_counts) / counter.macs(counter.full)
    if verbose:
        log.info(
            f"ekg_keras: the latency model predicts the floor network at "
            f"{predicted:.1%} of the latency; timing it against the "
            f"original ({counter.runtime}, batch {counter.batch_size})"
        )
    timings = [float(counter.measured_fraction(floor_counts))]
    while goal is not None and min(timings) > goal and len(timings) < TIMINGS:
        timings.append(float(counter.measured_fraction(floor_counts)))
    timing = FloorTiming(
        predicted=float(predicted),
        measured=min(timings),
        load=load_average(),
        cores=os.cpu_count(),
        runtime=counter.runtime,
        batch_size=counter.batch_size,
        timings=tuple(timings),
    )
    if verbose:
        log.info(
            f"ekg_keras: the floor network measured {timing.measured:.1%} "
            f"of the latency ({timing.conditions()})"
        )
    return timing


def load_average():
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
