"""Why NPPM ends below uniform L1 at equal budget: widths or channels?

    .venv/bin/python benchmarks/nppm_gap.py                # ~10 min, 2 cores
    .venv/bin/python benchmarks/nppm_gap.py --seeds 0 --epochs 10

On a case of `compare.py` (its cached converged baseline), for each seed:
NPPM with its compare options; the same per-group widths with the
channels chosen by L1 norm instead of the gates ("nppm widths + L1");
and uniform L1. All three get the same training budget (plain
fine-tuning; none of them trains weights while pruning). If "nppm widths
+ L1" recovers uniform L1's accuracy, the gates choose worse channels
within a group; if it stays with NPPM, the learned widths are the cause.
Writes `results/nppm_gap.json` (ResNet-20/hard, the default case) or
`results/nppm_gap_<case>.json`.
"""

import argparse
import importlib.util
import json
import pathlib
import sys

import _timing  # noqa: F401  (silences TensorFlow; puts the repo on the path)

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_CASE = "resnet20/hard"


def load_compare():
    spec = importlib.util.spec_from_file_location(
        "compare", HERE / "compare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default=DEFAULT_CASE)
    parser.add_argument("--flops", type=float, default=0.5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--results", default=str(HERE.parent / "results"))
    return parser.parse_args(argv)


def main(argv=None):
    import numpy as np
    from scipy import stats

    import ekg_keras

    args = parse_args(argv)
    compare = load_compare()
    settings = compare.settings_from(
        compare.parse_args(["--results", args.results])
    )
    data = compare.load_data(args.case.partition("/")[2], settings)
    model, _ = compare.baseline(args.case, settings, data)
    nppm = ekg_keras.methods.get("nppm")
    l1 = ekg_keras.methods.get("l1")
    rows = []
    for seed in map(int, args.seeds.split(",")):
        plan = nppm.method_class.training_budget(args.epochs)
        options = compare.method_options(nppm, settings)
        method, pruned = compare.search(
            nppm, model, args.flops, seed, options, data
        )
        counts = method.setup.keep_counts(method.setup.current_keep())
        row = {"seed": seed, "nppm_widths": [int(c) for c in counts]}
        row["nppm"] = compare.train_budget(method, pruned, plan, seed, data)

        def fixed(counter, target, scores, levels, counts=counts):
            return np.asarray(counts, dtype=np.int64)

        for label, options in (
            ("nppm widths + L1", {"allocation": fixed}),
            ("uniform L1", {}),
        ):
            method, pruned = compare.search(
                l1, model, args.flops, seed, options, data
            )
            row[label] = compare.train_budget(method, pruned, plan, seed, data)
            row[label]["flops"] = method.kept_fraction()
        rows.append(row)
        compare.progress(
            f"seed {seed}: "
            + ", ".join(
                f"{k} {row[k]['pruned']:.2%} -> {row[k]['final']:.2%}"
                for k in ("nppm", "nppm widths + L1", "uniform L1")
            )
        )
    summary = {}
    for label in ("nppm", "nppm widths + L1", "uniform L1"):
        for what in ("pruned", "final"):
            values = [r[label][what] for r in rows]
            summary[f"{label} {what}"] = [
                float(np.mean(values)),
                float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            ]
    pairs = (
        ("nppm", "nppm widths + L1"),
        ("nppm widths + L1", "uniform L1"),
    )
    for a, b in pairs:
        for what in ("pruned", "final"):
            d = [r[a][what] - r[b][what] for r in rows]
            p = (
                float(stats.ttest_1samp(d, 0.0).pvalue)
                if len(d) > 1 and max(d) != min(d)
                else None
            )
            summary[f"{a} - {b} {what}"] = [float(np.mean(d)), p]
    for key, (value, extra) in summary.items():
        if " - " in key:
            p = "-" if extra is None else f"{extra:.3f}"
            print(f"{key}: {value * 100:+.2f} points (p {p})")
        else:
            print(f"{key}: {value * 100:.2f} ± {extra * 100:.2f}%")
    out = pathlib.Path(args.results) / output_name(args.case)
    record = {"args": vars(args), "rows": rows, "summary": summary}
    out.write_text(json.dumps(record, indent=1))
    return summary


def output_name(case):
    """The result file of `case` (the default case keeps the plain name)."""
    if case == DEFAULT_CASE:
        return "nppm_gap.json"
    return f"nppm_gap_{case.replace('/', '_')}.json"


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
