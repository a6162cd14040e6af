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
from ekg_keras.methods.setup import PruningSetup

TINY = {"grid": (0.5, 1.0), "runs": 2, "warmup": 1, "verbose": 0}
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
    # own set-up on the method's masked model: it budgets by the same cost.
    inner = PruningSetup(measured.source, 0.95, masked=measured.model)
    assert inner.counter is measured.counter
    assert inner.budget == "latency"
    untargeted = PruningSetup(measured.source, None, masked=measured.model)
    assert untargeted.counter is measured.counter
    plain = PruningSetup(measured.source, 0.5)
    assert plain.budget == "flops"
    assert plain.counter is plain.flops_counter
