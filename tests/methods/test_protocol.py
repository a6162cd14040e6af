"""The method protocol over every registered method: shared set-up, the
budget, determinism, the user's model untouched."""

import keras
import numpy as np
import pytest
from model_testing import random_classification
from model_testing import two_conv_net

import ekg_keras
from ekg_keras import methods


def _model():
    return two_conv_net(size=8)


def _data(n=64):
    return random_classification(n, size=8)


def _run(name, seed=3, flops=0.5, **kwargs):
    entry = methods.get(name)
    keras.utils.set_random_seed(seed)
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    method = entry.create(
        model,
        flops,
        _data(),
        verbose=0,
        **{**entry.method_class.smoke_options, **kwargs},
    )
    masked = method.run()
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    return method, masked


@pytest.mark.parametrize("name", methods.names())
def test_every_method_meets_its_target_deterministically(name):
    first, masked = _run(name)
    second, _ = _run(name)
    assert first.finished
    assert first.kept_fraction() <= 0.5
    for a, b in zip(
        first.setup.current_keep(), second.setup.current_keep(), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert ekg_keras.layers.prunable_layers(masked)


def test_each_run_starts_from_the_users_model():
    method, _ = _run("oneshot")
    first = [m.copy() for m in method.setup.current_keep()]
    method.run()
    for a, b in zip(first, method.setup.current_keep(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_shared_set_up_errors_name_what_is_wrong():
    model = _model()
    with pytest.raises(ValueError, match="floor of min_channels=0.5"):
        methods.get("oneshot").create(model, 0.1, min_channels=0.5)
    with pytest.raises(ValueError, match="does not have.*'nope'"):
        methods.get("oneshot").create(model, 0.5, ignored_layers=["nope"])
    with pytest.raises(ValueError, match="`round_to` should be a positive"):
        methods.get("oneshot").create(model, 0.5, round_to=0)
    setup = methods.PruningSetup(model, 0.5, ignored_layers=["a"])
    fixed = setup.graph.groups[setup.graph.channels("a").outputs[0].group[0]]
    assert not fixed.prunable
    assert setup.smallest_fraction() < 0.5 <= 1.0
    assert setup.target_macs == pytest.approx(0.5 * setup.full_macs)


@pytest.mark.parametrize("name", methods.names())
def test_every_method_keeps_hardware_friendly_widths(name):
    """`round_to` reaches every method through the shared set-up: each
    group keeps a multiple of it (or all its channels)."""
    method, _ = _run(name, round_to=4)
    assert method.kept_fraction() <= 0.5
    for group, keep in zip(method.graph.groups, method.setup.current_keep()):
        kept = int(keep.sum())
        assert kept % 4 == 0 or kept == group.size, (group.producers, kept)
