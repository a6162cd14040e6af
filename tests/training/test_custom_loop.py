"""Tests for ekg_keras.training.custom_loop: what a loop outside `fit`
needs (building from a batch spec, the epoch a backup restores)."""

import keras
import numpy as np
import tensorflow as tf

from ekg_keras.training import custom_loop


def test_build_from_spec_and_initial_epoch():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x = np.zeros((8, 4), "float32")
    y = np.zeros((8,), "int32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    custom_loop.build_from_spec(model, dataset.element_spec)
    assert model.compiled
    assert custom_loop.initial_epoch(model) == 0
    custom_loop.set_initial_epoch(model, 3)
    assert custom_loop.initial_epoch(model) == 3
