"""Tests for ekg_keras.recalibrate_batchnorm."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_testing import randomize_batchnorm

import ekg_keras


def _model():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn1", momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 1, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return randomize_batchnorm(keras.Model(inputs, keras.layers.Dense(2)(x)))


def test_statistics_are_exact_averages_of_batch_statistics():
    model = _model()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 6, 6, 3)).astype("float32") * 2 + 1
    batches = [x[:8], x[8:16], x[16:]]
    weights_before = {
        w.path: w.numpy().copy()
        for w in model.weights
        if "moving" not in w.name
    }
    # Reference: the first normalization's input does not depend on any
    # statistic, so its batch moments are computed directly.
    conv = keras.Model(model.inputs, model.get_layer("conv").output)
    means = [conv(b).numpy().mean((0, 1, 2)) for b in batches]
    variances = [conv(b).numpy().var((0, 1, 2)) for b in batches]
    used = ekg_keras.recalibrate_batchnorm(
        model, tf.data.Dataset.from_tensor_slices(x).batch(8)
    )
    assert used == 3
    bn = model.get_layer("bn1")
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), np.mean(means, 0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), np.mean(variances, 0), rtol=1e-4, atol=1e-6
    )
    assert bn.momentum == 0.9
    for weight in model.weights:
        if "moving" not in weight.name:
            np.testing.assert_array_equal(
                weight.numpy(), weights_before[weight.path]
            )


def test_steps_labels_and_empty_data():
    model = _model()
    x = np.ones((16, 6, 6, 3), "float32")
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(16))).batch(4)
    assert ekg_keras.recalibrate_batchnorm(model, data, steps=2) == 2
    with pytest.raises(ValueError, match="empty"):
        ekg_keras.recalibrate_batchnorm(model, data.take(0))


def test_mirrored_strategy_matches_one_device(mirrored):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 6, 6, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(x).batch(16)
    keras.utils.set_random_seed(2)
    single = _model()
    keras.utils.set_random_seed(2)
    with mirrored.scope():
        distributed = _model()
        distributed.set_weights(single.get_weights())
    ekg_keras.recalibrate_batchnorm(single, data.unbatch().batch(8))
    ekg_keras.recalibrate_batchnorm(distributed, data)
    # Each replica sees 8 samples per batch, as the single device does.
    for name in ("bn1", "bn2"):
        a, b = single.get_layer(name), distributed.get_layer(name)
        np.testing.assert_allclose(
            a.moving_mean.numpy(), b.moving_mean.numpy(), rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            a.moving_variance.numpy(),
            b.moving_variance.numpy(),
            rtol=1e-4,
            atol=1e-5,
        )
