"""CPU inference throughput of ResNet-56 before and after slimming.

Builds ResNet-56 (random initialisation: timing does not depend on the
weights' values), prunes it with `ekg_keras.prune(model, flops=0.5)` (L2
criterion, uniform allocation, slim plain Keras model) and measures the
images per second of both models in the same process:

* the inference function of each model is traced once
  (`tf.function(jit_compile=False)` over `model(x, training=False)`, with a
  fixed input signature) and warmed up;
* the two models then run in alternating rounds (A, B, A, B, ...) so that
  drift of the machine (other processes, frequency scaling) hits both
  alike; each round times `reps` consecutive calls on the same input;
* images/s is the median over rounds; the speed-up is the median over
  rounds of the paired ratio slim/original, next to the theoretical ratio
  original MACs / slim MACs (from `ekg_keras.count_flops`).

Batch 64 is the headline (throughput); batch 1 shows latency, where the
per-op overhead of ~200 small ops dominates and slimming helps little.

    .venv/bin/python benchmarks/slim_speedup.py
    .venv/bin/python benchmarks/slim_speedup.py --quick
    .venv/bin/python benchmarks/slim_speedup.py --intra 1 --inter 1
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.

FLOPS = 0.5


def set_threads(intra, inter):
    """Sets TF's thread pools (0 = TF default) and returns what TF reports.

    TF only accepts this before it executes its first op; when `main` is
    called in a process where TF already runs, the settings in force are
    kept and reported (with `"set": False`).
    """
    import tensorflow as tf

    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(intra)
        threading.set_inter_op_parallelism_threads(inter)
        applied = True
    except RuntimeError:
        applied = False
    return {
        "intra_op": threading.get_intra_op_parallelism_threads(),
        "inter_op": threading.get_inter_op_parallelism_threads(),
        "cpu_count": os.cpu_count(),
        "set": applied,
    }


def inference_fn(model, batch_size, frozen=False):
    """The once-traced inference function of `model` for one batch size.

    With `frozen`, the variables become constants, so that TF's graph
    optimizer folds each inference batch normalization into the preceding
    convolution (what a deployment converter would do); this uses TF's
    `convert_variables_to_constants_v2`, a diagnostic only.
    """
    import tensorflow as tf

    spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32)

    @tf.function(input_signature=[spec], jit_compile=False)
    def infer(x):
        return model(x, training=False)

    concrete = infer.get_concrete_function()
    if not frozen:
        return infer
    from tensorflow.python.framework import convert_to_constants

    return convert_to_constants.convert_variables_to_constants_v2(concrete)


def _sync(out):
    """Fetches an output (a tensor, or a list of one from a frozen fn)."""
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out.numpy()


def time_rounds(fns, x, reps, rounds, warmup):
    """Alternating rounds: per round, `reps` calls of each fn in turn.

    Returns:
        For each fn, the list of per-round seconds per call.
    """
    for fn in fns:
        for _ in range(warmup):
            _sync(fn(x))
    clock = time.perf_counter
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = clock()
            for _ in range(reps):
                out = fn(x)
            _sync(out)  # CPU calls are synchronous anyway.
            times[i].append((clock() - start) / reps)
    return times


def bench_batch(models, batch_size, reps, rounds, warmup, seed=0, frozen=False):
    """Images/s of each model at one batch size, plus paired speed-ups.

    `models` maps names to models; the first is the reference (original).
    """
    import numpy as np
    import tensorflow as tf

    names = list(models)
    rng = np.random.default_rng(seed)
    shape = (batch_size, *models[names[0]].input_shape[1:])
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    trace_start = time.perf_counter()
    fns = [inference_fn(models[name], batch_size, frozen) for name in names]
    trace_s = time.perf_counter() - trace_start
    before = _timing.cpu_snapshot()
    times = time_rounds(fns, x, reps, rounds, warmup)
    own_cores, other_cores = _timing.other_load(before, _timing.cpu_snapshot())
    result = {
        "batch_size": batch_size,
        "reps_per_round": reps,
        "rounds": rounds,
        "trace_s": trace_s,
        "own_cores": own_cores,
        "other_cores": other_cores,
    }
    for name, seconds in zip(names, times):
        ratios = [a / b for a, b in zip(times[0], seconds)]
        result[name] = {
            "s_per_batch": statistics.median(seconds),
            "img_s": batch_size / statistics.median(seconds),
            "round_spread": max(seconds) / min(seconds) - 1.0,
            "speedup": statistics.median(ratios),
            "speedup_p25": _timing.percentile(ratios, 25),
            "speedup_p75": _timing.percentile(ratios, 75),
        }
    return result


def group_widths(model):
    """Sorted distinct conv output widths of a model (a quick summary)."""
    import keras

    return sorted(
        {
            layer.filters
            for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D)
        }
    )


def format_results(res, argv_line):
    """The report: settings, the models, timings per batch, the headline."""
    lines = [
        *format_settings(res, argv_line),
        "",
        format_models(res),
        "",
        format_batches(res),
        *format_headline(res),
    ]
    return "\n".join(lines)


def format_settings(res, argv_line):
    thr = res["threads"]
    return [
        (
            "== slim_speedup: ResNet-56 original vs slim (flops=0.5), CPU "
            "inference =="
        ),
        _timing.environment_line(res["environment"]),
        f"command: {argv_line}",
        (
            f"threads: intra_op={thr['intra_op']} inter_op={thr['inter_op']} "
            "(0 = TF default: one thread per core) on "
            f"{thr['cpu_count']} cores"
            + ("" if thr["set"] else " (TF already running: not changed)")
        ),
        "weights: random initialisation (timing only); inference: "
        + (
            "variables frozen to constants (batch norm folded), "
            "convert_variables_to_constants_v2 of "
            if res["frozen"]
            else ""
        )
        + "tf.function(jit_compile=False) over model(x, training=False)",
    ]


def format_models(res):
    return _timing.table(
        [
            "model",
            "pruned with",
            "params",
            "MACs/image",
            "theoretical",
            "conv widths",
        ],
        [
            [
                name,
                info["how"],
                f"{info['params']:,.0f}",
                f"{info['macs'] / 1e6:.2f}M",
                f"{info['theoretical_speedup']:.2f}x",
                "/".join(map(str, info["widths"])),
            ]
            for name, info in res["models"].items()
        ],
        left=2,
    )


def format_batches(res):
    names = list(res["models"])
    rows = []
    for b in res["batches"]:
        for name in names:
            m = b[name]
            rows.append(
                [
                    b["batch_size"],
                    name,
                    f"{b['rounds']}x{b['reps_per_round']}",
                    f"{m['img_s']:.1f}",
                    f"{m['s_per_batch'] * 1e3:.2f}",
                    f"{m['round_spread']:.0%}",
                    f"{m['speedup']:.2f}x",
                    f"{m['speedup_p25']:.2f}-{m['speedup_p75']:.2f}",
                    f"{res['models'][name]['theoretical_speedup']:.2f}x",
                    f"{b['own_cores']:.2f}/"
                    + (
                        "n/a"
                        if b["other_cores"] is None
                        else f"{b['other_cores']:.2f}"
                    ),
                ]
            )
    return _timing.table(
        [
            "batch",
            "model",
            "rounds x reps",
            "img/s",
            "ms/batch",
            "round spread",
            "speed-up",
            "speed-up IQR",
            "theoretical",
            "cores own/others",
        ],
        rows,
        left=2,
    )


def format_headline(res):
    head = res["headline"]
    slim = head["slim"]
    theory = res["models"]["slim"]["theoretical_speedup"]
    lines = [
        "",
        (
            f"headline (batch {head['batch_size']}): the slim model runs "
            f"{slim['speedup']:.2f}x faster than the original "
            f"({head['original']['img_s']:.0f} -> {slim['img_s']:.0f} "
            f"images/s); theoretical (MACs ratio) {theory:.2f}x, i.e. "
            f"{slim['speedup'] / theory:.0%} of it."
        ),
    ]
    warning = _timing.load_warning(
        [b["other_cores"] for b in res["batches"]],
        res["threads"]["cpu_count"],
        "absolute figures are low and noisy (the alternating rounds keep "
        "the ratios fairer).",
    )
    if warning:
        lines.append(warning)
    lines.append(
        f"prune {res['prune_s']:.2f} s; total benchmark run "
        f"{res['total_s']:.1f} s"
    )
    return lines


def parse_args(argv=None):
    parser = _timing.base_parser(
        __doc__.splitlines()[0], "few rounds (smoke check only)"
    )
    parser.add_argument(
        "--intra", type=int, default=0, help="intra-op threads (0 = TF default)"
    )
    parser.add_argument(
        "--inter", type=int, default=0, help="inter-op threads (0 = TF default)"
    )
    parser.add_argument(
        "--batch-sizes",
        default="64,1",
        help="comma-separated; the first is the headline",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="alternating rounds per batch size",
    )
    parser.add_argument(
        "--round-to",
        type=int,
        default=0,
        help="also time a third model pruned with "
        "round_to=N, allocation='global' (diagnostic: "
        "SIMD-friendly channel counts)",
    )
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="diagnostic: time graphs with the variables "
        "frozen to constants (batch norm folded into the "
        "convolutions)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Runs the benchmark; returns a dict of figures (also printed)."""
    args = parse_args(argv)
    argv_line = " ".join(
        [
            "python benchmarks/slim_speedup.py",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    start = time.perf_counter()
    threads = set_threads(args.intra, args.inter)
    models, how, prune_s = pruned_models(args)
    infos = model_infos(models, how)
    batches = time_batches(models, args)
    result = {
        "benchmark": "slim_speedup",
        "environment": _timing.environment(),
        "threads": threads,
        "flops_target": FLOPS,
        "frozen": args.frozen,
        "models": infos,
        "theoretical_speedup": infos["slim"]["theoretical_speedup"],
        "prune_s": prune_s,
        "batches": batches,
        "headline": batches[0],
        "speedup": batches[0]["slim"]["speedup"],
        "total_s": time.perf_counter() - start,
    }
    result["summary"] = (
        f"batch {batches[0]['batch_size']}: slim "
        f"{result['speedup']:.2f}x faster "
        f"({batches[0]['original']['img_s']:.0f} -> "
        f"{batches[0]['slim']['img_s']:.0f} img/s), theoretical "
        f"{result['theoretical_speedup']:.2f}x"
    )
    print(format_results(result, argv_line), flush=True)
    _timing.write_json(args.json, result)
    return result


def pruned_models(args):
    """ResNet-56 and its slim versions by name, how each was pruned, and
    the seconds the first prune took."""
    import keras

    import ekg_keras

    keras.utils.set_random_seed(0)
    model = ekg_keras.models.resnet56()
    small, prune_s = _timing.time_once(
        ekg_keras.prune, model, flops=FLOPS, verbose=0
    )
    models = {"original": model, "slim": small}
    how = {"original": "-", "slim": f"prune(flops={FLOPS})"}
    if args.round_to:
        name = f"slim_r{args.round_to}"
        models[name] = ekg_keras.prune(
            model,
            flops=FLOPS,
            round_to=args.round_to,
            allocation="global",
            verbose=0,
        )
        how[name] = (
            f"prune(flops={FLOPS}, round_to={args.round_to}, "
            "allocation='global')"
        )
    return models, how, prune_s


def model_infos(models, how):
    """Size, MACs and theoretical speed-up of each model (the first is the
    original)."""
    import ekg_keras

    full = ekg_keras.count_flops(models["original"])
    infos = {}
    for name, m in models.items():
        report = ekg_keras.count_flops(m)
        infos[name] = {
            "how": how[name],
            "macs": report.macs,
            "params": report.params,
            "theoretical_speedup": full.macs / report.macs,
            "widths": group_widths(m),
        }
    return infos


def time_batches(models, args):
    """Alternating timing rounds of every model at each batch size."""
    rounds = args.rounds or (3 if args.quick else 21)
    batches = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        # About 0.6 s (original) per round at batch 64, 0.4 s at batch 1.
        reps = max(1, min(50, 256 // batch_size))
        if args.quick:
            reps = max(1, reps // 10)
        batches.append(
            bench_batch(
                models,
                batch_size,
                reps,
                rounds,
                warmup=2 if args.quick else 3 * reps,
                frozen=args.frozen,
            )
        )
    return batches


if __name__ == "__main__":
    main()
