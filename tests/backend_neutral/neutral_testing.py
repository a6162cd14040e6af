"""Helpers of the backend-neutral tests (NumPy and `keras.ops` only)."""

import subprocess
import sys

import keras
import numpy as np
from backend_testing import ROOT
from backend_testing import backend_env

BACKENDS = ("tensorflow", "jax", "torch")


def numpy(x):
    """A backend tensor (or array) as a NumPy array."""
    return keras.ops.convert_to_numpy(x)


def outputs(model, x):
    """`model(x)` in inference mode, compiled (JAX runs eager calls op by
    op, compiling each: ~6 s for a MobileNetV2 against 0.7 s)."""
    return model.predict(x, batch_size=len(x), verbose=0)


def images(batch=4, size=16, channels=3, seed=0):
    """A batch of random images."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, size, size, channels)).astype("float32")


def max_relative_difference(a, b):
    """max |a - b| / max |b|."""
    a, b = numpy(a), numpy(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def randomize_batchnorm(model, seed=0):
    """Non-trivial statistics and affine weights in every normalization."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []
            for weight in layer.weights:
                if weight.name in ("moving_variance", "gamma"):
                    values.append(rng.uniform(0.5, 1.5, weight.shape))
                else:
                    values.append(rng.normal(0.0, 0.3, weight.shape))
            layer.set_weights([v.astype("float32") for v in values])
    return model


def run_on(backend, code, *args, timeout=300):
    """Runs `python -c code args...` under KERAS_BACKEND=backend, on this
    checkout's ekg_keras; returns its stdout, raising with its output if
    it fails."""
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=backend_env(backend),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"KERAS_BACKEND={backend} failed:\n{result.stdout}\n"
        f"{result.stderr[-3000:]}"
    )
    return result.stdout
