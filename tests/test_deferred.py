"""Tests for ekg_keras.deferred: building a model without running its
initializers, then giving its variables their values."""

import keras
import numpy as np

import ekg_keras


def test_a_copy_built_deferred_gets_the_given_values():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with ekg_keras.deferred.deferred_variables():
        copy = keras.Sequential.from_config(model.get_config())
    ekg_keras.deferred.initialize_deferred(
        zip(copy.weights, model.get_weights())
    )
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(copy(x), model(x), rtol=1e-6)
