"""Tests for ekg_keras.schedules: SFP and ASFP pruning-rate schedules."""

import json
import math
import re

import keras
import numpy as np
import pytest

from ekg_keras import schedules
from ekg_keras.methods.soft.schedules import AsymptoticRate
from ekg_keras.methods.soft.schedules import ConstantRate


def _points(schedule):
    """The three defining points (epoch, rate) of an AsymptoticRate."""
    return [
        (0, schedule.min_rate),
        (schedule.epochs * schedule.d, 0.75 * schedule.goal),
        (schedule.epochs, schedule.goal),
    ]


def test_default_fit_matches_the_specs_worked_values():
    goal, epochs = 0.3, 200
    schedule = AsymptoticRate(goal, epochs)
    x = math.exp(-schedule.k * epochs / 8)
    assert x == pytest.approx(0.2500114, abs=1e-6)
    assert schedule.k * epochs == pytest.approx(8 * math.log(4), abs=0.01)
    assert schedule.k * epochs == pytest.approx(11.09, abs=0.01)
    assert schedule.a == pytest.approx(-1.0000153 * goal, rel=1e-6)
    assert schedule.b == pytest.approx(1.0000153 * goal, rel=1e-6)
    expected = {
        0: 0.0,
        1: 0.0162,
        5: 0.0726,
        25: 0.2250,
        50: 0.2813,
        100: 0.2988,
        200: 0.3000,
    }
    for epoch, rate in expected.items():
        assert schedule(epoch) == pytest.approx(rate, abs=5e-5), epoch


def test_default_fit_does_not_depend_on_the_goal_beyond_scaling():
    for goal in (0.1, 0.5, 0.9):
        schedule = AsymptoticRate(goal, 100)
        assert schedule.a / goal == pytest.approx(-1.0000153, rel=1e-6)
        assert schedule.k * 100 == pytest.approx(11.09, abs=0.01)


def test_epochs_mean_completed_epochs():
    schedule = AsymptoticRate(0.3, 200)
    assert schedule(0) == 0.0  # The step before training prunes nothing.
    assert abs(schedule(200) - 0.3) <= 1e-12  # The last step: the goal.
    assert schedule.final_rate == 0.3


@pytest.mark.parametrize(
    "goal, epochs, d, min_rate",
    [
        (0.3, 200, 1 / 8, 0.0),
        (0.4, 100, 1 / 10, 0.1),
        (0.5, 90, 1 / 7, 0.2),
        (0.7, 160, 1 / 16, 0.05),
        (0.3, 10, 0.3, 0.0),  # n = 1/d is not an integer.
        (0.6, 30, 0.7, 0.0),  # r = 0.75 just above d: almost linear.
        (0.4, 50, 1 / 8, 0.285),  # min_rate just below the bound 0.2857.
    ],
)
def test_curve_passes_through_the_three_points(goal, epochs, d, min_rate):
    schedule = AsymptoticRate(goal, epochs, d=d, min_rate=min_rate)
    assert schedule.a < 0 < schedule.k
    for epoch, rate in _points(schedule):
        assert abs(schedule(epoch) - rate) <= 1e-12, (epoch, rate)
        formula = schedule.a * math.exp(-schedule.k * epoch) + schedule.b
        assert abs(formula - rate) <= 1e-12, (epoch, rate)
    rates = [schedule(e) for e in np.linspace(0, epochs, 1001)]
    assert np.all(np.diff(rates) >= 0)
    assert min(rates) >= min_rate and max(rates) <= goal


def test_epochs_beyond_the_end_are_clipped_to_the_goal():
    schedule = AsymptoticRate(0.4, 100, d=0.1, min_rate=0.1)
    for epoch in (100, 101, 150, 10_000, math.inf):
        assert schedule(epoch) == pytest.approx(0.4, abs=1e-12)
        assert schedule(epoch) <= 0.4


def test_fractional_and_numpy_epochs():
    schedule = AsymptoticRate(0.3, 200)
    assert schedule(np.int64(25)) == pytest.approx(0.225, abs=1e-12)
    assert schedule(12.5) == pytest.approx(
        schedule.a * math.exp(-schedule.k * 12.5) + schedule.b, abs=1e-15
    )
    assert isinstance(schedule(np.float32(3)), float)


@pytest.mark.parametrize(
    "goal, min_rate", [(0.4, 0.3), (0.4, 0.35), (0.4, 0.4), (0.0, 0.0)]
)
def test_falls_back_to_constant_goal(goal, min_rate):
    schedule = AsymptoticRate(goal, 50, min_rate=min_rate)
    assert (schedule.a, schedule.k, schedule.b) == (0.0, 0.0, goal)
    for epoch in (0, 1, 25, 50, 100):
        assert schedule(epoch) == goal
    assert schedule.final_rate == goal


def test_min_rate_between_the_bound_and_the_fallback_raises():
    # For d = 1/8 no rising curve exists for 0.714 * goal <= min_rate <
    # 0.75 * goal; the message gives the bound and the received values.
    with pytest.raises(ValueError, match=r"min_rate=0\.29") as info:
        AsymptoticRate(0.4, 100, min_rate=0.29)
    assert "0.2857" in str(info.value)
    with pytest.raises(ValueError, match=r"d=0\.8"):
        AsymptoticRate(0.3, 100, d=0.8)  # r = 0.75 <= d.


def test_constant_rate():
    schedule = ConstantRate(0.3)
    assert [schedule(e) for e in (0, 1, 7.5, 200, 10_000)] == [0.3] * 5
    assert schedule.rate == schedule.final_rate == 0.3
    assert ConstantRate(0)(3) == 0.0
    assert repr(schedule) == "ConstantRate(rate=0.3)"


def test_get_config_is_the_constructor_arguments():
    schedule = AsymptoticRate(0.4, 100, d=0.1, min_rate=0.1)
    config = schedule.get_config()
    assert config == {"goal": 0.4, "epochs": 100, "d": 0.1, "min_rate": 0.1}
    assert AsymptoticRate(**config).get_config() == config
    assert AsymptoticRate(0.3, 200).get_config() == {
        "goal": 0.3,
        "epochs": 200,
        "d": 0.125,
        "min_rate": 0.0,
    }
    assert ConstantRate(0.2).get_config() == {"rate": 0.2}
    assert repr(schedule) == (
        "AsymptoticRate(goal=0.4, epochs=100, d=0.1, min_rate=0.1)"
    )


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantRate(0.25),
        AsymptoticRate(0.3, 200),
        AsymptoticRate(0.4, 100, d=0.1, min_rate=0.1),
        AsymptoticRate(0.4, 100, min_rate=0.35),  # Fallback.
    ],
    ids=repr,
)
def test_keras_serialization_round_trip(schedule):
    serialized = keras.saving.serialize_keras_object(schedule)
    serialized = json.loads(json.dumps(serialized))
    assert serialized["registered_name"] == (
        f"ekg_keras>{type(schedule).__name__}"
    )
    for restored in (
        keras.saving.deserialize_keras_object(serialized),
        schedules.get(serialized),
        type(schedule).from_config(schedule.get_config()),
    ):
        assert type(restored) is type(schedule)
        assert restored.get_config() == schedule.get_config()
        for epoch in (0, 1, 13, 100, 200):
            assert restored(epoch) == schedule(epoch)


def test_get():
    schedule = AsymptoticRate(0.3, 200)
    assert schedules.get(schedule) is schedule
    constant = schedules.get(0.3)
    assert isinstance(constant, ConstantRate) and constant(10) == 0.3
    assert schedules.get(0).rate == 0.0
    assert schedules.get(np.float32(0.5)).rate == 0.5
    short = schedules.get(
        {"class_name": "AsymptoticRate", "config": {"goal": 0.3, "epochs": 9}}
    )
    assert isinstance(short, AsymptoticRate) and short.epochs == 9
    for bad in ("sfp", None, True, [0.3]):
        with pytest.raises(ValueError, match="Received: identifier="):
            schedules.get(bad)
    with pytest.raises(ValueError, match=r"rate=1\.5"):
        schedules.get(1.5)


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"goal": 1.2, "epochs": 10}, "goal=1.2"),
        ({"goal": 1.0, "epochs": 10}, "goal=1.0"),
        ({"goal": -0.1, "epochs": 10}, "goal=-0.1"),
        ({"goal": "0.3", "epochs": 10}, "goal='0.3'"),
        ({"goal": math.nan, "epochs": 10}, "goal=nan"),
        ({"goal": 0.3, "epochs": 0}, "epochs=0"),
        ({"goal": 0.3, "epochs": -5}, "epochs=-5"),
        ({"goal": 0.3, "epochs": 10.5}, "epochs=10.5"),
        ({"goal": 0.3, "epochs": True}, "epochs=True"),
        ({"goal": 0.3, "epochs": 10, "d": 0.0}, "d=0.0"),
        ({"goal": 0.3, "epochs": 10, "d": 1.0}, "d=1.0"),
        ({"goal": 0.3, "epochs": 10, "min_rate": -0.1}, "min_rate=-0.1"),
        ({"goal": 0.3, "epochs": 10, "min_rate": 0.4}, "min_rate=0.4"),
    ],
)
def test_bad_arguments_raise_with_the_received_value(kwargs, received):
    with pytest.raises(ValueError, match="Received: .*" + re.escape(received)):
        AsymptoticRate(**kwargs)


def test_bad_rates_and_epochs_raise():
    for rate in (1.0, -0.01, 2, "a"):
        with pytest.raises(ValueError, match=r"should be in \[0, 1\)"):
            ConstantRate(rate)
    for schedule in (ConstantRate(0.2), AsymptoticRate(0.2, 10)):
        for epoch in (-1, math.nan, "3", None):
            with pytest.raises(ValueError, match="Received: epoch="):
                schedule(epoch)


def test_base_class_is_abstract():
    schedule = schedules.PruningRateSchedule()
    with pytest.raises(NotImplementedError):
        schedule(0)
    with pytest.raises(NotImplementedError):
        _ = schedule.final_rate
