"""Tests for the prunable layers of `ekg_keras.layers`.

Each prunable class is checked against its built-in base layer: weights
and config, the hard mask (exact zeros, zero gradients), the
soft mask (untouched forward pass, `zero_masked_weights`, regrowth),
`.keras` saving and use under `tf.distribute.MirroredStrategy`.
"""

import dataclasses
from collections.abc import Callable

import keras
import layer_testing
import numpy as np
import pytest
import tensorflow as tf

from ekg_keras import layers as prunable_layers
from ekg_keras.layers import PRUNABLE_CLASSES
from ekg_keras.layers import PrunableBatchNormalization
from ekg_keras.layers import PrunableConv2D
from ekg_keras.layers import PrunableDense
from ekg_keras.layers import PrunableDepthwiseConv2D
from ekg_keras.layers import PrunableLayerNormalization
from ekg_keras.layers import PrunableSeparableConv2D
from ekg_keras.layers import is_prunable


@dataclasses.dataclass(frozen=True)
class Case:
    """A prunable class, how to build it and what it must look like."""

    cls: type
    base: type
    kwargs: dict
    input_shape: tuple
    output_shape: tuple
    channels: int
    num_trainable: int
    num_non_trainable: int
    # Channel `c` -> {weight name: index of the entries feeding `c`}.
    slices: Callable

    def __str__(self):
        groups = self.kwargs.get("groups", 1)
        return self.cls.__name__ + (f"-groups{groups}" if groups > 1 else "")


ALL = slice(None)

CONV = Case(
    PrunableConv2D,
    keras.layers.Conv2D,
    {"filters": 4, "kernel_size": 3},
    (2, 5, 5, 3),
    (2, 3, 3, 4),
    channels=4,
    num_trainable=2,
    num_non_trainable=1,
    slices=lambda c: {"kernel": (..., c), "bias": (c,)},
)
DEPTHWISE = Case(
    PrunableDepthwiseConv2D,
    keras.layers.DepthwiseConv2D,
    {"kernel_size": 3, "depth_multiplier": 2},
    (2, 5, 5, 3),
    (2, 3, 3, 6),
    channels=6,
    num_trainable=2,
    num_non_trainable=1,
    # Output channel c comes from input channel c // 2, multiplier c % 2.
    slices=lambda c: {"kernel": (ALL, ALL, c // 2, c % 2), "bias": (c,)},
)
SEPARABLE = Case(
    PrunableSeparableConv2D,
    keras.layers.SeparableConv2D,
    {"filters": 4, "kernel_size": 3, "depth_multiplier": 2},
    (2, 5, 5, 3),
    (2, 3, 3, 4),
    channels=4,
    num_trainable=3,
    num_non_trainable=1,
    slices=lambda c: {"pointwise_kernel": (..., c), "bias": (c,)},
)
DENSE = Case(
    PrunableDense,
    keras.layers.Dense,
    {"units": 4},
    (3, 5),
    (3, 4),
    channels=4,
    num_trainable=2,
    num_non_trainable=1,
    slices=lambda c: {"kernel": (ALL, c), "bias": (c,)},
)
BATCH_NORM = Case(
    PrunableBatchNormalization,
    keras.layers.BatchNormalization,
    {},
    (4, 2, 2, 5),
    (4, 2, 2, 5),
    channels=5,
    num_trainable=2,
    num_non_trainable=3,  # moving mean, moving variance, mask
    slices=lambda c: {"gamma": (c,), "beta": (c,)},
)

GROUPED = Case(
    PrunableConv2D,
    keras.layers.Conv2D,
    {"filters": 4, "kernel_size": 3, "groups": 2},
    (2, 5, 5, 4),
    (2, 3, 3, 4),
    channels=4,
    num_trainable=2,
    num_non_trainable=1,
    slices=lambda c: {"kernel": (..., c), "bias": (c,)},
)


def _conv_case(rank, transpose=False):
    """`Conv{rank}D` (or its transpose) with 4 filters of size 3 on 3
    input channels; a transposed kernel is (*k, out, in)."""
    name = f"Conv{rank}D" + ("Transpose" if transpose else "")
    size_in, size_out = (3, 5) if transpose else (5, 3)
    return Case(
        getattr(prunable_layers, f"Prunable{name}"),
        getattr(keras.layers, name),
        {"filters": 4, "kernel_size": 3},
        (2,) + (size_in,) * rank + (3,),
        (2,) + (size_out,) * rank + (4,),
        channels=4,
        num_trainable=2,
        num_non_trainable=1,
        slices=(
            (lambda c: {"kernel": (..., c, ALL), "bias": (c,)})
            if transpose
            else (lambda c: {"kernel": (..., c), "bias": (c,)})
        ),
    )


DEPTHWISE_1D = Case(
    prunable_layers.PrunableDepthwiseConv1D,
    keras.layers.DepthwiseConv1D,
    {"kernel_size": 3, "depth_multiplier": 2},
    (2, 5, 3),
    (2, 3, 6),
    channels=6,
    num_trainable=2,
    num_non_trainable=1,
    slices=lambda c: {"kernel": (ALL, c // 2, c % 2), "bias": (c,)},
)
SEPARABLE_1D = Case(
    prunable_layers.PrunableSeparableConv1D,
    keras.layers.SeparableConv1D,
    {"filters": 4, "kernel_size": 3, "depth_multiplier": 2},
    (2, 5, 3),
    (2, 3, 4),
    channels=4,
    num_trainable=3,
    num_non_trainable=1,
    slices=lambda c: {"pointwise_kernel": (..., c), "bias": (c,)},
)
LAYER_NORM = Case(
    PrunableLayerNormalization,
    keras.layers.LayerNormalization,
    {},
    (4, 2, 2, 5),
    (4, 2, 2, 5),
    channels=5,
    num_trainable=2,
    num_non_trainable=1,
    slices=lambda c: {"gamma": (c,), "beta": (c,)},
)

WITH_ACTIVATION = [
    CONV,
    GROUPED,
    _conv_case(1),
    _conv_case(3),
    _conv_case(1, transpose=True),
    _conv_case(2, transpose=True),
    _conv_case(3, transpose=True),
    DEPTHWISE,
    DEPTHWISE_1D,
    SEPARABLE,
    SEPARABLE_1D,
    DENSE,
]
CASES = WITH_ACTIVATION + [BATCH_NORM, LAYER_NORM]
# Every case with the call arguments to test it under; BN in both phases.
CALLS = [pytest.param(case, {}, id=str(case)) for case in WITH_ACTIVATION]
CALLS += [
    pytest.param(BATCH_NORM, {"training": True}, id="bn-training"),
    pytest.param(BATCH_NORM, {"training": False}, id="bn-inference"),
]


def _masked(case):
    """The channels the tests mask: 1 and the one before last."""
    return [1, case.channels - 2]


def _mask_values(case):
    mask = np.ones(case.channels, "float32")
    mask[_masked(case)] = 0.0
    return mask


def _kept(case):
    return [c for c in range(case.channels) if c not in _masked(case)]


def _randomize(layer, seed=0):
    """Random non-zero weights; positive variances; the mask is kept."""
    rng = np.random.default_rng(seed)
    masks = {id(mask) for mask in layer.mask_weights()}
    for weight in layer.weights:
        if id(weight) in masks:
            continue
        if weight.name == "moving_variance":
            value = rng.uniform(0.5, 1.5, weight.shape)
        else:
            value = rng.normal(0.0, 1.0, weight.shape)
        weight.assign(value.astype("float32"))


def _built_layer(case, mode, **kwargs):
    """A built layer of `case` with random weights and a masked channel."""
    layer = case.cls(**{**case.kwargs, **kwargs}, mode=mode)
    layer.build(case.input_shape)
    _randomize(layer)
    layer.filter_mask.assign(_mask_values(case))
    return layer


def _base_twin(case, layer):
    """The built-in base layer with the same config and weights."""
    config = dict(layer.get_config())
    del config["mode"]
    base = case.base.from_config(config)
    base.build(case.input_shape)
    base.set_weights(
        [w.numpy() for w in layer.weights if w is not layer.filter_mask]
    )
    return base


def _weights_by_name(layer):
    return {w.name: w.numpy().copy() for w in layer.weights}


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_run_layer_test(case):
    def mask_some_channels(layer):
        layer.filter_mask.assign(_mask_values(case))

    layer_testing.run_layer_test(
        case.cls,
        init_kwargs=case.kwargs,
        input_shape=case.input_shape,
        expected_output_shape=case.output_shape,
        expected_num_trainable_weights=case.num_trainable,
        expected_num_non_trainable_weights=case.num_non_trainable,
        fit_preserves=("mask",),
        prepare_for_saving=mask_some_channels,
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_mask_weight_is_non_trainable_ones_per_output_channel(case):
    layer = case.cls(**case.kwargs)
    assert layer.filter_mask is None
    layer.build(case.input_shape)

    masks = [w for w in layer.weights if w.name == "mask"]
    assert masks == [layer.filter_mask]
    assert not layer.filter_mask.trainable
    assert any(w is layer.filter_mask for w in layer.non_trainable_weights)
    assert tuple(layer.filter_mask.shape) == (case.channels,)
    assert case.output_shape[-1] == case.channels
    np.testing.assert_array_equal(
        layer.filter_mask.numpy(), np.ones(case.channels)
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_mode_is_validated_and_round_trips_through_config(case):
    assert case.cls(**case.kwargs).mode == "hard"
    with pytest.raises(ValueError, match="mode='medium'"):
        case.cls(**case.kwargs, mode="medium")

    for mode in ("hard", "soft"):
        layer = case.cls(**case.kwargs, mode=mode)
        config = layer.get_config()
        assert config["mode"] == mode

        revived = case.cls.from_config(config)
        assert revived.mode == mode
        assert revived.get_config() == config
        # Only `mode` is added to the base layer's config.
        base = case.base(**case.kwargs, name=layer.name)
        assert set(config) - set(base.get_config()) == {"mode"}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_is_instance_of_base_layer(case):
    layer = case.cls(**case.kwargs)
    assert isinstance(layer, case.base)
    assert layer.base_layer_class is case.base
    assert PRUNABLE_CLASSES[case.base] is case.cls
    assert is_prunable(layer)
    assert not is_prunable(case.base(**case.kwargs))


def test_prunable_classes_cover_exactly_the_tested_layers():
    # MultiHeadAttention takes two inputs; tests/layers/test_attention.py.
    attention = {
        keras.layers.MultiHeadAttention: (
            prunable_layers.PrunableMultiHeadAttention
        )
    }
    assert PRUNABLE_CLASSES == {case.base: case.cls for case in CASES} | (
        attention
    )


@pytest.mark.parametrize("case", WITH_ACTIVATION, ids=str)
def test_hard_mask_zeroes_masked_channels(case):
    # sigmoid(0) = 0.5: the masked channels are still exact zeros because
    # the mask multiplies the activated output.
    for activation in ("relu", "sigmoid"):
        layer = _built_layer(case, "hard", activation=activation)
        base = _base_twin(case, layer)
        x = layer_testing.random_inputs(case.input_shape)

        y, y_base = _np(layer(x)), _np(base(x))

        masked, kept = _masked(case), _kept(case)
        assert np.all(y[..., masked] == 0.0)
        np.testing.assert_array_equal(y[..., kept], y_base[..., kept])
        for c in masked:
            assert np.any(y_base[..., c] != 0.0)


@pytest.mark.parametrize("training", [True, False])
def test_hard_mask_zeroes_batch_norm_channels(training):
    case = BATCH_NORM
    layer = _built_layer(case, "hard")
    base = _base_twin(case, layer)
    x = layer_testing.random_inputs(case.input_shape)

    y = _np(layer(x, training=training))
    y_base = _np(base(x, training=training))

    masked, kept = _masked(case), _kept(case)
    assert np.all(y[..., masked] == 0.0)
    np.testing.assert_array_equal(y[..., kept], y_base[..., kept])
    assert np.all(y_base[..., masked] != 0.0)


@pytest.mark.parametrize("case, call_kwargs", CALLS)
def test_hard_mask_gives_masked_weights_zero_gradient(case, call_kwargs):
    layer = _built_layer(case, "hard")
    x = layer_testing.random_inputs(case.input_shape)
    # A weighted sum: a plain sum has a zero gradient for BN's gamma in
    # training mode (normalized values sum to zero) even when unmasked.
    weights = layer_testing.random_inputs(case.output_shape, seed=3)

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, **call_kwargs) * weights)
    grads = tape.gradient(loss, layer.trainable_weights)
    grads = {w.name: g.numpy() for w, g in zip(layer.trainable_weights, grads)}

    for c in range(case.channels):
        for name, index in case.slices(c).items():
            if c in _masked(case):
                assert np.all(grads[name][index] == 0.0), (name, c)
            else:
                assert np.all(grads[name][index] != 0.0), (name, c)


@pytest.mark.parametrize("case, call_kwargs", CALLS)
def test_soft_mask_leaves_forward_pass_alone(case, call_kwargs):
    layer = _built_layer(case, "soft")
    base = _base_twin(case, layer)
    x = layer_testing.random_inputs(case.input_shape)

    y = _np(layer(x, **call_kwargs))

    np.testing.assert_array_equal(y, _np(base(x, **call_kwargs)))
    assert np.all(y[..., _masked(case)] != 0.0)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_zero_masked_weights_zeroes_exactly_the_masked_slices(case):
    layer = _built_layer(case, "soft")
    before = _weights_by_name(layer)
    expected = _weights_by_name(layer)
    for c in _masked(case):
        for name, index in case.slices(c).items():
            expected[name][index] = 0.0
    assert all(np.all(v != 0.0) for n, v in before.items() if n != "mask")

    values = layer.masked_weight_values()

    # `masked_weight_values` computes, it does not assign.
    for name, value in _weights_by_name(layer).items():
        np.testing.assert_array_equal(value, before[name])
    assert {v.name for v, _ in values} == set(case.slices(0))
    for variable, value in values:
        np.testing.assert_array_equal(value, expected[variable.name])

    layer.zero_masked_weights()

    after = _weights_by_name(layer)
    assert set(after) == set(expected)
    for name, value in after.items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


@pytest.mark.parametrize("case, call_kwargs", CALLS)
def test_zeroed_weights_regrow_in_soft_mode_only(case, call_kwargs):
    x = layer_testing.random_inputs(case.input_shape)
    target = layer_testing.random_inputs(case.output_shape, seed=4)
    for mode in ("soft", "hard"):
        layer = _built_layer(case, mode)
        layer.zero_masked_weights()
        optimizer = keras.optimizers.SGD(0.1)

        with tf.GradientTape() as tape:
            outputs = layer(x, **call_kwargs)
            loss = tf.reduce_mean(tf.square(outputs - target))
        grads = tape.gradient(loss, layer.trainable_weights)
        optimizer.apply(grads, layer.trainable_weights)

        after = _weights_by_name(layer)
        for c in _masked(case):
            for name, index in case.slices(c).items():
                regrown = after[name][index] != 0.0
                if mode == "soft":
                    assert np.all(regrown), (name, c)
                else:
                    assert not np.any(regrown), (name, c)
        np.testing.assert_array_equal(
            layer.filter_mask.numpy(), _mask_values(case)
        )


def _all_classes_model():
    image = keras.Input((6, 6, 3), name="image")
    x = PrunableConv2D(4, 3, activation="relu", name="conv")(image)
    x = PrunableBatchNormalization(name="bn")(x)
    x = PrunableDepthwiseConv2D(
        3, depth_multiplier=2, padding="same", mode="soft", name="depthwise"
    )(x)
    x = PrunableSeparableConv2D(5, 3, activation="relu", name="separable")(x)
    x = PrunableConv2D(4, 1, use_bias=False, name="conv_no_bias")(x)
    x = PrunableLayerNormalization(name="layer_norm")(x)
    x = PrunableConv2D(4, 1, groups=2, name="grouped")(x)
    x = prunable_layers.PrunableConv2DTranspose(4, 2, name="up")(x)
    planar = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    signal = keras.Input((8, 3), name="signal")
    y = prunable_layers.PrunableConv1D(4, 3, name="conv1d")(signal)
    y = prunable_layers.PrunableDepthwiseConv1D(3, name="depthwise1d")(y)
    y = prunable_layers.PrunableSeparableConv1D(4, 3, name="separable1d")(y)
    y = prunable_layers.PrunableConv1DTranspose(4, 3, name="up1d")(y)
    y = keras.layers.GlobalAveragePooling1D(name="pool1d")(y)
    volume = keras.Input((4, 4, 4, 3), name="volume")
    z = prunable_layers.PrunableConv3D(4, 3, name="conv3d")(volume)
    z = prunable_layers.PrunableConv3DTranspose(4, 2, name="up3d")(z)
    z = keras.layers.GlobalAveragePooling3D(name="pool3d")(z)
    tokens = keras.Input((5, 4), name="tokens")
    t = prunable_layers.PrunableMultiHeadAttention(2, 3, name="attention")(
        tokens, tokens
    )
    t = keras.layers.GlobalAveragePooling1D(name="pool_tokens")(t)
    x = keras.layers.Concatenate(name="joined")([planar, y, z, t])
    outputs = PrunableDense(3, mode="soft", name="dense")(x)
    return keras.Model([image, signal, volume, tokens], outputs)


def _set_random_masks(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if is_prunable(layer):
            _randomize(layer, seed=seed)
            mask = np.ones(layer.filter_mask.shape, "float32")
            mask[rng.permutation(len(mask))[: len(mask) // 2]] = 0.0
            layer.filter_mask.assign(mask)
            if getattr(layer, "head_mask", None) is not None:
                layer.head_mask.assign([0.0, 1.0])


def test_keras_file_restores_every_prunable_class_and_mask(tmp_path):
    model = _all_classes_model()
    _set_random_masks(model)
    x = [
        layer_testing.random_inputs(shape)
        for shape in ((2, 6, 6, 3), (2, 8, 3), (2, 4, 4, 4, 3), (2, 5, 4))
    ]
    expected = _np(model(x))

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")

    np.testing.assert_array_equal(_np(loaded(x)), expected)
    layer_testing.assert_same_weights(model, loaded)
    prunable = [layer for layer in model.layers if is_prunable(layer)]
    assert {type(layer) for layer in prunable} == set(PRUNABLE_CLASSES.values())
    for layer in prunable:
        twin = loaded.get_layer(layer.name)
        assert type(twin) is type(layer)
        assert twin.mode == layer.mode
        assert 0 < layer.filter_mask.numpy().sum() < layer.filter_mask.shape[0]
        np.testing.assert_array_equal(
            twin.filter_mask.numpy(), layer.filter_mask.numpy()
        )


def test_weights_file_restores_masks(tmp_path):
    model = _all_classes_model()
    _set_random_masks(model)
    model.save_weights(tmp_path / "model.weights.h5")

    fresh = _all_classes_model()
    fresh.load_weights(tmp_path / "model.weights.h5")

    layer_testing.assert_same_weights(model, fresh)


def test_mirrored_strategy_respects_mask_set_outside_step(mirrored):
    strategy = mirrored
    with strategy.scope():
        inputs = keras.Input((4, 4, 2))
        conv = PrunableConv2D(3, 1, name="conv")
        model = keras.Model(inputs, conv(inputs))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = layer_testing.random_inputs((8, 4, 4, 2))
    target = layer_testing.random_inputs((8, 4, 4, 3), seed=1)
    # Trace the train and predict functions before the mask changes.
    model.fit(x, target, batch_size=4, epochs=1, verbose=0)
    assert np.all(model.predict(x, batch_size=4, verbose=0) != 0.0)

    conv.filter_mask.assign([1.0, 0.0, 1.0])  # Cross-replica context.
    before = _weights_by_name(conv)
    model.fit(x, target, batch_size=4, epochs=1, verbose=0)
    predictions = model.predict(x, batch_size=4, verbose=0)

    assert np.all(predictions[..., 1] == 0.0)
    assert np.all(predictions[..., [0, 2]] != 0.0)
    after = _weights_by_name(conv)
    for name in ("kernel", "bias"):
        np.testing.assert_array_equal(after[name][..., 1], before[name][..., 1])
        assert np.all(after[name][..., [0, 2]] != before[name][..., [0, 2]])
    for replica_mask in conv.filter_mask.value.values:
        np.testing.assert_array_equal(replica_mask.numpy(), [1.0, 0.0, 1.0])


@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
@pytest.mark.parametrize("rms_scaling", [False, True])
def test_layer_norm_hard_mask_normalizes_over_kept_channels(rms_scaling):
    case = LAYER_NORM
    layer = _built_layer(case, "hard", rms_scaling=rms_scaling)
    x = layer_testing.random_inputs(case.input_shape)
    kept = _kept(case)
    # The slim layer: a plain LayerNormalization over the kept channels.
    slim = keras.layers.LayerNormalization(rms_scaling=rms_scaling)
    slim.build(case.input_shape[:-1] + (len(kept),))
    slim.set_weights([w.numpy()[kept] for w in layer.weights[:-1]])

    y = _np(layer(x))

    assert np.all(y[..., _masked(case)] == 0.0)
    np.testing.assert_allclose(
        y[..., kept], _np(slim(x[..., kept])), rtol=1e-5, atol=1e-5
    )
    layer.filter_mask.assign(np.ones(case.channels, "float32"))
    base = _base_twin(case, layer)
    np.testing.assert_allclose(_np(layer(x)), _np(base(x)), atol=1e-5)


def test_layer_norm_gradients_and_soft_mode():
    case = LAYER_NORM
    x = layer_testing.random_inputs(case.input_shape)
    weights = layer_testing.random_inputs(case.output_shape, seed=3)
    layer = _built_layer(case, "hard")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * weights)
    grads = tape.gradient(loss, layer.trainable_weights)
    for grad in grads:
        assert np.all(grad.numpy()[_masked(case)] == 0.0)
        assert np.all(grad.numpy()[_kept(case)] != 0.0)
    soft = _built_layer(case, "soft")
    np.testing.assert_array_equal(_np(soft(x)), _np(_base_twin(case, soft)(x)))


def test_only_layer_norm_over_the_last_axis_is_wrapped():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.LayerNormalization(name="channels")(inputs)
    x = keras.layers.LayerNormalization(axis=[1, 2, 3], name="all")(x)
    wrapped = prunable_layers.wrap(keras.Model(inputs, x))
    assert is_prunable(wrapped.get_layer("channels"))
    assert type(wrapped.get_layer("all")) is keras.layers.LayerNormalization
