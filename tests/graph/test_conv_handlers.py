"""Tests for the convolution handlers: grouped, 1-D, 3-D and transposed
convolutions, and the spatial layers around them (issue 13.2, 13.4)."""

import keras
import numpy as np
import pytest
from model_testing import assert_same_outputs
from model_testing import cnn_1d
from model_testing import group_of
from model_testing import kept_fraction
from model_testing import prune_masked_and_slim
from model_testing import randomize_batchnorm
from model_testing import unet

import ekg_keras
from ekg_keras import graph


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _conv_bn_relu(x, filters, name, **kwargs):
    x = keras.layers.Conv2D(filters, 3, padding="same", name=name, **kwargs)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU()(x)


def _grouped_model(groups):
    inputs = keras.Input((8, 8, 3))
    x = _conv_bn_relu(inputs, 16, "stem")
    x = _conv_bn_relu(x, 16, "grouped", groups=groups)
    x = _conv_bn_relu(x, 12, "after")
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs))


def test_grouped_convolution_slims_regression():
    # Issue 13.7(a): pruning worked, slim raised "IndexError: index 4 is
    # out of bounds for axis 2 with size 4".
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", groups=2, name="g")(x)
    x = keras.layers.Conv2D(6, 1, name="after")(keras.layers.ReLU()(x))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    masked, slim = prune_masked_and_slim(model, 0.5)
    assert_same_outputs(slim, masked, _random((2, 8, 8, 3)))
    assert kept_fraction(model, slim) <= 0.5


def test_grouped_convolution_removes_whole_groups():
    model = _grouped_model(groups=4)
    channel_graph = graph.trace(model)
    stream = group_of(channel_graph, "stem")
    # 16 channels in 4 blocks of 4: the stem's group has 4 units, and the
    # grouped convolution's outputs join them.
    assert stream.size == 4 and stream.prunable
    assert group_of(channel_graph, "grouped") is stream
    assert "grouped" in stream.members
    masked, slim = prune_masked_and_slim(model, 0.6)
    layer = slim.get_layer("grouped")
    assert layer.filters % 4 == 0 and layer.filters < 16
    assert layer.groups == layer.filters // 4
    assert layer.kernel.shape[-2] == 4  # still 4 input channels per group
    assert slim.get_layer("stem").filters == layer.filters
    assert_same_outputs(slim, masked, _random((2, 8, 8, 3)))


def test_depthwise_as_grouped_convolution_is_a_member():
    model = _grouped_model(groups=16)
    channel_graph = graph.trace(model)
    stream = group_of(channel_graph, "stem")
    assert stream.size == 16 and "grouped" in stream.members
    masked, slim = prune_masked_and_slim(model, 0.5)
    layer = slim.get_layer("grouped")
    assert layer.groups == layer.filters == slim.get_layer("stem").filters
    assert layer.filters < 16
    assert_same_outputs(slim, masked, _random((2, 8, 8, 3)))
    assert ekg_keras.count_flops(masked).macs == pytest.approx(
        ekg_keras.count_flops(slim).macs
    )


def test_grouped_convolution_on_the_input_stays_whole_with_a_warning():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, groups=2, name="g")(inputs)
    x = keras.layers.Conv2D(6, 1, name="after")(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.warns(UserWarning, match="'g' .*keeps its 8 filters whole"):
        channel_graph = graph.trace(keras.Model(inputs, outputs))
    assert group_of(channel_graph, "after").prunable
    assert channel_graph.channels("g").outputs[0].num_fixed == 8


def test_1d_cnn_prunes_and_slims():
    model = cnn_1d()
    channel_graph = graph.trace(model)
    assert len(channel_graph.prunable_groups) == 4  # c1, c2, c3, up
    masked, slim = prune_masked_and_slim(model, 0.5)
    assert_same_outputs(slim, masked, _random((3, 64, 2)))
    assert 0.49 <= kept_fraction(model, slim) <= 0.5
    for name in ("c1", "c2", "c3", "up"):
        assert slim.get_layer(name).filters < model.get_layer(name).filters


def test_3d_convolutions_prune_and_slim():
    inputs = keras.Input((6, 6, 6, 2))
    x = keras.layers.Conv3D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling3D(2)(x)
    x = keras.layers.Conv3DTranspose(8, 2, strides=2, name="up")(x)
    x = keras.layers.Conv3D(6, 3, padding="same", name="b")(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling3D()(x))
    model = randomize_batchnorm(keras.Model(inputs, outputs))
    masked, slim = prune_masked_and_slim(model, 0.6)
    assert_same_outputs(slim, masked, _random((2, 6, 6, 6, 2)))
    assert kept_fraction(model, slim) <= 0.6
    assert slim.get_layer("up").kernel.shape[-1] == slim.get_layer("a").filters


def test_unet_with_skip_concatenations_prunes_and_slims():
    model = unet()
    channel_graph = graph.trace(model)
    # Every conv but the per-pixel classifier opens a prunable group.
    assert len(channel_graph.prunable_groups) == 9
    masked, slim = prune_masked_and_slim(model, 0.5)
    assert_same_outputs(slim, masked, _random((2, 32, 32, 3)))
    assert 0.49 <= kept_fraction(model, slim) <= 0.5
    assert slim.output.shape == (None, 32, 32, 2)
    d2 = slim.get_layer("d2")
    assert d2.kernel.shape[-2] == (
        slim.get_layer("up2").filters + slim.get_layer("e2b").filters
    )


@pytest.mark.parametrize(
    "consumer",
    [
        lambda: keras.layers.Conv2DTranspose(4, 3, strides=2, name="up"),
        lambda: keras.layers.SeparableConv2D(
            4, 3, padding="same", depth_multiplier=2, name="up"
        ),
        lambda: keras.layers.Conv1D(4, 3, padding="same", name="up"),
    ],
    ids=["transposed", "separable", "conv1d"],
)
def test_constants_reach_padded_consumers_exactly(consumer):
    # sigmoid(0) = 0.5 enters a strided transposed convolution (whose
    # outputs see different numbers of taps) or a zero-padded separable
    # one: a bias cannot hold it, extra input channels of ones do.
    layer = consumer()
    one_d = isinstance(layer, keras.layers.Conv1D)
    inputs = keras.Input((6, 3) if one_d else (6, 6, 3))
    conv = keras.layers.Conv1D if one_d else keras.layers.Conv2D
    x = conv(6, 3, padding="same", name="producer")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("sigmoid")(x)
    x = layer(x)
    pool = (
        keras.layers.GlobalAveragePooling1D()
        if one_d
        else keras.layers.GlobalAveragePooling2D()
    )
    outputs = keras.layers.Dense(2)(pool(x))
    model = randomize_batchnorm(keras.Model(inputs, outputs))
    masked, slim = prune_masked_and_slim(model, 0.7)
    assert slim.get_layer("up_ones") is not None
    x = _random((2, 6, 3) if one_d else (2, 6, 6, 3))
    assert_same_outputs(slim, masked, x, tolerance=1e-5)
    assert ekg_keras.count_flops(masked).macs == pytest.approx(
        ekg_keras.count_flops(slim).macs
    )
    assert ekg_keras.count_flops(masked).params == pytest.approx(
        slim.count_params()
    )
