"""Export a pruned model for deployment, in every format Keras offers.

`export` slims a masked model, folds its batch normalizations, writes it
with Keras' own `model.export` (TF SavedModel, LiteRT, ONNX, OpenVINO),
quantized on request, and checks the artifact's outputs in its runtime
against the Keras model.
"""

import os
import tempfile

import keras
import numpy as np

from ekg_keras import _backend as backend
from ekg_keras import _logging as log
from ekg_keras import runtimes
from ekg_keras._inputs import features_only
from ekg_keras._keras_private import input_name
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
#: The Keras backends each format is exported and checked from, as the
#: tests run it: SavedModel from JAX through jax2tf; ONNX from PyTorch
#: through torch.onnx, OpenVINO through TorchScript. Refused: ONNX from
#: JAX (Keras converts with jax2onnx, not a dependency here), OpenVINO
#: from JAX (jax2tf's XlaCallModule has no OpenVINO conversion), LiteRT
#: from PyTorch (litert-torch does not install beside the pinned
#: packages), SavedModel from PyTorch (Keras' torch.export call fails on
#: the open batch size) and LiteRT from JAX (Keras has none).
EXPORT_BACKENDS = {
    "tf_saved_model": ("tensorflow", "jax"),
    "litert": ("tensorflow",),
    "onnx": ("tensorflow", "torch"),
    "openvino": ("tensorflow", "torch"),
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
    onnxruntime's static QDQ quantization, NNCF for OpenVINO). The ONNX
    and OpenVINO int8 weights keep to 7 bits (onnxruntime's
    `reduce_range`, NNCF's overflow fix in every layer): x86 CPUs without
    VNNI multiply int8 with an instruction that saturates on full-range
    weights, which on a 2-core AMD EPYC (AVX2, no VNNI) took a pruned
    ResNet-8's error from 0.13 (ONNX) and 0.16 (OpenVINO) to 0.019 and
    0.057, and its agreement with the Keras model from 30% and 25% to 98%
    and 92%. The artifact then stays close on whatever CPU it is served.

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

    Off TensorFlow, the formats of `EXPORT_BACKENDS` are written through
    Keras' export on that backend (SavedModel from JAX, ONNX and OpenVINO
    from PyTorch) and checked the same way; the others raise a one-line
    `NotImplementedError` (docs/deployment.md has the table and why).

    A model with several inputs is exported with all of them, named as
    its `Input`s; the check feeds each input its own samples (random, or
    from `data`) and compares every output.

    Args:
        model: A Keras model, masked or plain, with one input or several.
        path: Where to write the artifact (see the table).
        keras_path: Optional path of a `.keras` file to save the exported
            Keras model to (slim, folded: it loads without `ekg_keras`).
        format: One of `FORMATS`.
        quantize: None, `"float16"` or `"int8"`, where the format has it.
        data: Input batches (`tf.data.Dataset` of inputs or `(inputs,
            labels)`, an array, or an `(x, y)` tuple): the calibration
            data of `"int8"` (required there) and the inputs of the check.
            For a model with several inputs, the inputs are a dict of
            arrays by input name, or a list in the model's order.
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
        NotImplementedError: For a format this Keras backend does not
            export (see `EXPORT_BACKENDS`).
        ImportError: If the converter or runtime the format needs is not
            installed (before anything is written).
        ExportCheckError: If a float32 artifact's outputs differ from the
            Keras model's by more than 1e-4 (the artifact is kept).
    """
    path = str(path)
    _check_arguments(model, path, format, quantize, data, check)
    samples = None
    if data is not None:
        samples = _samples(data, calibration_samples, model)
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
        inputs: A NumPy array of inputs (first axis: samples); for a model
            with several inputs, a dict of such arrays by input name or a
            list in the model's order.
        format: Its format; inferred from `path` by default.

    Returns:
        A dict: `max_relative_difference` (max absolute difference over
        the max absolute Keras output), `class_agreement` (fraction of
        inputs whose arg-max output is the same; None when the output is
        not a vector of several classes) and `samples`.
    """
    run = runtimes.load_exported(path, format=format)
    inputs = _by_input(model, inputs)
    count = len(next(iter(inputs.values())))
    expected, received = [], []
    for start in range(0, count, _CHECK_BATCH):
        batch = {k: v[start : start + _CHECK_BATCH] for k, v in inputs.items()}
        outputs = model(_packed(model, batch), training=False)
        expected.append(keras.tree.flatten(outputs))
        received.append(keras.tree.flatten(run(_unpacked(batch))))
    # Per output, its values over all batches.
    expected = [_stacked(outputs) for outputs in zip(*expected)]
    received = [_stacked(outputs) for outputs in zip(*received)]
    scale = max(max(float(np.abs(e).max()) for e in expected), 1e-12)
    difference = max(
        float(np.abs(e - r).max()) for e, r in zip(expected, received)
    )
    agreement = None
    if (
        len(expected) == 1
        and expected[0].ndim == 2
        and expected[0].shape[1] > 1
    ):
        agreement = float(
            np.mean(expected[0].argmax(axis=1) == received[0].argmax(axis=1))
        )
    return {
        "max_relative_difference": difference / scale,
        "class_agreement": agreement,
        "samples": count,
    }


def _stacked(batches):
    """One output's batches as one float64 array."""
    arrays = [keras.ops.convert_to_numpy(b) for b in batches]
    return np.concatenate(arrays).astype(np.float64)


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
    if backend.name() not in EXPORT_BACKENDS[format]:
        raise NotImplementedError(
            f"ekg_keras.export(format={format!r}) runs on KERAS_BACKEND="
            f"{' or '.join(EXPORT_BACKENDS[format])}. Received: "
            f"KERAS_BACKEND={backend.name()}. Save the slim model with "
            "model.save('model.keras') (it loads on every backend) and "
            "export it under KERAS_BACKEND=tensorflow."
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
    if backend.name() == "torch" and format == "onnx":
        needs = [("onnx", "onnx")]  # torch.onnx, not tf2onnx.
    if backend.name() == "jax":
        needs = [("tensorflow", "tensorflow"), *needs]  # jax2tf.
    if format == "onnx" and quantize:
        needs.append(("onnxruntime", "onnxruntime"))
    if format == "openvino" and quantize == "int8":
        needs.append(("nncf", "nncf"))
    return needs


def _samples(data, count, model):
    """Up to `count` single inputs of `data`: one NumPy array, or for a
    model with several inputs a dict of arrays by input name."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(
            "`calibration_samples` should be a positive integer. Received: "
            f"calibration_samples={count!r}"
        )
    if len(model.inputs) == 1 and not backend.is_dataset(data):
        # An array, or an (x, y) tuple of arrays: no tf.data needed.
        if isinstance(data, (tuple, list)) and len(data) == 2:
            data = data[0]
        samples = np.asarray(data)[:count]
        if not len(samples):
            raise ValueError("`data` should yield inputs. Received: no input.")
        return samples
    if len(model.inputs) > 1:
        dataset = _several_inputs(data, model)
    else:
        dataset = features_only(data)
    dataset = dataset.unbatch().take(count)
    samples = list(dataset.as_numpy_iterator())
    if not samples:
        raise ValueError("`data` should yield inputs. Received: no input.")
    if len(model.inputs) > 1:
        return {k: np.stack([s[k] for s in samples]) for k in samples[0]}
    return np.stack([np.asarray(x) for x in samples])


def _input_names(model):
    return [input_name(tensor) for tensor in model.inputs]


def _several_inputs(data, model):
    """A dataset of dicts of input batches by name, from `data` for a model
    with several inputs: a dataset of inputs or of `(inputs, labels)`, a
    dict or list of arrays, or an `(inputs, labels)` tuple, where inputs
    are a dict by input name or a list in the model's order."""
    import tensorflow as tf

    names = _input_names(model)
    structured = (dict, list, tuple)
    if not isinstance(data, tf.data.Dataset):
        if (
            isinstance(data, (tuple, list))
            and len(data) == 2
            and isinstance(data[0], structured)
        ):
            data = data[0]  # (inputs, labels)
        data = tf.data.Dataset.from_tensor_slices(_by_input(model, data))
        return data.batch(_CHECK_BATCH)
    spec = data.element_spec
    if isinstance(spec, tuple) and isinstance(spec[0], structured):
        data = data.map(lambda *element: element[0])
        spec = data.element_spec
    if isinstance(spec, dict):
        return data.map(lambda x: {name: x[name] for name in names})
    if isinstance(spec, (tuple, list)) and len(spec) == len(names):
        return data.map(lambda *x: dict(zip(names, x)))
    raise ValueError(
        f"`data` should yield the model's {len(names)} inputs "
        f"({', '.join(names)}) as a dict by name or a tuple in that order, "
        f"alone or with labels. Received elements with spec {spec}."
    )


def _by_input(model, inputs):
    """`inputs` as a dict of arrays by input name (in the model's order).

    Raises:
        ValueError: If they are not one array per input of the model.
    """
    names = _input_names(model)
    if isinstance(inputs, dict):
        missing = [name for name in names if name not in inputs]
        if missing:
            raise ValueError(
                f"The inputs should include {missing} (the model's inputs: "
                f"{names}). Received: {sorted(inputs)}"
            )
        return {name: np.asarray(inputs[name]) for name in names}
    if len(names) == 1:
        if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
            inputs = inputs[0]
        return {names[0]: np.asarray(inputs)}
    if not isinstance(inputs, (list, tuple)) or len(inputs) != len(names):
        raise ValueError(
            f"A model with {len(names)} inputs ({', '.join(names)}) should "
            "receive a dict of arrays by input name or a list in that "
            f"order. Received: {type(inputs).__name__}"
        )
    return {name: np.asarray(x) for name, x in zip(names, inputs)}


def _packed(model, batch):
    """A batch dict by input name, in the structure `model` is called on."""
    values = [batch[name] for name in _input_names(model)]
    return keras.tree.pack_sequence_as(model.input, values)


def _unpacked(batch):
    """A batch dict as a runtime takes it: the array of a single input."""
    return next(iter(batch.values())) if len(batch) == 1 else batch


def _random_inputs(model):
    """`CHECK_SAMPLES` random inputs (see `_samples`)."""
    rng = np.random.default_rng(0)
    inputs = {}
    for tensor in model.inputs:
        shape = [CHECK_SAMPLES] + [
            OPEN_SIZE if d is None else d for d in tensor.shape[1:]
        ]
        values = rng.standard_normal(shape)
        inputs[input_name(tensor)] = values.astype(str(tensor.dtype))
    return _unpacked(inputs)


def _write(model, path, format, quantize, samples):
    # The ONNX export refuses a model that was never called (a new slim or
    # folded one): one call on a zero input marks it.
    zeros = {
        name: np.zeros_like(x[:1])
        for name, x in _by_input(model, _random_inputs(model)).items()
    }
    model(_packed(model, zeros), training=False)
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
            if not isinstance(samples, dict):
                for sample in samples:
                    yield [sample[None].astype(np.float32)]
                return
            # Several inputs: by name, as the serving signature has them.
            for i in range(len(next(iter(samples.values())))):
                yield {k: v[i : i + 1] for k, v in samples.items()}

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
    names = [x.name for x in onnx.load(prepared).graph.input]
    inputs = samples if isinstance(samples, dict) else {names[0]: samples}
    count = len(next(iter(inputs.values())))

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self._batches = iter(
                {name: inputs[name][i : i + 1] for name in names}
                for i in range(count)
            )

        def get_next(self):
            return next(self._batches, None)

    quantization.quantize_static(
        prepared,
        path,
        Reader(),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
    )


def _quantize_openvino(plain, path, quantize, samples):
    import openvino as ov

    model = ov.Core().read_model(plain)
    if quantize == "int8":
        import nncf

        if isinstance(samples, dict):  # Several inputs, by name.
            count = len(next(iter(samples.values())))
            items = [
                {k: v[i : i + 1] for k, v in samples.items()}
                for i in range(count)
            ]
        else:
            count = len(samples)
            items = [samples[i : i + 1] for i in range(count)]
        model = nncf.quantize(
            model,
            nncf.Dataset(items),
            subset_size=count,
            advanced_parameters=_overflow_fix(),
        )
    # Writes the weights beside `path` (`.bin`), as `model.export` does.
    ov.save_model(model, path, compress_to_fp16=quantize == "float16")


def _overflow_fix():
    """NNCF settings that keep int8 weights to 7 bits in every layer."""
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
    )
    from nncf.quantization.advanced_parameters import OverflowFix

    return AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
