"""Tests for ekg_keras.graph.constants: what removed channels hold where
they are consumed."""

import keras
import numpy as np
from keras import ops

from ekg_keras import graph
from ekg_keras import layers
from ekg_keras.graph.constants import consumer_constants


def _constants_at(model, consumer, **kwargs):
    channel_graph = graph.trace(model, warn=False)
    record = channel_graph.channels(consumer)
    return consumer_constants(channel_graph, **kwargs)[id(record.layer)]


def _chain(*middle, consumer_kernel=3):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="producer")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    for layer in middle:
        x = layer(x)
    x = keras.layers.Conv2D(2, consumer_kernel, name="consumer")(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return layers.wrap(keras.Model(inputs, outputs))


def test_activations_turn_zero_into_their_value_at_zero():
    np.testing.assert_allclose(
        _constants_at(_chain(keras.layers.Activation("sigmoid")), "consumer"),
        [0.5] * 4,
    )
    np.testing.assert_array_equal(
        _constants_at(_chain(keras.layers.ReLU()), "consumer"), [0.0] * 4
    )


def test_operations_are_followed_with_their_constants():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="producer")(inputs)
    x = keras.layers.BatchNormalization()(x)
    swish = x * ops.relu6(x + 3.0) / 6.0  # 0 * 3 / 6 = 0
    shifted = ops.sigmoid(x) * 2.0 + 1.0  # 2.0
    a = keras.layers.Conv2D(2, 1, name="after_swish")(swish)
    b = keras.layers.Conv2D(2, 1, name="after_shift")(shifted)
    y = keras.layers.Concatenate()([a, b])
    outputs = keras.layers.Dense(2)(ops.mean(y, axis=(1, 2)))
    model = layers.wrap(keras.Model(inputs, outputs))
    np.testing.assert_array_equal(
        _constants_at(model, "after_swish"), [0.0] * 4
    )
    np.testing.assert_allclose(_constants_at(model, "after_shift"), [2.0] * 4)


def test_zero_padding_makes_a_non_zero_constant_vary():
    values = _constants_at(
        _chain(
            keras.layers.Activation("sigmoid"), keras.layers.ZeroPadding2D()
        ),
        "consumer",
    )
    assert np.isnan(values).all()
    values = _constants_at(
        _chain(keras.layers.ReLU(), keras.layers.ZeroPadding2D()), "consumer"
    )
    np.testing.assert_array_equal(values, [0.0] * 4)


def test_flatten_repeats_the_constants_per_position():
    inputs = keras.Input((2, 2, 3))
    x = keras.layers.Conv2D(3, 1, name="producer")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("sigmoid")(keras.layers.Flatten()(x))
    outputs = keras.layers.Dense(2, name="consumer")(x)
    model = layers.wrap(keras.Model(inputs, outputs))
    np.testing.assert_allclose(_constants_at(model, "consumer"), [0.5] * 12)


def test_soft_batchnorm_gives_its_constant_and_a_budget_assumes_one():
    model = _chain(keras.layers.ReLU())
    soft = layers.wrap(model, mode="soft")
    bn = soft.get_layer("bn")
    gamma = np.array([1.0, 2.0, 0.5, 1.0], "float32")
    beta = np.array([0.5, -1.0, 0.25, 0.0], "float32")
    mean = np.array([0.0, 1.0, -1.0, 0.0], "float32")
    variance = np.array([1.0, 4.0, 0.25, 1.0], "float32")
    bn.set_weights([gamma, beta, mean, variance, np.ones(4, "float32")])
    expected = beta - gamma * mean / np.sqrt(variance + bn.epsilon)
    np.testing.assert_allclose(
        _constants_at(soft, "consumer"), np.maximum(expected, 0), rtol=1e-5
    )
    np.testing.assert_array_equal(
        _constants_at(soft, "consumer", assume_trained=True), [1.0] * 4
    )
    # Held (gamma and beta zeroed, gradients masked): exact zeros.
    np.testing.assert_array_equal(
        _constants_at(soft, "consumer", assume_trained=True, held=True),
        [0.0] * 4,
    )
    # Hard masks zero batch normalization's output: no constants.
    np.testing.assert_array_equal(
        _constants_at(layers.wrap(model), "consumer", assume_trained=True),
        [0.0] * 4,
    )


def test_batchnorm_without_a_scale_cannot_hold_its_constants_at_zero():
    # Zeroing beta leaves -mean / std, which the moving mean still moves.
    model = _chain(keras.layers.BatchNormalization(scale=False, name="bn2"))
    soft = layers.wrap(model, mode="soft")
    np.testing.assert_array_equal(
        _constants_at(soft, "consumer", assume_trained=True, held=True),
        [1.0] * 4,
    )


def test_broadcast_data_is_not_a_constant_but_a_product_with_zero_is():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 1, name="producer")(inputs)
    gate = keras.layers.Conv2D(1, 1, name="gate")(inputs)
    added = keras.layers.Add()([keras.layers.Activation("sigmoid")(x), gate])
    multiplied = keras.layers.Multiply()([x, gate])
    a = keras.layers.Conv2D(2, 1, name="after_add")(added)
    b = keras.layers.Conv2D(2, 1, name="after_multiply")(multiplied)
    y = keras.layers.Concatenate()([a, b])
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(y))
    model = layers.wrap(keras.Model(inputs, outputs))
    assert np.isnan(_constants_at(model, "after_add")).all()
    np.testing.assert_array_equal(
        _constants_at(model, "after_multiply"), [0.0] * 4
    )


class _Blur(keras.layers.Layer):
    """A custom spatial layer that refuses inputs smaller than 3x3."""

    def call(self, x):
        return keras.ops.average_pool(x, 3, strides=1, padding="valid")


def test_custom_layers_get_constants_on_inputs_of_their_own_shape():
    graph.register_passthrough(_Blur)
    try:
        values = _constants_at(
            _chain(keras.layers.Activation("sigmoid"), _Blur()), "consumer"
        )
    finally:
        graph.registry._REGISTRY.unregister(_Blur)
    np.testing.assert_allclose(values, [0.5] * 4)


class _SamePaddedBlur(keras.layers.Layer):
    """A custom spatial layer that zero-pads: constants vary at borders."""

    def call(self, x):
        return keras.ops.average_pool(x, 3, strides=1, padding="same") * 1.0 + (
            keras.ops.depthwise_conv(
                x, keras.ops.ones((3, 3, x.shape[-1], 1)) / 9.0, padding="same"
            )
        )


def test_a_custom_layer_that_pads_makes_constants_vary():
    graph.register_passthrough(_SamePaddedBlur)
    try:
        values = _constants_at(
            _chain(keras.layers.Activation("sigmoid"), _SamePaddedBlur()),
            "consumer",
        )
    finally:
        graph.registry._REGISTRY.unregister(_SamePaddedBlur)
    assert np.isnan(values).all()


def test_equal_layers_share_a_result_but_other_configs_do_not():
    # Built-in weightless layers are evaluated once per distinct call: the
    # class, config, input shapes and values decide, not the layer object.
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="producer")(inputs)
    branches = []
    for name, slope in (("a", 0.5), ("b", 0.5), ("c", 0.25)):
        y = keras.layers.Activation("sigmoid", name=f"sigmoid_{name}")(x)
        y = keras.layers.LeakyReLU(negative_slope=slope, name=f"leaky_{name}")(
            ops.subtract(y, 1.0)
        )
        branches.append(keras.layers.Conv2D(2, 1, name=f"consumer_{name}")(y))
    outputs = keras.layers.Concatenate()(branches)
    model = layers.wrap(keras.Model(inputs, outputs))

    # sigmoid(0) - 1 = -0.5, then the slope.
    np.testing.assert_allclose(_constants_at(model, "consumer_a"), [-0.25] * 4)
    np.testing.assert_allclose(_constants_at(model, "consumer_b"), [-0.25] * 4)
    np.testing.assert_allclose(_constants_at(model, "consumer_c"), [-0.125] * 4)
