"""Pruning-rate schedules: the fraction of filters to zero, per epoch.

Soft filter pruning (SFP) zeroes the same fraction of every layer's filters
at each pruning step; asymptotic SFP (ASFP) raises that fraction from a
minimum to a goal over training. A schedule is a pure, serializable callable
`schedule(epoch) -> float` that holds no variables and has no side effects.

`epoch` is the number of COMPLETED epochs: 0 for the pruning step before
training and `epochs` for the step after the last epoch, which therefore
prunes exactly the goal rate.

```python
schedule = ekg_keras.schedules.AsymptoticRate(goal=0.3, epochs=200)
schedule(0), schedule(25), schedule(200)  # 0.0, 0.225, 0.3
```
"""

import math
import numbers

import keras

from ekg_keras._api import ekg_export

_GOAL_FRACTION = 0.75  # The second point reaches 3/4 of the goal (Eq. 4.7).


@ekg_export
class PruningRateSchedule:
    """Base class of pruning-rate schedules.

    Subclasses implement `__call__(epoch)`, `get_config()` (the constructor
    arguments) and `final_rate`; `from_config` then rebuilds them, and the
    `@ekg_export` decorator makes them serializable with
    `keras.saving.serialize_keras_object`.
    """

    def __call__(self, epoch):
        """The pruning rate after `epoch` completed epochs.

        Args:
            epoch: Number of completed epochs, a real number >= 0.

        Returns:
            The fraction of filters to zero, a Python float in [0, 1).
        """
        raise NotImplementedError(
            f"{type(self).__name__} should implement `__call__(epoch)`."
        )

    @property
    def final_rate(self):
        """The rate the schedule ends at (the rate of the final model)."""
        raise NotImplementedError(
            f"{type(self).__name__} should implement `final_rate`."
        )

    def get_config(self):
        """The constructor arguments, as a JSON-serializable dict."""
        raise NotImplementedError(
            f"{type(self).__name__} should implement `get_config()`."
        )

    @classmethod
    def from_config(cls, config):
        """Rebuilds a schedule from the output of `get_config()`."""
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(
            f"{name}={value!r}" for name, value in self.get_config().items()
        )
        return f"{type(self).__name__}({arguments})"


@ekg_export
class ConstantRate(PruningRateSchedule):
    """The same rate at every epoch: soft filter pruning (SFP).

    Args:
        rate: Fraction of each layer's filters to zero, in [0, 1).
    """

    def __init__(self, rate):
        self._rate = _check_rate("rate", rate)

    @property
    def rate(self):
        """The constant pruning rate."""
        return self._rate

    @property
    def final_rate(self):
        return self._rate

    def __call__(self, epoch):
        _check_epoch(epoch)
        return self._rate

    def get_config(self):
        return {"rate": self._rate}


@ekg_export
class AsymptoticRate(PruningRateSchedule):
    """A rate rising from `min_rate` to `goal`: asymptotic SFP (ASFP).

    The rate after `e` completed epochs is thesis Eq. 4.7,
    `P'(e) = a * exp(-k * e) + b`, with `a`, `k` and `b` fitted exactly
    through the three points `(0, min_rate)`, `(epochs * d, 0.75 * goal)`
    and `(epochs, goal)`. With the defaults (`d = 1/8`, `min_rate = 0`,
    "ASFP-P0") this is `P'(e) ~ goal * (1 - 4 ** (-8 * e / epochs))`.

    The fit uses a closed form derived from the three points: with
    `n = 1 / d` and `r = (0.75 * goal - min_rate) / (goal - min_rate)`, `x`
    in (0, 1) solves `(1 - x) / (1 - x ** n) = r` (by bisection), then
    `k = -ln(x) / (epochs * d)`, `a = (goal - min_rate) / (x ** n - 1)` and
    `b = min_rate - a`. All arithmetic is in float64.

    Special cases:
    * If `min_rate >= 0.75 * goal` (including `min_rate == goal`), no rising
      curve passes through the three points and the schedule falls back to
      the constant `goal`, i.e. SFP (`a = k = 0`, `b = goal`); it then returns
      `goal` at epoch 0 too.
    * The concave curve exists only when `r > d`, i.e.
      `min_rate < goal * (0.75 - d) / (1 - d)` (below `0.714 * goal` for
      `d = 1/8`; never for `d >= 0.75`). Between that bound and
      `0.75 * goal` the constructor raises a `ValueError`.
    * Every value is clipped to `[min_rate, goal]`: epochs beyond `epochs`
      return `goal` (the formula's value, up to rounding, clipped), and the
      three defining points hold to float64 rounding.

    Args:
        goal: Final pruning rate, in [0, 1).
        epochs: Number of training epochs, a positive int; `schedule(epochs)`
            returns `goal`.
        d: Fraction of `epochs` at which the rate reaches `0.75 * goal`, in
            (0, 1). Defaults to 1/8.
        min_rate: Rate at epoch 0, in [0, goal]. Defaults to 0.
    """

    def __init__(self, goal, epochs, d=1 / 8, min_rate=0.0):
        self._goal = _check_rate("goal", goal)
        self._epochs = _check_epochs(epochs)
        self._d = _check_d(d)
        self._min_rate = _check_min_rate(min_rate, self._goal)
        self._a, self._k, self._b = _fit(
            self._goal, self._epochs, self._d, self._min_rate
        )

    @property
    def goal(self):
        """The final pruning rate."""
        return self._goal

    @property
    def epochs(self):
        """The number of training epochs."""
        return self._epochs

    @property
    def d(self):
        """Fraction of `epochs` at which the rate reaches `0.75 * goal`."""
        return self._d

    @property
    def min_rate(self):
        """The rate at epoch 0 (unless the schedule is constant)."""
        return self._min_rate

    @property
    def a(self):
        """Coefficient `a` of Eq. 4.7 (negative; 0 for a constant)."""
        return self._a

    @property
    def k(self):
        """Decay `k` of Eq. 4.7, per epoch (positive; 0 for a constant)."""
        return self._k

    @property
    def b(self):
        """Offset `b` of Eq. 4.7, the asymptote (`goal` for a constant)."""
        return self._b

    @property
    def final_rate(self):
        return self._goal

    def __call__(self, epoch):
        epoch = _check_epoch(epoch)
        if self._k == 0.0:
            return self._b
        # a * exp(-k e) + b written as min_rate + a * (exp(-k e) - 1), which
        # is exactly min_rate at e = 0.
        rate = self._min_rate + self._a * math.expm1(-self._k * epoch)
        return min(max(rate, self._min_rate), self._goal)

    def get_config(self):
        return {
            "goal": self._goal,
            "epochs": self._epochs,
            "d": self._d,
            "min_rate": self._min_rate,
        }


def get(identifier):
    """Resolves a schedule, a constant rate or a config to a schedule.

    Args:
        identifier: A `PruningRateSchedule` (returned as is), a number (a
            `ConstantRate`), or a dict from
            `keras.saving.serialize_keras_object(schedule)` or of the form
            `{"class_name": "AsymptoticRate", "config": {...}}`.

    Returns:
        A `PruningRateSchedule`.

    Raises:
        ValueError: For anything else, or an invalid rate.
    """
    if isinstance(identifier, PruningRateSchedule):
        return identifier
    if isinstance(identifier, numbers.Real) and not isinstance(
        identifier, bool
    ):
        return ConstantRate(identifier)
    if isinstance(identifier, dict):
        schedule = keras.saving.deserialize_keras_object(
            identifier,
            custom_objects={
                "PruningRateSchedule": PruningRateSchedule,
                "ConstantRate": ConstantRate,
                "AsymptoticRate": AsymptoticRate,
            },
        )
        if isinstance(schedule, PruningRateSchedule):
            return schedule
        raise ValueError(
            "`identifier` should deserialize to a PruningRateSchedule. "
            f"Received: identifier={identifier!r}, which gives {schedule!r}"
        )
    raise ValueError(
        "`identifier` should be a PruningRateSchedule, a rate in [0, 1) or a "
        f"schedule config dict. Received: identifier={identifier!r}"
    )


def _fit(goal, epochs, d, min_rate):
    """Returns (a, k, b) of Eq. 4.7 through the three defining points."""
    rise = goal - min_rate
    threshold = _GOAL_FRACTION * goal
    # isclose: min_rate = 0.3 with goal = 0.4 is at the threshold, although
    # 0.75 * 0.4 rounds to 0.30000000000000004.
    if (
        min_rate >= threshold
        or math.isclose(min_rate, threshold, rel_tol=1e-12)
        or rise <= 0.0
    ):
        return 0.0, 0.0, goal  # Constant goal: SFP.
    n = 1.0 / d
    r = (_GOAL_FRACTION * goal - min_rate) / rise
    if r <= d:  # r <= 1/n: the three points are not on a concave curve.
        bound = goal * (_GOAL_FRACTION - d) / (1.0 - d)
        raise ValueError(
            "AsymptoticRate has no curve a*exp(-k*e)+b rising from "
            f"(0, min_rate) through (epochs*d, 0.75*goal) to (epochs, goal): "
            f"it needs min_rate < goal*(0.75-d)/(1-d) = {bound!r} (or "
            f"min_rate >= 0.75*goal for a constant goal). Received: "
            f"goal={goal!r}, d={d!r}, min_rate={min_rate!r}"
        )
    x = _solve(n, r)
    k = -math.log(x) / (epochs * d)
    a = rise / (x**n - 1.0)
    return a, k, min_rate - a


def _solve(n, r):
    """Solves (1 - x) / (1 - x ** n) = r for x in (0, 1) by bisection.

    The left side decreases from 1 (x -> 0) to 1/n (x -> 1); requires
    1/n < r < 1. Bisects until the bracket stops shrinking in float64
    (relative width below 1e-15).
    """

    def ratio(x):
        return (1.0 - x) / -math.expm1(n * math.log(x))

    # ratio(x) >= 1 - x, so the root lies in [1 - r, 1).
    low, high = 1.0 - r, 1.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if middle <= low or middle >= high or high - low <= 1e-16 * high:
            break
        if ratio(middle) > r:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _check_rate(name, value):
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(
            f"`{name}` should be in [0, 1). Received: {name}={value!r}"
        )
    return float(value)


def _check_epochs(epochs):
    if (
        not isinstance(epochs, numbers.Integral)
        or isinstance(epochs, bool)
        or epochs <= 0
    ):
        raise ValueError(
            f"`epochs` should be a positive int. Received: epochs={epochs!r}"
        )
    return int(epochs)


def _check_d(d):
    if (
        not isinstance(d, numbers.Real)
        or isinstance(d, bool)
        or not 0.0 < d < 1.0
    ):
        raise ValueError(f"`d` should be in (0, 1). Received: d={d!r}")
    return float(d)


def _check_min_rate(min_rate, goal):
    if (
        not isinstance(min_rate, numbers.Real)
        or isinstance(min_rate, bool)
        or not 0.0 <= min_rate <= goal
    ):
        raise ValueError(
            f"`min_rate` should be in [0, goal] = [0, {goal!r}]. "
            f"Received: min_rate={min_rate!r}"
        )
    return float(min_rate)


def _check_epoch(epoch):
    if (
        not isinstance(epoch, numbers.Real)
        or isinstance(epoch, bool)
        or not epoch >= 0
    ):
        raise ValueError(
            "`epoch` should be the number of completed epochs, a number "
            f">= 0. Received: epoch={epoch!r}"
        )
    return float(epoch)
