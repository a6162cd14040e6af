"""How long one FLOPs count takes for new per-group keep counts.

A pruning search evaluates the FLOPs of thousands of candidate keep vectors,
so `FlopsCounter.macs(keep)` has to be cheap (target: <= 5 ms per count on
ResNet-56). For ResNet-56 (CIFAR, 32x32x3) and keras.applications ResNet50
(weights=None, 224x224x3) this script

1. builds the model, traces it and builds one `FlopsCounter` (one-off costs,
   reported separately),
2. draws N random keep vectors up front (an integer in [1, size] for every
   prunable group, the full size for the others),
3. times N calls of `counter.macs(keep)`, each with a different vector, and
   reports the median and p95 per call,
4. times a full `ekg_keras.count_flops(model)` (trace + counter + count) for
   comparison.

    .venv/bin/python benchmarks/flops_speed.py            # N = 2000
    .venv/bin/python benchmarks/flops_speed.py --quick    # smoke check
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.

TARGET_S = 5e-3  # The target: <= 5 ms per count.


def _build_resnet56():
    import ekg_keras

    return ekg_keras.models.resnet56()


def _build_resnet50():
    import keras

    return keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))


MODELS = (
    ("resnet56", "ResNet-56 (CIFAR 32x32)", _build_resnet56),
    ("resnet50", "ResNet50 (keras.applications 224x224)", _build_resnet50),
)


def random_keeps(graph, n, seed=0):
    """`n` random keep vectors: 1..size for prunable groups, else size."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = np.asarray(graph.sizes, dtype=np.int64)
    prunable = np.array([group.prunable for group in graph.groups])
    keeps = np.tile(sizes.astype(np.float64), (n, 1))
    draws = rng.integers(1, sizes + 1, size=(n, len(sizes)))
    keeps[:, prunable] = draws[:, prunable]
    return list(keeps)


def bench_model(key, label, build, n_calls, n_full, warmup=20):
    """Times the counter and `count_flops` for one model; returns figures."""
    import ekg_keras

    model, build_s = _timing.time_once(build)
    graph, trace_s = _timing.time_once(ekg_keras.graph.trace, model)
    counter, counter_s = _timing.time_once(ekg_keras.FlopsCounter, graph)
    full_macs = counter.macs(counter.full)
    keeps = random_keeps(graph, n_calls + warmup)
    _timing.time_calls(counter.macs, keeps[:warmup])
    per_call = _timing.time_calls(counter.macs, keeps[warmup:])
    macs = [counter.macs(keep) for keep in keeps[warmup:]]
    report = None
    full_times = []
    for _ in range(n_full):
        report, seconds = _timing.time_once(ekg_keras.count_flops, model)
        full_times.append(seconds)
    stats = _timing.summarize(per_call)
    return {
        "model": key,
        "label": label,
        "groups": len(graph.groups),
        "prunable_groups": len(graph.prunable_groups),
        "layers": len(model.layers),
        "full_macs": full_macs,
        "full_params": counter.params(counter.full),
        "count_flops_macs": report.macs,
        "count_flops_params": report.params,
        "build_s": build_s,
        "trace_s": trace_s,
        "counter_init_s": counter_s,
        "calls": len(per_call),
        "macs_median_s": stats["median_s"],
        "macs_p95_s": stats["p95_s"],
        "macs_min_s": stats["min_s"],
        "macs_mean_s": stats["mean_s"],
        "random_macs_fraction_range": (
            min(macs) / full_macs,
            max(macs) / full_macs,
        ),
        "count_flops_median_s": _timing.statistics.median(full_times),
        "count_flops_min_s": min(full_times),
        "count_flops_runs": len(full_times),
        "pass": stats["p95_s"] <= TARGET_S,
    }


def format_results(results, env, argv_line):
    f = _timing.fmt_seconds
    rows = []
    for r in results:
        rows.append(
            [
                r["model"],
                f"{r['prunable_groups']}/{r['groups']}",
                f"{r['full_macs'] / 1e6:.1f}M",
                f(r["counter_init_s"]),
                r["calls"],
                f(r["macs_median_s"]),
                f(r["macs_p95_s"]),
                f(r["count_flops_median_s"]),
                "PASS" if r["pass"] else "FAIL",
            ]
        )
    lines = [
        "== flops_speed: one FLOPs count under new keep counts ==",
        _timing.environment_line(env),
        f"command: {argv_line}",
        "",
        _timing.table(
            [
                "model",
                "prunable/groups",
                "MACs",
                "counter init",
                "calls",
                "macs() median",
                "macs() p95",
                "count_flops()",
                "<= 5 ms (p95)",
            ],
            rows,
        ),
        "",
    ]
    for r in results:
        lo, hi = r["random_macs_fraction_range"]
        consistent = r["full_macs"] == r["count_flops_macs"]
        lines.append(
            f"{r['label']}: build {f(r['build_s'])}, trace "
            f"{f(r['trace_s'])}, FlopsCounter() {f(r['counter_init_s'])} "
            f"(one-off); macs() min {f(r['macs_min_s'])}, mean "
            f"{f(r['macs_mean_s'])}; count_flops() median of "
            f"{r['count_flops_runs']} = {f(r['count_flops_median_s'])}; "
            f"random keeps gave {lo:.1%}..{hi:.1%} of the MACs; "
            f"counter(full) == count_flops: {consistent}"
        )
    speedups = ", ".join(
        f"{r['model']} {r['count_flops_median_s'] / r['macs_median_s']:.0f}x"
        for r in results
    )
    lines.append(
        f"re-counting with a built counter vs count_flops(): {speedups}"
    )
    return "\n".join(lines)


def main(argv=None):
    """Runs the benchmark; returns a dict of figures (also printed)."""
    parser = _timing.base_parser(
        __doc__.splitlines()[0], "200 calls instead of 2000 (smoke check)"
    )
    parser.add_argument(
        "--calls",
        type=int,
        default=None,
        help="timed macs() calls per model (default 2000)",
    )
    parser.add_argument(
        "--models",
        default="resnet56,resnet50",
        help="comma-separated subset of resnet56,resnet50",
    )
    args = parser.parse_args(argv)
    n_calls = args.calls or (200 if args.quick else 2000)
    n_full = 3 if args.quick else 10
    wanted = args.models.split(",")
    argv_line = " ".join(
        [
            "python benchmarks/flops_speed.py",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    env = _timing.environment()
    results = [
        bench_model(key, label, build, n_calls, n_full)
        for key, label, build in MODELS
        if key in wanted
    ]
    print(format_results(results, env, argv_line), flush=True)
    headline = next((r for r in results if r["model"] == "resnet56"), None)
    passed = headline["pass"] if headline else all(r["pass"] for r in results)
    result = {
        "benchmark": "flops_speed",
        "environment": env,
        "target_s": TARGET_S,
        "results": results,
        "pass": passed,
        "summary": "; ".join(
            f"{r['model']} macs() median "
            f"{_timing.fmt_seconds(r['macs_median_s'])}, p95 "
            f"{_timing.fmt_seconds(r['macs_p95_s'])}"
            for r in results
        )
        + f" -> {'PASS' if passed else 'FAIL'} (target <= 5 ms)",
    }
    _timing.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
