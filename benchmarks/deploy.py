"""Inference speed of original and pruned models in every deployed form.

For each model (ResNet-56 at 32x32, keras.applications ResNet50 and
MobileNetV2 at 224x224; on request the demo's ResNet-20 at 32x32; random
weights: speed does not depend on their values):

* `pruned = ekg_keras.prune(model, flops=0.5)` (L2, uniform allocation,
  slim), timed in-process after TF start-up (the data-free prune + slim
  time): `prune(..., slim=False)` followed by `slim` run as `prune` runs
  them (the one-shot method's set-up and search, then `ekg_keras.slim`),
  split into phases (trace, wrap, FLOPs counter, allocation, slim); the
  first call on the model, then the median of warm calls, in interleaved
  rounds with `prune(slim=False)` + `slim` and the one call
  `prune(model, flops=0.5)` (which slims with the graph it already
  traced); beside them the Keras floor: building the masked and the slim
  model again from their configs (layers and their symbolic calls,
  variables left uninitialized; and with variables);
* both models are exported with `ekg_keras.export` (slim, batch norm
  folded, outputs checked in the runtime) to a SavedModel, LiteRT, ONNX
  and OpenVINO; the forms timed are
  - `keras`: `tf.function(model(x, training=False))` (BN not folded),
  - `tf_saved_model`: the SavedModel's `serve` (BN folded),
  - `litert`: the `ai-edge-litert` interpreter (XNNPACK),
  - `onnx`: onnxruntime's CPU provider,
  - `openvino`: OpenVINO's CPU plugin in float32 (exact), and
  - `openvino_bf16`: the same with the plugin's default precision
    (bfloat16 on CPUs that have it: not exact, shown for reference);
  every runtime gets as many threads as the machine has cores;
* each form runs NumPy batches in interleaved rounds: every round times
  `reps` calls of every (model, form) in turn, the order rotating from
  round to round; images/s is the median over rounds, the realized
  speed-up the median of the paired per-round ratio original / pruned time,
  set against the theoretical one (MACs ratio, `ekg_keras.count_flops`);
* for ResNet-56, the slim model against a plain Keras ResNet-56 built from
  scratch with the same widths (`keras` form; goal: within 3%);
* with `--latency` (default: ResNet-56), a third model per batch size,
  `prune(model, latency=0.5, latency_batch_size=batch, runtime=...)`
  (one-shot, same criterion and allocation), timed in every form beside
  the others: its time as a fraction of the original's (goal <= 0.55 in
  the runtime it was budgeted in), and the latency model's prediction for
  whole networks (the latency-pruned one, the `flops=0.5` one, every
  group at 30% and 70%) against their measured time in that runtime.

    .venv/bin/python benchmarks/deploy.py                   # ~20 min, 2 cores
    .venv/bin/python benchmarks/deploy.py --models resnet56
    .venv/bin/python benchmarks/deploy.py --quick           # smoke check
    .venv/bin/python benchmarks/deploy.py --forms keras,onnx --round-to 8
    .venv/bin/python benchmarks/deploy.py --models resnet56 \
        --latency resnet56 --latency-runtime onnx
    .venv/bin/python benchmarks/deploy.py --prune-only      # ~1.5 min
"""

import gc
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.

FLOPS = 0.5
LATENCY = 0.5
LATENCY_GOAL = 0.55
#: Runtime names of `prune(runtime=...)` by deployed form.
RUNTIME_FORMS = {
    "tf": "tf_saved_model",
    "litert": "litert",
    "onnx": "onnx",
    "openvino": "openvino",
}
FORMS = (
    "keras",
    "tf_saved_model",
    "litert",
    "onnx",
    "openvino",
    "openvino_bf16",
)
SUFFIXES = {
    "tf_saved_model": "",
    "litert": ".tflite",
    "onnx": ".onnx",
    "openvino": ".xml",
}
HAND_BUILT_GOAL = 0.03
PRUNE_PHASES = ("trace", "wrap", "flops counter", "allocation", "slim")
PRUNE_GOALS = {"resnet56": 1.0, "resnet50": 3.0}  # seconds, prune + slim


def build_model(name, quick):
    """The original model and its batch sizes."""
    import keras

    import ekg_keras

    keras.utils.set_random_seed(0)
    if name == "resnet56":
        return ekg_keras.models.resnet56(), (64, 1)
    if name == "resnet20":  # The demo's model (10 classes, 32x32).
        return ekg_keras.models.resnet20(), (64, 1)
    size = 96 if quick else 224
    if name == "resnet50":
        model = keras.applications.ResNet50(
            weights=None, input_shape=(size, size, 3)
        )
    elif name == "mobilenet_v2":
        model = keras.applications.MobileNetV2(
            weights=None, input_shape=(size, size, 3)
        )
    else:
        raise ValueError(
            "`--models` should name resnet56, resnet20, resnet50 or "
            "mobilenet_v2. "
            f"Received: {name!r}"
        )
    return model, (16, 1)


def hand_built_resnet_cifar(slim):
    """A CIFAR ResNet built from scratch with the widths of `slim`.

    The same layers, names and order as `ekg_keras.models.resnet_cifar`,
    each convolution as wide as the slim model's; random weights.
    """
    import keras
    from keras import layers

    def conv(name, strides=1, size=3):
        return layers.Conv2D(
            slim.get_layer(name).filters,
            size,
            strides=strides,
            padding="same",
            use_bias=False,
            name=name,
        )

    inputs = keras.Input(slim.input_shape[1:], name="input")
    x = conv("stem_conv")(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    names = {layer.name for layer in slim.layers}
    stage = 1
    while f"stage{stage}_block0_conv1" in names:
        block = 0
        while f"stage{stage}_block{block}_conv1" in names:
            prefix = f"stage{stage}_block{block}"
            strides = 2 if stage > 1 and block == 0 else 1
            y = conv(f"{prefix}_conv1", strides)(x)
            y = layers.ReLU()(layers.BatchNormalization()(y))
            y = layers.BatchNormalization()(conv(f"{prefix}_conv2")(y))
            if f"{prefix}_shortcut_conv" in names:
                x = conv(f"{prefix}_shortcut_conv", strides, size=1)(x)
                x = layers.BatchNormalization()(x)
            x = layers.ReLU()(layers.Add()([y, x]))
            block += 1
        stage += 1
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(slim.output_shape[-1])(x)
    return keras.Model(inputs, outputs, name="hand_built")


class GarbageCollectionTime:
    """Seconds Python's cyclic garbage collector ran inside the block."""

    def __init__(self):
        self.seconds = 0.0
        self._start = None

    def _callback(self, phase, info):
        del info
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def __enter__(self):
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info):
        gc.callbacks.remove(self._callback)


def prune_then_slim(model, prune_options):
    """`prune(model, flops, slim=False)` then `slim`, timed by phase.

    Runs what `prune` runs for a data-free one-shot prune (the method's
    set-up and search), then `ekg_keras.slim(masked)` as a user would.

    Returns:
        `(masked model, slim model, {phase: seconds, "other": ...,
        "total": ..., "of which garbage collection": ...})`.
    """
    with GarbageCollectionTime() as collection:
        masked, slim, phases = _prune_then_slim(model, prune_options)
    phases["of which garbage collection"] = collection.seconds
    return masked, slim, phases


def _prune_then_slim(model, prune_options):
    import ekg_keras

    start = time.perf_counter()
    pruning = ekg_keras.methods.get("oneshot").create(
        model, FLOPS, None, verbose=0, **prune_options
    )
    masked = pruning.run()
    slim_start = time.perf_counter()
    slim = ekg_keras.slim(masked)
    end = time.perf_counter()
    setup = pruning.setup.seconds
    phases = {
        "trace": setup["trace"],
        "wrap": setup["wrap"],
        "flops counter": setup["cost"],
        "allocation": pruning.seconds,
        "slim": end - slim_start,
    }
    phases["other"] = end - start - sum(phases.values())
    phases["total"] = end - start
    return masked, slim, phases


def prune_calls(model, prune_options):
    """The two ways a user prunes data-free, as `{name: fn() -> slim}`."""
    import ekg_keras

    def two_calls():
        masked = ekg_keras.prune(
            model, flops=FLOPS, slim=False, verbose=0, **prune_options
        )
        return ekg_keras.slim(masked)

    def one_call():
        return ekg_keras.prune(model, flops=FLOPS, verbose=0, **prune_options)

    return {"prune(slim=False) + slim": two_calls, "prune": one_call}


def time_prune_and_slim(model, prune_options, rounds):
    """First and warm wall times of data-free prune + slim.

    The first call on `model` is the phase-timed `prune_then_slim`; then
    `rounds` interleaved rounds (order rotating) of it, of `prune(slim=
    False)` + `slim` and of `prune(model, flops)`.

    Returns:
        `(masked model, slim model, figures)` (the models of the first
        call).
    """
    before = _timing.cpu_snapshot()
    masked, slim, first = prune_then_slim(model, prune_options)
    calls = prune_calls(model, prune_options)
    names = ["phases", *calls]
    warm = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if name == "phases":
                warm[name].append(prune_then_slim(model, prune_options)[2])
            else:
                warm[name].append(_timing.time_once(calls[name])[1])
    own, others = _timing.other_load(before, _timing.cpu_snapshot())
    figures = {
        "first": first,
        "warm": {
            key: statistics.median(run[key] for run in warm["phases"])
            for key in first
        },
        "warm_calls": {name: statistics.median(warm[name]) for name in calls},
        "rounds": rounds,
        "own_cores": own,
        "other_cores": others,
        "floor": {"masked": build_floor(masked), "slim": build_floor(slim)},
    }
    return masked, slim, figures


def build_floor(model, repeats=3):
    """Seconds Keras needs to build `model` again from its config.

    Returns:
        `{"structure": s, "variables": s}`, medians of `repeats`: the
        layers and their symbolic calls with every variable left
        uninitialized (deferred, as `wrap` and `slim` create them), and
        `keras.Model.from_config` with variables from the initializers.
    """
    import copy

    from ekg_keras.deferred import deferred_variables
    from ekg_keras.deferred import initialize_deferred

    config = model.get_config()
    build = type(model).from_config
    structure, variables = [], []
    for _ in range(repeats):
        copied = copy.deepcopy(config)
        with deferred_variables():
            start = time.perf_counter()
            build(copied)
            structure.append(time.perf_counter() - start)
        initialize_deferred([])  # Not timed: the initializers' values.
        copied = copy.deepcopy(config)
        variables.append(_timing.time_once(build, copied)[1])
    return {
        "structure": statistics.median(structure),
        "variables": statistics.median(variables),
    }


def format_prune_times(name, figures):
    """The phase table and the floor of the data-free prune + slim."""
    first, warm = figures["first"], figures["warm"]
    rows = [
        [phase, f"{first[phase]:.3f}", f"{warm[phase]:.3f}"]
        for phase in (
            *PRUNE_PHASES,
            "other",
            "total",
            "of which garbage collection",
        )
    ]
    for call, seconds in figures["warm_calls"].items():
        rows.append([f"user calls: {call}", "", f"{seconds:.3f}"])
    floor = figures["floor"]
    goal = PRUNE_GOALS.get(name)
    verdict = ""
    if goal is not None:
        met = first["total"] <= goal and warm["total"] <= goal
        verdict = f"; goal <= {goal:.0f} s: {'PASS' if met else 'FAIL'}"
    others = figures["other_cores"]
    others = "n/a" if others is None else f"{others:.2f}"
    title = (
        f"\n{name}: data-free prune + slim wall time, s (cores own/others "
        f"{figures['own_cores']:.2f}/{others}; warm = median of "
        f"{figures['rounds']} rounds){verdict}"
    )
    floor_line = (
        "Keras floor, building again from the config (structure only / "
        f"with variables): masked model {floor['masked']['structure']:.3f} "
        f"/ {floor['masked']['variables']:.3f} s, slim model "
        f"{floor['slim']['structure']:.3f} / "
        f"{floor['slim']['variables']:.3f} s"
    )
    table = _timing.table(["phase", "first call", "warm"], rows)
    return f"{title}\n{table}\n{floor_line}"


def keras_runner(model, batch_size):
    """`tf.function(model(x, training=False))` on NumPy, one trace."""
    import tensorflow as tf

    spec = tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32)
    infer = tf.function(
        lambda x: model(x, training=False), input_signature=[spec]
    )
    return lambda x: infer(x).numpy()


def export_all(model, folder, forms, label):
    """Exports `model` to every file format the forms need.

    Returns:
        `({format: path}, {format: export seconds})`.
    """
    import ekg_keras

    formats = {f.replace("_bf16", "") for f in forms} - {"keras"}
    paths, seconds = {}, {}
    for format in sorted(formats):
        path = os.path.join(folder, f"{label}_{format}{SUFFIXES[format]}")
        start = time.perf_counter()
        ekg_keras.export(model, path, format=format, verbose=0)
        seconds[format] = time.perf_counter() - start
        paths[format] = path
    return paths, seconds


def runners_for(model, paths, forms, batch_size):
    """`{form: fn(x) -> outputs}` of one model at one batch size."""
    import ekg_keras

    threads = os.cpu_count()
    runners = {}
    for form in forms:
        if form == "keras":
            runners[form] = keras_runner(model, batch_size)
        elif form == "openvino_bf16":
            runners[form] = ekg_keras.load_exported(
                paths["openvino"], num_threads=threads, openvino_config={}
            )
        else:
            runners[form] = ekg_keras.load_exported(
                paths[form], num_threads=threads
            )
    return runners


def time_rounds(runners, x, rounds, reps):
    """Interleaved rounds, rotating order; per-call seconds per round."""
    names = list(runners)
    times = {name: [] for name in names}
    clock = time.perf_counter
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            run = runners[name]
            start = clock()
            for _ in range(reps[name]):
                run(x)
            times[name].append((clock() - start) / reps[name])
    return times


def calibrate_reps(runners, x, target_s):
    """Calls per round so that each (model, form) takes about `target_s`."""
    reps = {}
    for name, run in runners.items():
        run(x)  # Warm-up (first calls allocate, tune, compile).
        start = time.perf_counter()
        run(x)
        run(x)
        seconds = (time.perf_counter() - start) / 2
        reps[name] = max(1, min(200, round(target_s / max(seconds, 1e-6))))
    return reps


def bench_batch(models, paths, forms, batch_size, rounds, target_s):
    """Images/s of every (variant, form) and the pruned speed-ups."""
    import numpy as np

    runners = {}
    for variant, model in models.items():
        variant_forms = forms if variant != "hand_built" else ("keras",)
        for form, run in runners_for(
            model, paths.get(variant, {}), variant_forms, batch_size
        ).items():
            runners[(variant, form)] = run
    shape = (batch_size, *models["original"].input_shape[1:])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    reps = calibrate_reps(runners, x, target_s)
    before = _timing.cpu_snapshot()
    times = time_rounds(runners, x, rounds, reps)
    own, others = _timing.other_load(before, _timing.cpu_snapshot())
    result = {
        "batch_size": batch_size,
        "rounds": rounds,
        "own_cores": own,
        "other_cores": others,
        "forms": {},
    }
    for form in forms:
        original = times[("original", form)]
        pruned = times[("pruned", form)]
        ratios = [a / b for a, b in zip(original, pruned)]
        result["forms"][form] = {
            "reps": reps[("pruned", form)],
            "original_img_s": batch_size / statistics.median(original),
            "pruned_img_s": batch_size / statistics.median(pruned),
            "speedup": statistics.median(ratios),
            "speedup_p25": _timing.percentile(ratios, 25),
            "speedup_p75": _timing.percentile(ratios, 75),
        }
    if "latency" in models:
        result["latency"] = {}
        for form in forms:
            original = times[("original", form)]
            ratios = [b / a for a, b in zip(original, times[("latency", form)])]
            result["latency"][form] = {
                "img_s": batch_size
                / statistics.median(times[("latency", form)]),
                "time_fraction": statistics.median(ratios),
                "p25": _timing.percentile(ratios, 25),
                "p75": _timing.percentile(ratios, 75),
            }
    if "hand_built" in models:
        slim = times[("pruned", "keras")]
        hand = times[("hand_built", "keras")]
        ratios = [a / b for a, b in zip(slim, hand)]
        result["hand_built"] = {
            "img_s": batch_size / statistics.median(hand),
            "slim_over_hand_time": statistics.median(ratios),
            "p25": _timing.percentile(ratios, 25),
            "p75": _timing.percentile(ratios, 75),
        }
    return result


def latency_pruned(model, batch_size, args, flops_masked):
    """`latency=0.5` one-shot pruning at one batch size, and the latency
    model's predictions for whole networks against measured times."""
    import numpy as np

    import ekg_keras
    from ekg_keras.flops import keep_counts

    options = {"round_to": args.round_to} if args.round_to > 1 else {}
    try:
        pruning = ekg_keras.methods.get("oneshot").create(
            model,
            None,
            latency=LATENCY,
            latency_batch_size=batch_size,
            runtime=args.latency_runtime,
            verbose=1,
            **options,
        )
    except ValueError as error:  # Unreachable on this device: a finding.
        print(f"latency={LATENCY} at batch {batch_size}: {error}", flush=True)
        return None, {
            "batch_size": batch_size,
            "runtime": args.latency_runtime,
            "unreachable": str(error),
        }
    start = time.perf_counter()
    masked = pruning.run()
    prune_s = time.perf_counter() - start
    setup = pruning.setup
    counter = setup.counter
    flops_graph = ekg_keras.graph.trace(flops_masked, warn=False)
    configurations = {
        "latency=0.5": setup.keep_counts(setup.current_keep()),
        "flops=0.5": keep_counts(flops_graph),
    }
    for fraction in (0.3, 0.7):
        configurations[f"uniform {fraction:.0%}"] = np.array(
            [
                max(1.0, np.ceil(fraction * g.size)) if g.prunable else g.size
                for g in setup.graph.groups
            ]
        )
    measured = counter.measure(
        [setup.deployed_network(k) for k in configurations.values()]
    )
    checks = []
    for (label, counts), ms in zip(configurations.items(), measured):
        predicted = counter.macs(counts)
        checks.append(
            {
                "network": label,
                "predicted_ms": predicted,
                "measured_ms": ms,
                "error": predicted / ms - 1.0,
            }
        )
    full_ms = counter.measure([setup.deployed_network(counter.full)])[0]
    return ekg_keras.slim(masked, setup.graph), {
        "batch_size": batch_size,
        "runtime": args.latency_runtime,
        "prune_s": prune_s,
        "predicted_fraction": setup.fraction(configurations["latency=0.5"]),
        "flops_fraction": setup.flops_counter.macs(
            configurations["latency=0.5"]
        )
        / setup.flops_counter.macs(setup.flops_counter.full),
        "calibration": counter.calibration,
        "full_measured_ms": full_ms,
        # The method's own check (timed against the original, pruned
        # again while above the budget) and the budget it ended with.
        "method_measured_fraction": pruning.measured_latency,
        "last_budget": setup.target,
        "full_predicted_ms": counter.macs(counter.full),
        "checks": checks,
    }


def format_latency_checks(model_name, figures):
    error = figures["full_predicted_ms"] / figures["full_measured_ms"] - 1
    rows = [
        [
            check["network"],
            f"{check['predicted_ms']:.3f}",
            f"{check['measured_ms']:.3f}",
            f"{check['error']:+.1%}",
        ]
        for check in figures["checks"]
    ]
    rows.append(
        [
            "unpruned",
            f"{figures['full_predicted_ms']:.3f}",
            f"{figures['full_measured_ms']:.3f}",
            f"{error:+.1%}",
        ]
    )
    return (
        f"\n{model_name} latency model ({figures['runtime']}, batch "
        f"{figures['batch_size']}): latency=0.5 pruned in "
        f"{figures['prune_s']:.1f} s, predicted "
        f"{figures['predicted_fraction']:.3f} of the latency, "
        f"{figures['flops_fraction']:.3f} of the FLOPs; measured by the "
        f"method {figures['method_measured_fraction']:.3f} (predicted budget "
        f"of its last attempt {figures['last_budget']:.3f})\n"
        + _timing.table(
            [
                "network (slim, BN folded)",
                "predicted ms",
                "measured ms",
                "error",
            ],
            rows,
        )
    )


def bench_model(name, forms, args):
    """Prunes, exports and times one model; returns its figures."""
    import ekg_keras

    model, batch_sizes = build_model(name, args.quick)
    prune_options = {}
    if args.round_to > 1:
        prune_options = {"round_to": args.round_to}
    masked, pruned, prune_times = time_prune_and_slim(
        model, prune_options, args.prune_rounds
    )
    full, small = ekg_keras.count_flops(model), ekg_keras.count_flops(pruned)
    print(format_prune_times(name, prune_times), flush=True)
    print(
        f"{name}: MACs {full.macs / 1e6:.1f}M -> {small.macs / 1e6:.1f}M",
        flush=True,
    )
    result = {
        "model": name,
        "input_shape": list(model.input_shape[1:]),
        "prune_s": prune_times["first"]["total"] - prune_times["first"]["slim"],
        "slim_s": prune_times["first"]["slim"],
        "prune_and_slim": prune_times,
        "macs": {"original": full.macs, "pruned": small.macs},
        "params": {"original": full.params, "pruned": small.params},
        "theoretical_speedup": full.macs / small.macs,
        "export_s": {},
        "batches": [],
    }
    if args.prune_only:
        return result
    models = {"original": model, "pruned": pruned}
    if name == "resnet56" and "keras" in forms:
        models["hand_built"] = hand_built_resnet_cifar(pruned)
    latency_models = {}
    if name in args.latency:
        result["latency_model"] = []
        for batch_size in batch_sizes:
            pruned_model, figures = latency_pruned(
                model, batch_size, args, masked
            )
            result["latency_model"].append(figures)
            if pruned_model is not None:
                latency_models[batch_size] = pruned_model
                print(format_latency_checks(name, figures), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for variant in ("original", "pruned"):
            paths[variant], seconds = export_all(
                models[variant], folder, forms, variant
            )
            result["export_s"][variant] = seconds
        for batch_size in batch_sizes:
            batch_models, batch_paths = dict(models), dict(paths)
            if batch_size in latency_models:
                batch_models["latency"] = latency_models[batch_size]
                batch_paths["latency"], _ = export_all(
                    batch_models["latency"], folder, forms, f"lat{batch_size}"
                )
            batch = bench_batch(
                batch_models,
                batch_paths,
                forms,
                batch_size,
                args.rounds,
                args.round_seconds,
            )
            result["batches"].append(batch)
            print(format_batch(result, batch, args), flush=True)
    return result


def format_batch(model_result, batch, args):
    theory = model_result["theoretical_speedup"]
    rows = []
    for form, figures in batch["forms"].items():
        rows.append(
            [
                form,
                f"{figures['original_img_s']:.1f}",
                f"{figures['pruned_img_s']:.1f}",
                f"{figures['speedup']:.2f}x",
                f"{figures['speedup_p25']:.2f}-{figures['speedup_p75']:.2f}",
                f"{theory:.2f}x",
                f"{figures['speedup'] / theory:.2f}",
                f"{batch['rounds']}x{figures['reps']}",
            ]
        )
    lines = [
        f"\n{model_result['model']} "
        f"{'x'.join(map(str, model_result['input_shape']))}, batch "
        f"{batch['batch_size']} (cores own/others {batch['own_cores']:.2f}/"
        + (
            "n/a"
            if batch["other_cores"] is None
            else f"{batch['other_cores']:.2f}"
        )
        + ")",
        _timing.table(
            [
                "form",
                "original img/s",
                "pruned img/s",
                "speed-up",
                "IQR",
                "theoretical",
                "realized/theor.",
                "rounds x reps",
            ],
            rows,
        ),
    ]
    latency = batch.get("latency")
    if latency:
        budgeted = RUNTIME_FORMS[args.latency_runtime]
        lines.append(
            f"latency=0.5 model (budgeted in {args.latency_runtime}, batch "
            f"{batch['batch_size']}): time / original's time per form; goal "
            f"<= {LATENCY_GOAL} in {budgeted}"
        )
        rows = []
        for form, figures in latency.items():
            verdict = ""
            if form == budgeted:
                verdict = (
                    "PASS"
                    if figures["time_fraction"] <= LATENCY_GOAL
                    else "MISS"
                )
            rows.append(
                [
                    form,
                    f"{figures['img_s']:.1f}",
                    f"{figures['time_fraction']:.2f}",
                    f"{figures['p25']:.2f}-{figures['p75']:.2f}",
                    verdict,
                ]
            )
        lines.append(
            _timing.table(
                ["form", "img/s", "time fraction", "IQR", "goal"], rows
            )
        )
    hand = batch.get("hand_built")
    if hand:
        gap = hand["slim_over_hand_time"] - 1.0
        verdict = "PASS" if abs(gap) <= HAND_BUILT_GOAL else "FAIL"
        lines.append(
            f"slim vs hand-built plain Keras model of the same widths "
            f"(keras form): slim time {gap:+.1%} (IQR "
            f"{hand['p25'] - 1:+.1%}..{hand['p75'] - 1:+.1%}; hand-built "
            f"{hand['img_s']:.1f} img/s); within "
            f"{HAND_BUILT_GOAL:.0%}: {verdict}"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    """The flags, with the defaults that depend on --quick filled in and
    `args.forms` a tuple of known forms."""
    parser = _timing.base_parser(
        __doc__.splitlines()[0],
        "ResNet-56 only (and 96x96 inputs for the others), 2 short rounds",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="resnet56,resnet50,mobilenet_v2 (default), resnet20",
    )
    parser.add_argument(
        "--forms", default=",".join(FORMS), help="comma-separated forms"
    )
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--round-seconds",
        type=float,
        default=None,
        help="about how long each (model, form) runs per round",
    )
    parser.add_argument(
        "--prune-only",
        action="store_true",
        help="only the data-free prune + slim wall time (no export, no "
        "inference timing)",
    )
    parser.add_argument(
        "--prune-rounds",
        type=int,
        default=None,
        help="warm rounds of the prune + slim timing (default 5; 2 quick)",
    )
    parser.add_argument(
        "--round-to",
        type=int,
        default=1,
        help="prune with round_to=N (channel counts multiples of N)",
    )
    parser.add_argument(
        "--latency",
        default="resnet56",
        help="models that also get a latency=0.5 pruned variant ('' none)",
    )
    parser.add_argument(
        "--latency-runtime",
        default="tf",
        choices=sorted(RUNTIME_FORMS),
        help="the runtime the latency budget is measured in",
    )
    args = parser.parse_args(argv)
    args.latency = [m for m in args.latency.split(",") if m]
    args.models = args.models or (
        "resnet56" if args.quick else "resnet56,resnet50,mobilenet_v2"
    )
    args.rounds = args.rounds or (2 if args.quick else 9)
    args.round_seconds = args.round_seconds or (0.05 if args.quick else 0.3)
    args.prune_rounds = args.prune_rounds or (2 if args.quick else 5)
    forms = tuple(args.forms.split(","))
    unknown = sorted(set(forms) - set(FORMS))
    if unknown:
        parser.error(f"unknown forms {unknown}; known: {list(FORMS)}")
    if "openvino_bf16" in forms and "openvino" not in forms:
        forms = forms + ("openvino",)
    args.forms = forms
    return args


def main(argv=None):
    """Runs the benchmark; returns a dict of figures (also printed)."""
    args = parse_args(argv)
    argv_line = " ".join(
        [
            "python benchmarks/deploy.py",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    print(f"command: {argv_line}", flush=True)
    print(_timing.environment_line(_timing.environment()), flush=True)
    start = time.perf_counter()
    results = [
        bench_model(name, args.forms, args) for name in args.models.split(",")
    ]
    result = {
        "benchmark": "deploy",
        "environment": _timing.environment(),
        "flops_target": FLOPS,
        "round_to": args.round_to,
        "latency_target": LATENCY,
        "latency_runtime": args.latency_runtime,
        "models": results,
        "total_s": time.perf_counter() - start,
        "summary": summary_line(results),
    }
    warning = _timing.load_warning(
        [b["other_cores"] for r in results for b in r["batches"]]
        + [r["prune_and_slim"]["other_cores"] for r in results],
        os.cpu_count(),
        "absolute figures are low and noisy (interleaved rounds keep the "
        "ratios fairer).",
    )
    if warning:
        print(warning)
    print(result["summary"])
    print(f"total benchmark run {result['total_s']:.1f} s", flush=True)
    _timing.write_json(args.json, result)
    return result


def summary_line(results):
    """Prune + slim times and the best form's speed-up, per model."""
    summary = []
    for res in results:
        times = res["prune_and_slim"]
        summary.append(
            f"{res['model']} prune + slim {times['first']['total']:.2f} s "
            f"first, {times['warm']['total']:.2f} s warm"
        )
        if not res["batches"]:
            continue
        first = res["batches"][0]
        best = max(first["forms"].items(), key=lambda kv: kv[1]["speedup"])
        summary.append(
            f"{res['model']} b{first['batch_size']}: best {best[0]} "
            f"{best[1]['speedup']:.2f}x of {res['theoretical_speedup']:.2f}x"
        )
    return "; ".join(summary)


if __name__ == "__main__":
    main()
