"""Tests for ekg_keras.fold_batchnorm: exact folding, and what stays."""

import warnings

import keras
import numpy as np
import pytest
from model_testing import images
from model_testing import layer_classes
from model_testing import max_relative_difference
from model_testing import randomize_batchnorm

import ekg_keras
from ekg_keras.batchnorm import batchnorm_layers

TOLERANCE = 1e-5


def batchnorms(model):
    """The batch normalizations of `model`, nested models included."""
    return batchnorm_layers(model)


def fold_without_warnings(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return ekg_keras.fold_batchnorm(model)


def test_resnet20_folds_every_batchnorm_exactly_and_saves(tmp_path):
    model = randomize_batchnorm(
        ekg_keras.models.resnet20(input_shape=(16, 16, 3))
    )
    before = [w.copy() for w in model.get_weights()]
    folded = fold_without_warnings(model)
    x = images(4, 16)
    assert batchnorms(model) and not batchnorms(folded)
    assert max_relative_difference(folded(x), model(x)) < TOLERANCE
    # The input model is untouched.
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "folded.keras"
    folded.save(path)
    assert all(name.startswith("keras.") for name in layer_classes(folded))
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(x), folded(x), rtol=1e-6, atol=1e-6)


def test_mobilenetv2_depthwise_convolutions_fold_exactly():
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None
    )
    model = randomize_batchnorm(model)
    folded = fold_without_warnings(model)
    kinds = {type(layer).__name__ for layer in folded.layers}
    assert "DepthwiseConv2D" in kinds and not batchnorms(folded)
    x = images(4, 32)
    assert max_relative_difference(folded(x), model(x)) < TOLERANCE


def test_dense_head_of_a_sequential_model_folds():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(6, 3, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(12, use_bias=False),
            keras.layers.BatchNormalization(epsilon=1e-3),
            keras.layers.ReLU(),
            keras.layers.Dense(5),
            keras.layers.BatchNormalization(center=False),
        ]
    )
    model = randomize_batchnorm(model)
    folded = fold_without_warnings(model)
    assert not batchnorms(folded)
    assert isinstance(folded, keras.Model)
    assert all(
        layer.use_bias
        for layer in folded.layers[1:]
        if hasattr(layer, "use_bias")
    )
    x = images(5, 8)
    assert max_relative_difference(folded(x), model(x)) < TOLERANCE


@pytest.mark.parametrize(
    "producer",
    [
        keras.layers.Conv2D(8, 3, padding="same", groups=2),
        keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same"),
        keras.layers.SeparableConv2D(6, 3, depth_multiplier=2),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_every_producer_kind_folds_exactly(producer):
    inputs = keras.Input((8, 8, 4))
    outputs = keras.layers.BatchNormalization()(producer(inputs))
    model = randomize_batchnorm(keras.Model(inputs, outputs))
    folded = fold_without_warnings(model)
    assert not batchnorms(folded)
    x = images(3, 8, channels=4)
    assert max_relative_difference(folded(x), model(x)) < TOLERANCE


def test_conv1d_folds_exactly():
    inputs = keras.Input((10, 3))
    x = keras.layers.Conv1D(5, 3)(inputs)
    outputs = keras.layers.BatchNormalization()(x)
    model = randomize_batchnorm(keras.Model(inputs, outputs))
    folded = fold_without_warnings(model)
    data = np.random.default_rng(0).standard_normal((2, 10, 3))
    assert not batchnorms(folded)
    assert max_relative_difference(folded(data), model(data)) < TOLERANCE


def test_folds_through_exact_pass_throughs_and_nested_models():
    inner_in = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inner_in)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.AveragePooling2D(3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    inner = keras.Model(inner_in, x, name="inner")
    inputs = keras.Input((8, 8, 3))
    y = inner(inputs)
    y = keras.layers.Conv2D(5, 1)(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    outputs = keras.layers.BatchNormalization()(y)
    model = randomize_batchnorm(keras.Model(inputs, outputs))
    folded = fold_without_warnings(model)
    assert not batchnorms(folded)
    assert isinstance(folded.get_layer("inner"), keras.Model)
    x = images(3, 8)
    assert max_relative_difference(folded(x), model(x)) < TOLERANCE


def max_pool_model(gamma_sign):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.MaxPooling2D()(x)
    bn = keras.layers.BatchNormalization(name="after_pool")
    model = randomize_batchnorm(keras.Model(inputs, bn(x)))
    bn.gamma.assign(gamma_sign * np.abs(bn.gamma.numpy()))
    return model


def test_max_pooling_is_crossed_only_with_positive_scales():
    positive = max_pool_model(np.ones(4))
    folded = fold_without_warnings(positive)
    x = images(3, 8)
    assert not batchnorms(folded)
    assert max_relative_difference(folded(x), positive(x)) < TOLERANCE

    mixed = max_pool_model(np.array([1.0, -1.0, 1.0, 1.0]))
    with pytest.warns(UserWarning, match="after_pool.*not positive"):
        kept = ekg_keras.fold_batchnorm(mixed)
    assert [bn.name for bn in batchnorms(kept)] == ["after_pool"]
    assert max_relative_difference(kept(x), mixed(x)) < TOLERANCE


def test_batchnorms_that_cannot_fold_stay_and_are_named():
    inputs = keras.Input((8, 8, 3))
    # Before the convolution: nothing produces its input.
    x = keras.layers.BatchNormalization(name="bn_input")(inputs)
    # After a non-linear activation.
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_relu")(x)
    x = keras.layers.BatchNormalization(name="bn_after_relu")(x)
    # The convolution's output also feeds the residual addition.
    shared = keras.layers.Conv2D(4, 3, padding="same", name="conv_shared")(x)
    y = keras.layers.BatchNormalization(name="bn_shared")(shared)
    y = keras.layers.Add()([y, shared])
    # This one folds.
    y = keras.layers.Conv2D(4, 1, name="conv_ok")(y)
    outputs = keras.layers.BatchNormalization(name="bn_ok")(y)
    model = randomize_batchnorm(keras.Model(inputs, outputs))
    with pytest.warns(UserWarning) as records:
        folded = ekg_keras.fold_batchnorm(model)
    message = " ".join(str(r.message) for r in records)
    assert "kept 3 batch normalization" in message
    assert "'bn_input': its input is an input of its model" in message
    assert "'bn_after_relu': 'conv_relu' has the non-linear" in message
    assert "'bn_shared': the output of 'conv_shared' is also used" in message
    assert "bn_ok" not in message
    assert sorted(bn.name for bn in batchnorms(folded)) == [
        "bn_after_relu",
        "bn_input",
        "bn_shared",
    ]
    x = images(3, 8)
    assert max_relative_difference(folded(x), model(x)) < TOLERANCE


def test_a_masked_model_is_slimmed_then_folded():
    model = randomize_batchnorm(
        ekg_keras.models.resnet20(input_shape=(16, 16, 3))
    )
    masked = ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)
    folded = fold_without_warnings(masked)
    assert not ekg_keras.layers.prunable_layers(folded)
    assert not batchnorms(folded)
    assert folded.count_params() < model.count_params()
    x = images(4, 16)
    assert max_relative_difference(folded(x), masked(x)) < TOLERANCE


def test_folds_around_a_lambda_with_a_python_lambda():
    # Its config cannot rebuild the function (refused in safe mode).
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Lambda(lambda t: t * 0.5 + 1.0, name="affine")(x)
    model = randomize_batchnorm(keras.Model(inputs, x))
    folded = fold_without_warnings(model)
    assert not batchnorms(folded)
    assert folded.get_layer("affine").function is (
        model.get_layer("affine").function
    )
    x = images(2, size=8)
    assert max_relative_difference(folded(x), model(x)) < TOLERANCE


def test_a_subclassed_model_is_refused():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional or built Sequential"):
        ekg_keras.fold_batchnorm(Subclassed())
