"""Test-suite set-up shared by every test module.

TensorFlow can split the CPU into logical devices only before it initialises,
so the split for the `tf.distribute.MirroredStrategy` tests happens here, at
import time, before any test module touches TensorFlow.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_CPUS = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _CPUS[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Gives each test the same seeds and fresh layer-name counters."""
    # No garbage collection here: a full collection per test costs ~0.2 s
    # (about 1.5 minutes over the suite) and no test depends on it.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(scope="session")
def two_cpus():
    """The two logical CPU device names for MirroredStrategy tests."""
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, devices
    return [d.name for d in devices[:2]]


@pytest.fixture(scope="session")
def mirrored(two_cpus):
    """One MirroredStrategy over the two logical CPUs for the whole session.

    Several MirroredStrategy instances in one process can reuse collective
    instance keys across their compiled steps and abort with a shape
    mismatch, so tests share this one.
    """
    return tf.distribute.MirroredStrategy(two_cpus)


@pytest.fixture(scope="session")
def digits16():
    """The embedded digits data at 16x16 (4x cheaper than 32x32)."""
    import ekg_keras

    return ekg_keras.data.digits(batch_size=64, image_size=16)


@pytest.fixture(scope="session")
def trained_resnet20():
    """A ResNet-20 trained briefly on `digits16`; tests must not modify it."""
    import ekg_keras

    keras.utils.set_random_seed(0)
    # A fresh pipeline: the shuffle order of `digits16.train` depends on how
    # often earlier tests iterated it, and this model must not.
    train = ekg_keras.data.digits(batch_size=64, image_size=16).train
    model = ekg_keras.models.resnet20(input_shape=(16, 16, 3))
    steps = 6 * len(train)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.1, steps),
            momentum=0.9,
            nesterov=True,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train, epochs=6, verbose=0)
    return model


# Fixtures whose set-up trains or searches a network: a test that uses one
# is an end-to-end run, left out of `python3 dev.py test --quick`.
END_TO_END_FIXTURES = ("trained_resnet20",)


def pytest_collection_modifyitems(config, items):
    """Marks the tests on a trained network `slow`, so the quick subset
    never pays for training one (the full suite runs them all)."""
    del config
    for item in items:
        if any(f in END_TO_END_FIXTURES for f in item.fixturenames):
            item.add_marker(pytest.mark.slow)
