"""Tests for `keras.ops` operation nodes in the channel graph (issue 13.1)."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops
from model_testing import assert_same_outputs
from model_testing import group_of
from model_testing import images
from model_testing import kept_fraction
from model_testing import layer_classes
from model_testing import prune_masked_and_slim
from model_testing import randomize_batchnorm

import ekg_keras
from ekg_keras import graph
from ekg_keras import layers


def _hard_swish_model():
    """Hard-swish written with `keras.ops`: x * relu6(x + 3) / 6."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(12, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = x * ops.relu6(x + 3.0) / 6.0
    y = keras.layers.Conv2D(12, 3, padding="same", name="conv2")(x)
    y = keras.layers.BatchNormalization(name="bn2")(y)
    x = ops.add(x, ops.sigmoid(y) * y)  # an element-wise merge of tensors
    x = ops.mean(x, axis=(1, 2))  # global average pooling in keras.ops
    outputs = keras.layers.Dense(4, name="head")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs))


def _trace_without_warnings(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return graph.trace(model)


def test_hard_swish_in_ops_is_followed_and_merged():
    channel_graph = _trace_without_warnings(_hard_swish_model())
    group = group_of(channel_graph, "conv1")
    assert group is group_of(channel_graph, "conv2")
    assert group.prunable
    assert set(group.members) == {"bn1", "bn2"}
    assert set(group.consumers) == {"conv2", "head"}


def test_operations_prune_slim_and_save(tmp_path):
    model = _hard_swish_model()
    masked, slim = prune_masked_and_slim(model, 0.5)
    x = images(4, size=8)
    assert_same_outputs(slim, masked, x)
    # One group of 12 channels: one channel is ~4% of the FLOPs.
    assert 0.45 <= kept_fraction(model, slim) <= 0.5
    assert slim.get_layer("conv1").filters < 12
    # The operation nodes and their constants are kept.
    names = [type(op).__name__ for op in slim.operations]
    assert {"Add", "Relu6", "Multiply", "TrueDivide", "Mean"} <= set(names)
    assert all(name.startswith("keras.") for name in layer_classes(slim))
    slim.save(tmp_path / "slim.keras")
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    np.testing.assert_allclose(
        np.asarray(loaded(x)), np.asarray(slim(x)), rtol=1e-6, atol=1e-6
    )


def test_wrap_and_strip_keep_operation_nodes():
    model = _hard_swish_model()
    wrapped = layers.wrap(model)
    stripped = layers.strip(wrapped)
    x = images(2, size=8)
    np.testing.assert_allclose(
        np.asarray(wrapped(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(stripped(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6
    )


def _model_with(operation):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 1, name="before")(inputs)
    x = operation(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(
    "operation",
    [
        lambda x: x * 2.0 + 1.0,
        lambda x: ops.clip(x, -1.0, 1.0),
        lambda x: ops.leaky_relu(x, 0.2),
        lambda x: x * np.full((1, 1, 1, 1), 3.0, "float32"),
        lambda x: ops.cast(x, "float16"),
        lambda x: ops.image.resize(x, (12, 12)),
        lambda x: ops.max(x, axis=1, keepdims=True),
    ],
    ids=["scalars", "clip", "leaky_relu", "broadcast", "cast", "resize", "max"],
)
def test_channelwise_operations_pass_through(operation):
    channel_graph = _trace_without_warnings(_model_with(operation))
    assert group_of(channel_graph, "before").prunable


@pytest.mark.parametrize(
    "operation, culprit, why",
    [
        (
            lambda x: x + np.arange(4, dtype="float32"),
            "add",
            "a per-channel constant of shape \\(4,\\)",
        ),
        (
            lambda x: ops.mean(x, axis=-1, keepdims=True),
            "mean",
            "it reduces over the channel axis",
        ),
        (lambda x: x[..., :2], "get_item", "does not know"),
        (lambda x: ops.transpose(x, (0, 2, 1, 3)), "transpose", "not know"),
        (
            lambda x: ops.reshape(x, (-1, 6, 24)),
            "reshape",
            "moves the channel axis",
        ),
        (lambda x: ops.softmax(x), "softmax", "does not know"),
    ],
    ids=[
        "per-channel-constant",
        "channel-mean",
        "slice",
        "transpose",
        "reshape",
        "softmax",
    ],
)
def test_other_operations_block_their_groups_with_a_warning(
    operation, culprit, why
):
    model = _model_with(operation)
    with pytest.warns(UserWarning, match=f"operation '{culprit}.*{why}"):
        channel_graph = graph.trace(model)
    assert not group_of(channel_graph, "before").prunable
    # Never a crash: pruning leaves that group whole.
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match="nothing prunable"),
    ):
        ekg_keras.prune(model, flops=0.5, verbose=0)


def test_two_tensor_operations_join_groups():
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 1, name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    c = keras.layers.Conv2D(4, 1, name="c")(inputs)
    gate = keras.layers.Conv2D(1, 1, name="gate")(inputs)
    x = ops.maximum(a * b, c) * ops.sigmoid(gate)
    outputs = keras.layers.Dense(2)(ops.mean(x, axis=(1, 2)))
    channel_graph = graph.trace(keras.Model(inputs, outputs))
    group = group_of(channel_graph, "a")
    assert set(group.producers) == {"a", "b", "c"}
    assert group.prunable
    assert not group_of(channel_graph, "gate").prunable


def test_operation_constants_are_folded_exactly():
    # x + 1.0 after a masked channel leaves 1.0 in it, and sigmoid 0.5:
    # the slim model keeps both contributions (bias, ones channel).
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="producer")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = ops.sigmoid(x) + 1.0
    x = keras.layers.Conv2D(5, 3, padding="same", name="padded")(x)
    x = keras.layers.Conv2D(5, 1, name="pointwise")(ops.relu(x))
    outputs = keras.layers.Dense(2)(ops.mean(x, axis=(1, 2)))
    model = randomize_batchnorm(keras.Model(inputs, outputs))
    masked, slim = prune_masked_and_slim(model, 0.6)
    assert slim.get_layer("producer").filters < 6
    assert slim.get_layer("padded_ones") is not None
    assert_same_outputs(slim, masked, images(3, size=6), tolerance=1e-5)
    assert ekg_keras.count_flops(masked).macs == pytest.approx(
        ekg_keras.count_flops(slim).macs
    )


def _ops_mix_ffn(side=4, width=8):
    tokens = keras.Input((side * side, width))
    x = keras.layers.Dense(4 * width, name="mlp_in")(tokens)
    x = ops.reshape(x, (-1, side, side, 4 * width))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="mix")(x)
    x = ops.reshape(x, (-1, side * side, 4 * width))
    x = keras.layers.Dense(width, activation="gelu", name="mlp_out")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(3, name="logits")(x))


def test_reshape_operation_keeping_channels_passes_them_and_slims():
    model = _ops_mix_ffn()
    x = np.random.default_rng(0).standard_normal((2, 16, 8)).astype("float32")

    channel_graph = graph.trace(model)
    masked, slim = prune_masked_and_slim(model, flops=0.6)

    hidden = group_of(channel_graph, "mlp_in")
    assert hidden.prunable and "mix" in hidden.members
    kept = slim.get_layer("mlp_in").units
    assert kept < 32
    assert slim.get_layer("mix").output.shape == (None, 4, 4, kept)
    assert_same_outputs(slim, masked, x)
