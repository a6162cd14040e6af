"""Tests for `wrap` and `strip` of `ekg_keras.layers`.

`wrap` must turn exactly the five wrappable built-in layers, nested models
included, into prunable layers without changing outputs or the original
model; `strip` must turn them back into plain Keras layers with the hard
masks baked into the weights, loadable without `ekg_keras`.
"""

import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile

import keras
import layer_testing
import numpy as np
import pytest

from ekg_keras.layers import PRUNABLE_CLASSES
from ekg_keras.layers import PrunableDense
from ekg_keras.layers import is_prunable
from ekg_keras.layers import prunable_layers
from ekg_keras.layers import strip
from ekg_keras.layers import wrap

WRAPPABLE_NAMES = {
    "conv",
    "bn",
    "depthwise",
    "separable",
    "dense",
    "inner_conv",
    "inner_bn",
    "head_dense",
    "head_out",
}


class ScaledDense(keras.layers.Dense):
    """A user subclass of `Dense`, which `wrap` must leave alone."""

    def call(self, inputs):
        return 2.0 * super().call(inputs)


def _model(with_subclass=True):
    """All five wrappable types, a nested functional model and a nested
    Sequential, plus layers of other types."""
    inner_inputs = keras.Input((4, 4, 6), name="inner_image")
    h = keras.layers.Conv2D(6, 1, activation="relu", name="inner_conv")(
        inner_inputs
    )
    h = keras.layers.BatchNormalization(name="inner_bn")(h)
    inner = keras.Model(inner_inputs, h, name="inner")
    head = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, activation="relu", name="head_dense"),
            keras.layers.Dropout(0.5, name="dropout"),
            keras.layers.Dense(3, name="head_out"),
        ],
        name="head",
    )

    inputs = keras.Input((6, 6, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(1, depth_multiplier=2, name="depthwise")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.SeparableConv2D(6, 1, activation="relu", name="separable")(
        x
    )
    x = inner(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if with_subclass:
        x = ScaledDense(6, name="scaled")(x)
    x = keras.layers.Dense(6, activation="relu", name="dense")(x)
    model = keras.Model(inputs, head(x), name="outer")
    _randomize_batch_norms(model)
    return model


def _flat(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _flat(layer)


def _randomize_batch_norms(model, seed=0):
    """Non-trivial BN statistics, so that inference outputs depend on them."""
    rng = np.random.default_rng(seed)
    for layer in _flat(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            for weight in layer.weights:
                if weight.name in ("gamma", "moving_variance"):
                    value = rng.uniform(0.5, 1.5, weight.shape)
                elif weight.name != "mask":
                    value = rng.normal(0.0, 0.3, weight.shape)
                else:
                    continue
                weight.assign(value.astype("float32"))


def _set_random_masks(model, seed=0):
    """Masks half of the channels of every prunable layer."""
    rng = np.random.default_rng(seed)
    for layer in prunable_layers(model):
        mask = np.ones(layer.filter_mask.shape, "float32")
        mask[rng.permutation(len(mask))[: len(mask) // 2]] = 0.0
        layer.filter_mask.assign(mask)


def _images(batch=2):
    return layer_testing.random_inputs((batch, 6, 6, 3))


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _weights(model):
    return [w.numpy().copy() for w in model.weights]


def test_wrap_keeps_outputs():
    model = _model()
    x = _images()

    wrapped = wrap(model)

    np.testing.assert_allclose(
        _np(wrapped(x)), _np(model(x)), rtol=0, atol=1e-6
    )


def _lambda_model():
    """A `Lambda` whose function is local, with `arguments` and an
    `output_shape` function: a config rebuilds none of them."""

    def scale(x, factor):
        return x * factor

    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Lambda(
        scale,
        output_shape=lambda shape: shape,
        arguments={"factor": 3.0},
        name="scale",
    )(x)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def test_wrap_and_strip_call_the_lambda_function_itself():
    model = _lambda_model()
    original = model.get_layer("scale")
    for clone in (wrap(model), strip(wrap(model))):
        copy = clone.get_layer("scale")
        assert copy is not original
        assert copy.function is original.function
        assert copy.arguments == {"factor": 3.0}
        assert copy.compute_output_shape((1, 4, 4, 4)) == (1, 4, 4, 4)
        np.testing.assert_allclose(
            _np(clone(_images())), _np(model(_images())), rtol=0, atol=1e-6
        )


def test_wrap_converts_exactly_the_wrappable_layers():
    model = _model()

    wrapped = wrap(model)

    assert {layer.name for layer in prunable_layers(wrapped)} == (
        WRAPPABLE_NAMES
    )
    pairs = list(zip(_flat(model), _flat(wrapped)))
    assert len(pairs) == len(list(_flat(wrapped)))
    for old, new in pairs:
        assert new.name == old.name
        if old.name in WRAPPABLE_NAMES:
            assert type(new) is PRUNABLE_CLASSES[type(old)]
            assert new.mode == "hard"
            np.testing.assert_array_equal(
                new.filter_mask.numpy(), np.ones(new.filter_mask.shape)
            )
            new_weights = [w for w in new.weights if w is not new.filter_mask]
        else:
            assert type(new) is type(old)
            assert not is_prunable(new)
            new_weights = new.weights
        if not isinstance(old, keras.Model):
            assert [w.name for w in new_weights] == [
                w.name for w in old.weights
            ]
            for a, b in zip(new_weights, old.weights):
                np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert type(wrapped.get_layer("scaled")) is ScaledDense
    assert type(wrapped.get_layer("head")) is keras.Sequential


def test_wrap_of_a_compiled_model_is_compiled_with_the_same_weights():
    # The clone is compiled inside `clone_model`, whose optimizer needs the
    # new variables created (with their values) as each layer is built.
    model = _model()
    _randomize_batch_norms(model)
    model.compile(optimizer="sgd", loss="mse")
    x = _images()
    weights = _weights(model)

    wrapped = wrap(model)

    assert wrapped.compiled
    np.testing.assert_allclose(
        _np(wrapped(x)), _np(model(x)), rtol=0, atol=1e-6
    )
    wrapped.fit(x, np.zeros_like(_np(model(x))), epochs=1, verbose=0)
    assert not np.allclose(_np(wrapped(x)), _np(model(x)), atol=1e-6)
    for before, after in zip(weights, _weights(model)):
        np.testing.assert_array_equal(after, before)


def test_wrap_leaves_original_untouched():
    model = _model()
    x = _images()
    types = [type(layer) for layer in _flat(model)]
    weights = _weights(model)
    outputs = _np(model(x))

    wrapped = wrap(model)
    for layer in prunable_layers(wrapped):
        layer.filter_mask.assign(np.zeros(layer.filter_mask.shape))
    wrapped.get_layer("conv").kernel.assign(
        np.zeros(wrapped.get_layer("conv").kernel.shape)
    )

    assert [type(layer) for layer in _flat(model)] == types
    assert not any(is_prunable(layer) for layer in _flat(model))
    assert prunable_layers(model) == []
    for before, after in zip(weights, _weights(model)):
        np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(_np(model(x)), outputs)
    assert not {id(w) for w in model.weights} & {id(w) for w in wrapped.weights}


def test_wrap_soft_mode_reaches_nested_layers():
    wrapped = wrap(_model(), mode="soft")

    layers = prunable_layers(wrapped)
    assert {layer.name for layer in layers} == WRAPPABLE_NAMES
    for layer in layers:
        assert layer.mode == "soft"
        assert layer.get_config()["mode"] == "soft"


def test_wrapping_a_wrapped_model_keeps_masks():
    x = _images()
    wrapped = wrap(_model())
    _set_random_masks(wrapped)
    masks = {
        layer.name: layer.filter_mask.numpy()
        for layer in prunable_layers(wrapped)
    }

    soft = wrap(wrapped, mode="soft")
    hard_again = wrap(soft)

    for layer in prunable_layers(soft):
        assert layer.mode == "soft"
        np.testing.assert_array_equal(
            layer.filter_mask.numpy(), masks[layer.name]
        )
    assert {layer.mode for layer in prunable_layers(wrapped)} == {"hard"}
    assert {layer.mode for layer in prunable_layers(hard_again)} == {"hard"}
    for before, after in zip(_weights(wrapped), _weights(hard_again)):
        np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(_np(hard_again(x)), _np(wrapped(x)))


def test_wrap_sequential_model():
    model = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            keras.layers.Conv2D(3, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(2, name="dense"),
        ]
    )
    _randomize_batch_norms(model)
    x = layer_testing.random_inputs((2, 5, 5, 2))

    wrapped = wrap(model)

    assert type(wrapped) is keras.Sequential
    assert [type(layer).__name__ for layer in wrapped.layers] == [
        "PrunableConv2D",
        "PrunableBatchNormalization",
        "ReLU",
        "Flatten",
        "PrunableDense",
    ]
    np.testing.assert_allclose(
        _np(wrapped(x)), _np(model(x)), rtol=0, atol=1e-6
    )


def test_wrap_rejects_bad_mode():
    with pytest.raises(ValueError, match="mode='medium'"):
        wrap(_model(), mode="medium")


def test_strip_returns_only_builtin_layers():
    wrapped = wrap(_model(with_subclass=False))
    _set_random_masks(wrapped)

    stripped = strip(wrapped)

    assert prunable_layers(stripped) == []
    for layer in _flat(stripped):
        assert type(layer).__module__.startswith("keras.src."), layer
    config = json.dumps(keras.saving.serialize_keras_object(stripped))
    assert "ekg_keras" not in config
    assert "Prunable" not in config
    assert '"mode"' not in config
    names = [layer.name for layer in _flat(wrapped)]
    assert [layer.name for layer in _flat(stripped)] == names
    # The wrapped model keeps its prunable layers.
    assert len(prunable_layers(wrapped)) == len(WRAPPABLE_NAMES)


def test_strip_bakes_hard_masks_into_weights():
    x = _images()
    wrapped = wrap(_model(with_subclass=False))
    _set_random_masks(wrapped)
    weights = _weights(wrapped)
    expected = _np(wrapped(x))

    stripped = strip(wrapped)

    np.testing.assert_allclose(_np(stripped(x)), expected, rtol=0, atol=1e-6)
    for before, after in zip(weights, _weights(wrapped)):
        np.testing.assert_array_equal(after, before)
    conv = wrapped.get_layer("conv")
    masked = conv.filter_mask.numpy() == 0.0
    assert 0 < masked.sum() < len(masked)
    kernel, bias = stripped.get_layer("conv").get_weights()
    assert np.all(kernel[..., masked] == 0.0)
    assert np.all(bias[masked] == 0.0)
    np.testing.assert_array_equal(
        kernel[..., ~masked], conv.kernel.numpy()[..., ~masked]
    )
    np.testing.assert_array_equal(bias[~masked], conv.bias.numpy()[~masked])


def _sigmoid_model(mode):
    inputs = keras.Input((3,))
    outputs = PrunableDense(4, activation="sigmoid", mode=mode)(inputs)
    return keras.Model(inputs, outputs)


def test_strip_warns_when_masked_activation_is_nonzero_at_zero():
    x = layer_testing.random_inputs((2, 3))
    model = _sigmoid_model("hard")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strip(model)  # No mask yet: no warning.

    model.layers[1].filter_mask.assign([1.0, 0.0, 1.0, 1.0])
    with pytest.warns(UserWarning, match=r"f\(0\) = 0\.5"):
        stripped = strip(model)

    # What the warning is about: the stripped channel outputs sigmoid(0).
    np.testing.assert_array_equal(_np(stripped(x))[:, 1], [0.5, 0.5])
    assert np.all(_np(model(x))[:, 1] == 0.0)


def test_strip_does_not_warn_for_relu_masks():
    wrapped = wrap(_model(with_subclass=False))
    _set_random_masks(wrapped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strip(wrapped)


def test_strip_warning_points_at_the_caller():
    model = _sigmoid_model("hard")
    model.layers[1].filter_mask.assign([1.0, 0.0, 1.0, 1.0])
    with pytest.warns(UserWarning) as record:
        strip(model)
    assert record[0].filename == __file__


def test_strip_keeps_soft_mode_weights_as_they_are():
    model = _sigmoid_model("soft")
    model.layers[1].filter_mask.assign([1.0, 0.0, 1.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stripped = strip(model)

    kernel, bias = stripped.layers[1].get_weights()
    np.testing.assert_array_equal(kernel, model.layers[1].kernel.numpy())
    np.testing.assert_array_equal(bias, model.layers[1].bias.numpy())
    assert np.all(kernel[:, 1] != 0.0)


_LOAD_WITHOUT_EKG_KERAS = textwrap.dedent(
    """
    import json
    import sys

    class BlockEkgKeras:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "ekg_keras":
                raise ImportError("ekg_keras must not be needed")
            return None

    sys.meta_path.insert(0, BlockEkgKeras())

    import keras
    import numpy as np

    model = keras.saving.load_model(sys.argv[1])
    assert "ekg_keras" not in sys.modules
    outputs = keras.ops.convert_to_numpy(model(np.load(sys.argv[2])))
    print(json.dumps(outputs.astype("float64").tolist()))
    """
)


@pytest.mark.slow
def test_stripped_model_loads_without_ekg_keras(tmp_path):
    x = _images()
    wrapped = wrap(_model(with_subclass=False))
    _set_random_masks(wrapped)
    stripped = strip(wrapped)
    expected = _np(stripped(x))
    path = tmp_path / "stripped.keras"
    stripped.save(path)
    np.save(tmp_path / "x.npy", x)
    with zipfile.ZipFile(path) as archive:
        assert b"ekg_keras" not in archive.read("config.json")

    result = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_EKG_KERAS, path, "x.npy"],
        cwd=tmp_path,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    outputs = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=1e-6)
    assert np.any(expected != 0.0)
