"""Tests for ekg_keras.training.inner_model: the network a method's
training model trains, as the model's class declares it."""

import keras
import pytest

import ekg_keras
from ekg_keras.methods.ekg import EKGFineTuning
from ekg_keras.methods.lfpc import CriteriaSampler
from ekg_keras.methods.nppm import PerformanceMaximization
from ekg_keras.methods.sp import StageSuperNet
from ekg_keras.training import inner_model


def _model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))


def test_a_plain_model_is_its_own_network():
    model = _model()
    assert inner_model(model) is model


def test_a_training_wrapper_gives_the_network_it_trains():
    sfp = ekg_keras.SoftFilterPruning(_model(), rate=0.25)
    assert inner_model(sfp) is sfp.network


@pytest.mark.parametrize(
    "wrapper, attribute",
    [
        (ekg_keras.SoftFilterPruning, "network"),
        (EKGFineTuning, "student"),
        (CriteriaSampler, "network"),
        (PerformanceMaximization, "network"),
        (StageSuperNet, "network"),
    ],
)
def test_every_method_wrapper_declares_its_network(wrapper, attribute):
    assert wrapper.inner_model_attribute == attribute


def test_an_attribute_without_a_model_is_an_error():
    class Broken(keras.Model):
        inner_model_attribute = "network"

    with pytest.raises(TypeError, match="names 'network'.*Received: NoneType"):
        inner_model(Broken())
