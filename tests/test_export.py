"""Tests for ekg_keras.export: every format, quantization, checks, errors.

The artifacts are run here with each runtime's own API (not through
`ekg_keras.load_exported`), so the comparison does not rest on the code
under test.
"""

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_testing import images
from model_testing import max_relative_difference
from model_testing import randomize_batchnorm

import ekg_keras
from ekg_keras.batchnorm import batchnorm_layers

SIZE = 16
SUFFIXES = {
    "tf_saved_model": "",
    "litert": ".tflite",
    "onnx": ".onnx",
    "openvino": ".xml",
}


@pytest.fixture(scope="module")
def masked():
    """A masked ResNet-8 at half its FLOPs, with random BN statistics."""
    keras.utils.set_random_seed(0)
    model = ekg_keras.models.resnet_cifar(8, input_shape=(SIZE, SIZE, 3))
    model = randomize_batchnorm(model)
    return ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)


@pytest.fixture(scope="module")
def deployed(masked):
    """The slim, folded model (export takes it as it is)."""
    return ekg_keras.fold_batchnorm(masked)


@pytest.fixture(scope="module")
def float_sizes(deployed, tmp_path_factory):
    """Bytes of the float32 weights in each quantizable format."""
    folder = tmp_path_factory.mktemp("float32")
    sizes = {}
    for format in ("litert", "onnx", "openvino"):
        path = str(folder / f"model{SUFFIXES[format]}")
        ekg_keras.export(deployed, path, format=format, check=False, verbose=0)
        sizes[format] = size_of(format, path)
    return sizes


@pytest.fixture(scope="module")
def calibration():
    """64 digits images at 16x16."""
    digits = ekg_keras.data.digits(batch_size=32, image_size=SIZE)
    return digits.x_train[:64]


def run_with_runtime(format, path, x):
    """Outputs of an artifact, from its runtime's own API."""
    if format == "tf_saved_model":
        loaded = tf.saved_model.load(path)  # Alive while `serve` runs.
        return loaded.serve(tf.constant(x)).numpy()
    if format == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path)
        (source,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(source["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        output = interpreter.get_output_details()[0]["index"]
        return interpreter.get_tensor(output)
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path)
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    import openvino

    # float32: OpenVINO's CPU default is bfloat16 where the CPU has it.
    compiled = openvino.Core().compile_model(
        path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    return compiled(x)[compiled.outputs[0]]


def size_of(format, path):
    """Bytes of the artifact's weights file."""
    if format == "openvino":
        path = path.replace(".xml", ".bin")
    return os.path.getsize(path)


@pytest.mark.parametrize("format", list(SUFFIXES))
def test_every_format_serves_the_masked_models_outputs(
    masked, tmp_path, format
):
    path = str(tmp_path / f"model{SUFFIXES[format]}")
    exported = ekg_keras.export(masked, path, format=format, verbose=0)
    assert not ekg_keras.layers.prunable_layers(exported)
    assert not batchnorm_layers(exported)  # Folded.
    assert exported.count_params() < masked.count_params()
    x = images(5, SIZE)
    served = run_with_runtime(format, path, x)
    assert max_relative_difference(served, masked(x)) < 1e-4


def test_saved_model_and_keras_file_of_the_slim_model(masked, tmp_path):
    exported = ekg_keras.export(
        masked, tmp_path / "saved", keras_path=tmp_path / "slim.keras"
    )
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    x = images(3, SIZE)
    np.testing.assert_allclose(loaded(x), exported(x), rtol=1e-6, atol=1e-6)
    served = run_with_runtime("tf_saved_model", str(tmp_path / "saved"), x)
    np.testing.assert_allclose(served, masked(x), rtol=1e-4, atol=1e-5)


def test_fold_batchnorm_false_keeps_the_normalizations(masked, tmp_path):
    path = str(tmp_path / "model.onnx")
    exported = ekg_keras.export(
        masked, path, format="onnx", fold_batchnorm=False, verbose=0
    )
    assert len(batchnorm_layers(exported)) == len(batchnorm_layers(masked))
    x = images(3, SIZE)
    served = run_with_runtime("onnx", path, x)
    assert max_relative_difference(served, masked(x)) < 1e-4


@pytest.mark.parametrize("format", ["litert", "onnx", "openvino"])
@pytest.mark.parametrize("quantize", ["float16", "int8"])
def test_quantized_exports_are_smaller_and_close(
    deployed, float_sizes, calibration, tmp_path, format, quantize
):
    path = str(tmp_path / f"{quantize}{SUFFIXES[format]}")
    exported = ekg_keras.export(
        deployed,
        path,
        format=format,
        quantize=quantize,
        data=calibration,
        verbose=0,
    )
    ratio = size_of(format, path) / float_sizes[format]
    assert ratio < (0.6 if quantize == "float16" else 0.45)
    served = run_with_runtime(format, path, calibration)
    expected = np.asarray(exported(calibration))
    difference = max_relative_difference(served, expected)
    agreement = np.mean(served.argmax(-1) == expected.argmax(-1))
    if quantize == "float16":
        assert difference < 5e-3 and agreement >= 0.97
    else:
        assert 1e-4 < difference < 0.2 and agreement >= 0.85
    report = ekg_keras.compare_exported(path, exported, calibration)
    assert report["samples"] == len(calibration)
    assert report["class_agreement"] == pytest.approx(agreement, abs=0.02)


def test_export_prints_what_it_checked(masked, tmp_path, capsys):
    ekg_keras.export(masked, str(tmp_path / "m.tflite"), format="litert")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "format=litert" in line and "batch normalizations folded" in line
    assert "relative to the Keras model on 8 inputs" in line


def test_a_float_export_that_differs_raises(masked, tmp_path, monkeypatch):
    from ekg_keras import runtimes

    real = runtimes.load_exported

    def off_by_a_little(path, format=None, **kwargs):
        run = real(path, format=format, **kwargs)
        return lambda x: run(x) + 1e-2

    monkeypatch.setattr(runtimes, "load_exported", off_by_a_little)
    with pytest.raises(ekg_keras.ExportCheckError, match="outputs to 0.0001"):
        ekg_keras.export(masked, str(tmp_path / "m.onnx"), format="onnx")
    assert os.path.exists(tmp_path / "m.onnx")  # Kept for inspection.


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "coreml"}, "`format` should be one of"),
        ({"quantize": "int4"}, "`quantize` should be None, 'float16' or"),
        (
            {"format": "tf_saved_model", "quantize": "int8", "data": "x"},
            "has no int8 quantization",
        ),
        ({"format": "litert", "quantize": "int8"}, "pass `data`"),
        (
            {"format": "litert", "data": np.zeros((0, SIZE, SIZE, 3))},
            "should yield inputs",
        ),
        (
            {"data": images(2, SIZE), "calibration_samples": 0},
            "should be a positive integer",
        ),
        ({"format": "onnx", "path": "model.tflite"}, "should end with '.onnx'"),
    ],
)
def test_bad_arguments_fail_before_writing(masked, tmp_path, kwargs, message):
    kwargs = dict(kwargs)
    path = tmp_path / kwargs.pop("path", "model.tflite")
    with pytest.raises(ValueError, match=message):
        ekg_keras.export(masked, str(path), **kwargs)
    assert not os.listdir(tmp_path)


def test_a_missing_runtime_is_named(masked, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # Import fails.
    with pytest.raises(ImportError, match=r"ekg_keras\[deploy\]"):
        ekg_keras.export(masked, str(tmp_path / "m.onnx"), format="onnx")
    assert not os.listdir(tmp_path)


def test_load_exported_infers_the_format_and_runs(masked, tmp_path):
    path = str(tmp_path / "model.xml")
    exported = ekg_keras.export(masked, path, format="openvino", verbose=0)
    run = ekg_keras.load_exported(path, num_threads=1)
    x = images(2, SIZE)
    assert max_relative_difference(run(x), exported(x)) < 1e-4
    with pytest.raises(ValueError, match="should be a SavedModel directory"):
        ekg_keras.load_exported(str(tmp_path / "model.pt"))


@pytest.fixture(scope="module")
def two_inputs():
    """A masked model of two inputs at half its FLOPs: an image and a
    vector, named so that their alphabetical order (LiteRT's) is not the
    model's."""
    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    extra = keras.Input((5,), name="extra")
    x = keras.layers.Conv2D(8, 3, padding="same")(image)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    y = keras.layers.Dense(8, activation="relu")(extra)
    outputs = keras.layers.Dense(4)(keras.layers.Concatenate()([x, y]))
    model = randomize_batchnorm(keras.Model([image, extra], outputs))
    return ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)


def two_input_batch(count, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((count, SIZE, SIZE, 3), np.float32),
        "extra": rng.standard_normal((count, 5), np.float32),
    }


def run_two_inputs_with_runtime(format, path, x):
    """Outputs of a two-input artifact, from its runtime's own API, the
    inputs given by name."""
    if format == "tf_saved_model":
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures["serving_default"]
        return serve(**{k: tf.constant(v) for k, v in x.items()})["output_0"]
    if format == "litert":
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=path).get_signature_runner()
        return runner(**x)["output_0"]
    if format == "onnx":
        import onnxruntime

        return onnxruntime.InferenceSession(path).run(None, x)[0]
    import openvino

    compiled = openvino.Core().compile_model(
        path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    return compiled(x)[compiled.outputs[0]]


@pytest.mark.parametrize("format", list(SUFFIXES))
def test_every_format_serves_a_model_with_two_inputs(
    two_inputs, tmp_path, format
):
    path = str(tmp_path / f"model{SUFFIXES[format]}")
    # The check (on by default) feeds each input its own random samples.
    exported = ekg_keras.export(two_inputs, path, format=format, verbose=0)
    assert len(exported.inputs) == 2
    x = two_input_batch(5)
    served = run_two_inputs_with_runtime(format, path, x)
    expected = two_inputs([x["image"], x["extra"]])
    assert max_relative_difference(served, expected) < 1e-4
    # Both inputs reach the artifact: changing one changes its outputs.
    shifted = run_two_inputs_with_runtime(
        format, path, dict(x, extra=x["extra"] + 1.0)
    )
    assert max_relative_difference(shifted, served) > 1e-3
    # The inputs as a list in the model's order work as well.
    report = ekg_keras.compare_exported(
        path, two_inputs, [x["image"], x["extra"]], format=format
    )
    assert report["samples"] == 5
    assert report["max_relative_difference"] < 1e-4


def test_the_check_feeds_every_input(two_inputs, tmp_path, monkeypatch):
    from ekg_keras import runtimes

    real = runtimes.load_exported

    def without_extra(path, format=None, **kwargs):
        run = real(path, format=format, **kwargs)
        return lambda x: run(dict(x, extra=np.zeros_like(x["extra"])))

    monkeypatch.setattr(runtimes, "load_exported", without_extra)
    with pytest.raises(ekg_keras.ExportCheckError, match="outputs to 0.0001"):
        ekg_keras.export(two_inputs, str(tmp_path / "saved"), verbose=0)


def test_two_input_data_calibrates_and_checks(two_inputs, tmp_path, capsys):
    x = two_input_batch(24, seed=1)
    labels = np.zeros(24, np.int64)
    # (inputs by name, labels) batches, as `fit` takes them.
    data = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8)
    path = str(tmp_path / "int8.tflite")
    exported = ekg_keras.export(
        two_inputs,
        path,
        format="litert",
        quantize="int8",
        data=data,
        calibration_samples=16,
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "quantize=int8" in line and "on 16 inputs" in line
    calibrated = {k: v[:16] for k, v in x.items()}
    served = run_two_inputs_with_runtime("litert", path, calibrated)
    expected = np.asarray(exported([x["image"][:16], x["extra"][:16]]))
    assert 1e-4 < max_relative_difference(served, expected) < 0.2
    assert np.mean(served.argmax(-1) == expected.argmax(-1)) >= 0.85


def test_load_exported_takes_several_inputs_by_name(two_inputs, tmp_path):
    path = str(tmp_path / "model.onnx")
    ekg_keras.export(two_inputs, path, format="onnx", check=False, verbose=0)
    run = ekg_keras.load_exported(path)
    x = two_input_batch(2)
    expected = two_inputs([x["image"], x["extra"]])
    assert max_relative_difference(run(x), expected) < 1e-4
    with pytest.raises(ValueError, match="dict of batches by input name"):
        run([x["image"], x["extra"]])
    with pytest.raises(ValueError, match="should include 'extra'"):
        run({"image": x["image"]})
