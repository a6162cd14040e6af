"""Tests for ekg_keras.latency.reachability and its use: a latency budget
below the *predicted* floor is decided by timing the floor network.

Timing is injected: the pruned network's measured fraction is its
predicted fraction times an error chosen by the test, so every outcome
is deterministic whatever this machine's latency tables predict (they
are measured on a tiny grid, for the mechanics only)."""

import keras
import numpy as np
import pytest
from model_testing import random_classification

import ekg_keras
from ekg_keras import methods
from ekg_keras.latency import counter as counter_module
from ekg_keras.latency import measure as measure_module
from ekg_keras.latency import reachability
from ekg_keras.methods.setup import PruningSetup

TINY = {"grid": (0.5, 1.0), "runs": 2, "warmup": 1, "verbose": 0}
BATCH = 4
SIZE = 8


def _model():
    keras.utils.set_random_seed(0)
    return ekg_keras.models.resnet_cifar(
        8, num_classes=4, input_shape=(SIZE, SIZE, 3), width=8
    )


def _scope(cache, latency, attempts=2):
    return dict(
        latency=latency,
        latency_batch_size=BATCH,
        latency_cache=cache,
        latency_options={**TINY, "attempts": attempts},
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache file with the test model's tables and calibration."""
    return tmp_path_factory.mktemp("latency") / "latency.json"


@pytest.fixture(scope="module")
def floor(cache):
    """The predicted floor fraction and the floor keep counts."""
    setup = PruningSetup(_model(), None, **_scope(cache, 1.0, attempts=0))
    return setup.smallest_fraction(), setup.levels.lowest


def _device(monkeypatch, errors):
    """Injected timing: each measured fraction is the predicted one times
    the next of `errors` (the last repeats); returns the (keep counts,
    predicted, measured) of every measurement."""
    errors = list(errors)
    seen = []

    def measured_fraction(self, keep_counts):
        predicted = self.macs(keep_counts) / self.macs(self.full)
        error = errors[min(len(seen), len(errors) - 1)]
        seen.append((np.array(keep_counts), predicted, predicted * error))
        return seen[-1][2]

    monkeypatch.setattr(
        counter_module.LatencyCounter, "measured_fraction", measured_fraction
    )
    return seen


def _oneshot(cache, latency, attempts=2):
    return methods.get("oneshot").create(
        _model(), None, verbose=0, **_scope(cache, latency, attempts)
    )


def _is_floor(keep_counts, floor):
    return np.array_equal(keep_counts, floor[1])


def test_predicted_unreachable_but_measured_reachable_prunes(
    cache, floor, monkeypatch
):
    predicted_floor = floor[0]
    goal = round(0.9 * predicted_floor, 4)  # Below the predicted floor.
    seen = _device(monkeypatch, [0.8])  # The device is 20% faster.
    method = _oneshot(cache, goal)
    timing = method.setup.floor_timing
    assert _is_floor(seen[0][0], floor)  # The floor was timed first.
    assert timing.measured == pytest.approx(0.8 * predicted_floor)
    assert timing.predicted == pytest.approx(predicted_floor)
    # Budgeted by the predicted fraction the measured floor puts at the
    # goal: reachable by the allocation.
    assert method.setup.target >= predicted_floor
    assert method.setup.target == pytest.approx(timing.predicted_budget(goal))
    method.run()
    assert method.finished
    assert method.measured_latency <= goal
    assert method.measured_latency == pytest.approx(seen[-1][2])


def test_soft_pruning_takes_the_budgeted_target(cache, floor, monkeypatch):
    # SFP's inner model budgets by the set-up's scope and latency cost: a
    # goal below the predicted floor works for it as for the others.
    goal = round(0.9 * floor[0], 4)
    _device(monkeypatch, [0.8])
    method = methods.get("sfp").create(
        _model(),
        None,
        random_classification(32, size=SIZE),
        verbose=0,
        epochs=2,
        **_scope(cache, goal),
    )
    assert method.trainer.scope.fraction == method.setup.target
    assert method.trainer.setup.counter is method.setup.counter
    method.run()
    assert method.finished
    assert method.measured_latency <= goal


def test_measured_unreachable_is_one_line_and_the_model_untouched(
    cache, floor, monkeypatch
):
    goal = round(0.9 * floor[0], 4)
    seen = _device(monkeypatch, [1.0])  # The device agrees with the model.
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError) as error:
        ekg_keras.prune(model, verbose=0, **_scope(cache, goal))
    message = str(error.value)
    assert "\n" not in message
    assert f"latency={goal} is below the smallest reachable" in message
    assert f"{floor[0]:.4f}, measured" in message
    assert "1-min load" in message and "cores" in message
    assert message.endswith(f"Received: latency={goal}")
    # Refused after every timing (one per try) measured above the goal.
    assert len(seen) == reachability.TIMINGS
    assert all(_is_floor(keep, floor) for keep, _, _ in seen)
    assert f"lowest of {reachability.TIMINGS} timings" in message
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_a_floor_timed_above_then_within_the_goal_is_reachable(
    cache, floor, monkeypatch
):
    # A first timing above the goal (load) does not refuse: the next one
    # within it decides.
    goal = round(0.9 * floor[0], 4)
    seen = _device(monkeypatch, [1.0, 0.8])
    method = _oneshot(cache, goal)
    assert len(seen) == 2
    timing = method.setup.floor_timing
    assert timing.measured == pytest.approx(0.8 * floor[0])
    assert timing.timings == pytest.approx((floor[0], 0.8 * floor[0]))


def test_predicted_reachable_needs_no_floor_measurement(
    cache, floor, monkeypatch
):
    goal = round((1.0 + floor[0]) / 2, 4)
    seen = _device(monkeypatch, [1.0])
    method = _oneshot(cache, goal)
    assert seen == [] and method.setup.floor_timing is None
    method.run()
    assert len(seen) == 1  # The pruned network, after the pruning.
    assert not _is_floor(seen[0][0], floor)
    assert method.measured_latency <= goal


def test_without_measurement_the_prediction_decides(cache, floor):
    goal = round(0.9 * floor[0], 4)
    with pytest.raises(ValueError, match=r"\(predicted, with every"):
        _oneshot(cache, goal, attempts=0)


def test_a_lowered_budget_below_the_predicted_floor_prunes_to_it(
    cache, floor, monkeypatch
):
    # Reachable by prediction; the first pruning measures 1.5x its
    # prediction, so the lowered budget is below the predicted floor: the
    # method prunes to the floor, which measures within the goal.
    goal = min(1.0, round(1.05 * floor[0], 4))
    seen = _device(monkeypatch, [1.5, 0.9])
    method = _oneshot(cache, goal, attempts=2)
    method.run()
    # Pruned to the predicted floor (on this tiny grid other widths may
    # predict as little as the floor network).
    assert len(seen) == 2 and seen[1][1] == pytest.approx(floor[0])
    assert method.kept_fraction() == pytest.approx(floor[0])
    assert method.measured_latency <= goal


def test_a_floor_measured_above_the_goal_stops_with_a_warning(
    cache, floor, monkeypatch
):
    goal = min(1.0, round(1.05 * floor[0], 4))
    _device(monkeypatch, [1.5])
    method = _oneshot(cache, goal, attempts=3)
    with pytest.warns(UserWarning, match="at its floor width measured"):
        method.run()
    assert method.kept_fraction() == pytest.approx(floor[0])


def test_the_floor_and_the_original_are_timed_in_interleaved_rounds(
    cache, floor, monkeypatch
):
    order = []
    measure_module.interleaved_medians(
        [lambda: order.append("A"), lambda: order.append("B")],
        runs=2,
        warmup=1,
        rounds=3,
    )
    assert "".join(order) == "AB" + "AABB" + "BBAA" + "AABB"
    # The floor measurement is one interleaved timing of [floor, original].
    timed = []

    def medians(calls, runs, warmup):
        timed.append(len(calls))
        return [0.03, 0.05]

    monkeypatch.setattr(counter_module, "interleaved_medians", medians)
    monkeypatch.setattr(reachability, "load_average", lambda: 1.5)
    setup = PruningSetup(_model(), None, **_scope(cache, 1.0))
    timing = reachability.time_floor(
        setup.counter, setup.levels.lowest, verbose=0
    )
    assert timed == [2]
    assert timing.measured == pytest.approx(0.6)
    assert "1-min load 1.50" in timing.conditions()


def test_the_budgeted_fraction_is_the_secant_through_floor_and_full():
    timing = reachability.FloorTiming(0.5, 0.4, 1.0, 2, "tf", 64)
    assert timing.predicted_budget(0.4) == pytest.approx(0.5)
    assert timing.predicted_budget(0.7) == pytest.approx(0.75)
    assert timing.predicted_budget(1.0) == pytest.approx(1.0)
    assert not timing.reaches(0.39) and timing.reaches(0.4)
