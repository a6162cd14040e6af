"""Tests for ekg_keras.graph.expansion: custom layers traced through,
models counted at a fixed size, and what `prune`, `count_flops` and
`slim` make of both."""

import keras
import numpy as np
import pytest
from model_testing import max_relative_difference

import ekg_keras
from ekg_keras.graph.expansion import expand
from ekg_keras.traced_macs import traced_macs


class ConvBlock(keras.layers.Layer):
    """Conv -> BN -> ReLU, its sub-layers made in `__init__`, a residual
    when the widths match (Python control flow on static shapes)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, padding="same")
        self.norm = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        y = keras.ops.relu(self.norm(self.conv(x), training=training))
        if x.shape[-1] == self.filters:
            y = y + x
        return y

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


class Scaled(keras.layers.Layer):
    """Holds a weight of its own: cannot become a sub-graph."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones")

    def call(self, x):
        return x * self.scale


def _model(dynamic=False, compiled=False):
    keras.utils.set_random_seed(0)
    size = None if dynamic else 16
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    block = ConvBlock(8, name="block")
    x = block(x)
    x = block(x)  # Shared: called twice.
    x = ConvBlock(12, name="wider")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    if compiled:
        model.compile(optimizer="sgd", loss="mse")
    return model


def test_custom_layers_become_sub_graphs_of_the_same_layers():
    model = _model()
    expansion = expand(model)
    assert expansion.changed and not expansion.opaque
    nested = {layer.name for layer in expansion.model.layers}
    assert {"block", "wider"} <= nested
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3))
    np.testing.assert_allclose(
        expansion.model(x), model(x), rtol=1e-5, atol=1e-6
    )
    # No weight is copied: the expansion shares the model's variables.
    assert {id(v) for v in expansion.model.weights} <= {
        id(v) for v in model.weights
    }


def test_count_flops_sees_inside_custom_layers():
    model = _model()
    counted = ekg_keras.count_flops(model).macs
    assert counted == pytest.approx(traced_macs(model), rel=1e-6)
    # Three 3x3 convolutions inside the blocks are most of it.
    assert counted > 3 * 16 * 16 * 9 * 8 * 8


def test_a_compiled_model_with_custom_layers_prunes_and_slims():
    model = _model(compiled=True)
    masked = ekg_keras.prune(model, 0.5, slim=False, verbose=0)
    slim = ekg_keras.slim(masked)
    kept = traced_macs(slim) / traced_macs(model)
    assert 0.3 <= kept <= 0.5  # Two groups on a small network.
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3))
    assert max_relative_difference(slim(x), masked(x)) < 1e-4
    assert not any(isinstance(layer, ConvBlock) for layer in slim.layers)


def test_dynamic_model_needs_an_input_shape_and_stays_dynamic():
    model = _model(dynamic=True)
    with pytest.raises(ValueError, match="input_shape="):
        ekg_keras.count_flops(model)
    with pytest.raises(ValueError, match="input_shape="):
        ekg_keras.prune(model, 0.5, verbose=0)
    fixed = traced_macs(model, input_shape=(16, 16, 3))
    counted = ekg_keras.count_flops(model, input_shape=(16, 16, 3)).macs
    assert counted == pytest.approx(fixed, rel=1e-6)
    masked = ekg_keras.prune(
        model, 0.5, input_shape=(16, 16, 3), slim=False, verbose=0
    )
    slim = ekg_keras.slim(masked)
    assert tuple(slim.inputs[0].shape) == (None, None, None, 3)
    for size in (16, 24):
        x = np.random.default_rng(size).normal(size=(1, size, size, 3))
        assert max_relative_difference(slim(x), masked(x)) < 1e-4


def test_input_shape_must_fit_the_model():
    model = _model(dynamic=True)
    with pytest.raises(ValueError, match="fit the model's input shape"):
        ekg_keras.count_flops(model, input_shape=(16, 16))
    with pytest.raises(ValueError, match="`input_shape` should be"):
        ekg_keras.prune(model, 0.5, input_shape=(0, 16, 3))
    with pytest.raises(ValueError, match="fit the model's input shape"):
        ekg_keras.count_flops(_model(), input_shape=(32, 32, 3))


def test_a_layer_with_its_own_weights_stays_whole_and_is_counted():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = Scaled(name="scaled")(x)
    x = keras.layers.Conv2D(6, 3, padding="same")(x)
    model = keras.Model(inputs, x)
    with pytest.warns(UserWarning, match="'scaled' is not traced through"):
        expansion = expand(model)
    assert "own" in expansion.opaque["scaled"]
    with pytest.warns(UserWarning) as records:
        counted = ekg_keras.count_flops(model).macs
    assert records[0].filename == __file__
    assert counted == pytest.approx(traced_macs(model), rel=1e-6)
