"""Running an exported model in its own runtime, as a deployment would.

One callable per format, so that checks and benchmarks treat them alike:
`load_exported(path)(x)` returns the model's outputs as NumPy arrays.
The runtimes of LiteRT, ONNX and OpenVINO are optional packages, installed
with `pip install ekg_keras[deploy]`.
"""

import importlib
import os

import numpy as np

#: Export formats and the package (import name, pip name) that runs each.
RUNTIMES = {
    "tf_saved_model": ("tensorflow", "tensorflow"),
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "onnx": ("onnxruntime", "onnxruntime"),
    "openvino": ("openvino", "openvino"),
}
FORMATS = tuple(RUNTIMES)
#: File name endings by format (a SavedModel is a directory).
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx", "openvino": ".xml"}
#: OpenVINO's CPU plugin computes in bfloat16 by default where the CPU has
#: it (AVX-512 BF16, AMX); this keeps float32, the exported precision.
OPENVINO_FLOAT32 = {"INFERENCE_PRECISION_HINT": "f32"}


def require(module, pip_name, purpose):
    """Imports `module`, or raises an ImportError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the `{pip_name}` package, which is not "
            f"installed: `pip install ekg_keras[deploy]` (or `pip install "
            f"{pip_name}`). ({error})"
        ) from error


def format_of(path):
    """The export format of an artifact, from its path.

    Raises:
        ValueError: If the path is neither a directory nor a `.tflite`,
            `.onnx` or `.xml` file.
    """
    path = str(path)
    if os.path.isdir(path):
        return "tf_saved_model"
    for name, suffix in SUFFIXES.items():
        if path.endswith(suffix):
            return name
    raise ValueError(
        "`path` should be a SavedModel directory or a file ending in "
        f"{', '.join(SUFFIXES.values())}. Received: path={path!r}"
    )


def load_exported(path, format=None, num_threads=None, openvino_config=None):
    """Loads an exported model into its runtime, as a callable.

    Args:
        path: A SavedModel directory, or a `.tflite`, `.onnx` or OpenVINO
            `.xml` file (e.g. written by `ekg_keras.export`).
        format: One of `FORMATS`; inferred from `path` by default.
        num_threads: CPU threads of the runtime (None: its default; TF's
            threads are process-wide and not changed here).
        openvino_config: Properties for OpenVINO's `compile_model`;
            default `{"INFERENCE_PRECISION_HINT": "f32"}`, the exported
            precision (pass `{}` for the plugin's default, bfloat16 on
            CPUs that have it).

    Returns:
        A callable `fn(x)`: `x` a NumPy batch for a model with one input,
        or for several a dict of batches by input name (the names of the
        Keras model's `Input`s, which every format keeps); returns the
        output array (a list for several outputs).

    Raises:
        ValueError: For an unknown format.
        ImportError: If the format's runtime is not installed.
    """
    format = format or format_of(path)
    if format not in RUNTIMES:
        raise ValueError(
            f"`format` should be one of {FORMATS}. Received: format={format!r}"
        )
    module, pip_name = RUNTIMES[format]
    runtime = require(module, pip_name, f"Running a {format} model")
    loader = {
        "tf_saved_model": _saved_model,
        "litert": _litert,
        "onnx": _onnx,
        "openvino": _openvino,
    }[format]
    if format == "openvino":
        config = (
            OPENVINO_FLOAT32 if openvino_config is None else openvino_config
        )
        return loader(runtime, str(path), num_threads, config)
    return loader(runtime, str(path), num_threads)


def _single(outputs):
    outputs = [np.asarray(o) for o in outputs]
    return outputs[0] if len(outputs) == 1 else outputs


def _saved_model(tf, path, num_threads):
    del num_threads  # TensorFlow's thread pools belong to the process.
    # The function needs its loaded object alive (it owns the variables).
    loaded = tf.saved_model.load(path)

    (signature,) = loaded.serve.concrete_functions
    structure = signature.structured_input_signature[0][0]
    specs = tf.nest.flatten(structure)

    def run(x):
        if len(specs) == 1:
            inputs = tf.constant(_one_input(x))
        else:
            values = _by_name([spec.name for spec in specs], x)
            inputs = tf.nest.pack_sequence_as(
                structure, [tf.constant(v) for v in values]
            )
        outputs = loaded.serve(inputs)
        if isinstance(outputs, dict):
            outputs = list(outputs.values())
        return _single(tf.nest.flatten(outputs))

    return run


def _litert(runtime, path, num_threads):
    interpreter = runtime.Interpreter(model_path=path, num_threads=num_threads)
    interpreter.allocate_tensors()
    if len(interpreter.get_input_details()) > 1:
        return _litert_signature(interpreter)
    (source,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    shape = [tuple(source["shape"])]

    def run(x):
        x = np.asarray(_one_input(x), dtype=source["dtype"])
        if x.shape != shape[0]:
            interpreter.resize_tensor_input(source["index"], x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return _single(interpreter.get_tensor(o["index"]) for o in outputs)

    return run


def _onnx(ort, path, num_threads):
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    session = ort.InferenceSession(
        path, options, providers=["CPUExecutionProvider"]
    )
    names = [source.name for source in session.get_inputs()]

    def run(x):
        if len(names) == 1:
            feed = {names[0]: np.asarray(_one_input(x))}
        else:
            feed = dict(zip(names, _by_name(names, x)))
        return _single(session.run(None, feed))

    return run


def _openvino(ov, path, num_threads, config):
    config = dict(config)
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = num_threads
    compiled = ov.Core().compile_model(path, "CPU", config)
    names = [source.get_any_name() for source in compiled.inputs]
    request = compiled.create_infer_request()

    def run(x):
        if len(names) == 1:
            values = [np.asarray(_one_input(x))]
        else:
            values = _by_name(names, x)
        results = request.infer(values)
        return _single(results[output] for output in compiled.outputs)

    return run


def _litert_signature(interpreter):
    """A model with several inputs runs through its serving signature,
    which names them (the interpreter's own order is alphabetical)."""
    runner = interpreter.get_signature_runner()
    names = list(interpreter.get_signature_list().values())[0]["inputs"]

    def run(x):
        outputs = runner(**dict(zip(names, _by_name(names, x))))
        # "output_0", "output_1", ...: in the order of the model's outputs.
        order = sorted(outputs, key=lambda k: (len(k), k))
        return _single(outputs[k] for k in order)

    return run


def _one_input(x):
    """The array of a model with one input (an array, or a dict or list
    holding one)."""
    if isinstance(x, dict) and len(x) == 1:
        return next(iter(x.values()))
    if isinstance(x, (list, tuple)) and len(x) == 1:
        return x[0]
    return x


def _by_name(names, x):
    """The arrays of `x` (a dict by input name) in the order of the
    artifact's input `names` (which a format may decorate, as TF does:
    "serving_default_image:0").

    Raises:
        ValueError: If `x` is not such a dict.
    """
    if not isinstance(x, dict):
        raise ValueError(
            f"A model with {len(names)} inputs should receive a dict of "
            f"batches by input name ({', '.join(names)}). Received: "
            f"{type(x).__name__}"
        )
    values = []
    for name in names:
        bare = name.split(":")[0].removeprefix("serving_default_")
        key = name if name in x else bare
        if key not in x:
            raise ValueError(
                f"The inputs should include {bare!r} (the model's inputs: "
                f"{', '.join(names)}). Received: {sorted(x)}"
            )
        values.append(np.asarray(x[key]))
    return values
