"""`ekg_keras.export` on the backend of this process: each format it
exports from here is written and checked in its runtime, the others are
refused in one line."""

import keras
import numpy as np
import pytest
from neutral_testing import images

import ekg_keras
from ekg_keras.batchnorm import batchnorm_layers
from ekg_keras.export import EXPORT_BACKENDS
from ekg_keras.export import compare_exported
from ekg_keras.layers import prunable_layers

BACKEND = keras.backend.backend()
#: What each backend exports, as README's table and docs/deployment.md say.
EXPECTED = {
    "tensorflow": ("tf_saved_model", "litert", "onnx", "openvino"),
    "jax": ("tf_saved_model",),
    "torch": ("onnx", "openvino"),
}
PATHS = {
    "tf_saved_model": "model",
    "litert": "model.tflite",
    "onnx": "model.onnx",
    "openvino": "model.xml",
}


def pruned_resnet():
    model = ekg_keras.models.resnet20(input_shape=(8, 8, 3))
    return ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)


def test_the_formats_of_this_backend_are_the_documented_ones():
    exported = tuple(f for f, b in EXPORT_BACKENDS.items() if BACKEND in b)
    assert exported == EXPECTED[BACKEND]


@pytest.mark.parametrize("format", list(PATHS))
def test_export_writes_and_checks_or_refuses_in_one_line(format, tmp_path):
    path = tmp_path / PATHS[format]
    if format not in EXPECTED[BACKEND]:
        model = keras.Sequential(
            [keras.Input((8, 8, 3)), keras.layers.Dense(2)]
        )
        with pytest.raises(NotImplementedError) as raised:
            ekg_keras.export(model, path, format=format, verbose=0)
        message = str(raised.value)
        assert "\n" not in message
        assert f"Received: KERAS_BACKEND={BACKEND}" in message
        assert "KERAS_BACKEND=tensorflow" in message
        return
    masked = pruned_resnet()
    # The check inside raises ExportCheckError beyond 1e-4.
    small = ekg_keras.export(masked, path, format=format, verbose=0)
    assert not batchnorm_layers(small) and not prunable_layers(small)
    report = compare_exported(path, masked, images(4, 8), format=format)
    assert report["max_relative_difference"] < 1e-4


def test_int8_onnx_export_calibrates_on_array_data_or_is_refused(tmp_path):
    x = images(16, 8)
    path = tmp_path / "int8.onnx"
    call = dict(format="onnx", quantize="int8", data=(x, np.zeros(16, "int32")))
    if "onnx" not in EXPECTED[BACKEND]:
        with pytest.raises(NotImplementedError, match="KERAS_BACKEND="):
            ekg_keras.export(pruned_resnet(), path, verbose=0, **call)
        assert not path.exists()
        return
    ekg_keras.export(pruned_resnet(), path, verbose=0, **call)
    assert path.stat().st_size > 0
