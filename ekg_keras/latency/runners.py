"""Where latency is measured: the device and the runtime that runs a model.

A runtime is "tf" (a compiled `model(x, training=False)`), or one of the
deployment runtimes of `ekg_keras.runtimes` ("litert", "onnx",
"openvino"), which run the model exported by `ekg_keras.export`.
"""

import functools
import importlib.metadata
import os
import platform
import tempfile

from ekg_keras import runtimes
from ekg_keras._backend import tf

#: Runtime names and the export format each runs ("tf" runs in-process).
RUNTIMES = {
    "tf": None,
    "litert": "litert",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "openvino": "openvino",
}
_DISTRIBUTIONS = {
    "tf": "tensorflow",
    "litert": "ai-edge-litert",
    "onnx": "onnxruntime",
    "openvino": "openvino",
}


def check_runtime(runtime):
    """Returns the canonical name of `runtime` once its package imports.

    Raises:
        ValueError: For an unknown runtime name.
        ImportError: If the runtime's package is not installed, naming
            what to install.
    """
    if runtime not in RUNTIMES:
        raise ValueError(
            f"`runtime` should be one of {sorted(RUNTIMES)}. Received: "
            f"runtime={runtime!r}"
        )
    format = RUNTIMES[runtime]
    if format is None:
        return "tf"
    module, pip_name = runtimes.RUNTIMES[format]
    runtimes.require(module, pip_name, f"Measuring latency in {runtime!r}")
    return format


def runtime_id(runtime):
    """The runtime and the version of its package, e.g. "tf 2.19.0"."""
    runtime = check_runtime(runtime)
    try:
        version = importlib.metadata.version(_DISTRIBUTIONS[runtime])
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{runtime} {version}"


@functools.lru_cache(maxsize=1)
def device_id():
    """The device latency is measured on: CPU model, cores and GPUs."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = [
        tf.config.experimental.get_device_details(gpu).get("device_name", "")
        for gpu in tf.config.list_physical_devices("GPU")
    ]
    parts = [cpu, f"{os.cpu_count()} cores"] + [f"GPU {g}" for g in gpus]
    return ", ".join(parts)


def make_runner(model, runtime, batch_size):
    """A callable running `model` on one NumPy batch in `runtime`.

    For a deployment runtime the model is exported (without batch-norm
    folding or checks: it is timed, not verified) into a temporary folder
    that lives as long as the callable.

    Returns:
        `run(x)`, which returns NumPy outputs.
    """
    runtime = check_runtime(runtime)
    if runtime == "tf":
        spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32)
        # A concrete function: many small models are timed in a row, and
        # calling tf.function objects that each trace once would make
        # TensorFlow warn about retracing.
        infer = tf.function(
            lambda x: model(x, training=False)
        ).get_concrete_function(spec)
        return lambda x: tf.nest.flatten(infer(tf.constant(x)))[0].numpy()
    from ekg_keras.export import export

    folder = tempfile.TemporaryDirectory()
    path = os.path.join(folder.name, "model" + runtimes.SUFFIXES[runtime])
    export(
        model,
        path,
        format=runtime,
        fold_batchnorm=False,
        check=False,
        verbose=0,
    )
    run = runtimes.load_exported(
        path, format=runtime, num_threads=os.cpu_count()
    )

    def run_exported(x, _folder=folder):  # Keeps the folder alive.
        return run(x)

    return run_exported
