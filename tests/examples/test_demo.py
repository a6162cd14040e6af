"""Smoke test of the README's main job (examples/demo.py), shortened."""

import importlib.util
import pathlib

DEMO = pathlib.Path(__file__).parents[2] / "examples" / "demo.py"


def test_demo_runs_end_to_end(capsys):
    spec = importlib.util.spec_from_file_location("demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    rows = demo.main(
        ["--epochs", "1", "--finetune_epochs", "1", "--latency_runs", "5"]
    )
    before, after = rows
    assert 0.49 <= after["macs"] / before["macs"] <= 0.5
    assert after["params"] < before["params"]
    assert 0.0 <= after["accuracy"] <= 1.0
    assert after["latency_ms"] > 0 and after["images_per_s"] > 0
    printed = capsys.readouterr().out
    assert "FLOPs kept: 50.0%" in printed
