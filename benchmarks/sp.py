"""SP on ResNet-20 (digits): accuracy beside other methods, and its cost.

Trains ResNet-20 on the embedded digits (16x16 by default, to fit the time
budget), then prunes it to each FLOPs target (0.5 and 0.3 of the FLOPs)
with every method of `--methods` that is registered, each followed by the
same final training budget (`--finetune_epochs` epochs with the `Fitter`'s
schedule: SGD Nesterov 0.9, lr 0.01 /5 at 30/60/80%, batch 128):

* `sp`: the super-net is trained once (`--supernet_epochs`) and searched
  for each target (the second search reuses the first one's super-net
  through its checkpoint: any width is a sub-network of it); its result is
  retrained twice: fine-tuned from the super-net's weights (the default,
  "plain") and from scratch ("scratch", as the paper; same epochs and
  schedule here, so the comparison is of equal budgets, not of the paper's
  long from-scratch schedule);
* `ekg`: the EKG search, then its memory-bank distillation fine-tuning;
* `fpgm`: soft pruning by geometric median for the same number of epochs
  (its training is its fine-tuning);
* `l1`: uniform one-shot L1 pruning, then plain fine-tuning;
* `nppm`, `lfpc`: when registered, with their defaults and their own
  fine-tuners.

Every pruned model's batch normalization is recalibrated on the training
split before it is tested (test split of 450 digits, inference mode). It
prints the kept FLOPs, test accuracy and wall times (SP: super-net training,
stage features, the manager's generations, the repair rounds).

    .venv/bin/python benchmarks/sp.py            # ~15-20 min on 2 cores
    .venv/bin/python benchmarks/sp.py --quick    # smoke check (~3 min)
"""

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.
from common import accuracy
from common import train

from ekg_keras.methods.sp import StagewisePruning  # noqa: E402

METHODS = ("sp", "ekg", "fpgm", "l1", "nppm", "lfpc")
# SP's CPU setting (the super-net epochs come from --supernet_epochs).
SP_OPTIONS = {
    k: v
    for k, v in StagewisePruning.compare_options.items()
    if k != "supernet_epochs"
}
SP_QUICK = {
    "val_per_class": 10,
    "num_ratios": 16,
    "population": 6,
    "iterations": 2,
    "manager_population": 4,
    "manager_iterations": 2,
    "budget_units": 10,
    "batch_size": 100,
}


def parse_args(argv=None):
    parser = _timing.base_parser(
        __doc__.splitlines()[0], "Tiny settings, one target (smoke check)."
    )
    parser.add_argument("--targets", default="0.5,0.3")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--image_size", type=int, default=16)
    parser.add_argument("--pretrain_epochs", type=int, default=10)
    parser.add_argument("--supernet_epochs", type=int, default=5)
    parser.add_argument("--finetune_epochs", type=int, default=5)
    parser.add_argument(
        "--compare_parallel",
        action="store_true",
        help="Also time the first SP search with sequential stage EAs.",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.targets = args.targets.split(",")[0]
        args.pretrain_epochs = min(args.pretrain_epochs, 3)
        args.supernet_epochs = 1
        args.finetune_epochs = 1
    return args


def test_accuracy(model, data):
    """Top-1 on the test split after recalibrating batch normalization
    (the weights of `model` change: its moving statistics)."""
    import ekg_keras

    ekg_keras.recalibrate_batchnorm(model, (data.x_train, data.y_train))
    return accuracy(model, data)


def copy_of(model):
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def run_method(name, model, target, data, args, fitter, supernet):
    """Prunes and retrains; returns rows of figures (SP gives two)."""
    from ekg_keras import methods
    from ekg_keras.training import finetuners

    entry = methods.get(name)
    options = {}
    if name == "sp":
        options = {
            **(SP_QUICK if args.quick else SP_OPTIONS),
            "supernet_epochs": args.supernet_epochs,
            "checkpoint_dir": supernet.directory_for(target),
        }
    elif entry.method_class.trains_while_pruning:
        options = {"epochs": args.finetune_epochs}
    start = time.perf_counter()
    method = entry.create(
        model,
        target,
        (data.x_train, data.y_train),
        verbose=1 if name == "sp" else 0,
        **options,
    )
    masked = method.run(fitter)
    row = {
        "method": name,
        "target": target,
        "flops": method.kept_fraction(),
        "prune_s": time.perf_counter() - start,
    }
    if name == "sp":
        supernet.keep(method)
        return sp_rows(method, masked, row, data, args, fitter)
    if entry.method_class.trains_while_pruning:
        row.update(finetune_s=0.0, accuracy=test_accuracy(masked, data))
        return [row]
    start = time.perf_counter()
    finetuners.finetune(method, args.finetune_epochs, fitter)
    row.update(
        finetune_s=time.perf_counter() - start,
        accuracy=test_accuracy(masked, data),
        finetuner=finetuners.resolve(method),
    )
    return [row]


class SharedSuperNet:
    """The first SP run trains the super-net; later runs (other targets,
    the parallel comparison) start from a copy of its trained weights."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="sp_bench_")
        self.weights = None
        self.runs = 0

    def directory_for(self, target):
        from ekg_keras.methods import SearchCheckpoint

        self.runs += 1
        directory = os.path.join(self.root, f"run{self.runs}_{target}")
        if self.weights is not None:
            os.makedirs(directory)
            shutil.copy(self.weights, directory)
            SearchCheckpoint(directory).save({}, {"trained": True})
        return directory

    def keep(self, method):
        if self.weights is None:
            self.weights = method.checkpoint.path("supernet.weights.h5")

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def sp_rows(method, masked, row, data, args, fitter):
    """SP's result fine-tuned ("plain") and retrained ("scratch")."""
    from ekg_keras.training import finetuners

    figures = {
        **row,
        **{f"{k}_s": v for k, v in method.phase_seconds.items()},
        "stage_eas": len(method.searches.results),
        "genes_scored": sum(
            len(f.losses_by_gene) for f in method.searches.fitnesses
        ),
        "repairs": method.result.repairs,
        "topped_up": method.result.topped_up,
        "budgets": [round(b, 4) for b in method.result.budgets],
        "stages": len(method.supernet.stages),
        "before_retraining": test_accuracy(copy_of(masked), data),
    }
    rows = []
    for tuner in ("plain", "scratch"):
        model = copy_of(masked)
        start = time.perf_counter()
        fitter.fit(
            finetuners.get(tuner).phase(model, args.finetune_epochs, fitter)
        )
        rows.append(
            {
                **figures,
                "method": f"sp+{tuner}",
                "finetuner": tuner,
                "finetune_s": time.perf_counter() - start,
                "accuracy": test_accuracy(model, data),
            }
        )
    return rows


def compare_parallel(model, target, data, args, supernet):
    """Wall time of one search with concurrent and with sequential stage
    EAs, on the shared trained super-net."""
    from ekg_keras import methods

    figures = {}
    for parallel in ("threads", "sequential"):
        method = methods.get("sp").create(
            model,
            target,
            (data.x_train, data.y_train),
            verbose=0,
            checkpoint_dir=supernet.directory_for(target),
            parallel=parallel,
            **(SP_QUICK if args.quick else SP_OPTIONS),
        )
        method.run()
        figures[parallel] = {
            "seconds": method.phase_seconds["manager"]
            + method.phase_seconds["assembly"],
            "keep_counts": method.result.keep_counts.tolist(),
        }
    figures["same_result"] = (
        figures["threads"]["keep_counts"]
        == figures["sequential"]["keep_counts"]
    )
    return figures


def main(argv=None):
    args = parse_args(argv)
    import ekg_keras
    from ekg_keras import methods
    from ekg_keras.training import Fitter

    env = _timing.environment()
    print(_timing.environment_line(env))
    wanted = [m for m in args.methods.split(",") if m]
    missing = [m for m in wanted if m not in methods.names()]
    chosen = [m for m in wanted if m in methods.names()]
    if missing:
        print(f"not registered here, skipped: {', '.join(missing)}")
    data = ekg_keras.data.digits(batch_size=64, image_size=args.image_size)
    before = _timing.cpu_snapshot()
    start = time.perf_counter()
    model = train("resnet20", data, args.pretrain_epochs)
    base = test_accuracy(copy_of(model), data)
    print(
        f"ResNet-20 {args.image_size}x{args.image_size}, "
        f"{args.pretrain_epochs} epochs: test accuracy {base:.2%} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    supernet = SharedSuperNet()
    rows = []
    targets = [float(t) for t in args.targets.split(",")]
    try:
        for target in targets:
            for name in chosen:
                fitter = Fitter(
                    (data.x_train, data.y_train), verbose=0, batch_size=128
                )
                found = run_method(
                    name, model, target, data, args, fitter, supernet
                )
                rows += found
                for row in found:
                    print(
                        f"  {row['method']:<11} flops {row['flops']:.4f} "
                        f"(target {target}): test {row['accuracy']:.2%}, "
                        f"prune {row['prune_s']:.0f} s, retrain "
                        f"{row['finetune_s']:.0f} s",
                        flush=True,
                    )
        parallel = None
        if args.compare_parallel and "sp" in chosen:
            parallel = compare_parallel(model, targets[0], data, args, supernet)
            print(
                f"SP search at {targets[0]}: concurrent stage EAs "
                f"{parallel['threads']['seconds']:.0f} s, sequential "
                f"{parallel['sequential']['seconds']:.0f} s, same result: "
                f"{parallel['same_result']}"
            )
    finally:
        supernet.close()
    own, others = _timing.other_load(before, _timing.cpu_snapshot())
    print(_timing.table(*summary_table(rows, base)))
    sp_figures = [r for r in rows if r["method"] == "sp+plain"]
    for row in sp_figures:
        print(
            f"SP at {row['target']}: super-net "
            f"{row.get('supernet_s', 0):.0f} s, stage features "
            f"{row['features_s']:.1f} s, manager {row['manager_s']:.0f} s, "
            f"assembly {row['assembly_s']:.0f} s ({row['repairs']} repair "
            f"rounds), {row['stage_eas']} stage EAs, {row['genes_scored']} "
            f"genes scored; before retraining {row['before_retraining']:.2%}"
        )
    warning = _timing.load_warning(
        [others],
        env["cpu_count"],
        "wall times are longer than on an idle machine",
    )
    if warning:
        print(warning)
    result = {
        "environment": env,
        "settings": vars(args),
        "baseline_accuracy": base,
        "rows": rows,
        "parallel": parallel,
        "cores_own": own,
        "cores_others": others,
        "seconds": time.perf_counter() - start,
    }
    _timing.write_json(args.json, result)
    return result


def summary_table(rows, base):
    header = [
        "target",
        "method",
        "FLOPs kept",
        "test acc",
        "prune s",
        "retrain s",
    ]
    body = [
        [
            row["target"],
            row["method"],
            f"{row['flops']:.4f}",
            f"{row['accuracy']:.2%}",
            f"{row['prune_s']:.0f}",
            f"{row['finetune_s']:.0f}",
        ]
        for row in rows
    ]
    body.append(["1.0", "unpruned", "1.0000", f"{base:.2%}", "", ""])
    return header, body, 2


if __name__ == "__main__":
    main()
