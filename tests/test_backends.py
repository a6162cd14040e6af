"""Runs tests/backend_neutral under KERAS_BACKEND=jax and torch.

The suite runs on TensorFlow (conftest.py splits its CPU before it
initialises); the backend-neutral tests also run here directly, and this
module runs them again, each backend in its own process.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_neutral_tests_pass_on(backend):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        PYTHONPATH=str(ROOT),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "tests/backend_neutral",
    ]
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, (
        f"KERAS_BACKEND={backend}:\n{result.stdout[-6000:]}"
    )
