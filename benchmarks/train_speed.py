"""Training speed of the trainers' custom loop against `model.fit`.

The trainers train with `trainers/loop.py` (`strategy.run` of the model's
own `train_step` inside one `tf.function`, because Keras' `fit` fails
under multi-worker strategies). This measures what that costs against
`model.fit` on the same model, batch, strategy and data:

* two copies of the model with the same initial weights, compiled as the
  trainers compile (SGD with Nesterov momentum and weight decay, sparse
  cross-entropy on logits, accuracy and top-5, `jit_compile=False`);
* the trainers' synthetic data (`trainers/sources.py`, what
  `--synthetic_data` uses: one random batch per replica, in memory), so
  the input pipeline costs nothing and the figures are the loops';
* under MirroredStrategy both normalize with global-batch statistics
  (`sync_batchnorm`, the trainers' default);
* interleaved rounds: in each, `loop.train` then `fit` run `--epochs`
  epochs of `--steps` batches each; a callback times every epoch; the
  first epoch of each call (tracing) is left out;
* images/s is batch x steps over the median epoch time; the ratio is the
  median over rounds of the paired ratio loop images/s / fit images/s
  (goal >= 0.95).

    .venv/bin/python benchmarks/train_speed.py
    .venv/bin/python benchmarks/train_speed.py --quick
    .venv/bin/python benchmarks/train_speed.py --models resnet20,resnet56 \\
        --strategies default,mirrored --verbose 0,1
"""

import contextlib
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.
import keras  # After _timing; importing starts no TF runtime.

GOAL = 0.95


def make_strategy(name):
    """`default` (no distribution) or `mirrored` over the logical CPUs."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def build_pair(model_name, strategy, size, seed=0):
    """Two compiled copies of a model with the same initial weights."""
    import ekg_keras
    from ekg_keras import taylor

    keras.utils.set_random_seed(seed)
    models = []
    with strategy.scope():
        for _ in range(2):
            model = ekg_keras.models.get(
                model_name, input_shape=(size, size, 3), num_classes=10
            )
            model.compile(
                optimizer=keras.optimizers.SGD(
                    0.01, momentum=0.9, nesterov=True, weight_decay=5e-4
                ),
                loss=taylor.default_loss(model),
                metrics=[
                    keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                    keras.metrics.SparseTopKCategoricalAccuracy(
                        k=5, name="top5"
                    ),
                ],
                jit_compile=False,
            )
            models.append(model)
    models[1].set_weights(models[0].get_weights())
    return models


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall time."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


@contextlib.contextmanager
def output_to_devnull(enabled):
    """Sends progress bars to /dev/null (they are still drawn)."""
    if not enabled:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def bench_case(model_name, strategy_name, verbose, args):
    """Interleaved rounds of `loop.train` and `fit`; returns the figures."""
    from ekg_keras.batchnorm import batchnorm_settings
    from trainers import loop
    from trainers import sources

    strategy = make_strategy(strategy_name)
    replicas = strategy.num_replicas_in_sync
    # Random images, 10 classes (the digits' shape at any side).
    source = sources.synthetic("digits", image_size=args.size)
    custom, fitted = build_pair(model_name, strategy, args.size)
    batch = args.batch_size

    def distributed(context):
        return source.dataset(
            "train", batch, training=True, input_context=context
        ).repeat()

    loop_data = strategy.distribute_datasets_from_function(distributed)
    spec = source.dataset(
        "train", batch // replicas, training=True
    ).element_spec
    fit_data = source.dataset("train", batch, training=True).repeat()
    synced = replicas > 1

    def run_loop():
        timer = EpochTimer()
        with output_to_devnull(verbose):
            loop.train(
                custom,
                strategy,
                loop_data,
                epochs=args.epochs,
                steps_per_epoch=args.steps,
                element_spec=spec,
                callbacks=[timer],
                verbose=verbose,
                jit_compile=False,
                sync_batchnorm=True,
            )
        return timer.seconds

    def run_fit():
        timer = EpochTimer()
        with (
            output_to_devnull(verbose),
            batchnorm_settings(fitted, synchronized=synced or None),
        ):
            fitted.fit(
                fit_data,
                epochs=args.epochs,
                steps_per_epoch=args.steps,
                callbacks=[timer],
                verbose=verbose,
                shuffle=False,
            )
        return timer.seconds

    runs = {"loop": run_loop, "fit": run_fit}
    epochs = {name: [] for name in runs}
    first = {name: [] for name in runs}
    before = _timing.cpu_snapshot()
    for _ in range(args.rounds):
        for name, run in runs.items():
            seconds = run()
            first[name].append(seconds[0])
            epochs[name].append(statistics.median(seconds[1:]))
    own, others = _timing.other_load(before, _timing.cpu_snapshot())
    images = batch * args.steps
    ratios = [f / c for c, f in zip(epochs["loop"], epochs["fit"])]
    result = {
        "model": model_name,
        "strategy": strategy_name,
        "replicas": replicas,
        "verbose": verbose,
        "batch_size": batch,
        "steps": args.steps,
        "rounds": args.rounds,
        "own_cores": own,
        "other_cores": others,
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }
    for name in runs:
        median = statistics.median(epochs[name])
        result[name] = {
            "epoch_s": median,
            "img_s": images / median,
            "first_epoch_s": statistics.median(first[name]),
            "spread": max(epochs[name]) / min(epochs[name]) - 1.0,
        }
    return result


def format_results(res, argv_line):
    rows = []
    for case in res["cases"]:
        rows.append(
            [
                case["model"],
                f"{case['strategy']} ({case['replicas']})",
                case["verbose"],
                f"{case['rounds']}x{case['steps']}x{case['batch_size']}",
                f"{case['loop']['img_s']:.1f}",
                f"{case['fit']['img_s']:.1f}",
                f"{case['ratio']:.3f}",
                f"{case['ratio_min']:.3f}-{case['ratio_max']:.3f}",
                "PASS" if case["ratio"] >= GOAL else "FAIL",
                (
                    f"{case['loop']['first_epoch_s']:.1f}/"
                    f"{case['fit']['first_epoch_s']:.1f}"
                ),
                f"{case['own_cores']:.2f}/"
                + (
                    "n/a"
                    if case["other_cores"] is None
                    else f"{case['other_cores']:.2f}"
                ),
            ]
        )
    lines = [
        "== train_speed: trainers' custom loop vs model.fit (training) ==",
        _timing.environment_line(res["environment"]),
        f"command: {argv_line}",
        "",
        _timing.table(
            [
                "model",
                "strategy (replicas)",
                "verbose",
                "rounds x steps x batch",
                "loop img/s",
                "fit img/s",
                "loop/fit",
                "range",
                f">= {GOAL}",
                "1st epoch s loop/fit",
                "cores own/others",
            ],
            rows,
            left=2,
        ),
    ]
    warning = _timing.load_warning(
        [case["other_cores"] for case in res["cases"]],
        res["environment"]["cpu_count"],
        "absolute figures are low and noisy (the interleaved rounds keep "
        "the ratios fairer).",
    )
    if warning:
        lines.append(warning)
    lines.append(f"total benchmark run {res['total_s']:.1f} s")
    return "\n".join(lines)


def main(argv=None):
    """Runs the benchmark; returns a dict of figures (also printed)."""
    parser = _timing.base_parser(
        __doc__.splitlines()[0], "1 round of 2 short epochs (smoke check)"
    )
    parser.add_argument("--models", default="resnet20")
    parser.add_argument(
        "--strategies",
        default="default,mirrored",
        help="default and/or mirrored (over 2 logical CPUs)",
    )
    parser.add_argument(
        "--verbose",
        default="0",
        help="Keras verbosity of both loops, comma-separated (1 draws "
        "progress bars, to /dev/null, and reads every step's results)",
    )
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    args.steps = args.steps or (3 if args.quick else 8)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.rounds = args.rounds or (1 if args.quick else 6)
    if args.quick:
        args.batch_size = min(args.batch_size, 32)
    argv_line = " ".join(
        [
            "python benchmarks/train_speed.py",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    start = time.perf_counter()
    strategy_names = args.strategies.split(",")
    if "mirrored" in strategy_names:
        from trainers import strategies

        strategies.split_cpu(2)  # Before TensorFlow runs anything.
    cases = []
    for model_name in args.models.split(","):
        for strategy_name in strategy_names:
            for verbose in (int(v) for v in args.verbose.split(",")):
                case = bench_case(model_name, strategy_name, verbose, args)
                cases.append(case)
                print(
                    f"{model_name} {strategy_name} verbose={verbose}: loop "
                    f"{case['loop']['img_s']:.1f} img/s, fit "
                    f"{case['fit']['img_s']:.1f} img/s, ratio "
                    f"{case['ratio']:.3f}",
                    flush=True,
                )
    result = {
        "benchmark": "train_speed",
        "environment": _timing.environment(),
        "goal": GOAL,
        "cases": cases,
        "total_s": time.perf_counter() - start,
    }
    worst = min(cases, key=lambda c: c["ratio"])
    result["summary"] = (
        f"custom loop / fit images/s: worst {worst['ratio']:.3f} "
        f"({worst['model']}, {worst['strategy']}, verbose "
        f"{worst['verbose']}); goal >= {GOAL}"
    )
    print(format_results(result, argv_line), flush=True)
    _timing.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
