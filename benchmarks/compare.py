"""Every registered pruning method at an equal training budget.

    .venv/bin/python benchmarks/compare.py             # <= 90 min, 2 cores
    .venv/bin/python benchmarks/compare.py --quick     # <= 10 min
    .venv/bin/python benchmarks/compare.py --methods ekg,l1 --budgets 0.3

Cases (`--cases`): a network trained on a data setting until its test
accuracy stops improving (the curve is reported), cached. "digits" is the
embedded digits at 16x16; "hard" is a harder, cheaper setting where
methods separate: 30 training images per class, Gaussian noise of std 1.0
(in standard units) added to every train and test image.

Equal training budget: after the baseline every run gets the same number
of epochs over the training data (`--epochs`: a short and a long budget)
that update the network's weights. Each method says how it spends them
(`PruningMethod.training_budget`: soft pruning then recovery, a super-net
then fine-tuning, a search's warm-up then fine-tuning, or all of it on
fine-tuning); the table shows the split. Work that updates no weights
(scoring, candidate evaluation, gates or samplers on a frozen network) is
reported as search seconds. The control row "unpruned" trains the
baseline itself for the same epochs: each method's cost of pruning is its
gap to that row.

Every registered method (the registry is the list) prunes to each FLOPs
target with each seed. Recorded: test accuracy right after pruning (batch
norm recalibrated), after the budget with plain fine-tuning and with
every registered fine-tuner that learns from the method's trajectory
(EKG's distillation), the final accuracy (the method's own fine-tuner
where it was run, else plain), FLOPs of the slim model (a run more than
0.5 points below its target is marked), parameters, the folded slim
model's CPU latency, wall time per stage. Paired t-tests over seeds check
the claims of the papers that the method packages register
(`ekg_keras.methods.claims`). Each run is cached as JSON, so an
interrupted comparison resumes; results go to `results/compare.json`,
`results/compare.md` and PNG plots in `results/`."""

import argparse
import dataclasses
import itertools
import json
import pathlib
import sys
import time

import _timing  # noqa: F401  (silences TensorFlow; puts the repo on the path)
from common import COMMON_FINETUNER
from common import FINETUNE_SETTINGS
from common import accuracy
from common import compared_finetuners

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
SEEDS = (0, 1, 2)
BUDGETS = (0.5, 0.3)
IMAGE_SIZE = 16
#: Networks: name -> (depth, width of the first stage).
NETWORKS = {
    "resnet20": (20, 16),
    "resnet20_w8": (20, 8),
    "resnet56": (56, 16),
}
#: Data settings: training samples per class (None: all), noise std (in
#: standard units), epochs of one baseline round, the short and long
#: training budgets (epochs).
DATA = {
    "digits": {"per_class": None, "noise": 0.0, "round": 10, "epochs": (4, 12)},
    "hard": {"per_class": 30, "noise": 1.0, "round": 30, "epochs": (10, 30)},
}
#: The default grid: network/data -> the seeds and which of the data's
#: training budgets it runs. The main case runs three seeds (for the paired
#: t-tests) and both budgets; the half-width and the deeper network one
#: seed at the short budget: what fits into 90 minutes on 2 cores. Cases
#: named with `--cases` run every seed and budget of the settings.
DEFAULT_CASES = {
    "resnet20/hard": {"seeds": (0, 1, 2), "budgets": "both"},
    "resnet20_w8/hard": {"seeds": (0,), "budgets": "short"},
    "resnet56/hard": {"seeds": (0,), "budgets": "short"},
}
QUICK_CASES = ("resnet20/hard",)
#: The baseline trains in rounds (a cosine schedule each) until a round
#: gains less than this on the test set, at most `MAX_ROUNDS` rounds.
MIN_GAIN = 0.0025
MAX_ROUNDS = 6
#: Training images per class of `--tiny` (two batches of 64: every step of
#: the harness runs, at 2/5 of the "hard" setting's steps).
TINY_PER_CLASS = 10
#: A run this far below its FLOPs target is marked as a miss.
FLOPS_TOLERANCE = 0.005


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one comparison run covers."""

    cases: tuple
    methods: tuple
    budgets: tuple
    seeds: tuple  # None: each default case's own (`DEFAULT_CASES`).
    epochs: tuple  # Training budgets; None: the data setting's.
    options: str  # "compare" or "smoke" (the methods' option sets)
    image_size: int
    per_class: int | None  # Training images per class; None: the data's.
    results: pathlib.Path
    baseline_rounds: int  # At most this many baseline rounds.
    latency: bool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one seed, flops 0.5, ResNet-20 on the hard digits only",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help=(
            "a smoke check of the harness: 8x8 inputs, 10 training images "
            "per class (two batches), the methods' smoke options, budgets "
            "of 2 and 3 epochs (figures mean nothing)"
        ),
    )
    parser.add_argument(
        "--methods", default=None, help="comma-separated registered names"
    )
    parser.add_argument(
        "--budgets", default=None, help="comma-separated FLOPs fractions"
    )
    parser.add_argument("--seeds", default=None, help="comma-separated seeds")
    parser.add_argument(
        "--epochs",
        default=None,
        help="comma-separated training budgets (default: the data's)",
    )
    parser.add_argument(
        "--cases",
        default=None,
        help=(
            "comma-separated network/data from "
            f"{', '.join(NETWORKS)} / {', '.join(DATA)}"
        ),
    )
    parser.add_argument(
        "--results",
        default=str(RESULTS),
        help="directory of the results and the run cache",
    )
    return parser.parse_args(argv)


def settings_from(args):
    import ekg_keras

    def listed(text, default, kind=str):
        return tuple(kind(v) for v in text.split(",")) if text else default

    methods = listed(args.methods, distinct_methods(ekg_keras.methods))
    unknown = sorted(set(methods) - set(ekg_keras.methods.names()))
    if unknown:
        raise SystemExit(
            f"--methods should be registered methods "
            f"({', '.join(ekg_keras.methods.names())}). Received: "
            f"{', '.join(unknown)}"
        )
    quick, tiny = args.quick or args.tiny, args.tiny
    cases = listed(args.cases, QUICK_CASES if quick else tuple(DEFAULT_CASES))
    for case in cases:
        network, _, data = case.partition("/")
        if network not in NETWORKS or data not in DATA:
            raise SystemExit(
                f"--cases should be network/data from {', '.join(NETWORKS)}"
                f" / {', '.join(DATA)}. Received: {case}"
            )
    return Settings(
        cases=cases,
        methods=methods,
        budgets=listed(args.budgets, (0.5,) if quick else BUDGETS, float),
        seeds=listed(args.seeds, (0,) if quick else None, int),
        epochs=listed(args.epochs, (2, 3) if tiny else None, int),
        options="smoke" if tiny else "compare",
        image_size=8 if tiny else IMAGE_SIZE,
        per_class=TINY_PER_CLASS if tiny else None,
        results=pathlib.Path(args.results),
        baseline_rounds=1 if tiny else MAX_ROUNDS,
        latency=not tiny,
    )


def distinct_methods(methods):
    """Registered names, each (class, effective presets) once: by the
    class's own name if it is one of them (e.g. "oneshot", not its preset
    "l2" that sets the default criterion), else the first in order."""
    chosen = {}
    for name in methods.names():
        entry = methods.get(name)
        defaults = entry.method_class.Options()
        effective = dataclasses.replace(defaults, **entry.presets)
        key = (entry.method_class, repr(effective))
        if key not in chosen or name == entry.method_class.name:
            chosen[key] = name
    return tuple(sorted(chosen.values()))


def case_plan(settings, case):
    """The seeds and the training budgets (epochs) `case` runs."""
    data_name = case.partition("/")[2]
    epochs = settings.epochs or DATA[data_name]["epochs"]
    seeds = settings.seeds or SEEDS
    if settings.seeds is None and case in DEFAULT_CASES:
        plan = DEFAULT_CASES[case]
        seeds = plan["seeds"]
        if plan["budgets"] == "short" and not settings.epochs:
            epochs = epochs[:1]
    return seeds, epochs


# Data and baselines.


def load_data(name, settings):
    """The data setting `name` (see `DATA`)."""
    import numpy as np
    import tensorflow as tf

    import ekg_keras

    data = ekg_keras.data.digits(
        batch_size=64, image_size=settings.image_size, seed=0
    )
    spec = DATA[name]
    per_class = settings.per_class or spec["per_class"]
    if per_class is None and not spec["noise"]:
        return data
    rng = np.random.default_rng(0)
    x, y = data.x_train, data.y_train
    if per_class is not None:
        rows = np.concatenate(
            [
                rng.permutation(np.flatnonzero(y == c))[:per_class]
                for c in range(data.num_classes)
            ]
        )
        x, y = x[np.sort(rows)], y[np.sort(rows)]
    x_test = data.x_test
    if spec["noise"]:
        x = x + rng.normal(0, spec["noise"], x.shape).astype(np.float32)
        x_test = x_test + rng.normal(0, spec["noise"], x_test.shape).astype(
            np.float32
        )
    train = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=0, reshuffle_each_iteration=True)
        .batch(64)
    )
    test = tf.data.Dataset.from_tensor_slices((x_test, data.y_test)).batch(64)
    return dataclasses.replace(
        data, x_train=x, y_train=y, x_test=x_test, train=train, test=test
    )


def baseline(case, settings, data):
    """The converged baseline of `case` and its accuracy curve (cached)."""
    import keras

    import ekg_keras

    network, _, data_name = case.partition("/")
    depth, width = NETWORKS[network]
    directory = settings.results / "compare" / "baselines"
    stem = f"{network}_{data_name}_{settings.image_size}px"
    path = directory / f"{stem}.keras"
    curve_path = directory / f"{stem}_curve.json"
    if path.exists() and curve_path.exists():
        return keras.saving.load_model(path), json.loads(curve_path.read_text())
    keras.utils.set_random_seed(0)
    model = ekg_keras.models.resnet_cifar(
        depth, input_shape=data.input_shape, width=width
    )
    epochs = DATA[data_name]["round"] if settings.options == "compare" else 1
    curve, best, best_weights = [], -1.0, None
    start = time.perf_counter()
    for round_ in range(settings.baseline_rounds):
        # Restarts from a high rate: the first round from scratch, later
        # ones from the best so far (SGDR-style warm restarts).
        fit_round(model, data, epochs, 0.1 if round_ == 0 else 0.05)
        value = accuracy(model, data)
        curve.append([(round_ + 1) * epochs, value])
        progress(
            f"baseline {case}: {(round_ + 1) * epochs} epochs, "
            f"{value:.2%}"
        )
        gained = value - best
        if value > best:
            best, best_weights = value, model.get_weights()
        if gained < MIN_GAIN:
            break
    model.set_weights(best_weights)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(path)
    record = {
        "curve": curve,
        "accuracy": best,
        "seconds": time.perf_counter() - start,
    }
    curve_path.write_text(json.dumps(record))
    return model, record


def fit_round(model, data, epochs, learning_rate):
    """One baseline round: SGD cosine from `learning_rate`, Nesterov,
    weight decay 5e-4 (the benchmarks' baseline recipe)."""
    import keras

    steps = epochs * len(data.train)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(learning_rate, steps),
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(data.train, epochs=epochs, shuffle=False, verbose=0)


# One method, one target, one seed: every training budget.


def method_options(entry, settings):
    cls = entry.method_class
    return dict(
        cls.smoke_options
        if settings.options == "smoke"
        else cls.compare_options
    )


def run_method(name, model, flops, seed, epochs_list, settings, data):
    """Prunes `model` with `name` to `flops`, then spends each training
    budget of `epochs_list`; returns a JSON record with one entry per
    budget. Searches whose options do not depend on the budget run once."""
    import ekg_keras

    entry = ekg_keras.methods.get(name)
    base_options = method_options(entry, settings)
    plans = {
        e: entry.method_class.training_budget(
            e, {**entry.presets, **base_options}
        )
        for e in epochs_list
    }
    record = {"method": name, "budget": flops, "seed": seed, "runs": {}}
    searched = {}
    for epochs, plan in plans.items():
        options = {**base_options, **plan.options}
        key = json.dumps(options, sort_keys=True, default=str)
        if key not in searched:
            searched[key] = search(entry, model, flops, seed, options, data)
        method, pruned = searched[key]
        record["runs"][str(epochs)] = train_budget(
            method, pruned, plan, seed, data
        )
    first = next(iter(searched.values()))[0]
    record.update(structure(first, model))
    record["trajectory"] = trajectory(first)
    if settings.latency:
        record.update(speed(first.model))
    return record


def search(entry, model, flops, seed, options, data):
    """Runs the method; returns it and its result (pruned accuracy,
    weights, seconds)."""
    import keras

    import ekg_keras

    train = (data.x_train, data.y_train)
    keras.utils.set_random_seed(seed)
    method = entry.create(model, flops, train, verbose=0, **options)
    fitter = ekg_keras.training.Fitter(train, batch_size=64, verbose=0)
    start = time.perf_counter()
    masked = method.run(fitter)
    seconds = {"search": time.perf_counter() - start}
    start = time.perf_counter()
    ekg_keras.recalibrate_batchnorm(masked, data.train)
    seconds["recalibration"] = time.perf_counter() - start
    pruned = {
        "accuracy": accuracy(masked, data),
        "weights": masked.get_weights(),
        "seconds": seconds,
    }
    return method, pruned


def train_budget(method, pruned, plan, seed, data):
    """From the method's result: the fine-tuning of `plan` with each
    compared fine-tuner; a JSON record."""
    import keras

    import ekg_keras

    masked = method.model
    run = {
        "split": plan.split(),
        "pruned": pruned["accuracy"],
        "seconds": dict(pruned["seconds"]),
        "finetuned": {},
    }
    if not plan.finetune_epochs:
        run["final"] = pruned["accuracy"]
        return run
    fitter = ekg_keras.training.Fitter(
        (data.x_train, data.y_train), batch_size=64, verbose=0
    )
    for tuner in compared_finetuners(method):
        masked.set_weights(pruned["weights"])
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        ekg_keras.training.finetune(
            method,
            plan.finetune_epochs,
            fitter,
            tuner,
            settings=FINETUNE_SETTINGS,
        )
        ekg_keras.recalibrate_batchnorm(masked, data.train)
        run["seconds"][f"finetune_{tuner}"] = time.perf_counter() - start
        run["finetuned"][tuner] = accuracy(masked, data)
    own = method.finetuner if method.finetuner in run["finetuned"] else None
    run["final"] = run["finetuned"][own or COMMON_FINETUNER]
    masked.set_weights(pruned["weights"])
    return run


def control(model, epochs, seed, data):
    """The unpruned baseline trained for `epochs` like a fine-tuning."""
    import keras

    import ekg_keras

    network = keras.models.clone_model(model)
    network.set_weights(model.get_weights())
    fitter = ekg_keras.training.Fitter(
        (data.x_train, data.y_train), batch_size=64, verbose=0
    )
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    ekg_keras.training.finetune_model(
        network, epochs, fitter, COMMON_FINETUNER, settings=FINETUNE_SETTINGS
    )
    value = accuracy(network, data)
    return {
        "split": {"finetune": epochs},
        "pruned": None,
        "finetuned": {COMMON_FINETUNER: value},
        "final": value,
        "seconds": {
            f"finetune_{COMMON_FINETUNER}": time.perf_counter() - start
        },
    }


def structure(method, model):
    """FLOPs and parameters by the slim model's count, kept widths."""
    import ekg_keras

    small = ekg_keras.slim(method.model)
    report = ekg_keras.count_flops(small)
    full = ekg_keras.count_flops(model)
    keep = method.setup.current_keep()
    return {
        "flops_fraction": report.macs / full.macs,
        "macs": report.macs,
        "params": report.params,
        "widths": {
            group.producers[0]: [int(mask.sum()), int(group.size)]
            for group, mask in zip(method.graph.groups, keep)
            if group.prunable
        },
    }


def trajectory(method):
    """(FLOPs fraction, validation loss) along the search, if it has one."""
    path = method.trajectory()
    if path is None:
        return None
    return [
        [float(f), float(loss)]
        for f, loss in zip(path.flops_fractions, path.losses)
    ]


def speed(masked):
    """Latency of the deployed form (slim, batch norm folded)."""
    import ekg_keras

    deployed = ekg_keras.fold_batchnorm(ekg_keras.slim(masked))
    one = ekg_keras.measure_latency(deployed, batch_size=1, runs=20)
    many = ekg_keras.measure_latency(deployed, batch_size=64, runs=5)
    return {
        "ms_batch1": one.median_ms,
        "images_per_s_batch64": many.images_per_second,
    }


# The comparison.


def run_all(settings):
    """Runs (or reads from the cache) every run; returns the records and
    the baselines' records."""
    records, baselines = [], {}
    for case in settings.cases:
        data_name = case.partition("/")[2]
        data = load_data(data_name, settings)
        model, curve = baseline(case, settings, data)
        seeds, epochs_list = case_plan(settings, case)
        baselines[case] = unpruned_record(case, model, data, curve, settings)
        for seed in seeds:
            record = cached(
                settings,
                case,
                "unpruned",
                1.0,
                seed,
                epochs_list,
                lambda s=seed: {
                    "method": "unpruned",
                    "budget": 1.0,
                    "seed": s,
                    "runs": {
                        str(e): control(model, e, s, data) for e in epochs_list
                    },
                    "flops_fraction": 1.0,
                },
            )
            records.append(record)
        runs = list(
            itertools.product(settings.methods, settings.budgets, seeds)
        )
        for index, (name, flops, seed) in enumerate(runs, 1):
            record = cached(
                settings,
                case,
                name,
                flops,
                seed,
                epochs_list,
                lambda n=name, f=flops, s=seed: run_method(
                    n, model, f, s, epochs_list, settings, data
                ),
                label=f"[{case} {index}/{len(runs)}]",
            )
            records.append(record)
    return records, baselines


def cached(settings, case, name, flops, seed, epochs_list, make, label=""):
    """The record of a run from the cache, or `make()`'s (then cached)."""
    path = cache_path(settings, case, name, flops, seed, epochs_list)
    if path.exists():
        record = json.loads(path.read_text())
        progress(f"{label} {case} {name} flops={flops} seed={seed}: cached")
        return record
    start = time.perf_counter()
    record = make()
    record["case"] = case
    record["seconds"] = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    summary = ", ".join(
        f"{e} ep {r['final']:.2%}" for e, r in record["runs"].items()
    )
    progress(
        f"{label} {case} {name} flops={flops} seed={seed}: {summary} "
        f"({record['seconds']:.0f} s)"
    )
    return record


def unpruned_record(case, model, data, curve, settings):
    import ekg_keras

    report = ekg_keras.count_flops(model)
    record = {
        "case": case,
        "accuracy": accuracy(model, data),
        "curve": curve["curve"],
        "seconds": curve["seconds"],
        "macs": report.macs,
        "params": report.params,
        "train_samples": int(len(data.y_train)),
    }
    if settings.latency:
        record.update(speed(ekg_keras.wrap(model)))
    return record


def cache_path(settings, case, name, flops, seed, epochs_list):
    tag = (
        f"{settings.options}_{settings.image_size}px_ep"
        + "-".join(map(str, epochs_list))
    )
    return (
        settings.results
        / "compare"
        / "runs"
        / tag
        / case.replace("/", "_")
        / f"{name}_{flops}_{seed}.json"
    )


# Summaries.


def measure(record, epochs, what):
    """A record's accuracy at `epochs`: "pruned", "final" or a
    fine-tuner's name (None where it was not run)."""
    run = record["runs"][str(epochs)]
    if what in ("pruned", "final"):
        return run[what]
    return run["finetuned"].get(what)


def stats(values):
    import numpy as np

    values = [v for v in values if v is not None]
    if not values:
        return None
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return [float(np.mean(values)), spread]


def summarize(records):
    """Mean and std per (case, method, FLOPs target, training budget)."""
    keyed = {}
    for r in records:
        keyed.setdefault((r["case"], r["method"], r["budget"]), []).append(r)
    rows = []
    for (case, name, flops), group in keyed.items():
        for epochs in group[0]["runs"]:
            runs = [r["runs"][epochs] for r in group]
            row = {
                "case": case,
                "method": name,
                "budget": flops,
                "epochs": int(epochs),
                "seeds": [r["seed"] for r in group],
                "split": runs[0]["split"],
                "pruned": stats([r["pruned"] for r in runs]),
                "final": stats([r["final"] for r in runs]),
                "finetuned": {
                    t: stats([r["finetuned"].get(t) for r in runs])
                    for t in sorted({t for r in runs for t in r["finetuned"]})
                },
                "flops_fraction": stats([r["flops_fraction"] for r in group]),
                "params": stats([r.get("params") for r in group]),
                "ms_batch1": stats([r.get("ms_batch1") for r in group]),
                "search_s": stats(
                    [r["seconds"].get("search") for r in runs]
                ),
            }
            low = min(r["flops_fraction"] for r in group)
            row["flops_miss"] = name != "unpruned" and (
                low < flops - FLOPS_TOLERANCE
                or max(r["flops_fraction"] for r in group) > flops + 1e-6
            )
            rows.append(row)
    rows.sort(
        key=lambda r: (r["case"], -r["budget"], r["epochs"], r["method"])
    )
    return rows


def paired(records, case, flops, epochs, mine, theirs):
    """Per-seed differences `mine - theirs` of ((method, measure) pairs)
    and the two-sided paired t-test's p-value."""
    from scipy import stats as scipy_stats

    def by_seed(name, what, budget):
        return {
            r["seed"]: measure(r, epochs, what)
            for r in records
            if r["case"] == case
            and r["method"] == name
            and r["budget"] == budget
            and str(epochs) in r["runs"]
        }

    a = by_seed(*mine, flops)
    b = by_seed(*theirs, 1.0 if theirs[0] == "unpruned" else flops)
    seeds = sorted(
        s for s in set(a) & set(b) if a[s] is not None and b[s] is not None
    )
    if not seeds:
        return None
    differences = [a[s] - b[s] for s in seeds]
    if len(seeds) < 2:
        p_value = None
    elif max(differences) == min(differences):
        p_value = 0.0 if differences[0] != 0 else 1.0
    else:
        p_value = float(scipy_stats.ttest_1samp(differences, 0.0).pvalue)
    return {
        "mean_difference": sum(differences) / len(differences),
        "p_value": p_value,
        "seeds": seeds,
    }


def check_claims(records, rows):
    """Each registered claim per case, FLOPs target and training budget."""
    import ekg_keras

    present = {r["method"] for r in records}
    results = []
    for claim in ekg_keras.methods.claims():
        if not {claim.method, claim.reference} <= present:
            continue
        for case, flops, epochs in sorted(
            {(r["case"], r["budget"], r["epochs"]) for r in rows}
            - {(r["case"], 1.0, r["epochs"]) for r in rows}
        ):
            test = paired(
                records,
                case,
                flops,
                epochs,
                (claim.method, claim.measure),
                (claim.reference, claim.reference_measure),
            )
            if test is None:
                continue
            verdict = verdict_of(test)
            results.append(
                {
                    "claim": claim.name,
                    "text": claim.text,
                    "source": claim.source,
                    "case": case,
                    "budget": flops,
                    "epochs": epochs,
                    **test,
                    "verdict": verdict,
                }
            )
    return results


def verdict_of(test):
    """"holds" (>= 0, or not significantly below at p < 0.05), "does not
    hold" (significantly below), "holds (significantly above)"."""
    significant = test["p_value"] is not None and test["p_value"] < 0.05
    if test["mean_difference"] >= 0:
        return "holds (significant)" if significant else "holds (n.s.)"
    return "does not hold" if significant else "not shown (n.s. below)"


def gaps_to_control(records, rows):
    """Final accuracy minus the control's, per row (paired by seed)."""
    for row in rows:
        if row["method"] == "unpruned":
            continue
        test = paired(
            records,
            row["case"],
            row["budget"],
            row["epochs"],
            (row["method"], "final"),
            ("unpruned", "final"),
        )
        row["gap_to_control"] = test


# Markdown.


def cell(stat, scale=100, digits=1, suffix="%"):
    """`mean ± std` of a `[mean, std]` pair, or "-"."""
    if stat is None:
        return "-"
    mean, std = stat
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}{suffix}"


def split_text(split):
    return " + ".join(f"{e} {name}" for name, e in split.items())


def stage_seconds(records, baselines):
    """The time the whole comparison took to compute: every run's and
    every baseline's own seconds, wherever the cache was filled."""
    return sum(r["seconds"] for r in records) + sum(
        b["seconds"] for b in baselines.values()
    )


def markdown(rows, claims, baselines, settings, seconds, computed):
    plans = "; ".join(
        f"{case}: seed(s) {list(seeds)}, budget(s) {list(epochs)} epochs"
        for case in settings.cases
        for seeds, epochs in [case_plan(settings, case)]
    )
    lines = [
        f"Run: {plans}; FLOPs targets {list(settings.budgets)}. Computed "
        f"in {computed / 60:.1f} min of stage time (baselines and runs, "
        f"summed), this call {seconds:.0f} s (cached runs count as read).",
        "",
        "Baselines (trained until a round gains < "
        f"{MIN_GAIN * 100:.2f} points of test accuracy; the curve is "
        "(epochs, test accuracy)):",
        "",
    ]
    for case, b in baselines.items():
        curve = ", ".join(f"({e}, {a * 100:.1f}%)" for e, a in b["curve"])
        lines.append(
            f"* {case}: {b['accuracy']:.2%} on {b['train_samples']} "
            f"training images, {b['macs'] / 1e6:.2f} M MACs; curve {curve}"
        )
    lines += ["", *results_table(rows), "", *claims_table(claims)]
    return "\n".join(lines) + "\n"


def results_table(rows):
    tuners = sorted(
        {t for r in rows for t in r["finetuned"]} - {COMMON_FINETUNER}
    )
    header = (
        ["case", "flops", "epochs", "method", "budget split"]
        + ["pruned (recal.)", f"+ {COMMON_FINETUNER}"]
        + [f"+ {t}" for t in tuners]
        + ["final", "gap to control", "FLOPs kept (slim)", "params"]
        + ["ms b=1", "search s"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        gap = r.get("gap_to_control")
        gap_text = "-"
        if gap is not None:
            p = "-" if gap["p_value"] is None else f"{gap['p_value']:.3f}"
            gap_text = f"{gap['mean_difference'] * 100:+.1f} (p {p})"
        flops_text = cell(r["flops_fraction"])
        if r["flops_miss"]:
            flops_text += " **miss**"
        cells = [
            r["case"],
            r["budget"],
            r["epochs"],
            "**unpruned + same budget**"
            if r["method"] == "unpruned"
            else r["method"],
            split_text(r["split"]),
            cell(r["pruned"]),
            cell(r["finetuned"].get(COMMON_FINETUNER)),
            *(cell(r["finetuned"].get(t)) for t in tuners),
            cell(r["final"]),
            gap_text,
            flops_text,
            cell(r["params"], 1e-3, 1, "k"),
            cell(r["ms_batch1"], 1, 2, ""),
            cell(r["search_s"], 1, 0, ""),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def claims_table(claims):
    lines = [
        "Claims of the papers (paired over seeds, two-sided t-test on the "
        "per-seed differences):",
        "",
        "| claim | source | case | flops | epochs | difference | p | "
        "verdict |",
        "|" + "---|" * 8,
    ]
    for c in claims:
        p = "-" if c["p_value"] is None else f"{c['p_value']:.3f}"
        lines.append(
            f"| {c['text']} | {c['source']} | {c['case']} | {c['budget']} | "
            f"{c['epochs']} | {c['mean_difference'] * 100:+.2f} pts | {p} | "
            f"{c['verdict']} |"
        )
    return lines


# Plots.


def plots(rows, directory):
    """Final accuracy vs FLOPs per case and training budget (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("matplotlib is missing: no plots (pip install matplotlib)")
        return []
    cases = sorted({r["case"] for r in rows})
    figure, axes = plt.subplots(
        len(cases), 2, figsize=(12, 4.2 * len(cases)), squeeze=False
    )
    for row_axes, case in zip(axes, cases):
        budgets = sorted({r["epochs"] for r in rows if r["case"] == case})
        for axis, epochs in zip(row_axes, budgets[:1] + budgets[-1:]):
            mine = [
                r for r in rows if r["case"] == case and r["epochs"] == epochs
            ]
            for name in sorted({r["method"] for r in mine}):
                points = sorted(
                    (r for r in mine if r["method"] == name),
                    key=lambda r: r["budget"],
                )
                axis.errorbar(
                    [r["flops_fraction"][0] for r in points],
                    [r["final"][0] * 100 for r in points],
                    yerr=[r["final"][1] * 100 for r in points],
                    marker="o",
                    capsize=3,
                    label=name,
                )
            axis.set_title(f"{case}: {epochs} epochs")
            axis.set_xlabel("FLOPs kept (slim)")
            axis.set_ylabel("final test accuracy (%)")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    path = directory / "compare_accuracy_flops.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [str(path)]


def progress(message):
    print(message, flush=True)


def main(argv=None):
    args = parse_args(argv)
    settings = settings_from(args)
    start = time.perf_counter()
    progress(
        f"compare: {len(settings.methods)} methods "
        f"({', '.join(settings.methods)}), targets {settings.budgets}, "
        f"cases {settings.cases}"
    )
    records, baselines = run_all(settings)
    rows = summarize(records)
    gaps_to_control(records, rows)
    claims = check_claims(records, rows)
    seconds = time.perf_counter() - start
    computed = stage_seconds(records, baselines)
    table = markdown(rows, claims, baselines, settings, seconds, computed)
    settings.results.mkdir(parents=True, exist_ok=True)
    result = {
        "settings": {
            k: (str(v) if isinstance(v, pathlib.Path) else v)
            for k, v in dataclasses.asdict(settings).items()
        },
        "baselines": baselines,
        "summary": rows,
        "claims": claims,
        "runs": records,
        "seconds": seconds,
        "stage_seconds": computed,
    }
    (settings.results / "compare.json").write_text(json.dumps(result, indent=1))
    (settings.results / "compare.md").write_text(table)
    written = plots(rows, settings.results)
    print("\n" + table)
    progress(
        f"compare: {seconds:.0f} s ({computed:.0f} s of stage time); wrote "
        f"{settings.results / 'compare.json'}, compare.md, "
        + ", ".join(pathlib.Path(p).name for p in written)
    )
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
