"""Tests for the CIFAR ResNets of `ekg_keras.models.cifar_resnet`."""

import re

import keras
import numpy as np
import pytest

from ekg_keras import models
from ekg_keras.models.cifar_resnet import zero_pad_shortcut


def _macs(model, include_dense=True):
    """Multiply-accumulates of the Conv2D (and Dense) layers of `model`."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, c_in, c_out = layer.kernel.shape
            h_out, w_out = layer.output.shape[1:3]
            total += h_out * w_out * kh * kw * c_in * c_out
        elif include_dense and isinstance(layer, keras.layers.Dense):
            c_in, c_out = layer.kernel.shape
            total += c_in * c_out
    return total


def _layers_of(model, layer_type):
    return [layer for layer in model.layers if isinstance(layer, layer_type)]


def _expected_params(blocks, num_classes=10, widths=(16, 32, 64)):
    """Weights of a projection CIFAR ResNet, BN moving statistics included.

    Each BN layer holds gamma, beta, moving mean and moving variance.
    """
    bn = 4
    total = 3 * 3 * 3 * widths[0] + bn * widths[0]  # stem
    c_in = widths[0]
    for c in widths:
        for block in range(blocks):
            first = block == 0 and c != c_in
            total += 9 * (c_in if first else c) * c + 9 * c * c + 2 * bn * c
            if first:
                total += c_in * c + bn * c  # 1x1 projection and its BN
        c_in = c
    return total + widths[-1] * num_classes + num_classes  # dense


def test_projection_resnet56_macs():
    model = models.resnet56()
    assert _macs(model) == 125_747_840
    assert _macs(model, include_dense=False) == 125_747_200


def test_projection_resnet20_macs():
    model = models.resnet20()
    assert round(_macs(model) / 1e6, 2) == 40.81


@pytest.mark.parametrize(
    "builder, depth, conv_macs",
    [
        (models.resnet20, 20, 40_550_400),
        (models.resnet32, 32, 68_861_952),
        (models.resnet56, 56, 125_485_056),
        (models.resnet110, 110, 252_887_040),
    ],
)
def test_zero_pad_conv_macs_and_depth(builder, depth, conv_macs):
    model = builder(shortcut="zero_pad")
    assert _macs(model, include_dense=False) == conv_macs
    # The weighted layers are the convolutions and the dense layer.
    convs = _layers_of(model, keras.layers.Conv2D)
    assert len(convs) + 1 == depth
    assert model.name == f"resnet{depth}"


def test_projection_resnet56_parameter_count():
    model = models.resnet56()
    expected = _expected_params(blocks=9)
    assert expected == 860_026  # EKG reports 0.860 M, moving stats included
    assert model.count_params() == expected
    bn_channels = sum(
        layer.gamma.shape[0]
        for layer in _layers_of(model, keras.layers.BatchNormalization)
    )
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == expected - 2 * bn_channels == 855_770


@pytest.mark.parametrize("shortcut", ["projection", "zero_pad"])
def test_structure(shortcut):
    model = models.resnet20(shortcut=shortcut)
    convs = _layers_of(model, keras.layers.Conv2D)
    # 19 3x3 convolutions, plus a 1x1 projection in each of 2 stages.
    projections = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(projections) == (2 if shortcut == "projection" else 0)
    assert len(convs) == 19 + len(projections)
    assert all(not c.use_bias and c.padding == "same" for c in convs)
    assert sorted({c.filters for c in convs}) == [16, 32, 64]
    assert len(_layers_of(model, keras.layers.Add)) == 9
    layer_names = [layer.name for layer in model.layers]
    assert len(set(layer_names)) == len(layer_names)
    assert not any("/" in n for n in layer_names)


def test_output_shape_and_forward_pass():
    model = models.resnet20(num_classes=7)
    assert model.output.shape == (None, 7)
    x = np.random.uniform(size=(4, 32, 32, 3)).astype("float32")
    y = model(x, training=False)
    assert y.shape == (4, 7)
    assert np.all(np.isfinite(y))


def test_outputs_logits():
    model = models.resnet20()
    dense = _layers_of(model, keras.layers.Dense)
    assert len(dense) == 1
    assert dense[0].activation is keras.activations.linear
    assert dense[0] is model.layers[-1]


def test_initialisers_and_batch_norm_settings():
    model = models.resnet20()
    for conv in _layers_of(model, keras.layers.Conv2D):
        init = conv.kernel_initializer
        assert isinstance(init, keras.initializers.VarianceScaling)
        assert (init.scale, init.mode) == (2.0, "fan_out")
    (dense,) = _layers_of(model, keras.layers.Dense)
    assert isinstance(dense.kernel_initializer, keras.initializers.RandomNormal)
    assert dense.kernel_initializer.stddev == 0.01
    for bn in _layers_of(model, keras.layers.BatchNormalization):
        assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)


@pytest.mark.parametrize("zero_init", [False, True])
def test_zero_init_residual(zero_init):
    model = models.resnet20(zero_init_residual=zero_init)
    zero_gamma = [
        bn
        for bn in _layers_of(model, keras.layers.BatchNormalization)
        if not np.any(keras.ops.convert_to_numpy(bn.gamma))
    ]
    # One zero-gamma BN per block, the one that feeds the Add.
    assert len(zero_gamma) == (9 if zero_init else 0)
    add_inputs = [
        t for add in _layers_of(model, keras.layers.Add) for t in add.input
    ]
    for bn in zero_gamma:
        assert any(bn.output is t for t in add_inputs)


def _check_zero_pad(shortcut_model, x):
    y = keras.ops.convert_to_numpy(shortcut_model(x))
    sub = x[:, ::2, ::2, :]
    c = x.shape[-1]
    assert y.shape == sub.shape[:3] + (2 * c,)
    np.testing.assert_array_equal(y[..., c // 2 : c // 2 + c], sub)
    assert not np.any(y[..., : c // 2])
    assert not np.any(y[..., c // 2 + c :])


@pytest.mark.parametrize("size", [8, 7])
def test_zero_pad_shortcut_helper(size):
    inputs = keras.Input((size, size, 16))
    outputs = zero_pad_shortcut(inputs, 32, strides=2)
    shortcut_model = keras.Model(inputs, outputs)
    assert shortcut_model.count_params() == 0
    x = np.random.normal(size=(2, size, size, 16)).astype("float32")
    _check_zero_pad(shortcut_model, x)


def test_zero_pad_shortcuts_inside_resnet20():
    model = models.resnet20(shortcut="zero_pad")
    # Each downsampling shortcut starts at a 1x1 pooling of the block input
    # and ends at the Reshape back to 4D; both appear once per shortcut.
    pools = _layers_of(model, keras.layers.MaxPooling2D)
    merges = [
        layer
        for layer in _layers_of(model, keras.layers.Reshape)
        if len(layer.output.shape) == 4
    ]
    assert len(pools) == len(merges) == 2
    for pool, merge in zip(pools, merges):
        shortcut_model = keras.Model(pool.input, merge.output)
        assert shortcut_model.count_params() == 0
        assert _macs(shortcut_model) == 0
        x = np.random.normal(size=(2, *pool.input.shape[1:])).astype("float32")
        _check_zero_pad(shortcut_model, x)


def test_projection_accepts_any_input_size():
    model = models.resnet20(input_shape=(None, None, 3), num_classes=4)
    for size in (32, 20):
        x = np.zeros((1, size, size, 3), "float32")
        assert model(x).shape == (1, 4)


def test_width():
    model = models.resnet20(width=8)
    convs = _layers_of(model, keras.layers.Conv2D)
    assert sorted({c.filters for c in convs}) == [8, 16, 32]


@pytest.mark.parametrize("shortcut", ["projection", "zero_pad"])
def test_keras_save_load_round_trip(shortcut, tmp_path):
    model = models.resnet20(shortcut=shortcut)
    x = np.random.uniform(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / "resnet20.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.name == model.name
    assert loaded.count_params() == model.count_params()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
    )


@pytest.mark.slow
def test_one_step_fit():
    model = models.resnet20()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = np.random.uniform(size=(8, 32, 32, 3)).astype("float32")
    y = np.random.randint(0, 10, size=(8,))
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"depth": 21},
            re.escape(
                "`depth` should be 6n+2 (20, 32, 56, 110, ...). "
                "Received: depth=21"
            ),
        ),
        ({"depth": 2}, "Received: depth=2"),
        ({"depth": 20.0}, "Received: depth=20.0"),
        ({"depth": 20, "shortcut": "B"}, "Received: shortcut='B'"),
        ({"depth": 20, "num_classes": 0}, "Received: num_classes=0"),
        ({"depth": 20, "width": 0}, "Received: width=0"),
        ({"depth": 20, "input_shape": (32, 32)}, "Received: input_shape="),
        ({"depth": 20, "input_shape": 32}, "Received: input_shape=32"),
        (
            {"depth": 20, "shortcut": "zero_pad", "input_shape": (None, 32, 3)},
            "static height and width",
        ),
    ],
    ids=[
        "depth_21",
        "depth_2",
        "depth_float",
        "shortcut",
        "num_classes",
        "width",
        "input_rank",
        "input_int",
        "zero_pad_dynamic",
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.resnet_cifar(**kwargs)


def test_shortcut_error_lists_valid_values():
    with pytest.raises(ValueError, match="'projection', 'zero_pad'"):
        models.resnet20(shortcut="option_a")
