"""Smoke test of examples/soft_pruning.py, shortened to one epoch."""

import importlib.util
import pathlib

import pytest

# End to end in a subprocess or over many stages: left out of --quick.
pytestmark = pytest.mark.slow

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "soft_pruning.py"


def test_soft_pruning_example_runs(capsys):
    spec = importlib.util.spec_from_file_location("soft_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    # One method keeps the suite fast; it covers the asymptotic schedule,
    # masked gradients, slimming and recalibration.
    rows = example.main(["--epochs", "1", "--methods", "ASFP+mask"])
    assert [row["method"] for row in rows] == ["ASFP+mask"]
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["macs"] > 0
    assert "FLOPs cut" in capsys.readouterr().out
