"""A `run_layer_test` helper for Keras layers.

In the spirit of keras-rs's `src/testing/test_case.py`: one call builds a
layer, checks its output shape and weight counts, trains it for one step
inside a tiny model, round-trips its config and saves and reloads it as a
`.keras` file.

Test modules import it as `import layer_testing`: pytest's default
("prepend") import mode puts `tests/`, the directory of the rootdir
`conftest.py`, on `sys.path`.
"""

import os
import tempfile

import keras
import numpy as np


def random_inputs(shape, seed=0):
    """A float32 array of `shape` drawn from a standard normal."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype("float32")


def assert_same_weights(model_a, model_b):
    """Asserts equal layer and weight names and exactly equal values.

    Variable paths are not compared: a model loaded from a file names its
    variables without the model's own name as prefix.
    """
    assert [layer.name for layer in model_a.layers] == [
        layer.name for layer in model_b.layers
    ]
    assert [w.name for w in model_a.weights] == [
        w.name for w in model_b.weights
    ]
    for a, b in zip(model_a.weights, model_b.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(b),
            err_msg=a.path,
        )


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights,
    fit_preserves=(),
    prepare_for_saving=None,
):
    """Runs the standard checks on `layer_cls(**init_kwargs)`.

    Args:
        layer_cls: The layer class.
        init_kwargs: Keyword arguments of the constructor.
        input_shape: Shape of the test input, batch dimension included.
        expected_output_shape: Shape of the output, batch included.
        expected_num_trainable_weights: Number of trainable weights.
        expected_num_non_trainable_weights: Number of non-trainable weights.
        fit_preserves: Names of weights that one training step must leave
            unchanged (every trainable weight must change).
        prepare_for_saving: Optional `fn(layer)` called before the `.keras`
            round trip, to give the layer non-default state.
    """
    x = random_inputs(input_shape, seed=1)

    # Build, output shape and weight counts.
    layer = layer_cls(**init_kwargs)
    y = layer(x)
    assert tuple(y.shape) == tuple(expected_output_shape)
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert (
        len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    )
    assert len(layer.weights) == (
        expected_num_trainable_weights + expected_num_non_trainable_weights
    )

    # Config round trip, directly and through Keras serialization.
    config = layer.get_config()
    revived = layer_cls.from_config(config)
    assert type(revived) is layer_cls
    assert revived.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    deserialized = keras.saving.deserialize_keras_object(serialized)
    assert type(deserialized) is layer_cls
    assert deserialized.get_config() == config

    # One training step inside a tiny model.
    model = keras.Sequential(
        [keras.Input(input_shape[1:]), layer_cls(**init_kwargs)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    trained = model.layers[0]
    before = {w.name: w.numpy().copy() for w in trained.weights}
    target = random_inputs(expected_output_shape, seed=2)
    history = model.fit(x, target, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for weight in trained.trainable_weights:
        assert not np.array_equal(weight.numpy(), before[weight.name]), (
            f"Training did not change '{weight.name}'."
        )
    for name in fit_preserves:
        (weight,) = [w for w in trained.weights if w.name == name]
        np.testing.assert_array_equal(weight.numpy(), before[name])

    # `.keras` round trip: same class, outputs and weights.
    if prepare_for_saving is not None:
        prepare_for_saving(trained)
    expected = keras.ops.convert_to_numpy(model(x))
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    assert type(loaded.layers[0]) is layer_cls
    assert loaded.layers[0].get_config() == trained.get_config()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x)), expected
    )
    assert_same_weights(model, loaded)
