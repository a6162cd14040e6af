"""Tests for ekg_keras.slim: physical removal of masked channels."""

import subprocess
import sys

import keras
import numpy as np
import pytest
from model_testing import images
from model_testing import layer_classes
from model_testing import max_relative_difference
from model_testing import mix_ffn_net
from model_testing import randomize_batchnorm

import ekg_keras
from ekg_keras import graph
from ekg_keras import layers
from ekg_keras.methods import apply_keep


def _mask_groups(model, drop):
    """Masks channels `drop[producer name]` of the producers' groups."""
    channel_graph = graph.trace(model, warn=False)
    keep = channel_graph.full_keep()
    for producer, channels in drop.items():
        group = channel_graph.channels(producer).outputs[0].group[0]
        keep[group][channels] = False
    apply_keep(model, channel_graph, keep)
    return model


def _soft_prune(model, drop):
    _mask_groups(model, drop)
    for layer in layers.prunable_layers(model):
        layer.zero_masked_weights()
    return model


def _sigmoid_model(consumer):
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="producer")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("sigmoid")(x)  # f(0) = 0.5
    if consumer == "dense":
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(4, name="consumer")(x)
    else:
        x = keras.layers.Conv2D(
            4, consumer, padding="same", use_bias=False, name="consumer"
        )(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2)(x)
    return randomize_batchnorm(keras.Model(inputs, outputs))


@pytest.mark.parametrize("consumer", ["dense", 1])
def test_constant_of_masked_channels_is_folded_exactly(consumer):
    masked = _mask_groups(
        layers.wrap(_sigmoid_model(consumer)), {"producer": [0, 3, 4]}
    )
    slim = ekg_keras.slim(masked)
    x = images(4, size=6)
    assert slim.get_layer("consumer").use_bias
    assert slim.get_layer("producer").filters == 3
    assert max_relative_difference(slim(x), masked(x)) < 1e-5


def test_fold_into_a_padded_convolution_is_exact_with_a_ones_channel():
    masked = _mask_groups(layers.wrap(_sigmoid_model(3)), {"producer": [1]})
    slim = ekg_keras.slim(masked)
    x = images(4, size=6)
    assert max_relative_difference(slim(x), masked(x)) < 1e-5
    ones = slim.get_layer("consumer_ones")
    assert ones.trainable is False
    assert slim.get_layer("consumer").kernel.shape == (3, 3, 6, 4)


def test_bias_fold_into_a_padded_convolution_warns_about_the_border():
    masked = _mask_groups(layers.wrap(_sigmoid_model(3)), {"producer": [1]})
    with pytest.warns(UserWarning, match="zero-padded image border"):
        slim = ekg_keras.slim(masked, fold="bias")
    x = images(4, size=6)
    assert max_relative_difference(slim(x), masked(x)) > 1e-4
    with pytest.raises(ValueError, match="fold='nope'"):
        ekg_keras.slim(masked, fold="nope")


def test_soft_mode_folds_the_batchnorm_constant():
    # After soft zeroing, BN (inference mode) outputs beta - gamma*mean/std
    # for the zeroed filters; slim must keep that contribution.
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="producer")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 1, name="consumer")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = randomize_batchnorm(keras.Model(inputs, keras.layers.Dense(2)(x)))
    soft = _soft_prune(layers.wrap(model, mode="soft"), {"producer": [0, 2, 5]})
    slim = ekg_keras.slim(soft)
    x = images(4, size=6)
    assert slim.get_layer("producer").filters == 3
    assert max_relative_difference(slim(x), soft(x)) < 1e-5


def test_soft_mode_requires_zeroed_filters():
    model = layers.wrap(_sigmoid_model("dense"), mode="soft")
    _mask_groups(model, {"producer": [0]})
    with pytest.raises(ValueError, match="zero_masked_weights"):
        ekg_keras.slim(model)


def test_nested_model_is_slimmed_inside():
    inner_inputs = keras.Input((8, 8, 6))
    y = keras.layers.Conv2D(6, 3, padding="same", name="inner_conv")(
        inner_inputs
    )
    y = keras.layers.BatchNormalization(name="inner_bn")(y)
    inner = keras.Model(inner_inputs, keras.layers.ReLU()(y), name="inner")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="outer_conv")(inputs)
    x = keras.layers.Conv2D(6, 1, name="mid")(inner(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = randomize_batchnorm(keras.Model(inputs, keras.layers.Dense(2)(x)))
    masked = _mask_groups(
        layers.wrap(model), {"outer_conv": [0, 1], "inner_conv": [5]}
    )
    slim = ekg_keras.slim(masked)
    nested = slim.get_layer("inner")
    assert isinstance(nested, keras.Model)
    assert nested.get_layer("inner_conv").kernel.shape == (3, 3, 4, 5)
    x = images(3, size=8)
    assert max_relative_difference(slim(x), masked(x)) < 1e-5


def test_sequential_and_untouched_input():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(8, 3, name="c1"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(8, 3, name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    masked = _mask_groups(
        layers.wrap(randomize_batchnorm(model)), {"c1": [0, 7], "c2": [1, 2, 3]}
    )
    masks_before = [
        layer.filter_mask.numpy().copy()
        for layer in layers.prunable_layers(masked)
    ]
    slim = ekg_keras.slim(masked)
    x = images(2, size=6)
    assert max_relative_difference(slim(x), masked(x)) < 1e-5
    assert slim.get_layer("c2").kernel.shape == (3, 3, 6, 5)
    for layer, before in zip(layers.prunable_layers(masked), masks_before):
        np.testing.assert_array_equal(layer.filter_mask.numpy(), before)


@pytest.mark.slow
def test_slim_keras_file_loads_without_ekg_keras(tmp_path):
    model = randomize_batchnorm(ekg_keras.models.resnet20())
    slim = ekg_keras.prune(model, flops=0.5, verbose=0)
    assert all(name.startswith("keras.") for name in layer_classes(slim))
    path = tmp_path / "slim.keras"
    slim.save(path)
    x = images(2)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, keras\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        f"y = m(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "assert 'ekg_keras' not in sys.modules\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(y))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=180,
        env={
            "KERAS_BACKEND": "tensorflow",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # The other process runs with the default oneDNN setting, whatever
    # this one's is: equal to float32 rounding relative to the scale.
    loaded, expected = np.load(tmp_path / "y.npy"), np.asarray(slim(x))
    assert loaded.shape == expected.shape
    assert max_relative_difference(loaded, expected) < 1e-5


def test_mix_ffn_hidden_width_slims_through_reshapes_and_depthwise():
    model = mix_ffn_net(side=4, width=16)
    channel_graph = graph.trace(model, warn=False)
    hidden = channel_graph.groups[
        channel_graph.channels("mlp_in").outputs[0].group[0]
    ]
    assert hidden.prunable and hidden.size == 64
    assert "mix" in hidden.members
    x = np.random.default_rng(0).standard_normal((2, 16, 16)).astype("float32")

    masked = ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)
    slim = ekg_keras.slim(masked)

    kept = slim.get_layer("mlp_in").units
    assert kept < 64
    assert slim.get_layer("to_image").output.shape == (None, 4, 4, kept)
    assert slim.get_layer("mix").output.shape == (None, 4, 4, kept)
    assert slim.get_layer("to_tokens").output.shape == (None, 16, kept)
    assert max_relative_difference(slim(x), masked(x)) < 1e-4
