"""Progress of long runs: an estimate up front, then a line every 30 s.

A method-neutral piece that any long loop reports to: `Progress` counts
units of work (EA generations, epochs, search steps) and prints, through
`ekg_keras._logging`:

* once, as soon as the rate is known, an estimate of the whole run when
  it will take more than `long_seconds` (a few minutes);
* then a progress line at least every `every` seconds while it runs.

`EpochProgress` is the same for Keras `fit` (what every training phase
run by `ekg_keras.training.Fitter` uses).
"""

import time

import keras

from ekg_keras import _logging as log

#: Seconds between progress lines (lines come when a unit ends, so a
#: little under the 30 s promised).
EVERY = 25.0
#: Runs estimated to take longer than this are announced.
LONG = 180.0
#: Seconds of units after the first (which carries compilation) before
#: the rate is trusted for the estimate (units done in parallel finish
#: in bursts).
SETTLE = 10.0


class Progress:
    """Reports a loop of `total` units (None if unknown).

    Args:
        label: What runs ("SP stage EAs", ...), for the lines.
        total: Units in the whole run (an upper bound is fine), or None;
            units may be fractional (e.g. points of FLOPs removed).
        unit: The unit's name, plural ("EA generations", "epochs").
        verbose: 0 prints nothing.
        every: Seconds between progress lines.
        long_seconds: Announce an estimate above this many seconds.
        hint: How to shorten the run, appended to the estimate.
        clock: Returns seconds (default: `time.perf_counter`, looked up
            when called, so tests may replace it).
    """

    def __init__(
        self,
        label,
        total=None,
        unit="steps",
        verbose=1,
        every=EVERY,
        long_seconds=LONG,
        hint="",
        clock=None,
    ):
        self.label = label
        self.total = total
        self.unit = unit
        self.verbose = verbose
        self.every = every
        self.long_seconds = long_seconds
        self.hint = hint
        self.clock = clock = _now if clock is None else clock
        self.done = 0
        self.start = clock()
        self._last = self.start
        self._first = None
        self._first_units = 0
        self._estimated = False

    def update(self, units=1, detail=""):
        """Adds `units` done; prints the estimate or a line when due."""
        now = self.clock()
        if self.done == 0:
            # The first update carries compilation: left out of the rate.
            self._first, self._first_units = now, units
        self.done += units
        if not self.verbose:
            return
        elapsed = now - self.start
        settled = self.done > units and (
            now - self._first >= SETTLE or self.done >= 10
        )
        if not self._estimated and self.total and settled:
            self._estimated = True
            whole = elapsed + self.remaining(now)
            if whole > self.long_seconds:
                hint = f" {self.hint}" if self.hint else ""
                log.info(
                    f"{self.label}: {_number(self.total)} {self.unit} at "
                    f"{self._per_unit(now):.1f} s each: about "
                    f"{_duration(whole)} in all on this machine.{hint}"
                )
                self._last = now
        if now - self._last >= self.every:
            self._last = now
            log.info(self.line(now, detail))

    def _per_unit(self, now):
        """Seconds per unit after the first update (None before a second
        update)."""
        if self._first is None or self.done <= self._first_units:
            return None
        return (now - self._first) / (self.done - self._first_units)

    def remaining(self, now):
        """Estimated seconds left (None if unknown)."""
        per_unit = self._per_unit(now)
        if not self.total or per_unit is None:
            return None
        return per_unit * max(self.total - self.done, 0)

    def line(self, now, detail=""):
        """The progress line at time `now`."""
        of = f"/{_number(self.total)}" if self.total else ""
        remaining = self.remaining(now)
        left = ""
        if remaining is not None:
            left = f", about {_duration(remaining)} left"
        detail = f"; {detail}" if detail else ""
        return (
            f"{self.label}: {_number(self.done)}{of} {self.unit} in "
            f"{_duration(now - self.start)}{left}{detail}"
        )


class EpochProgress(keras.callbacks.Callback):
    """Announces a long `fit` after its first epoch (when it will take
    more than a few minutes) and, with `lines`, prints a progress line at
    least every 30 s (for when Keras' own progress bar is off).

    Args:
        label: What trains, for the lines.
        epochs: Epochs of the `fit`.
        verbose: 0 prints nothing.
        lines: Whether to print progress lines between the estimate and
            the end.
        hint: How to shorten the run, appended to the estimate.
        every: Seconds between progress lines.
    """

    def __init__(
        self, label, epochs, verbose=1, lines=True, hint="", every=EVERY
    ):
        super().__init__()
        self.progress = Progress(
            label, epochs, "epochs", verbose, every=every, hint=hint
        )
        if not lines:
            self.progress.every = float("inf")
        self._batches = 0

    def on_train_begin(self, logs=None):
        self.progress.start = self.progress._last = self.progress.clock()

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        progress = self.progress
        now = progress.clock()
        if progress.verbose and now - progress._last >= progress.every:
            progress._last = now
            log.info(progress.line(now, f"{self._batches} batches"))

    def on_epoch_end(self, epoch, logs=None):
        self.progress.update(1)


def _now():
    return time.perf_counter()


def _number(units):
    """A count of units: whole when it is, else one decimal."""
    return f"{units:.0f}" if float(units).is_integer() else f"{units:.1f}"


def _duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
