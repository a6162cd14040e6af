"""Tests for the "cosine" fine-tuner and its learning-rate callback."""

import math

import keras
import numpy as np
import pytest
from lfpc_testing import data
from lfpc_testing import two_conv_model

import ekg_keras
from ekg_keras.methods.lfpc import CosineFineTuning
from ekg_keras.methods.lfpc import CosineLearningRate
from ekg_keras.training import Fitter
from ekg_keras.training import finetuners


class _RecordRates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate.numpy()))


def _dense_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    return model


def _expected(steps, total, base=0.1, final=0.0):
    return [
        base * (final + (1 - final) * (1 + math.cos(math.pi * t / total)) / 2)
        for t in steps
    ]


def test_the_rate_follows_a_half_cosine_over_the_steps():
    x, y = np.ones((32, 3)), np.zeros((32, 2))
    model, record = _dense_model(), _RecordRates()
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[CosineLearningRate(0.1), record],
    )
    np.testing.assert_allclose(record.rates, _expected(range(8), 8), rtol=1e-6)
    # A restored run (the optimizer's step restored) continues the curve.
    model, record = _dense_model(), _RecordRates()
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(4)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        initial_epoch=1,
        verbose=0,
        callbacks=[CosineLearningRate(0.1, final_fraction=0.5), record],
    )
    np.testing.assert_allclose(
        record.rates, _expected(range(4, 8), 8, final=0.5), rtol=1e-6
    )


def test_the_phase_brings_sgd_and_the_schedule():
    assert "cosine" in finetuners.names()
    tuner = finetuners.get("cosine")
    assert isinstance(tuner, CosineFineTuning)
    model = ekg_keras.wrap(two_conv_model())
    fitter = Fitter(data(), learning_rate=0.02, weight_decay=1e-4, verbose=0)
    phase = tuner.phase(model, 2, fitter)
    assert phase.loss is not None and phase.epochs == 2
    optimizer = phase.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert optimizer.nesterov and optimizer.momentum == 0.9
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.02)
    assert optimizer.weight_decay == pytest.approx(1e-4)
    (schedule,) = phase.callbacks
    assert schedule.base_rate == pytest.approx(0.02)
    own = tuner.phase(model, 1, fitter, learning_rate=0.5, momentum=0.8)
    assert float(own.optimizer.learning_rate.numpy()) == pytest.approx(0.5)
    assert own.optimizer.momentum == 0.8
    fitter.fit(phase)
    assert float(optimizer.learning_rate.numpy()) < 0.02  # It decayed.
    assert tuner.options_from(
        {"learning_rate": 0.1, "weight_decay": 0.0, "momentum": 0.9, "x": 1}
    ) == {"learning_rate": 0.1, "weight_decay": 0.0, "momentum": 0.9}


def test_bad_options_say_what_was_expected():
    tuner = finetuners.get("cosine")
    model = ekg_keras.wrap(two_conv_model())
    fitter = Fitter(data(), verbose=0)
    fitter.learning_rate = None
    with pytest.raises(ValueError, match="needs a positive initial"):
        tuner.phase(model, 1, fitter)
    with pytest.raises(ValueError, match="`final_fraction` should be in"):
        tuner.phase(model, 1, fitter, learning_rate=0.1, final_fraction=2)
