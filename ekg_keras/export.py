"""Export a pruned model for deployment, in every format Keras offers.

`export` slims a masked model, folds its batch normalizations, writes it
with Keras' own `model.export` (TF SavedModel, LiteRT, ONNX, OpenVINO),
quantized on request, and checks the artifact's outputs in its runtime
against the Keras model.
"""

import os
import tempfile

import numpy as np

from ekg_keras import _logging as log
from ekg_keras import runtimes
from ekg_keras._inputs import features_only
from ekg_keras.batchnorm import batchnorm_layers
from ekg_keras.fold import fold_batchnorm as fold
from ekg_keras.layers import prunable_layers
from ekg_keras.slim import slim

FORMATS = runtimes.FORMATS
#: The `quantize` modes of each format.
QUANTIZE = {
    "tf_saved_model": (None,),
    "litert": (None, "float16", "int8"),
    "onnx": (None, "float16", "int8"),
    "openvino": (None, "float16", "int8"),
}
#: Largest max |exported - keras| / max |keras| accepted without quantizing.
FLOAT_TOLERANCE = 1e-4
#: Inputs of the check when no `data` is given, and their spatial size
#: where the model's input shape leaves it open.
CHECK_SAMPLES = 8
OPEN_SIZE = 32
_CHECK_BATCH = 32


class ExportCheckError(ValueError):
    """An exported model whose outputs differ from the Keras model's."""


def export(
    model,
    path,
    keras_path=None,
    *,
    format="tf_saved_model",
    quantize=None,
    data=None,
    calibration_samples=256,
    fold_batchnorm=True,
    check=True,
    verbose=1,
):
    """Writes `model` for deployment: slim, batch norm folded, checked.

    A model with prunable layers is slimmed first (`ekg_keras.slim`), and
    its batch normalizations are folded into the layers before them
    (`ekg_keras.fold_batchnorm`; `fold_batchnorm=False` keeps them). The
    result is written with Keras' `model.export` in `format`:

    | format | `path` | runtime | `quantize` |
    | --- | --- | --- | --- |
    | `"tf_saved_model"` | a directory | TensorFlow | None |
    | `"litert"` | `*.tflite` | `ai-edge-litert` | None, float16, int8 |
    | `"onnx"` | `*.onnx` | `onnxruntime` | None, float16, int8 |
    | `"openvino"` | `*.xml` (+ `.bin`) | `openvino` | None, float16, int8 |

    `"float16"` stores the weights in float16 (LiteRT's float16
    quantization, ONNX converted to float16 inside with float32 inputs and
    outputs, OpenVINO's FP16 weight compression). `"int8"` quantizes
    weights and activations after calibrating the activation ranges on
    the first `calibration_samples` inputs of `data` (TFLite's
    post-training integer quantization with float fallback,
    onnxruntime's static QDQ quantization, NNCF for OpenVINO).

    With `check`, the artifact is loaded in its runtime
    (`ekg_keras.load_exported`; OpenVINO in float32) and run on the inputs
    of `data` (up to `calibration_samples`; else on 8 random inputs): in
    float32 its outputs must equal the Keras model's to 1e-4 (max
    absolute difference over max absolute output), otherwise
    `ExportCheckError`; a quantized artifact is not held to that, and the
    line printed with `verbose` reports its difference and how often it
    predicts the same class as the Keras model (on the calibration data
    for int8). The runtimes, `tf2onnx` and NNCF come with `pip install
    ekg_keras[deploy]`.

    Args:
        model: A Keras model, masked or plain, with one input (for a format
            other than `"tf_saved_model"` or with `check`).
        path: Where to write the artifact (see the table).
        keras_path: Optional path of a `.keras` file to save the exported
            Keras model to (slim, folded: it loads without `ekg_keras`).
        format: One of `FORMATS`.
        quantize: None, `"float16"` or `"int8"`, where the format has it.
        data: Input batches (`tf.data.Dataset` of inputs or `(inputs,
            labels)`, an array, or an `(x, y)` tuple): the calibration
            data of `"int8"` (required there) and the inputs of the check.
        calibration_samples: Inputs of `data` used to calibrate and check.
        fold_batchnorm: Fold batch normalizations before exporting.
        check: Run the artifact in its runtime and compare (see above).
        verbose: 1 prints one line on what was written and checked.

    Returns:
        The exported Keras model (slim, folded).

    Raises:
        ValueError: For an unknown format or quantize mode, a mode the
            format does not have, `"int8"` without `data`, or a `path`
            that does not fit the format.
        ImportError: If the converter or runtime the format needs is not
            installed (before anything is written).
        ExportCheckError: If a float32 artifact's outputs differ from the
            Keras model's by more than 1e-4 (the artifact is kept).
    """
    path = str(path)
    _check_arguments(model, path, format, quantize, data, check)
    samples = None
    if data is not None:
        samples = _samples(data, calibration_samples)
    given = model
    if prunable_layers(model):
        model = slim(model)
    normalizations = len(batchnorm_layers(model))
    if fold_batchnorm:
        model = fold(model)
    folded = normalizations - len(batchnorm_layers(model))
    _write(model, path, format, quantize, samples)
    if keras_path is not None:
        model.save(str(keras_path))
    message = (
        f"Exported '{model.name}' to {path} (format={format}, "
        f"quantize={quantize}; {folded} batch normalizations folded"
    )
    if check:
        inputs = samples if samples is not None else _random_inputs(model)
        # Against the model as given: checks slimming and folding too.
        report = compare_exported(path, given, inputs, format=format)
        message += f"): {_describe(report)}"
        if quantize is None:
            _require_close(report, path)
    else:
        message += ")"
    if verbose:
        log.info(message)
    return model


def compare_exported(path, model, inputs, format=None):
    """Runs an exported model in its runtime and compares with `model`.

    Args:
        path: The artifact (see `ekg_keras.load_exported`).
        model: The Keras model it was exported from.
        inputs: A NumPy array of inputs (first axis: samples).
        format: Its format; inferred from `path` by default.

    Returns:
        A dict: `max_relative_difference` (max absolute difference over
        the max absolute Keras output), `class_agreement` (fraction of
        inputs whose arg-max output is the same; None when the output is
        not a vector of several classes) and `samples`.
    """
    run = runtimes.load_exported(path, format=format)
    expected, received = [], []
    for start in range(0, len(inputs), _CHECK_BATCH):
        batch = inputs[start : start + _CHECK_BATCH]
        expected.append(np.asarray(model(batch, training=False)))
        received.append(np.asarray(run(batch)))
    expected = np.concatenate(expected).astype(np.float64)
    received = np.concatenate(received).astype(np.float64)
    scale = max(float(np.abs(expected).max()), 1e-12)
    agreement = None
    if expected.ndim == 2 and expected.shape[1] > 1:
        agreement = float(
            np.mean(expected.argmax(axis=1) == received.argmax(axis=1))
        )
    return {
        "max_relative_difference": float(
            np.abs(expected - received).max() / scale
        ),
        "class_agreement": agreement,
        "samples": len(inputs),
    }


def _describe(report):
    text = (
        f"max difference {report['max_relative_difference']:.2g} relative "
        f"to the Keras model on {report['samples']} inputs"
    )
    if report["class_agreement"] is not None:
        text += (
            f", same predicted class on {report['class_agreement']:.1%} of them"
        )
    return text


def _require_close(report, path):
    difference = report["max_relative_difference"]
    if not difference <= FLOAT_TOLERANCE:
        raise ExportCheckError(
            f"The model exported to {path} should compute the Keras model's"
            f" outputs to {FLOAT_TOLERANCE:g} (relative). Received: a max "
            f"difference of {difference:.3g} on {report['samples']} inputs. "
            "The artifact is kept for inspection."
        )


def _check_arguments(model, path, format, quantize, data, check):
    """Validates everything that can fail before the model is touched."""
    if format not in QUANTIZE:
        raise ValueError(
            f"`format` should be one of {FORMATS}. Received: format={format!r}"
        )
    if quantize not in QUANTIZE["litert"]:
        raise ValueError(
            "`quantize` should be None, 'float16' or 'int8'. Received: "
            f"quantize={quantize!r}"
        )
    if quantize not in QUANTIZE[format]:
        raise ValueError(
            f"format={format!r} has no {quantize} quantization: `quantize` "
            f"should be one of {QUANTIZE[format]} for it. Received: "
            f"quantize={quantize!r}"
        )
    if quantize == "int8" and data is None:
        raise ValueError(
            "`quantize='int8'` calibrates the activation ranges on input "
            "data: pass `data` (a few hundred representative inputs). "
            "Received: data=None"
        )
    suffix = runtimes.SUFFIXES.get(format)
    if suffix and not path.endswith(suffix):
        raise ValueError(
            f"`path` should end with {suffix!r} for format={format!r}. "
            f"Received: path={path!r}"
        )
    if (format != "tf_saved_model" or check) and len(model.inputs) != 1:
        raise ValueError(
            f"Exporting to {format!r} (or checking) takes a model with one "
            f"input. Received: {len(model.inputs)} inputs."
        )
    for module, pip_name in _converters(format, quantize):
        runtimes.require(module, pip_name, f"Exporting to {format}")
    if check:
        module, pip_name = runtimes.RUNTIMES[format]
        runtimes.require(module, pip_name, f"Checking a {format} export")


def _converters(format, quantize):
    """(module, pip name) of what converting needs besides TensorFlow."""
    needs = {
        "onnx": [("tf2onnx", "tf2onnx"), ("onnx", "onnx")],
        "openvino": [("openvino", "openvino")],
    }.get(format, [])
    if format == "onnx" and quantize:
        needs.append(("onnxruntime", "onnxruntime"))
    if format == "openvino" and quantize == "int8":
        needs.append(("nncf", "nncf"))
    return needs


def _samples(data, count):
    """Up to `count` single inputs of `data`, as one NumPy array."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(
            "`calibration_samples` should be a positive integer. Received: "
            f"calibration_samples={count!r}"
        )
    dataset = features_only(data).unbatch().take(count)
    samples = [np.asarray(x) for x in dataset.as_numpy_iterator()]
    if not samples:
        raise ValueError("`data` should yield inputs. Received: no input.")
    return np.stack(samples)


def _random_inputs(model):
    tensor = model.inputs[0]
    shape = [CHECK_SAMPLES] + [
        OPEN_SIZE if d is None else d for d in tensor.shape[1:]
    ]
    values = np.random.default_rng(0).standard_normal(shape)
    return values.astype(str(tensor.dtype))


def _write(model, path, format, quantize, samples):
    # The ONNX export refuses a model that was never called (a new slim or
    # folded one): one call on a zero input marks it.
    model(np.zeros_like(_random_inputs(model)[:1]), training=False)
    if format in ("tf_saved_model", "litert") or quantize is None:
        options = (
            _litert_options(quantize, samples) if format == "litert" else {}
        )
        model.export(path, format=format, verbose=False, **options)
        return
    with tempfile.TemporaryDirectory() as scratch:
        plain = os.path.join(scratch, "model" + runtimes.SUFFIXES[format])
        model.export(plain, format=format, verbose=False)
        if format == "onnx":
            _quantize_onnx(plain, path, quantize, samples)
        else:
            _quantize_openvino(plain, path, quantize, samples)


def _litert_options(quantize, samples):
    """Converter settings of LiteRT's post-training quantization."""
    if quantize is None:
        return {}
    import tensorflow as tf

    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantize == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    else:

        def representative_dataset():
            for sample in samples:
                yield [sample[None].astype(np.float32)]

        options["representative_dataset"] = representative_dataset
    return options


def _quantize_onnx(plain, path, quantize, samples):
    import onnx

    if quantize == "float16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        half = convert_float_to_float16(onnx.load(plain), keep_io_types=True)
        onnx.save(half, path)
        return
    from onnxruntime import quantization
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = plain.replace(".onnx", "_prepared.onnx")
    # Shapes and fusions first (symbolic shapes are for transformers).
    quant_pre_process(plain, prepared, skip_symbolic_shape=True)
    name = onnx.load(prepared).graph.input[0].name

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self._batches = iter(
                samples[i : i + 1] for i in range(len(samples))
            )

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {name: batch}

    quantization.quantize_static(
        prepared,
        path,
        Reader(),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
    )


def _quantize_openvino(plain, path, quantize, samples):
    import openvino as ov

    model = ov.Core().read_model(plain)
    if quantize == "int8":
        import nncf

        dataset = nncf.Dataset(
            [samples[i : i + 1] for i in range(len(samples))]
        )
        model = nncf.quantize(model, dataset, subset_size=len(samples))
    # Writes the weights beside `path` (`.bin`), as `model.export` does.
    ov.save_model(model, path, compress_to_fp16=quantize == "float16")
