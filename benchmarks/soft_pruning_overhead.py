"""Per-epoch training cost of soft filter pruning against plain `fit`.

Trains, in one process, the same model (same initial weights, data and
optimizer settings) in four ways and times whole epochs:

1. `plain`: the unwrapped Keras model, `model.fit`;
2. `sfp`: `ekg_keras.SoftFilterPruning(model, rate=0.3)` (L2, a pruning
   step at the end of every epoch);
3. `sfp_maskgrad`: the same with `mask_gradients=True` (custom train step
   that masks the gradients of zeroed filters);
4. `sfp_fpgm_mix`: the same with `criterion="l2+fpgm"` (FPGM-mix, a more
   expensive selection: pairwise distances between filters).

Data: the embedded digits (`ekg_keras.data.digits(batch_size=64)`, 1347
training images of 32x32x3, 22 steps per epoch). Optimizer: SGD with
momentum 0.9, sparse categorical cross-entropy from logits, accuracy
metric, `verbose=0`.

How the time is taken:

* every configuration first runs one untimed epoch (tracing of the train
  function and, for the soft ones, the step before training);
* then the configurations take turns, one epoch each per round
  (`fit(initial_epoch=r, epochs=r + 1)`), the order rotating from round to
  round, so that drift of the machine hits all of them alike;
* a `keras.callbacks.Callback` records the wall time from `on_epoch_begin`
  to `on_epoch_end`. `SoftFilterPruning.fit` puts its pruning callback
  first, so the pruning step at the end of the epoch falls inside the
  timed span; the timer checks this at every epoch (the model's
  `last_pruned_epoch` must already be that epoch's) and the time of each
  `prune_step()` call made inside `fit` is recorded as well;
* the overhead of a configuration is the median over rounds of its paired
  ratio to `plain` in the same round, minus one; the median epoch times
  are shown next to it;
* after training, `prune_step()` is also timed on its own (median of
  several calls), per criterion.

Soft-mode layers do not use their mask in the forward pass (the step zeroes
the weights instead), so a soft model trains with the same graph as the
plain one and the expected overhead is about one `prune_step()` per epoch
(shown as `step/plain epoch`); `mask_gradients=True` adds one multiply per
masked weight and step. Each timed `fit` runs a single epoch: in one-off
checks of a multi-epoch `fit` on this data, some ResNet-20 epochs took
~1.9 s longer than the others (5.1 s against 3.2 s; the pause is in their
first batch, cause not investigated), which would swamp a few-percent
difference; with one epoch per `fit` the same pause comes after
`on_train_end` of some fits, outside the timed span.

The headline is `sfp` against `plain` on ResNet-20 (all four configurations
timed, 6 rounds): PASS when the overhead is at most 10 %. ResNet-56 times
only `plain` and `sfp`, 2 rounds (its epochs are ~3x longer and its
warm-up epoch, tracing included, takes ~22 s per configuration);
`--configs` times the others.
The full run takes about 4 minutes on 2 cores.

    .venv/bin/python benchmarks/soft_pruning_overhead.py
    .venv/bin/python benchmarks/soft_pruning_overhead.py --quick
    .venv/bin/python benchmarks/soft_pruning_overhead.py --models resnet56 \\
        --configs plain,sfp,sfp_maskgrad,sfp_fpgm_mix
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.

RATE = 0.3
TARGET = 0.10  # Headline overhead target (10 %).
LEARNING_RATE = 0.05
CONFIGS = {
    # name: SoftFilterPruning keyword arguments (None: plain model).
    "plain": None,
    "sfp": {},
    "sfp_maskgrad": {"mask_gradients": True},
    "sfp_fpgm_mix": {"criterion": "l2+fpgm"},
}
DESCRIPTIONS = {
    "plain": "model.fit (unwrapped)",
    "sfp": f"SoftFilterPruning(rate={RATE})",
    "sfp_maskgrad": f"SoftFilterPruning(rate={RATE}, mask_gradients=True)",
    "sfp_fpgm_mix": f"SoftFilterPruning(rate={RATE}, criterion='l2+fpgm')",
}
# Full runs: timed rounds (epochs per configuration) for each model.
DEFAULT_ROUNDS = {"resnet20": 6, "resnet56": 2}
QUICK_ROUNDS = {"resnet20": 1, "resnet56": 1}


def epoch_timer():
    """A callback recording each epoch's wall time (begin to end).

    It also records, at `on_epoch_end`, whether a soft-pruning model has
    already run that epoch's pruning step (so that the step was inside the
    timed span).
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []
            self.pruned_before_end = []
            self._start = None

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)
            last = getattr(self.model, "last_pruned_epoch", None)
            if last is not None:
                self.pruned_before_end.append(int(last.numpy()) == epoch + 1)

    return EpochTimer()


def timed_prune_steps(sfp):
    """Makes `sfp.prune_step` record its own duration; returns the list."""
    seconds = []
    original = sfp.prune_step

    def prune_step():
        start = time.perf_counter()
        step = original()
        seconds.append(time.perf_counter() - start)
        return step

    sfp.prune_step = prune_step
    return seconds


def build_models(model_name):
    """The four configurations of one architecture, same initial weights."""
    import keras
    import numpy as np

    import ekg_keras

    keras.utils.set_random_seed(0)
    base = getattr(ekg_keras.models, model_name)()
    initial = base.get_weights()
    models = {}
    for name, kwargs in CONFIGS.items():
        if kwargs is None:
            model = keras.models.clone_model(base)
            model.set_weights(initial)
        else:
            model = ekg_keras.SoftFilterPruning(base, rate=RATE, **kwargs)
        model.compile(
            optimizer=keras.optimizers.SGD(
                learning_rate=LEARNING_RATE, momentum=0.9
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        models[name] = model
    # Same starting point everywhere (before the first pruning step).
    reference = [w.numpy() for w in base.trainable_weights]
    for name, model in models.items():
        network = model if name == "plain" else model.network
        current = [w.numpy() for w in network.trainable_weights]
        if len(current) != len(reference) or not all(
            np.array_equal(a, b) for a, b in zip(current, reference)
        ):
            raise RuntimeError(f"{name}: initial weights differ from the base")
    return base, models


def bench_model(model_name, train, rounds, prune_calls, timed):
    """Times the configurations `timed` of one architecture.

    Every soft configuration, timed or not, also gets its `prune_step()`
    timed on its own.
    """
    build_start = time.perf_counter()
    base, models = build_models(model_name)
    build_s = time.perf_counter() - build_start
    names = [name for name in models if name in timed]
    timers = {name: epoch_timer() for name in names}
    in_fit_prune = {
        name: timed_prune_steps(model)
        for name, model in models.items()
        if name != "plain"
    }

    # Warm-up epoch: tracing, and the soft models' step before training.
    warmup_s = {}
    for name in names:
        start = time.perf_counter()
        models[name].fit(
            train,
            epochs=1,
            verbose=0,
            shuffle=False,  # The dataset shuffles itself.
            callbacks=[timers[name]],
        )
        warmup_s[name] = time.perf_counter() - start
    for name in names:
        timers[name].seconds.clear()
        timers[name].pruned_before_end.clear()
    for seconds in in_fit_prune.values():
        seconds.clear()

    before = _timing.cpu_snapshot()
    timed_start = time.perf_counter()
    for r in range(1, rounds + 1):
        shift = (r - 1) % len(names)
        for name in names[shift:] + names[:shift]:
            models[name].fit(
                train,
                initial_epoch=r,
                epochs=r + 1,
                verbose=0,
                shuffle=False,
                callbacks=[timers[name]],
            )
    timed_s = time.perf_counter() - timed_start
    own_cores, other_cores = _timing.other_load(before, _timing.cpu_snapshot())

    # prune_step() on its own, after training (or on the initial weights
    # for configurations not trained here): one warm-up call, then timed.
    direct = {}
    for name, seconds in in_fit_prune.items():
        in_fit = list(seconds)
        for _ in range(prune_calls + 1):
            models[name].prune_step()
        direct[name] = seconds[len(in_fit) + 1 :]
        seconds[:] = in_fit

    configs = config_figures(
        models, names, timers, warmup_s, in_fit_prune, direct
    )
    return {
        "model": model_name,
        "params": base.count_params(),
        "rounds": rounds,
        "steps_per_epoch": int(train.cardinality().numpy()),
        "prune_calls": prune_calls,
        "build_s": build_s,
        "timed_s": timed_s,
        "own_cores": own_cores,
        "other_cores": other_cores,
        "configs": configs,
    }


def config_figures(models, names, timers, warmup_s, in_fit_prune, direct):
    """Per configuration: epoch times and overheads against plain (for the
    timed ones `names`), and its pruning step's times."""
    plain = timers["plain"].seconds
    configs = {}
    for name in models:
        info = {"description": DESCRIPTIONS[name], "timed": name in names}
        if name in names:
            seconds = timers[name].seconds
            ratios = [a / b for a, b in zip(seconds, plain)]
            info.update(
                epoch_s=seconds,
                median_epoch_s=statistics.median(seconds),
                min_epoch_s=min(seconds),
                spread=max(seconds) / min(seconds) - 1.0,
                overhead=statistics.median(ratios) - 1.0,
                overhead_p25=_timing.percentile(ratios, 25) - 1.0,
                overhead_p75=_timing.percentile(ratios, 75) - 1.0,
                overhead_of_medians=statistics.median(seconds)
                / statistics.median(plain)
                - 1.0,
                warmup_epoch_s=warmup_s[name],
            )
        if name != "plain":
            info["prune_direct_s"] = statistics.median(direct[name])
            info["prune_direct_n"] = len(direct[name])
        if name != "plain" and name in names:
            in_fit = in_fit_prune[name]
            spans = timers[name].pruned_before_end
            # The paired extra epoch time, and what the step leaves of it.
            # Soft layers run the plain layers' graph (the forward pass does
            # not use the mask), so the rest is noise, plus the gradient
            # masking of mask_gradients=True.
            extra = statistics.median(a - b for a, b in zip(seconds, plain))
            info.update(
                prune_in_fit_s=statistics.median(in_fit),
                prune_in_fit_n=len(in_fit),
                pruned_inside_timed_epoch=len(spans) == len(seconds)
                and all(spans),
                extra_s=extra,
                extra_minus_prune_s=extra - statistics.median(in_fit),
                # The overhead the step alone explains (low noise).
                prune_share=statistics.median(in_fit)
                / statistics.median(plain),
            )
        configs[name] = info
    return configs


def _cell(info, key, fmt):
    """A table cell: `fmt(info[key])`, or "-" when there is no figure."""
    return fmt(info[key]) if key in info else "-"


def format_results(res, argv_line):
    """The report: settings, a table per model, the legend, the headline."""
    lines = format_settings(res, argv_line)
    for m in res["models"]:
        lines += ["", *format_model(m)]
    lines += ["", *format_legend(res), "", *format_headline(res)]
    return "\n".join(lines)


def format_settings(res, argv_line):
    return [
        (
            "== soft_pruning_overhead: SoftFilterPruning fit vs plain fit, "
            "epoch wall time (CPU) =="
        ),
        _timing.environment_line(res["environment"]),
        f"command: {argv_line}",
        (
            f"data: digits, {res['train_images']} training images "
            f"32x32x3, batch {res['batch_size']}; SGD(lr={LEARNING_RATE}, "
            "momentum=0.9), sparse CE from logits, accuracy, verbose=0; "
            "one untimed warm-up epoch per configuration, then one epoch "
            "of each per round (rotating order)"
        ),
    ]


def format_model(m):
    """The line and the table of one model."""
    percent = "{:+.1%}".format
    line = (
        f"{m['model']}: {m['params']:,} parameters, "
        f"{m['steps_per_epoch']} steps/epoch, {m['rounds']} timed "
        f"rounds ({m['timed_s']:.1f} s), cores own/others "
        f"{m['own_cores']:.2f}/"
        + ("n/a" if m["other_cores"] is None else f"{m['other_cores']:.2f}")
        + f"; build of the 4 models {m['build_s']:.1f} s"
    )
    rows = []
    for name, c in m["configs"].items():
        rows.append(
            [
                name,
                _cell(c, "median_epoch_s", "{:.3f}".format),
                _cell(c, "min_epoch_s", "{:.3f}".format),
                _cell(c, "spread", "{:.0%}".format),
                "-" if name == "plain" else _cell(c, "overhead", percent),
                (
                    "-"
                    if name == "plain" or not c["timed"]
                    else f"{c['overhead_p25']:+.1%}..{c['overhead_p75']:+.1%}"
                ),
                (
                    "-"
                    if name == "plain"
                    else _cell(c, "overhead_of_medians", percent)
                ),
                _cell(c, "prune_in_fit_s", _timing.fmt_seconds),
                _cell(c, "prune_share", "{:.1%}".format),
                _cell(c, "prune_direct_s", _timing.fmt_seconds),
                _cell(c, "extra_minus_prune_s", lambda v: f"{v * 1e3:+.0f} ms"),
                _cell(
                    c,
                    "pruned_inside_timed_epoch",
                    lambda v: "yes" if v else "NO",
                ),
                _cell(c, "warmup_epoch_s", "{:.1f}".format),
            ]
        )
    header = [
        "config",
        "epoch s (median)",
        "min",
        "spread",
        "overhead",
        "overhead IQR",
        "of medians",
        "prune_step in fit",
        "step/plain epoch",
        "prune_step alone",
        "rest/epoch",
        "step in span",
        "warm-up s",
    ]
    return [line, _timing.table(header, rows)]


def format_legend(res):
    lines = [
        (
            "overhead: median over rounds of (config epoch / plain epoch, "
            "same round) - 1; 'of medians': ratio of the median epoch times "
            "- 1; prune_step in fit: median of the steps the callback ran "
            "inside the timed epochs; step/plain epoch: that over the plain "
            "median epoch (the overhead the step explains); alone: median "
            f"of {res['models'][0]['prune_calls']} direct calls after "
            "training (on the initial weights for untimed configurations); "
            "rest/epoch: median paired extra epoch time minus the in-fit "
            "step (soft layers run the plain graph, so this is noise, plus "
            "the gradient masking of sfp_maskgrad); step in span: the "
            "epoch's pruning step had run when the timer stopped; '-': not "
            "timed."
        ),
    ]
    for name in CONFIGS:
        lines.append(f"  {name:13s} {DESCRIPTIONS[name]}")
    return lines


def format_headline(res):
    head = res["headline"]
    lines = [
        (
            f"headline ({head['model']}, sfp vs plain): epoch "
            f"{head['plain_s']:.3f} s -> {head['sfp_s']:.3f} s, overhead "
            f"{head['overhead']:+.1%} (target <= {TARGET:.0%}): "
            f"{'PASS' if head['pass'] else 'FAIL'}"
        ),
    ]
    warning = _timing.load_warning(
        [m["other_cores"] for m in res["models"]],
        res["environment"]["cpu_count"],
        "epoch times are long and noisy (the paired, rotating rounds keep "
        "the ratios fairer).",
    )
    if warning:
        lines.append(warning)
    lines.append(f"total benchmark run {res['total_s']:.1f} s")
    return lines


def parse_args(argv=None):
    parser = _timing.base_parser(
        __doc__.splitlines()[0],
        "resnet20, plain and sfp, one round (smoke check only)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated ekg_keras.models names; the first is the "
        "headline (default resnet20,resnet56; with --quick resnet20)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed rounds for every model (default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_ROUNDS.items())
        + ")",
    )
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated configurations whose epochs are timed, on "
        f"every model (from {','.join(CONFIGS)}; must hold plain and sfp). "
        "Default: all four on the first model, plain,sfp on the others; "
        "with --quick plain,sfp",
    )
    parser.add_argument(
        "--prune-calls",
        type=int,
        default=None,
        help="direct prune_step() calls timed per configuration "
        "(default 9, quick 2)",
    )
    args = parser.parse_args(argv)
    if args.configs is not None:
        chosen = args.configs.split(",")
        unknown = sorted(set(chosen) - set(CONFIGS))
        if unknown or not {"plain", "sfp"} <= set(chosen):
            parser.error(
                f"--configs should hold plain and sfp, from {list(CONFIGS)}; "
                f"received {args.configs!r}"
            )
    return args


def main(argv=None):
    """Runs the benchmark; returns a dict of figures (also printed)."""
    args = parse_args(argv)
    argv_line = " ".join(
        [
            "python benchmarks/soft_pruning_overhead.py",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    start = time.perf_counter()

    import ekg_keras

    batch_size = 64
    data = ekg_keras.data.digits(batch_size=batch_size)
    rounds_table = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    prune_calls = args.prune_calls or (2 if args.quick else 9)
    names = args.models or ("resnet20" if args.quick else "resnet20,resnet56")
    results = []
    for i, model_name in enumerate(names.split(",")):
        if args.configs is not None:
            timed = args.configs.split(",")
        elif i == 0 and not args.quick:
            timed = list(CONFIGS)
        else:
            timed = ["plain", "sfp"]
        rounds = args.rounds or rounds_table.get(model_name, 2)
        results.append(
            bench_model(model_name, data.train, rounds, prune_calls, timed)
        )

    first = results[0]
    overhead = first["configs"]["sfp"]["overhead"]
    headline = {
        "model": first["model"],
        "plain_s": first["configs"]["plain"]["median_epoch_s"],
        "sfp_s": first["configs"]["sfp"]["median_epoch_s"],
        "overhead": overhead,
        "target": TARGET,
        "pass": overhead <= TARGET,
    }
    result = {
        "benchmark": "soft_pruning_overhead",
        "environment": _timing.environment(),
        "rate": RATE,
        "batch_size": batch_size,
        "train_images": len(data.x_train),
        "models": results,
        "headline": headline,
        "overhead": overhead,
        "total_s": time.perf_counter() - start,
    }
    result["summary"] = (
        f"{first['model']}: soft-pruning fit epoch "
        f"{overhead:+.1%} vs plain fit (target <= {TARGET:.0%}: "
        f"{'PASS' if headline['pass'] else 'FAIL'})"
    )
    print(format_results(result, argv_line), flush=True)
    _timing.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
