"""Test-suite set-up shared by every test module.

TensorFlow can split the CPU into logical devices only before it initialises,
so the split for the `tf.distribute.MirroredStrategy` tests happens here, at
import time, before any test module touches TensorFlow. On another Keras
backend (the runs of tests/backend_neutral under KERAS_BACKEND=jax and
torch) TensorFlow is not imported here.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf

    _CPUS = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _CPUS[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )

import gc  # noqa: E402
import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The shared trained network's recipe and weights (tests/fixtures).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))


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
    import tensorflow as tf

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
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(two_cpus)


@pytest.fixture(scope="session")
def digits16():
    """The embedded digits data at 16x16 (4x cheaper than 32x32)."""
    import ekg_keras

    return ekg_keras.data.digits(batch_size=64, image_size=16)


@pytest.fixture(scope="session")
def trained_resnet20():
    """A ResNet-20 trained briefly on `digits16`; tests must not modify it.

    Loaded from the weights that tests/fixtures/train_resnet20.py wrote,
    not trained here: the same bits on every CPU, so a search on it takes
    the same path on any machine (training would amplify the kernels'
    last-bit differences into another network), and ~30 s saved per run.
    """
    import train_resnet20

    model = train_resnet20.build()
    model.load_weights(train_resnet20.WEIGHTS)
    return train_resnet20.compile_like_training(model)


# Fixtures of a trained network: a test that uses one searches or trains
# on it, an end-to-end run left out of `python3 dev.py test --quick`.
END_TO_END_FIXTURES = ("trained_resnet20",)

# The longest modules (measured: docs/development.md), handed out first so
# that the short ones even out the end. Only the order depends on it.
LONGEST_MODULES = (
    "trainers/test_cifar.py",
    "benchmarks/test_compare.py",
    "trainers/test_run_files.py",
    "test_prune_kerashub.py",
    "test_prune_properties.py",
    "examples/test_demo.py",
    "trainers/test_ekg_stages.py",
    "trainers/test_imagenet.py",
    "examples/test_soft_pruning_example.py",
    "test_prune_applications.py",
)


def pytest_collection_finish(session):
    """Freezes what the imports and the collection made (TensorFlow, Keras,
    the test modules: ~550,000 objects) out of the garbage collector's
    reach: its full collections then walk only what the tests create.
    Measured on the quick subset (2-core AMD EPYC): the collector's time
    over both workers 44 s -> 29 s, its longest pause 19.5 s -> 5.4 s."""
    del session
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(config, items):
    """Marks the tests on a trained network `slow`, so the quick subset
    never pays for searching one (the full suite runs them all), and puts
    the modules that hold end-to-end runs first.

    With `pytest -n --no-loadscope-reorder` (`python3 dev.py test`), a
    worker takes a whole module at a time in this order: the longest
    modules first, then the other slow ones, leave the short ones to even
    out the end, instead of one worker finishing a long trainer run while
    the other idles.
    """
    del config
    for item in items:
        if any(f in END_TO_END_FIXTURES for f in item.fixturenames):
            item.add_marker(pytest.mark.slow)
    long_modules = {
        item.path for item in items if item.get_closest_marker("slow")
    }
    tests = os.path.dirname(__file__)

    def rank(item):
        module = os.path.relpath(item.path, tests).replace(os.sep, "/")
        if module in LONGEST_MODULES:
            return LONGEST_MODULES.index(module)
        return len(LONGEST_MODULES) + (item.path not in long_modules)

    items.sort(key=rank)
