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
    rows = example.main(["--epochs", "3", "--methods", "ASFP+mask"])
    assert [row["method"] for row in rows] == ["ASFP+mask"]
    (row,) = rows
    # Recalibrated accuracy after 3 epochs from scratch reached 0.31-0.54
    # over seeds 0-3 (chance 0.10): a broken pipeline stays near chance.
    assert row["accuracy"] >= 0.2
    # The example aims at 40% fewer FLOPs (flops=0.6).
    full = 40.81e6
    assert 0.55 * full <= row["macs"] <= 0.6 * full
    assert "FLOPs cut" in capsys.readouterr().out
