"""Every registered pruning method on one trained model, side by side.

    .venv/bin/python benchmarks/compare.py             # <= 60 min, 2 cores
    .venv/bin/python benchmarks/compare.py --quick     # <= 10 min
    .venv/bin/python benchmarks/compare.py --methods ekg,l1 --budgets 0.3

For each baseline (ResNet-20, and with `--baselines` a half-width ResNet-20,
trained once on the embedded digits at 16x16 and cached), every method of
the registry (the registry is the list: a method added later appears here
unedited; presets equal to another entry are run once) prunes to each FLOPs
budget with each seed, with its `compare_options` (CPU-sized settings).
Then, from the same pruned model: batch normalization recalibrated on the
training data ("pruned"), the same fine-tuning budget for everyone ("plain":
the `Fitter`'s SGD schedule; methods that train while they prune spend that
budget on their own training instead), and, for methods that leave a
trajectory, every registered fine-tuner that learns from it (EKG's
memory-bank distillation, "ekg"). Each method is tested against a reference
method, paired by seed (`--reference`; default: the registry's default
method with data, the EKG search). Recorded: test accuracy in
inference mode, FLOPs by the counter, parameters, the slim model's CPU
latency (batch 1) and throughput (batch 64), also with batch norm folded
(the deployed form), wall time per stage, the search trajectory and the kept
widths. Each run is cached as JSON, so an interrupted comparison resumes;
the results go to `results/compare.json`, `results/compare.md` and PNG plots
in `results/`."""

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
from common import fit_digits

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"
SEEDS = (0, 1, 2)
BUDGETS = (0.5, 0.3)
IMAGE_SIZE = 16
#: Baselines: name -> (width of the first stage, training epochs). The
#: half-width one is opt-in (`--baselines resnet20,resnet20_w8`): both in
#: one run do not fit the 60-minute budget on 2 cores.
BASELINES = {"resnet20": (16, 15), "resnet20_w8": (8, 15)}
DEFAULT_BASELINES = ("resnet20",)
FINETUNE_EPOCHS = 3


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one comparison run covers."""

    baselines: tuple
    methods: tuple
    budgets: tuple
    seeds: tuple
    finetune_epochs: int
    baseline_epochs: int
    options: str  # "compare" or "smoke" (the methods' option sets)
    image_size: int
    results: pathlib.Path
    reference: str  # The method the paired tests compare against.


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=("one seed, flops 0.5, ResNet-20 only, 2 fine-tuning epochs"),
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help=(
            "a smoke check of the harness: 8x8 inputs, the methods' smoke "
            "options, 1 epoch everywhere (figures mean nothing)"
        ),
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated registered names (default all)",
    )
    parser.add_argument(
        "--budgets",
        default=None,
        help="comma-separated FLOPs fractions to keep",
    )
    parser.add_argument("--seeds", default=None, help="comma-separated seeds")
    parser.add_argument(
        "--baselines",
        default=None,
        help=f"comma-separated from {', '.join(BASELINES)}",
    )
    parser.add_argument(
        "--results",
        default=str(RESULTS),
        help="directory of the results and the run cache",
    )
    parser.add_argument(
        "--reference",
        default=None,
        help=(
            "method the others are tested against (default: the registry's "
            "default method with data, the EKG search)"
        ),
    )
    return parser.parse_args(argv)


def settings_from(args):
    import ekg_keras

    def listed(text, default, kind=str):
        return tuple(kind(v) for v in text.split(",")) if text else default

    methods = listed(args.methods, distinct_methods(ekg_keras.methods))
    reference = args.reference or ekg_keras.methods.default(with_data=True)
    unknown = sorted(
        set(methods + (reference,)) - set(ekg_keras.methods.names())
    )
    if unknown:
        raise SystemExit(
            f"--methods and --reference should be registered methods "
            f"({', '.join(ekg_keras.methods.names())}). Received: "
            f"{', '.join(unknown)}"
        )
    quick, tiny = args.quick or args.tiny, args.tiny
    return Settings(
        baselines=listed(args.baselines, DEFAULT_BASELINES),
        methods=methods,
        budgets=listed(args.budgets, (0.5,) if quick else BUDGETS, float),
        seeds=listed(args.seeds, (0,) if quick else SEEDS, int),
        finetune_epochs=1 if tiny else (2 if quick else FINETUNE_EPOCHS),
        baseline_epochs=1 if tiny else None,
        options="smoke" if tiny else "compare",
        image_size=8 if tiny else IMAGE_SIZE,
        results=pathlib.Path(args.results),
        reference=reference,
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


# Baselines and data.


def digits(settings):
    import ekg_keras

    return ekg_keras.data.digits(
        batch_size=64, image_size=settings.image_size, seed=0
    )


def baseline(name, settings, data):
    """The trained baseline (cached in the results directory)."""
    import keras

    import ekg_keras

    width, epochs = BASELINES[name]
    epochs = settings.baseline_epochs or epochs
    path = (
        settings.results
        / "compare"
        / (f"baseline_{name}_{settings.image_size}px_{epochs}ep.keras")
    )
    if path.exists():
        return keras.saving.load_model(path)
    progress(f"training baseline {name} for {epochs} epochs ...")
    keras.utils.set_random_seed(0)
    model = ekg_keras.models.resnet_cifar(
        20, input_shape=data.input_shape, width=width
    )
    fit_digits(model, data, epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


# One run.


def run_one(name, model, budget, seed, settings, data):
    """Prunes, recalibrates, fine-tunes, measures; returns a JSON record."""
    import keras

    import ekg_keras
    from ekg_keras.methods import options as options_lib

    entry = ekg_keras.methods.get(name)
    cls = entry.method_class
    options = dict(
        cls.smoke_options
        if settings.options == "smoke"
        else cls.compare_options
    )
    if cls.trains_while_pruning:
        # Its own training spends the fine-tuning budget.
        options.update(
            options_lib.from_settings(
                cls.Options, {"epochs": settings.finetune_epochs}
            )
        )
    train = (data.x_train, data.y_train)
    keras.utils.set_random_seed(seed)
    record = {"method": name, "budget": budget, "seed": seed, "seconds": {}}
    method = entry.create(model, budget, train, verbose=0, **options)
    fitter = ekg_keras.training.Fitter(train, batch_size=64, verbose=0)
    start = time.perf_counter()
    masked = method.run(fitter)
    record["seconds"]["search"] = time.perf_counter() - start
    start = time.perf_counter()
    ekg_keras.recalibrate_batchnorm(masked, data.train)
    record["seconds"]["recalibration"] = time.perf_counter() - start
    record["pruned"] = accuracy(masked, data)
    record.update(structure(method, masked, model))
    record["trajectory"] = trajectory(method)
    record["finetuned"] = {}
    if not cls.trains_while_pruning:
        record["finetuned"] = finetune_each(
            method, fitter, seed, settings, data, record["seconds"]
        )
    record.update(speed(masked))
    return record


def finetune_each(method, fitter, seed, settings, data, seconds):
    """Accuracy after each compared fine-tuner, each from the pruned
    weights; their wall times go into `seconds`."""
    import keras

    import ekg_keras

    masked = method.model
    pruned_weights = masked.get_weights()
    accuracies = {}
    for tuner in compared_finetuners(method):
        masked.set_weights(pruned_weights)
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        ekg_keras.training.finetune(
            method,
            settings.finetune_epochs,
            fitter,
            tuner,
            settings=FINETUNE_SETTINGS,
        )
        ekg_keras.recalibrate_batchnorm(masked, data.train)
        seconds[f"finetune_{tuner}"] = time.perf_counter() - start
        accuracies[tuner] = accuracy(masked, data)
    return accuracies


def structure(method, masked, model):
    import ekg_keras

    report = ekg_keras.count_flops(masked)
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
    import ekg_keras

    small = ekg_keras.slim(masked)
    deployed = ekg_keras.fold_batchnorm(small)
    result = {}
    for label, network in (("slim", small), ("folded", deployed)):
        one = ekg_keras.measure_latency(network, batch_size=1, runs=30)
        many = ekg_keras.measure_latency(network, batch_size=64, runs=10)
        result[label] = {
            "ms_batch1": one.median_ms,
            "images_per_s_batch64": many.images_per_second,
        }
    return result


# The comparison.


def run_all(settings):
    """Runs (or reads from the cache) every run; returns all records."""
    data = digits(settings)
    records = []
    for base in settings.baselines:
        model = baseline(base, settings, data)
        records.append(unpruned_record(base, model, data))
        runs = list(
            itertools.product(
                settings.methods, settings.budgets, settings.seeds
            )
        )
        for index, (name, budget, seed) in enumerate(runs, 1):
            path = cache_path(settings, base, name, budget, seed)
            if path.exists():
                record = json.loads(path.read_text())
                progress(
                    f"[{base} {index}/{len(runs)}] {name} flops={budget} "
                    f"seed={seed}: cached"
                )
            else:
                start = time.perf_counter()
                record = run_one(name, model, budget, seed, settings, data)
                record["baseline"] = base
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(record))
                progress(
                    f"[{base} {index}/{len(runs)}] {name} flops={budget} "
                    f"seed={seed}: pruned {record['pruned']:.2%}, "
                    + ", ".join(
                        f"{k} {v:.2%}" for k, v in record["finetuned"].items()
                    )
                    + f" ({time.perf_counter() - start:.0f} s)"
                )
            records.append(record)
    return records


def unpruned_record(base, model, data):
    import ekg_keras

    report = ekg_keras.count_flops(model)
    record = {
        "method": "unpruned",
        "baseline": base,
        "budget": 1.0,
        "seed": 0,
        "pruned": accuracy(model, data),
        "finetuned": {},
        "flops_fraction": 1.0,
        "macs": report.macs,
        "params": report.params,
    }
    record.update(speed(ekg_keras.wrap(model)))
    return record


def cache_path(settings, base, name, budget, seed):
    tag = (
        f"{settings.options}_{settings.image_size}px"
        f"_ft{settings.finetune_epochs}"
    )
    return (
        settings.results
        / "compare"
        / "runs"
        / tag
        / base
        / f"{name}_{budget}_{seed}.json"
    )


# Summaries.


def final_accuracy(record):
    """Accuracy after fine-tuning: the best fine-tuner's, or the pruned
    model's for methods whose training is the fine-tuning."""
    values = list(record["finetuned"].values())
    return max(values) if values else record["pruned"]


def summarize(records, settings):
    """Mean and std per (baseline, method, budget), and paired tests."""
    import numpy as np

    rows = []
    keyed = {}
    for r in records:
        if r["method"] == "unpruned":
            continue
        keyed.setdefault((r["baseline"], r["method"], r["budget"]), []).append(
            r
        )
    for (base, name, budget), group in sorted(keyed.items()):
        group = sorted(group, key=lambda r: r["seed"])

        def stats(values):
            values = [v for v in values if v is not None]
            if not values:
                return None
            return [
                float(np.mean(values)),
                float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            ]

        rows.append(
            {
                "baseline": base,
                "method": name,
                "budget": budget,
                "seeds": [r["seed"] for r in group],
                "flops_fraction": stats([r["flops_fraction"] for r in group]),
                "params": stats([r["params"] for r in group]),
                "pruned": stats([r["pruned"] for r in group]),
                **{
                    tuner: stats([r["finetuned"].get(tuner) for r in group])
                    for tuner in finetuner_columns(records)
                },
                "final": stats([final_accuracy(r) for r in group]),
                "ms_batch1": stats([r["slim"]["ms_batch1"] for r in group]),
                "folded_ms_batch1": stats(
                    [r["folded"]["ms_batch1"] for r in group]
                ),
                "images_per_s": stats(
                    [r["slim"]["images_per_s_batch64"] for r in group]
                ),
                "search_s": stats([r["seconds"]["search"] for r in group]),
            }
        )
    return rows, paired_tests(keyed, settings.reference)


def finetuner_columns(records):
    """The fine-tuners the records used: the common one first."""
    used = {tuner for r in records for tuner in r["finetuned"]}
    return [COMMON_FINETUNER] + sorted(used - {COMMON_FINETUNER})


#: What the paired tests compare: accuracy right after pruning (batch norm
#: recalibrated, where the pruning choices differ most) and after the
#: fine-tuning budget.
MEASURES = {
    "pruned": lambda record: record["pruned"],
    "final": lambda record: final_accuracy(record),
}


def paired_tests(keyed, reference_name):
    """Per baseline, budget and measure: each method against the method
    `reference_name`, paired by seed (t-test on the per-seed
    differences)."""
    from scipy import stats as scipy_stats

    tests = []
    for (base, name, budget), group in keyed.items():
        reference = keyed.get((base, reference_name, budget))
        if name == reference_name or not reference:
            continue
        for measure, value in MEASURES.items():
            mine = {r["seed"]: value(r) for r in group}
            theirs = {r["seed"]: value(r) for r in reference}
            seeds = sorted(set(mine) & set(theirs))
            differences = [mine[s] - theirs[s] for s in seeds]
            if len(seeds) < 2:
                p_value = None
            elif max(differences) == min(differences):
                p_value = 0.0 if differences[0] != 0 else 1.0
            else:
                p_value = float(
                    scipy_stats.ttest_1samp(differences, 0.0).pvalue
                )
            tests.append(
                {
                    "baseline": base,
                    "budget": budget,
                    "method": name,
                    "measure": measure,
                    "reference": reference_name,
                    "mean_difference": sum(differences) / len(differences),
                    "seeds": seeds,
                    "p_value": p_value,
                    "significant": p_value is not None and p_value < 0.05,
                }
            )
    return tests


def markdown(rows, tests, unpruned, tuners, reference):
    """The results (one row per baseline, budget and method; a column per
    fine-tuner in `tuners`) and the paired tests against `reference`."""
    lines = [
        f"Unpruned {record['baseline']}: {record['pruned']:.2%}, "
        f"{record['macs'] / 1e6:.2f} M MACs, "
        f"{record['slim']['ms_batch1']:.2f} ms at batch 1."
        for record in unpruned
    ]
    lines += ["", *results_table(rows, tuners)]
    lines += ["", *tests_table(tests, reference)]
    return "\n".join(lines) + "\n"


def cell(stat, scale=100, digits=1, suffix="%"):
    """`mean ± std` of a `[mean, std]` pair, or "-"."""
    if stat is None:
        return "-"
    mean, std = stat
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}{suffix}"


def results_table(rows, tuners):
    header = (
        ["baseline", "flops", "method", "pruned (recal.)"]
        + [f"+ {tuner} FT" for tuner in tuners]
        + ["FLOPs kept", "params", "ms b=1 (folded)", "img/s b=64"]
        + ["search s"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            r["baseline"],
            r["budget"],
            r["method"],
            cell(r["pruned"]),
            *(cell(r.get(tuner)) for tuner in tuners),
            cell(r["flops_fraction"], 100, 1, "%"),
            cell(r["params"], 1e-3, 1, "k"),
            f"{cell(r['ms_batch1'], 1, 2, '')} "
            f"({cell(r['folded_ms_batch1'], 1, 2, '')})",
            cell(r["images_per_s"], 1, 0, ""),
            cell(r["search_s"], 1, 0, ""),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def tests_table(tests, reference):
    lines = [
        f"Against {reference}, paired over seeds (t-test on the per-seed "
        "differences; significant at p < 0.05), right after pruning and "
        "after fine-tuning (the best fine-tuner):",
        "",
        "| baseline | flops | method | after pruning: difference | p | "
        "significant | final: difference | p | significant |",
        "|" + "---|" * 9,
    ]
    by_key = {
        (t["baseline"], t["budget"], t["method"], t["measure"]): t
        for t in tests
    }
    for base, budget, name in sorted(
        {(t["baseline"], t["budget"], t["method"]) for t in tests},
        key=lambda k: (k[0], -k[1], k[2]),
    ):
        cells = []
        for measure in MEASURES:
            t = by_key[(base, budget, name, measure)]
            p = "-" if t["p_value"] is None else f"{t['p_value']:.3f}"
            cells += [
                f"{t['mean_difference'] * 100:+.2f} pts",
                p,
                "yes" if t["significant"] else "no",
            ]
        lines.append(
            f"| {base} | {budget} | {name} | " + " | ".join(cells) + " |"
        )
    return lines


def plots(records, rows, directory):
    """Accuracy vs FLOPs and vs latency, trajectories, widths (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("matplotlib is missing: no plots (pip install matplotlib)")
        return []
    figures = {
        "compare_accuracy_flops.png": plot_accuracy_flops(plt, rows),
        "compare_accuracy_latency.png": plot_accuracy_latency(plt, rows),
        "compare_trajectories.png": plot_trajectories(plt, records),
        "compare_widths.png": plot_widths(plt, records, rows),
    }
    written = []
    for name, figure in figures.items():
        figure.tight_layout()
        written.append(save(figure, directory / name))
    return written


def plot_accuracy_flops(plt, rows):
    """One row per baseline: right after pruning (where the methods
    differ) and after fine-tuning (where most of them meet again)."""
    bases = sorted({r["baseline"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    panels = (("pruned", "right after pruning"), ("final", "after fine-tuning"))
    figure, axes = plt.subplots(
        len(bases), 2, figsize=(12, 4.5 * len(bases)), squeeze=False
    )
    for row, base in zip(axes, bases):
        for axis, (key, title) in zip(row, panels):
            for name in methods:
                mine = [
                    r
                    for r in rows
                    if r["baseline"] == base and r["method"] == name and r[key]
                ]
                if not mine:
                    continue
                axis.errorbar(
                    [r["flops_fraction"][0] for r in mine],
                    [r[key][0] * 100 for r in mine],
                    yerr=[r[key][1] * 100 for r in mine],
                    marker="o",
                    capsize=3,
                    label=name,
                )
            axis.set_title(f"{base}: accuracy {title}")
            axis.set_xlabel("FLOPs kept")
            axis.set_ylabel("test accuracy (%)")
    axes[0][0].legend(fontsize=7)
    return figure


def plot_accuracy_latency(plt, rows):
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for name in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == name and r["final"]]
        axis.scatter(
            [r["folded_ms_batch1"][0] for r in mine],
            [r["final"][0] * 100 for r in mine],
            label=name,
        )
    axis.set_xlabel("latency, batch 1, folded (ms)")
    axis.set_ylabel("test accuracy after fine-tuning (%)")
    axis.legend(fontsize=7)
    return figure


def plot_trajectories(plt, records):
    """The search trajectories of seed 0 at the smallest budget."""
    figure, axis = plt.subplots(figsize=(6, 4.5))
    smallest = min(x["budget"] for x in records)
    for r in records:
        if r.get("trajectory") and r["seed"] == 0 and r["budget"] == smallest:
            points = r["trajectory"]
            axis.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                label=f"{r['baseline']} {r['method']}",
            )
    axis.invert_xaxis()
    axis.set_xlabel("FLOPs kept")
    axis.set_ylabel("validation loss")
    axis.set_title("search trajectories (seed 0)")
    axis.legend(fontsize=7)
    return figure


def plot_widths(plt, records, rows):
    """Kept widths per group on the first baseline, seed 0, at the
    smallest budget."""
    figure, axis = plt.subplots(figsize=(10, 4.5))
    base = sorted({r["baseline"] for r in rows})[0]
    smallest = min(x["budget"] for x in records)
    chosen = [
        r
        for r in records
        if r["seed"] == 0
        and r.get("widths")
        and r["budget"] == smallest
        and r["baseline"] == base
    ]
    for r in chosen:
        layers = list(r["widths"])
        axis.plot(
            range(len(layers)),
            [r["widths"][k][0] / r["widths"][k][1] for k in layers],
            marker=".",
            label=r["method"],
        )
    axis.set_xlabel("prunable group (in graph order)")
    axis.set_ylabel("fraction of channels kept")
    axis.set_title(f"{base}: kept widths per group (seed 0)")
    axis.legend(fontsize=7)
    return figure


def save(figure, path):
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path)


def progress(message):
    print(message, flush=True)


def main(argv=None):
    args = parse_args(argv)
    settings = settings_from(args)
    start = time.perf_counter()
    progress(
        f"compare: {len(settings.methods)} methods "
        f"({', '.join(settings.methods)}), budgets {settings.budgets}, "
        f"seeds {settings.seeds}, baselines {settings.baselines}"
    )
    records = run_all(settings)
    rows, tests = summarize(records, settings)
    unpruned = [r for r in records if r["method"] == "unpruned"]
    table = markdown(
        rows, tests, unpruned, finetuner_columns(records), settings.reference
    )
    settings.results.mkdir(parents=True, exist_ok=True)
    result = {
        "settings": {
            k: (str(v) if isinstance(v, pathlib.Path) else v)
            for k, v in dataclasses.asdict(settings).items()
        },
        "summary": rows,
        "paired_tests": tests,
        "runs": records,
        "seconds": time.perf_counter() - start,
    }
    (settings.results / "compare.json").write_text(json.dumps(result, indent=1))
    (settings.results / "compare.md").write_text(table)
    written = plots(records, rows, settings.results)
    print("\n" + table)
    progress(
        f"compare: {time.perf_counter() - start:.0f} s; wrote "
        f"{settings.results / 'compare.json'}, compare.md, "
        + ", ".join(pathlib.Path(p).name for p in written)
    )
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
