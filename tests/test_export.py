"""Tests for ekg_keras.export: TF SavedModel of the slim model."""

import numpy as np
import tensorflow as tf
from model_testing import images
from model_testing import randomize_batchnorm

import ekg_keras


def test_export_slims_a_masked_model_and_serves_the_same_outputs(tmp_path):
    model = randomize_batchnorm(ekg_keras.models.resnet20())
    masked = ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)
    exported = ekg_keras.export(
        masked, tmp_path / "saved", keras_path=tmp_path / "slim.keras"
    )
    assert not ekg_keras.layers.prunable_layers(exported)
    assert exported.count_params() < masked.count_params()
    served = tf.saved_model.load(str(tmp_path / "saved"))
    x = images(3)
    np.testing.assert_allclose(
        served.serve(tf.constant(x)).numpy(),
        np.asarray(masked(x)),
        rtol=1e-4,
        atol=1e-5,
    )
    assert (tmp_path / "slim.keras").exists()
