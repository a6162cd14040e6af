"""Tests for layers with per-channel weights and LayerNormalization
(issue 13.3)."""

import warnings

import keras
import numpy as np
import pytest
from model_testing import assert_same_outputs
from model_testing import group_of
from model_testing import prune_masked_and_slim
from model_testing import randomize_batchnorm

from ekg_keras import graph


class LayerScale(keras.layers.Layer):
    """`x * gamma`, gamma one value per channel (as in ConvNeXt)."""

    def __init__(self, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.projection_dim = projection_dim

    def build(self, input_shape):
        self.gamma = self.add_weight(
            shape=(self.projection_dim,), initializer="random_normal"
        )

    def call(self, x):
        return x * self.gamma

    def get_config(self):
        return {**super().get_config(), "projection_dim": self.projection_dim}


class ChannelBias(keras.layers.Layer):
    """`x + b` with b of shape (1, 1, channels), built from the input."""

    def build(self, input_shape):
        self.b = self.add_weight(
            shape=(1, 1, input_shape[-1]), initializer="random_normal"
        )

    def call(self, x):
        return x + self.b


class ChannelMixer(keras.layers.Layer):
    """Per-channel weights, but every output mixes all channels."""

    def build(self, input_shape):
        self.w = self.add_weight(
            shape=(input_shape[-1],), initializer="random_normal"
        )

    def call(self, x):
        return x * self.w + keras.ops.mean(x, axis=-1, keepdims=True)


def _model(*middle, channels=12):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same", name="producer")(
        inputs
    )
    x = keras.layers.BatchNormalization()(x)
    for layer in middle:
        x = layer(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="consumer")(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return randomize_batchnorm(keras.Model(inputs, outputs))


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((3, 6, 6, 3))


@pytest.mark.parametrize(
    "make",
    [
        lambda: LayerScale(12, name="scaled"),
        lambda: ChannelBias(name="scaled"),
        lambda: keras.layers.PReLU(shared_axes=[1, 2], name="scaled"),
    ],
    ids=["layer_scale", "channel_bias", "prelu"],
)
def test_per_channel_layers_are_sliced_as_members(make):
    layer = make()
    model = _model(layer)
    if layer.weights[0].name != "alpha":
        layer.set_weights(
            [np.linspace(-1.0, 1.0, 12).reshape(w.shape) for w in layer.weights]
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        channel_graph = graph.trace(model)
    group = group_of(channel_graph, "producer")
    assert group.prunable and "scaled" in group.members
    masked, slim = prune_masked_and_slim(model, 0.5)
    kept = slim.get_layer("producer").filters
    assert kept < 12
    assert all(w.shape[-1] == kept for w in slim.get_layer("scaled").weights)
    # A bias turns removed channels into constants, folded exactly.
    assert_same_outputs(slim, masked, _x())


def test_normalization_over_channels_is_sliced():
    norm = keras.layers.Normalization(
        mean=np.linspace(-1, 1, 12), variance=np.linspace(0.5, 2, 12)
    )
    model = _model(norm)
    channel_graph = graph.trace(model)
    assert group_of(channel_graph, "producer").prunable
    masked, slim = prune_masked_and_slim(model, 0.5)
    kept = slim.get_layer("producer").filters
    assert len(slim.layers[3].get_config()["mean"]) == kept
    assert_same_outputs(slim, masked, _x())


def test_a_layer_that_mixes_channels_is_refused_with_a_warning():
    model = _model(ChannelMixer(name="mixer"))
    with pytest.warns(UserWarning, match="'mixer'.*each channel alone"):
        channel_graph = graph.trace(model)
    assert not group_of(channel_graph, "producer").prunable


def _convnext_block(x, width, name):
    """ConvNeXt's block: depthwise (grouped) conv, LayerNormalization over
    channels, inverted bottleneck of Dense layers, layer scale, residual."""
    y = keras.layers.Conv2D(
        width, 7, padding="same", groups=width, name=f"{name}_dw"
    )(x)
    y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln")(y)
    y = keras.layers.Dense(4 * width, name=f"{name}_pw1")(y)
    y = keras.layers.Activation("gelu")(y)
    y = keras.layers.Dense(width, name=f"{name}_pw2")(y)
    y = LayerScale(width, name=f"{name}_scale")(y)
    return x + y


def test_layer_normalization_prunes_and_slims_exactly():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 2, strides=2, name="stem")(inputs)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="stem_ln")(x)
    x = _convnext_block(x, 16, "block0")
    x = _convnext_block(x, 16, "block1")
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="head_ln")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.set_weights(
                [np.random.default_rng(1).uniform(0.5, 1.5, 16)] * 2
            )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        channel_graph = graph.trace(model)
    stream = group_of(channel_graph, "stem")
    assert stream.prunable
    assert {"stem_ln", "block0_dw", "block0_ln", "head_ln"} <= set(
        stream.members
    )
    masked, slim = prune_masked_and_slim(model, 0.5)
    kept = slim.get_layer("stem").filters
    assert kept < 16
    assert slim.get_layer("head_ln").gamma.shape == (kept,)
    assert slim.get_layer("block1_dw").groups == kept
    assert_same_outputs(slim, masked, np.random.rand(2, 8, 8, 3))


def test_layer_normalization_over_other_axes_stays_whole():
    model = _model(keras.layers.LayerNormalization(axis=(1, 2, 3), name="ln"))
    with pytest.warns(UserWarning, match="'ln'.*not the channels alone"):
        channel_graph = graph.trace(model)
    assert not group_of(channel_graph, "producer").prunable
