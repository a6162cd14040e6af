"""Tests for ekg_keras.numerics: NaN or infinity stops with an error that
says where, in data, losses, scores and training."""

import keras
import numpy as np
import pytest

import ekg_keras
from ekg_keras.numerics import NonFiniteError
from ekg_keras.numerics import StopOnNonFinite
from ekg_keras.numerics import check_finite
from ekg_keras.numerics import check_finite_data


def _model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="b")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))


def _data(n=48):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8, 8, 3)).astype("float32")
    return x, (np.arange(n) % 4).astype("int32")


def test_check_finite_names_what_and_where():
    assert check_finite([1.0, 2.0], "scores") == [1.0, 2.0]
    with pytest.raises(NonFiniteError, match="scores at group 3 should be"):
        check_finite([1.0, np.nan], "scores", "group 3")
    x = np.zeros((4, 2, 2))
    x[2, 0, 1] = np.inf
    with pytest.raises(NonFiniteError, match="sample 2 \\(and 0 others\\)"):
        check_finite_data(x)


def test_nan_in_the_search_data_is_refused_before_searching():
    x, y = _data()
    x[5, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="`data` should hold finite"):
        ekg_keras.EKGSearch(_model(), 0.5, (x, y), verbose=0).run()


def test_nan_weights_stop_the_search_and_the_importance_pass():
    x, y = _data()
    model = _model()
    kernel = model.get_layer("b").kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    search = ekg_keras.EKGSearch(
        model, 0.5, (x, y), finetune=False, val_per_class=4, verbose=0
    )
    with pytest.raises(NonFiniteError, match="validation loss at EKG step 0"):
        search.run()
    masked = ekg_keras.wrap(model)
    graph = ekg_keras.graph.trace(masked)
    evaluator = ekg_keras.SubnetworkEvaluator(masked, graph, x, y)
    with pytest.raises(
        NonFiniteError, match="importance scores at group \\d+ \\(a\\)"
    ):
        evaluator.importance()


def test_nan_training_loss_names_the_epoch_and_the_layer():
    x, y = _data()
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(1e30), loss="mse")
    with pytest.raises(NonFiniteError, match="in epoch 1; first non-finite"):
        model.fit(
            x,
            np.eye(4)[y] * 1e30,
            epochs=2,
            verbose=0,
            callbacks=[StopOnNonFinite()],
        )
