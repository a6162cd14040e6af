"""Smoke test of benchmarks/compare.py on a tiny configuration (its
figures mean nothing; the benchmark itself is not a test)."""

import importlib.util
import json
import pathlib
import sys

import pytest

# End to end in a subprocess or over many stages: left out of --quick.
pytestmark = pytest.mark.slow

SCRIPT = pathlib.Path(__file__).parents[2] / "benchmarks" / "compare.py"


def _compare():
    # The benchmark scripts import their shared `_timing` from beside them.
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_harness_runs_resumes_and_reports(tmp_path, capsys):
    compare = _compare()
    args = [
        "--tiny",
        "--methods",
        "l1,sfp,ekg",
        "--budgets",
        "0.8",
        "--results",
        str(tmp_path),
    ]
    result = compare.main(args)
    runs = [r for r in result["runs"] if r["method"] != "unpruned"]
    assert {r["method"] for r in runs} == {"l1", "sfp", "ekg"}
    for run in runs:
        assert run["flops_fraction"] <= 0.8
        assert 0 <= run["pruned"] <= 1
        assert run["slim"]["ms_batch1"] > 0
    ekg = next(r for r in runs if r["method"] == "ekg")
    assert set(ekg["finetuned"]) == {"plain", "ekg"}
    assert ekg["trajectory"][0][0] == 1.0
    sfp = next(r for r in runs if r["method"] == "sfp")
    assert sfp["finetuned"] == {}  # its training is the fine-tuning
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert len(saved["summary"]) == 3
    assert "| resnet20 | 0.8 | ekg |" in (tmp_path / "compare.md").read_text()
    assert (tmp_path / "compare_accuracy_flops.png").stat().st_size > 0
    # A second call reads every run from the cache.
    capsys.readouterr()
    compare.main(args)
    assert capsys.readouterr().out.count(": cached") == 3


def test_the_registry_is_the_list():
    compare = _compare()
    import ekg_keras

    names = compare.distinct_methods(ekg_keras.methods)
    assert "l2" not in names  # the same as "oneshot"
    assert set(names) | {"l2"} == set(ekg_keras.methods.names())
