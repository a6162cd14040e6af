"""Runs tests/backend_neutral under KERAS_BACKEND=jax and torch.

The suite runs on TensorFlow (conftest.py splits its CPU before it
initialises); the backend-neutral tests also run here directly, and this
module runs them again, each backend in its own process.
"""

import subprocess
import sys

import pytest
from backend_testing import ROOT
from backend_testing import backend_env


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_backend_neutral_tests_pass_on(backend):
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
        command,
        cwd=ROOT,
        env=backend_env(backend),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        f"KERAS_BACKEND={backend}:\n{result.stdout[-6000:]}"
    )
