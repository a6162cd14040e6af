"""Smoke test of the README's main job (examples/demo.py), shortened."""

import importlib.util
import pathlib

import pytest

# End to end in a subprocess or over many stages: left out of --quick.
pytestmark = pytest.mark.slow

DEMO = pathlib.Path(__file__).parents[2] / "examples" / "demo.py"


def test_demo_runs_end_to_end(capsys):
    spec = importlib.util.spec_from_file_location("demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    rows = demo.main(
        [
            "--epochs",
            "1",
            "--finetune_epochs",
            "1",
            "--latency_runs",
            "5",
            "--image_size",
            "8",
            "--val_per_class",
            "4",
            "--flops",
            "0.85",
        ]
    )
    before, pruned, after = rows
    assert pruned["macs"] == after["macs"]
    assert 0.8 <= after["macs"] / before["macs"] <= 0.85
    assert after["params"] < before["params"]
    # Floors well below what this configuration reached with seeds 0-4
    # (before 0.61-0.76, pruned 0.76-0.85, fine-tuned 0.90-0.95; chance is
    # 0.10): a broken pipeline falls below them.
    assert before["accuracy"] >= 0.45
    assert pruned["accuracy"] >= 0.6
    assert after["accuracy"] >= 0.8
    for row in rows:
        assert row["latency_ms"] > 0 and row["images_per_s"] > 0
    printed = capsys.readouterr().out
    assert "EKG step 1:" in printed
    assert "recalibrated batch normalization" in printed
    assert "FLOPs kept: " in printed
