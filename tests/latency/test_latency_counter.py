"""Tests for ekg_keras.latency.counter and `latency=` budgets: the cost
methods see, the cache in use, every registered method under a latency
budget, bad input. Grids are tiny (two points a side, two timed runs):
the figures are not meaningful, the mechanics are."""

import keras
import numpy as np
import pytest
from model_testing import random_classification
from model_testing import two_conv_net

import ekg_keras
from ekg_keras import methods
from ekg_keras import runtimes
from ekg_keras.latency import counter as counter_module
from ekg_keras.methods import measured_latency
from ekg_keras.methods.setup import PruningSetup

# `attempts: 0`: no timing of the pruned network, so a method's result is
# decided by the prediction alone (the measured loop has its own tests).
TINY = {
    "grid": (0.5, 1.0),
    "runs": 2,
    "warmup": 1,
    "verbose": 0,
    "attempts": 0,
}
BATCH = 4


def _model():
    return two_conv_net(size=12)


def _data(n=64):
    return random_classification(n, size=12)


def _setup(cache, latency=1.0, batch_size=BATCH, **kwargs):
    keras.utils.set_random_seed(0)
    return PruningSetup(
        _model(),
        None,
        latency=latency,
        latency_batch_size=batch_size,
        latency_cache=cache,
        latency_options=TINY,
        **kwargs,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache file with the test model's tables and calibration."""
    path = tmp_path_factory.mktemp("latency") / "latency.json"
    _setup(path)
    return path


@pytest.fixture(scope="module")
def measured(cache):
    return _setup(cache)


def test_counter_has_the_flops_counter_interface(measured):
    counter = measured.counter
    assert measured.budget == "latency"
    assert [t.path for t in counter.layers] == ["a", "b", "fc"]
    assert [t.kind for t in counter.layers] == ["grid"] * 3
    full = counter.full
    np.testing.assert_array_equal(full, measured.graph.sizes)
    assert measured.full_macs == pytest.approx(counter.milliseconds(full))
    assert measured.full_macs > 0
    assert counter.params(full) == measured.flops_counter.params(full)
    # Fewer channels never predict more time (tables are monotone).
    assert 0 < measured.smallest_fraction() <= 1.0
    assert measured.fraction(full) == pytest.approx(1.0)


def test_terms_reproduce_the_prediction_on_a_two_point_grid(measured):
    # Two points per side: the bilinear fit interpolates each table exactly.
    counter = measured.counter
    terms = counter.terms("macs")
    rng = np.random.default_rng(1)
    sizes = counter.full
    for _ in range(5):
        keep = np.where(
            [g.prunable for g in measured.graph.groups],
            np.ceil(rng.uniform(0.5, 1.0, len(sizes)) * sizes),
            sizes,
        )
        assert terms(keep) == pytest.approx(counter.macs(keep), rel=1e-9)
    params = counter.terms("params")
    assert params(sizes) == pytest.approx(counter.params(sizes))
    with pytest.raises(ValueError, match="`quantity` should be"):
        counter.terms("seconds")


def test_calibration_fits_whole_network_times(measured):
    calibration = measured.counter.calibration
    assert [c["fraction"] for c in calibration] == [1.0, 0.75, 0.5, 0.3]
    assert all(c["measured_ms"] > 0 for c in calibration)
    assert measured.counter.scale > 0


def test_cache_is_keyed_by_layers_and_batch_and_invalidated(
    cache, measured, monkeypatch
):
    calls = []
    real = counter_module.measure_table

    def counting(*args, **kwargs):
        calls.append(args[0].path)
        return real(*args, **kwargs)

    monkeypatch.setattr(counter_module, "measure_table", counting)
    again = _setup(cache)
    assert calls == []  # Everything came from the file.
    keep = measured.levels.lowest
    assert again.counter.macs(keep) == pytest.approx(
        measured.counter.macs(keep)
    )
    # Another batch size is another key: measured, into the same file.
    _setup(cache, batch_size=BATCH + 1)
    assert sorted(calls) == ["a", "b", "fc"]
    # Another runtime (or device) invalidates the file.
    calls.clear()
    monkeypatch.setattr(counter_module, "runtime_id", lambda r: "tf 0.0")
    _setup(cache)
    assert sorted(calls) == ["a", "b", "fc"]


@pytest.mark.parametrize("name", methods.names())
def test_every_method_meets_a_latency_budget_by_its_prediction(name, cache):
    target = round((1.0 + _setup(cache).smallest_fraction()) / 2, 3)
    entry = methods.get(name)
    keras.utils.set_random_seed(3)
    method = entry.create(
        _model(),
        None,
        _data(),
        verbose=0,
        latency=target,
        latency_batch_size=BATCH,
        latency_cache=cache,
        latency_options=TINY,
        **entry.method_class.smoke_options,
    )
    method.run()
    setup = method.setup
    assert setup.budget == "latency"
    predicted = setup.fraction(setup.keep_counts(setup.current_keep()))
    assert method.finished
    assert predicted <= target + 1e-9
    assert method.kept_fraction() == pytest.approx(predicted)


def test_prune_with_latency_returns_a_slim_model_within_budget(cache):
    keras.utils.set_random_seed(0)
    model = _model()
    target = round((1.0 + _setup(cache).smallest_fraction()) / 2, 3)
    small = ekg_keras.prune(
        model,
        latency=target,
        latency_batch_size=BATCH,
        latency_cache=cache,
        verbose=0,
    )
    assert small.count_params() < model.count_params()
    assert ekg_keras.prune(model, latency=1.0, verbose=0) is model


def test_bad_budgets_and_runtimes_are_clear_errors(monkeypatch):
    model = _model()
    with pytest.raises(ValueError, match="either `flops` or `latency`"):
        ekg_keras.prune(model, 0.5, latency=0.5)
    with pytest.raises(ValueError, match="A budget is needed"):
        ekg_keras.prune(model)
    for bad in (0, -0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match=r"`latency` should be .*\(0, 1\]"):
            ekg_keras.prune(model, latency=bad)
    with pytest.raises(ValueError, match="`flops` should be"):
        ekg_keras.prune(model, flops=1.5)
    with pytest.raises(ValueError, match="`runtime` should be one of"):
        ekg_keras.prune(model, latency=0.5, runtime="tensorrt")
    with pytest.raises(ValueError, match="`latency_batch_size` should be"):
        ekg_keras.prune(model, latency=0.5, latency_batch_size=0)
    monkeypatch.setitem(
        runtimes.RUNTIMES, "onnx", ("no_such_module_xyz", "no-such-package")
    )
    with pytest.raises(ImportError, match="pip install no-such-package"):
        ekg_keras.prune(model, latency=0.5, runtime="onnx")
    with pytest.raises(ImportError, match="no-such-package"):
        methods.get("oneshot").create(model, None, latency=0.5, runtime="onnx")


def test_inner_set_up_on_a_methods_model_shares_its_latency_cost(measured):
    # A method's inner training model (a search model, a sampler) builds its
    # own set-up on the method's masked model, handed the method's scope and
    # cost: it budgets by the same latency model, without timing again.
    # The target is reachable whatever this machine's timings predict.
    target = round((1.0 + measured.smallest_fraction()) / 2, 3)
    inner = PruningSetup(
        measured.source,
        measured.scope.with_fraction(target),
        masked=measured.model,
        cost=measured.counter,
    )
    assert inner.counter is measured.counter
    assert inner.budget == "latency" and inner.target == target
    untargeted = PruningSetup(
        measured.source,
        measured.scope.without_budget(),
        masked=measured.model,
        cost=measured.counter,
    )
    assert untargeted.counter is measured.counter
    assert untargeted.budget is None
    plain = PruningSetup(measured.source, 0.5)
    assert plain.budget == "flops"
    assert plain.counter is plain.flops_counter


def _oneshot(cache, target, attempts):
    keras.utils.set_random_seed(0)
    return methods.get("oneshot").create(
        _model(),
        None,
        verbose=0,
        latency=target,
        latency_batch_size=BATCH,
        latency_cache=cache,
        latency_options={**TINY, "attempts": attempts},
    )


def test_measured_fraction_times_the_pruned_network_against_the_original(
    measured, monkeypatch
):
    # The timing itself is replaced (a timed assertion fails on a busy
    # machine): what is checked is which networks are built and run, and
    # that the fraction is the pruned one's median over the original's.
    counter = measured.counter
    built, ran = [], []
    network = counter.network

    def recording_network(keep_counts):
        built.append(np.array(keep_counts))
        return network(keep_counts)

    def fake_medians(calls, runs, warmup):
        for call in calls:
            ran.append(call() is not None)
        return [0.003, 0.004]

    monkeypatch.setattr(counter, "network", recording_network)
    monkeypatch.setattr(counter_module, "interleaved_medians", fake_medians)
    fraction = counter.measured_fraction(measured.levels.lowest)
    assert fraction == pytest.approx(0.75)
    assert np.array_equal(built[0], measured.levels.lowest)
    assert np.array_equal(built[1], counter.full)
    assert ran == [True, True]


def _fake_device(monkeypatch, errors):
    """Replaces timing: each measurement is the prediction times the next
    of `errors` (measured / predicted); returns the list of (predicted,
    measured) pairs seen."""
    errors = iter(errors)
    seen = []

    def fake_measured_fraction(self, keep_counts):
        predicted = self.macs(keep_counts) / self.macs(self.full)
        seen.append((predicted, predicted * next(errors)))
        return seen[-1][1]

    monkeypatch.setattr(
        counter_module.LatencyCounter,
        "measured_fraction",
        fake_measured_fraction,
    )
    return seen


def _miss_then_hit(cache):
    """A target and a measured error that lowers it to halfway between the
    smallest reachable fraction and the target."""
    smallest = _setup(cache).smallest_fraction()
    target = round((1.0 + smallest) / 2, 3)
    return target, target / ((target + smallest) / 2)


def test_a_measured_miss_prunes_again_to_a_lowered_budget(cache, monkeypatch):
    target, error = _miss_then_hit(cache)
    seen = _fake_device(monkeypatch, [error, 1.0])
    method = _oneshot(cache, target, attempts=2)
    method.run()
    assert len(seen) == 2
    # The budget is lowered by the measured error: budget = goal / error.
    assert method.setup.target == pytest.approx(target / error)
    assert seen[1][0] <= method.setup.target + 1e-9
    assert method.measured_latency == pytest.approx(seen[1][1])
    assert method.measured_latency <= target


def test_a_last_miss_goes_back_to_the_best_pruning_within(cache, monkeypatch):
    target, error = _miss_then_hit(cache)
    # A miss, a hit, then (if the secant step is large enough to try) a
    # miss again: the result is the hit. The third miss is ten times over
    # the prediction, so it misses whatever the latency tables (measured
    # on this machine) predicted.
    seen = _fake_device(monkeypatch, [error, 1.0, 10.0])
    method = _oneshot(cache, target, attempts=3)
    method.run()
    assert len(seen) in (2, 3)
    assert method.setup.target == pytest.approx(target / error)
    assert method.kept_fraction() == pytest.approx(seen[1][0])
    assert method.measured_latency == pytest.approx(seen[1][1])


def test_the_next_budget_scales_then_follows_the_secant():
    # (budget, predicted, measured); goal 0.5.
    above = (0.5, 0.5, 0.625)
    assert measured_latency._next_budget(0.5, None, above) == 0.4
    within = (0.4, 0.4, 0.425)
    # Secant through (0.4, 0.425) and (0.5, 0.625) meets 0.5 at 0.4375.
    step = measured_latency._next_budget(0.5, within, above)
    assert step == pytest.approx(0.4375)
    close = (0.497, 0.497, 0.49)
    assert measured_latency._next_budget(0.5, close, above) is None
    noisy = (0.4, 0.4, 0.7)  # Measured slower than the larger one: noise.
    assert measured_latency._next_budget(0.5, noisy, above) is None


def test_a_measured_miss_after_the_last_attempt_warns(cache, monkeypatch):
    target = round((1.0 + _setup(cache).smallest_fraction()) / 2, 3)
    monkeypatch.setattr(
        counter_module.LatencyCounter,
        "measured_fraction",
        lambda self, keep_counts: 0.999,
    )
    method = _oneshot(cache, target, attempts=1)
    with pytest.warns(
        UserWarning, match="above the budget .*after 1 measured attempt"
    ):
        method.run()
    assert method.measured_latency == 0.999
    assert method.setup.target == target  # Not pruned again.
    with pytest.raises(ValueError, match="`attempts` should be"):
        _oneshot(cache, target, attempts=-1)
