"""Marks every test here `backend_neutral`: it runs under whichever Keras
backend the process has (KERAS_BACKEND), and tests/test_backends.py runs
this directory again under jax and torch."""

import pytest


def pytest_collection_modifyitems(config, items):
    del config
    for item in items:
        if "backend_neutral" in str(item.path):
            item.add_marker(pytest.mark.backend_neutral)
