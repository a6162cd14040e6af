"""Tests for ekg_keras._warnings: every warning the library emits points
at the user's call, not at the library line that raised it."""

import warnings

import keras
import numpy as np
from model_testing import randomize_batchnorm

import ekg_keras
from ekg_keras._warnings import user_stacklevel


def _lambda_model():
    """Convolutions around a `Lambda`, which the channel graph does not
    know (its channels stay whole, with a warning)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="twice")(x)
    for _ in range(2):
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def _sigmoid_model():
    """A sigmoid before a zero-padded convolution: its removed channels
    are constants 0.5, which `slim(fold="bias")` folds with a warning."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("sigmoid")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    return randomize_batchnorm(keras.Model(inputs, outputs))


def _recorded(call):
    """The warnings `call()` emits (every one, not once per place)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        call()
    return record


def _assert_from_here(record, expected):
    assert len(record) == expected, [str(w.message) for w in record]
    for warning in record:
        assert warning.filename == __file__, (
            warning.filename,
            str(warning.message),
        )


def test_prune_trace_and_count_flops_warn_at_the_callers_line():
    model = _lambda_model()
    record = _recorded(lambda: ekg_keras.prune(model, flops=0.7, verbose=0))
    _assert_from_here(record, 1)
    assert "layer 'twice' (Lambda)" in str(record[0].message)
    _assert_from_here(_recorded(lambda: ekg_keras.graph.trace(model)), 1)
    # count_flops traces without warning; anything it emits would be here.
    _assert_from_here(_recorded(lambda: ekg_keras.count_flops(model)), 0)


def test_slim_fold_and_strip_warn_at_the_callers_line():
    masked = ekg_keras.prune(_sigmoid_model(), flops=0.6, slim=False, verbose=0)
    record = _recorded(lambda: ekg_keras.slim(masked, fold="bias"))
    _assert_from_here(record, 1)
    assert "non-zero constants" in str(record[0].message)
    # A batch normalization right after the input cannot fold.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization()(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(x))
    record = _recorded(lambda: ekg_keras.fold_batchnorm(model))
    _assert_from_here(record, 1)
    assert "cannot be folded" in str(record[0].message)
    # A masked sigmoid convolution stripped keeps f(0) = 0.5.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="sigmoid")(inputs)
    wrapped = ekg_keras.wrap(keras.Model(inputs, x))
    wrapped.layers[1].filter_mask.assign([1.0, 0.0, 1.0, 1.0])
    _assert_from_here(_recorded(lambda: ekg_keras.strip(wrapped)), 1)


def test_user_stacklevel_is_the_first_frame_outside_the_package():
    def here():
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            warnings.warn("from a test", stacklevel=user_stacklevel())
        return record

    # Outside the package the level is 1: the caller's own line.
    (warning,) = here()
    assert warning.filename == __file__
    assert warning.lineno == here.__code__.co_firstlineno + 3
    assert np.isscalar(user_stacklevel()) and user_stacklevel() == 1
