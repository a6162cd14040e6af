"""The environment of a test process on another Keras backend."""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: XLA without LLVM's optimization passes, for JAX test processes only:
#: JAX compiles one XLA program per weight shape to initialise a model, and
#: on inputs this small compiling is the cost, not running. Measured on the
#: ResNet-56 and MobileNetV2 tests (2-core AMD EPYC): 39.5 s -> 20.1 s.
#: Results agree to float32 rounding (the tests' tolerances are 1e-4).
JAX_TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def backend_env(backend):
    """`os.environ` for a process on `backend` running this checkout."""
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        PYTHONPATH=str(ROOT),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    if backend == "jax":
        env["XLA_FLAGS"] = JAX_TEST_XLA_FLAGS
    return env
