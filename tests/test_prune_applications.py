"""Acceptance (issue 13.5): every `keras.applications` family prunes.

One builder per family (the smallest), `weights=None`, at the smallest
input size the family accepts, with random batch-norm statistics, and a
U-Net, a 1-D CNN and a network with hard-swish written in `keras.ops`:
`prune(flops=0.5)` keeps 49-50% of the FLOPs, the slim model computes what
the masked model computes to 1e-4, and its `.keras` file loads in a
process that never imports `ekg_keras`. Every builder of every family is
measured by `benchmarks/applications.py`.
"""

import subprocess
import sys

import keras
import numpy as np
import pytest
from model_testing import cnn_1d
from model_testing import hard_swish_net
from model_testing import kept_fraction
from model_testing import layer_classes
from model_testing import max_relative_difference
from model_testing import randomize_batchnorm
from model_testing import unet

import ekg_keras

pytestmark = pytest.mark.slow  # About two minutes on 2 idle cores.

# Family (module of keras.applications) -> smallest builder, its keyword
# arguments and the smallest input size it accepts.
FAMILIES = {
    "convnext": ("ConvNeXtTiny", {}, 32),
    "densenet": ("DenseNet121", {}, 32),
    "efficientnet": ("EfficientNetB0", {}, 32),
    "efficientnet_v2": ("EfficientNetV2B0", {}, 32),
    "inception_resnet_v2": ("InceptionResNetV2", {}, 75),
    "inception_v3": ("InceptionV3", {}, 75),
    "mobilenet": ("MobileNet", {"alpha": 0.25}, 32),
    "mobilenet_v2": ("MobileNetV2", {"alpha": 0.35}, 32),
    "mobilenet_v3": ("MobileNetV3Small", {}, 32),
    "nasnet": ("NASNetMobile", {}, 32),
    "resnet": ("ResNet50", {}, 32),
    "resnet_v2": ("ResNet50V2", {}, 32),
    "vgg16": ("VGG16", {}, 32),
    "vgg19": ("VGG19", {}, 32),
    "xception": ("Xception", {}, 71),
}
# Helper modules of keras.applications that hold no model family.
NOT_FAMILIES = {"imagenet_utils", "resnet50"}
# Models beyond keras.applications the issue names.
OTHERS = {"unet": unet, "cnn_1d": cnn_1d, "hard_swish_net": hard_swish_net}
MODELS = sorted(FAMILIES) + sorted(OTHERS)


def build(family):
    """The family's smallest builder with random weights and BN statistics."""
    if family in OTHERS:
        keras.utils.set_random_seed(0)
        return OTHERS[family]()
    name, kwargs, size = FAMILIES[family]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(
        weights=None,
        input_shape=(size, size, 3),
        classes=10,
        classifier_activation=None,
        **kwargs,
    )
    return randomize_batchnorm(model)


def pixels(shape, batch=2):
    """Inputs in [0, 255] (EfficientNet rescales images itself)."""
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (batch, *shape)).astype("float32")


class _Pruned:
    """Prunes each family once per module; saves the slim model's file."""

    def __init__(self, directory):
        self.directory = directory
        self._done = {}

    def __call__(self, family):
        if family not in self._done:
            self._done[family] = self._prune(family)
        return self._done[family]

    def _prune(self, family):
        model = build(family)
        masked = ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)
        slim = ekg_keras.slim(masked)
        x = pixels(model.input.shape[1:])
        path = self.directory / f"{family}.keras"
        slim.save(path)
        np.save(self.directory / f"{family}_x.npy", x)
        outputs = np.asarray(slim(x))
        np.save(self.directory / f"{family}_y.npy", outputs)
        return {
            "kept": kept_fraction(model, slim),
            "difference": max_relative_difference(outputs, masked(x)),
            "spread": float(np.std(outputs)),
            "classes": layer_classes(slim),
            "params": (model.count_params(), slim.count_params()),
        }


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    return _Pruned(tmp_path_factory.mktemp("applications"))


def test_the_table_covers_every_family_of_the_installed_keras():
    modules = {
        name
        for name in dir(keras.applications)
        if not name.startswith("_") and name[0].islower()
    }
    assert set(FAMILIES) == modules - NOT_FAMILIES


@pytest.mark.parametrize("family", MODELS)
def test_model_prunes_to_half_and_slims_exactly(pruned, family):
    result = pruned(family)
    assert 0.49 <= result["kept"] <= 0.5
    assert result["difference"] < 1e-4
    assert result["spread"] > 0
    assert all(name.startswith("keras.") for name in result["classes"])
    assert result["params"][1] < result["params"][0]


def test_slim_files_load_without_ekg_keras(pruned):
    for family in MODELS:
        pruned(family)
    directory = pruned.directory
    code = (
        "import sys, numpy as np, keras\n"
        f"for family in {MODELS!r}:\n"
        f"    base = {str(directory)!r} + '/' + family\n"
        "    model = keras.saving.load_model(base + '.keras')\n"
        "    y = np.asarray(model(np.load(base + '_x.npy')))\n"
        "    np.save(base + '_loaded.npy', y)\n"
        "assert 'ekg_keras' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={
            "KERAS_BACKEND": "tensorflow",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # The other process may run other kernels (its oneDNN setting is the
    # default, whatever this one's is): the outputs agree to float32
    # rounding relative to their scale, not element by element.
    for family in MODELS:
        loaded = np.load(directory / f"{family}_loaded.npy")
        expected = np.load(directory / f"{family}_y.npy")
        assert loaded.shape == expected.shape, family
        assert max_relative_difference(loaded, expected) < 1e-5, family
