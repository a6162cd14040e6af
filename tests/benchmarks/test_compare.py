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


@pytest.fixture
def eager_functions():
    """Runs `tf.function`s eagerly for one test.

    The harness is what is under test: its tiny runs are a few batches
    per fit, where tracing each phase's train step cost more than the
    steps (141 of 191 s under cProfile); eagerly the test takes 76 s of
    CPU instead of 106 s. The traced steps have their own tests.
    """
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


def test_the_harness_runs_resumes_and_reports(
    tmp_path, capsys, eager_functions
):
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
        # FLOPs by the slim model's count, at or below the target.
        assert run["flops_fraction"] <= 0.8
        assert set(run["runs"]) == {"2", "3"}
        for epochs, one in run["runs"].items():
            # Every run spends exactly the training budget.
            assert sum(one["split"].values()) == int(epochs)
            assert 0 <= one["pruned"] <= 1 and 0 <= one["final"] <= 1
    ekg = next(r for r in runs if r["method"] == "ekg")
    assert ekg["runs"]["3"]["split"] == {"subset_finetune": 1, "finetune": 2}
    assert set(ekg["runs"]["3"]["finetuned"]) == {"plain", "ekg"}
    assert ekg["trajectory"][0][0] == 1.0
    sfp = next(r for r in runs if r["method"] == "sfp")
    assert sfp["runs"]["3"]["split"] == {"soft_pruning": 2, "recovery": 1}
    assert sfp["runs"]["3"]["finetuned"] == {}  # its training is the budget
    control = [r for r in result["runs"] if r["method"] == "unpruned"]
    assert control[0]["runs"]["3"]["split"] == {"finetune": 3}
    saved = json.loads((tmp_path / "compare.json").read_text())
    # Three methods and the control, at two training budgets.
    assert len(saved["summary"]) == 8
    assert saved["baselines"]["resnet20/hard"]["curve"][0][0] == 1
    claims = {c["claim"] for c in saved["claims"]}
    assert {"ekg_search_ge_uniform", "ekg_distillation_ge_plain"} <= claims
    text = (tmp_path / "compare.md").read_text()
    assert "| resnet20/hard | 0.8 | 3 | ekg | 1 subset_finetune + 2 " in text
    assert "**unpruned + same budget**" in text
    assert (tmp_path / "compare_accuracy_flops.png").stat().st_size > 0
    # A second call reads every run from the cache.
    capsys.readouterr()
    compare.main(args)
    assert capsys.readouterr().out.count(": cached") == 4


def test_the_registry_is_the_list():
    compare = _compare()
    import ekg_keras

    names = compare.distinct_methods(ekg_keras.methods)
    assert "l2" not in names  # the same as "oneshot"
    assert set(names) | {"l2"} == set(ekg_keras.methods.names())
