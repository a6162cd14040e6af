"""Helpers shared by the NPPM tests: a tiny residual model and its data."""

import keras
import numpy as np

# Small enough that the predictor trains and gamma is on within steps.
OPTIONS = {
    "memory_size": 8,
    "window": 1,
    "predictor_batch_size": 2,
    "encoder_units": 4,
    "recurrent_units": 4,
    "tau": 0.5,
    "initial_logit": 1.0,
}


def residual_model():
    """Two convolutions joined by a residual add (one shared gate group)
    and a third one of its own."""
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    a = keras.layers.BatchNormalization(name="a_bn")(a)
    a = keras.layers.ReLU()(a)
    b = keras.layers.Conv2D(6, 3, padding="same", name="b")(a)
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    b = keras.layers.ReLU()(b)
    c = keras.layers.Conv2D(8, 3, padding="same", name="c")(b)
    c = keras.layers.BatchNormalization(name="c_bn")(c)
    x = keras.layers.ReLU()(keras.layers.Add()([a, c]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))


def data(n=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8, 8, 3)).astype("float32")
    return x, (np.arange(n) % 4).astype("int32")
