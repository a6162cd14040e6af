"""Tests for `ekg_keras.layers.PrunableMultiHeadAttention` and its heads."""

import keras
import layer_testing
import numpy as np
import pytest
import tensorflow as tf

import ekg_keras
from ekg_keras.layers import PrunableMultiHeadAttention
from ekg_keras.layers import is_prunable
from ekg_keras.layers import prunable_layers
from ekg_keras.layers.attention import PrunableAttentionHeads

HEADS, KEY_DIM, WIDTH, TOKENS = 4, 3, 6, 5


def _layer(mode="hard", **kwargs):
    layer = PrunableMultiHeadAttention(
        HEADS, KEY_DIM, mode=mode, name="attention", **kwargs
    )
    x = layer_testing.random_inputs((2, TOKENS, WIDTH))
    layer(x, x)
    rng = np.random.default_rng(3)
    masks = {id(mask) for mask in layer.mask_weights()}
    for weight in layer.weights:
        if id(weight) not in masks:
            weight.assign(rng.normal(0, 0.5, weight.shape).astype("float32"))
    return layer


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _plain_twin(layer, heads, outputs):
    """A plain layer with only the kept heads and output channels, its
    weights sliced from `layer`'s by hand."""
    twin = keras.layers.MultiHeadAttention(
        len(heads), KEY_DIM, output_shape=len(outputs)
    )
    x = np.zeros((1, TOKENS, WIDTH), "float32")
    twin(x, x)
    for mine, theirs in (
        (layer.query_dense, twin.query_dense),
        (layer.key_dense, twin.key_dense),
        (layer.value_dense, twin.value_dense),
    ):
        theirs.kernel.assign(mine.kernel.numpy()[:, heads])
        theirs.bias.assign(mine.bias.numpy()[heads])
    kernel = layer.output_dense.kernel.numpy()[heads][..., outputs]
    twin.output_dense.kernel.assign(kernel)
    twin.output_dense.bias.assign(layer.output_dense.bias.numpy()[outputs])
    return twin


def test_masks_are_non_trainable_ones_and_change_nothing():
    layer = _layer()
    plain = keras.layers.MultiHeadAttention(HEADS, KEY_DIM)
    x = layer_testing.random_inputs((2, TOKENS, WIDTH), seed=4)
    plain(x, x)
    masks = {id(m) for m in layer.mask_weights()}
    plain.set_weights([w.numpy() for w in layer.weights if id(w) not in masks])

    assert layer.filter_mask.shape == (WIDTH,)
    assert layer.head_mask.shape == (HEADS,)
    for mask in layer.mask_weights():
        assert not mask.trainable
        np.testing.assert_array_equal(mask.numpy(), 1.0)
    assert {w.path for w in layer.non_trainable_weights} == {
        "attention/mask",
        "attention/head_mask",
    }
    np.testing.assert_allclose(_np(layer(x, x)), _np(plain(x, x)), atol=1e-6)


def test_hard_masks_equal_a_layer_without_those_heads_and_channels():
    layer = _layer()
    layer.head_mask.assign([1.0, 0.0, 1.0, 0.0])
    layer.filter_mask.assign([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    heads, outputs = np.array([0, 2]), np.array([0, 1, 3, 5])
    x = layer_testing.random_inputs((2, TOKENS, WIDTH), seed=5)

    y = _np(layer(x, x))

    np.testing.assert_array_equal(y[..., [2, 4]], 0.0)
    expected = _np(_plain_twin(layer, heads, outputs)(x, x))
    np.testing.assert_allclose(y[..., outputs], expected, atol=1e-5)


def test_hard_masked_heads_get_zero_gradients():
    layer = _layer()
    layer.head_mask.assign([1.0, 0.0, 1.0, 1.0])
    x = tf.constant(layer_testing.random_inputs((2, TOKENS, WIDTH), seed=6))
    variables = [p.kernel for p in layer.heads.projections()]

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x, x)))
    gradients = tape.gradient(loss, variables)

    for gradient in gradients:
        gradient = gradient.numpy()
        np.testing.assert_array_equal(gradient[:, 1], 0.0)
        assert np.abs(gradient[:, [0, 2, 3]]).max() > 0


def test_soft_mode_ignores_masks_until_zero_masked_weights():
    layer = _layer(mode="soft")
    layer.head_mask.assign([1.0, 1.0, 0.0, 1.0])
    layer.filter_mask.assign([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    x = layer_testing.random_inputs((2, TOKENS, WIDTH), seed=7)
    before = {id(w): w.numpy().copy() for w in layer.weights}
    hard = _layer(mode="hard")
    hard.set_weights(layer.get_weights())
    hard.head_mask.assign(np.ones(HEADS))
    hard.filter_mask.assign(np.ones(WIDTH))

    np.testing.assert_allclose(_np(layer(x, x)), _np(hard(x, x)), atol=1e-6)
    layer.zero_masked_weights()

    for projection in layer.heads.projections():
        kernel = projection.kernel.numpy()
        np.testing.assert_array_equal(kernel[:, 2], 0.0)
        np.testing.assert_array_equal(
            np.delete(kernel, 2, axis=1),
            np.delete(before[id(projection.kernel)], 2, axis=1),
        )
        np.testing.assert_array_equal(projection.bias.numpy()[2], 0.0)
    output = layer.output_dense
    np.testing.assert_array_equal(output.kernel.numpy()[..., 0], 0.0)
    np.testing.assert_array_equal(output.bias.numpy()[0], 0.0)
    # Zeroed value columns silence the head: the hard-masked layer agrees.
    hard.set_weights(layer.get_weights())
    np.testing.assert_allclose(_np(layer(x, x)), _np(hard(x, x)), atol=1e-6)


def test_heads_are_a_prunable_part_with_the_head_mask():
    layer = _layer()
    heads = layer.heads

    assert isinstance(heads, PrunableAttentionHeads)
    assert is_prunable(heads)
    assert heads.filter_mask is layer.head_mask
    assert heads.mode == "hard"
    assert layer.parts == (heads,)
    axes = [axes for _, axes in heads._output_weights()]
    assert axes == [(1,), (0,)] * 3


def test_config_round_trips_and_mode_is_validated():
    layer = _layer(mode="soft", value_dim=2, output_shape=7)
    config = layer.get_config()

    revived = PrunableMultiHeadAttention.from_config(config)
    serialized = keras.saving.serialize_keras_object(layer)
    deserialized = keras.saving.deserialize_keras_object(serialized)

    assert config["mode"] == "soft"
    assert revived.get_config() == config
    assert type(deserialized) is PrunableMultiHeadAttention
    assert deserialized.get_config() == config
    with pytest.raises(ValueError, match="`mode` should be one of"):
        PrunableMultiHeadAttention(2, 3, mode="medium")


def _attention_model(mode="hard"):
    tokens = keras.Input((TOKENS, WIDTH), name="tokens")
    x = PrunableMultiHeadAttention(HEADS, KEY_DIM, mode=mode, name="attn")(
        tokens, tokens
    )
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(3, name="out")(x))


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_keras_file_restores_weights_and_both_masks(tmp_path, mode):
    model = _attention_model(mode)
    layer = model.get_layer("attn")
    layer.head_mask.assign([0.0, 1.0, 1.0, 0.0])
    layer.filter_mask.assign([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    x = layer_testing.random_inputs((2, TOKENS, WIDTH), seed=8)
    expected = _np(model(x))

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")

    twin = loaded.get_layer("attn")
    assert type(twin) is PrunableMultiHeadAttention
    assert twin.mode == mode
    np.testing.assert_array_equal(twin.head_mask.numpy(), [0, 1, 1, 0])
    np.testing.assert_array_equal(twin.heads.filter_mask.numpy(), [0, 1, 1, 0])
    np.testing.assert_array_equal(_np(loaded(x)), expected)
    layer_testing.assert_same_weights(model, loaded)


def test_wrap_keeps_outputs_and_strip_bakes_both_masks():
    tokens = keras.Input((TOKENS, WIDTH))
    x = keras.layers.MultiHeadAttention(HEADS, KEY_DIM, name="attn")(
        tokens, tokens
    )
    plain = keras.Model(tokens, x)
    x = layer_testing.random_inputs((2, TOKENS, WIDTH), seed=9)

    wrapped = ekg_keras.wrap(plain)
    layer = wrapped.get_layer("attn")
    np.testing.assert_allclose(_np(wrapped(x)), _np(plain(x)), atol=1e-6)
    assert prunable_layers(wrapped) == [layer, layer.heads]

    layer.head_mask.assign([1.0, 1.0, 0.0, 1.0])
    layer.filter_mask.assign([1.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    stripped = ekg_keras.strip(wrapped)

    assert type(stripped.get_layer("attn")) is keras.layers.MultiHeadAttention
    np.testing.assert_allclose(_np(stripped(x)), _np(wrapped(x)), atol=1e-6)
