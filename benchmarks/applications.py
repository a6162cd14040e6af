"""Every `keras.applications` builder through `ekg_keras.prune(flops=0.5)`.

For each builder of the installed Keras (every family, every size), with
random weights (`weights=None`, 10 classes, logits) at the smallest input
the family accepts (32x32, 71x71 for Xception, 75x75 for the Inception
families), this script

1. traces the model: channel groups found and prunable,
2. times `ekg_keras.prune(model, flops=0.5, slim=False)` (trace, wrap,
   L2 scores, uniform allocation, masks) and `ekg_keras.slim` separately,
3. reports the FLOPs the slim model keeps (`count_flops`, conv + dense
   MACs), its parameters, and the largest relative difference between the
   slim and the masked model's outputs on two random images.

With `--rounds N` the whole list is timed N times, builders interleaved
(round 1 of every builder, then round 2, ...), and the median is reported.
Each builder reports how many cores other processes used while it ran.

    .venv/bin/python benchmarks/applications.py             # all builders
    .venv/bin/python benchmarks/applications.py --families  # one per family
    .venv/bin/python benchmarks/applications.py --quick     # smoke check
    .venv/bin/python benchmarks/applications.py --only ResNet50,VGG16
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.

FLOPS = 0.5
#: The smallest input each builder accepts is 32x32 but for these.
SMALLEST_INPUT = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}
#: `--quick` (a smoke check): three small builders.
QUICK = ("MobileNet", "MobileNetV3Small", "EfficientNetB0")
#: `--families`: the smallest builder of each family.
SMALLEST = (
    "ConvNeXtTiny",
    "DenseNet121",
    "EfficientNetB0",
    "EfficientNetV2B0",
    "InceptionResNetV2",
    "InceptionV3",
    "MobileNet",
    "MobileNetV2",
    "MobileNetV3Small",
    "NASNetMobile",
    "ResNet50",
    "ResNet50V2",
    "VGG16",
    "VGG19",
    "Xception",
)


def builders():
    """`(family, builder name)` of every model in keras.applications."""
    import keras

    found = []
    for name in dir(keras.applications):
        builder = getattr(keras.applications, name)
        if name[0].isupper() and callable(builder):
            family = builder.__module__.rsplit(".", 1)[-1]
            found.append((family, name))
    return sorted(found)


def build(name):
    import keras

    size = SMALLEST_INPUT.get(name, 32)
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(
        weights=None,
        input_shape=(size, size, 3),
        classes=10,
        classifier_activation=None,
    )
    return model, size


def bench_once(name):
    """Prunes and slims one builder; returns its figures."""
    import numpy as np

    import ekg_keras

    before = _timing.cpu_snapshot()
    model, size = build(name)
    graph = ekg_keras.graph.trace(model, warn=False)
    masked, prune_s = _timing.time_once(
        ekg_keras.prune, model, flops=FLOPS, slim=False, verbose=0
    )
    slim, slim_s = _timing.time_once(ekg_keras.slim, masked)
    after = _timing.cpu_snapshot()
    own, others = _timing.other_load(before, after)
    full = ekg_keras.count_flops(model)
    small = ekg_keras.count_flops(slim)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3))
    y_slim, y_masked = np.asarray(slim(x)), np.asarray(masked(x))
    difference = np.abs(y_slim - y_masked).max() / np.abs(y_masked).max()
    return {
        "model": name,
        "input": size,
        "groups": len(graph.groups),
        "prunable_groups": len(graph.prunable_groups),
        "macs": full.macs,
        "kept_flops": small.macs / full.macs,
        "params": full.params,
        "slim_params": small.params,
        "prune_s": prune_s,
        "slim_s": slim_s,
        "max_relative_difference": float(difference),
        "own_cores": own,
        "other_cores": others,
    }


def main(argv=None):
    parser = _timing.base_parser(
        __doc__.splitlines()[0], f"smoke check: only {', '.join(QUICK)}"
    )
    parser.add_argument(
        "--families",
        action="store_true",
        help="only the smallest builder of each family",
    )
    parser.add_argument(
        "--only", default=None, help="comma-separated builder names"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved timing rounds"
    )
    args = parser.parse_args(argv)
    env = _timing.environment()
    names = builders()
    if args.quick:
        names = [(f, n) for f, n in names if n in QUICK]
    elif args.families:
        names = [(f, n) for f, n in names if n in SMALLEST]
    if args.only:
        wanted = set(args.only.split(","))
        names = [(f, n) for f, n in names if n in wanted]
    runs = {name: [] for _, name in names}
    for round_index in range(args.rounds):
        for family, name in names:
            result = bench_once(name)
            result["family"] = family
            runs[name].append(result)
            print(
                f"[round {round_index + 1}] {name}: prune "
                f"{result['prune_s']:.1f}s + slim {result['slim_s']:.1f}s, "
                f"kept {result['kept_flops']:.4f}",
                flush=True,
            )
    results = [_median_run(runs[name]) for _, name in names]
    print(format_results(results, env, " ".join(sys.argv)))
    output = {"environment": env, "flops": FLOPS, "results": results}
    _timing.write_json(args.json, output)
    return output


def _median_run(runs):
    result = dict(runs[0])
    for key in ("prune_s", "slim_s"):
        result[key] = statistics.median(run[key] for run in runs)
    result["other_cores"] = max((run["other_cores"] or 0.0) for run in runs)
    return result


def format_results(results, env, argv_line):
    rows = [
        [
            r["family"],
            r["model"],
            f"{r['input']}",
            f"{r['prunable_groups']}/{r['groups']}",
            f"{r['macs'] / 1e6:.1f}M",
            f"{r['kept_flops']:.4f}",
            f"{r['params'] / 1e6:.1f}M -> {r['slim_params'] / 1e6:.1f}M",
            f"{r['prune_s']:.1f} + {r['slim_s']:.1f}",
            f"{r['max_relative_difference']:.1e}",
            f"{r['other_cores']:.1f}",
        ]
        for r in results
    ]
    title = f"keras.applications through prune(flops={FLOPS}) and slim"
    lines = [
        f"== applications: {title} ==",
        _timing.environment_line(env),
        f"command: {argv_line}",
        "",
        _timing.table(
            [
                "family",
                "model",
                "input",
                "prunable/groups",
                "MACs",
                "FLOPs kept",
                "params",
                "s prune + slim",
                "slim vs masked",
                "other cores",
            ],
            rows,
            left=2,
        ),
    ]
    warning = _timing.load_warning(
        [r["other_cores"] for r in results],
        env["cpu_count"],
        "the seconds are high and noisy.",
    )
    if warning:
        lines += ["", warning]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
