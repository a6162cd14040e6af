"""Small models and data shared by the LFPC tests."""

import keras
import numpy as np
from model_testing import randomize_batchnorm

import ekg_keras
from ekg_keras.methods.lfpc import CriteriaSampler


def two_conv_model(classes=4, size=8):
    """conv(8)-BN-ReLU-conv(16)-BN-ReLU-GAP-Dense: two prunable groups of
    different sizes (so the count logits have padded columns)."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.BatchNormalization(name="a_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="b")(x)
    x = keras.layers.BatchNormalization(name="b_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, name="fc")(x))
    return randomize_batchnorm(model)


def linear_head_model(classes=4, size=8):
    """conv(8)-BN-GAP-Dense: everything after the group's mask is linear,
    so the output of a mixture of masks is the mixture of the outputs."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.BatchNormalization(name="a_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, name="fc")(x))
    return randomize_batchnorm(model)


def data(n=64, size=8, classes=4, seed=0):
    """Random images whose labels depend on them (learnable)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, size, size, 3)).astype("float32")
    y = (x[:, : size // 2].mean(axis=(1, 2, 3)) > 0).astype("int32")
    y += 2 * (x[..., 0].mean(axis=(1, 2)) > 0).astype("int32")
    return x, y % classes


def sampler(model=None, flops=0.5, **kwargs):
    """A `CriteriaSampler` over a fresh hard-masked clone of `model`."""
    model = two_conv_model() if model is None else model
    return CriteriaSampler(ekg_keras.wrap(model), flops, **kwargs)


def randomize_logits(criteria_sampler, seed=0, scale=1.0):
    """Random criteria and count logits (padded columns stay unused)."""
    rng = np.random.default_rng(seed)
    for variable in criteria_sampler.trainable_weights:
        variable.assign(
            scale * rng.standard_normal(variable.shape).astype("float32")
        )
