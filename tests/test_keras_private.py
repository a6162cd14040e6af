"""Tests for the deferred variables of ekg_keras._keras_private."""

import keras
import numpy as np
import pytest

from ekg_keras._keras_private import deferred_variables
from ekg_keras._keras_private import initialize_deferred


def _dense_built_deferred():
    layer = keras.layers.Dense(3, bias_initializer="ones")
    with deferred_variables():
        layer(keras.Input((2,)))
    return layer


def test_deferred_variables_start_with_the_given_values():
    layer = _dense_built_deferred()
    kernel = np.arange(6, dtype="float32").reshape(2, 3)

    initialize_deferred([(layer.kernel, kernel)])

    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
    # Not listed: the initializer's value.
    np.testing.assert_array_equal(layer.bias.numpy(), np.ones(3))
    outputs = layer(np.ones((1, 2), "float32"))
    np.testing.assert_allclose(outputs, [[4.0, 6.0, 8.0]])


def test_initialize_deferred_assigns_variables_that_have_a_value():
    layer = keras.layers.Dense(2)
    layer.build((None, 2))

    initialize_deferred([(layer.kernel, np.eye(2, dtype="float32"))])

    np.testing.assert_array_equal(layer.kernel.numpy(), np.eye(2))


def test_a_value_of_the_wrong_shape_is_refused():
    layer = _dense_built_deferred()

    with pytest.raises(ValueError, match=r"should have shape \(2, 3\)"):
        initialize_deferred([(layer.kernel, np.zeros((3, 2), "float32"))])


def test_an_error_inside_the_scope_leaves_no_variable_pending():
    layer = keras.layers.Dense(3, bias_initializer="ones")
    with pytest.raises(RuntimeError, match="stop"), deferred_variables():
        layer(keras.Input((2,)))
        raise RuntimeError("stop")

    np.testing.assert_array_equal(layer.bias.numpy(), np.ones(3))
    with keras.StatelessScope():  # Would initialize leftovers: none.
        pass
    np.testing.assert_array_equal(layer.bias.numpy(), np.ones(3))


def test_after_a_refused_value_no_variable_is_left_pending():
    layer = _dense_built_deferred()

    with pytest.raises(ValueError):
        initialize_deferred([(layer.kernel, np.zeros((3, 2), "float32"))])

    np.testing.assert_array_equal(layer.bias.numpy(), np.ones(3))
    assert layer.kernel.numpy().shape == (2, 3)
