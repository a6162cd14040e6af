"""NPPM on ResNet-20 (digits): quality and cost beside EKG and uniform L1.

Trains ResNet-20 on the embedded digits data (16x16 by default), then, for
each FLOPs target (0.5 and 0.3 of the original), prunes that one trained
model three ways, in this order:

* **L1**: one-shot uniform pruning by filter L1 norm (`method="l1"`);
* **EKG**: the EKG search (`method="ekg"`, its defaults);
* **NPPM**: `method="nppm"` with the paper's rules but a budget for this
  machine: 30 epochs of batch 32 over the ~1,250 training samples not held
  out (about 1,200 steps instead of the paper's 200 epochs x 20 steps), a
  gate learning rate of 0.05 (the authors' public code; the paper's 1e-3
  moves a logit from 3 to 0 only after ~3,000 steps) and c = 2 (the
  authors' code; the paper's c = 5 fills the memory too slowly for so few
  steps). Everything else is the default (tau 0.5, lambda 2, K_max 500,
  b_P 64, N = 10).

Each pruned model is then fine-tuned from the same start with the same
optimizer, epochs and data order (`ekg_keras.training.Fitter`: SGD,
Nesterov 0.9, learning rate 0.01 divided by 5 at 30/60/80%, no
augmentation), with the plain fine-tuner (cross-entropy) and, for the
methods that leave a trajectory of sub-networks (EKG, NPPM), with EKG's
memory-bank distillation ("ekg", five teachers from the trajectory, its two
views unaugmented so that the two fine-tuners differ only by the
distillation). Test accuracy is measured in inference mode after exact
batch-norm recalibration on the training split: before fine-tuning and
after each fine-tuner. Search wall times are measured in one process,
methods interleaved, with the CPU load of other processes reported.

    .venv/bin/python benchmarks/nppm.py            # 10-20 min on 2 cores
    .venv/bin/python benchmarks/nppm.py --quick    # smoke check, ~2-4 min
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.
from common import FINETUNE_SETTINGS
from common import accuracy
from common import compared_finetuners
from common import train

from ekg_keras.methods.nppm import NPPM  # noqa: E402

METHODS = ("l1", "ekg", "nppm")
NPPM_OPTIONS = dict(NPPM.compare_options)
QUICK_NPPM_OPTIONS = {
    **NPPM_OPTIONS,
    "epochs": 1,
    "memory_size": 20,
    "predictor_batch_size": 8,
}
# --quick: EKG with its smoke options (tiny subsets).
QUICK_EKG_OPTIONS = {"val_per_class": 4, "subset_per_class": 4}


def parse_args(argv=None):
    parser = _timing.base_parser(
        __doc__.splitlines()[0],
        "flops 0.5 only, 8x8 images, an epoch or so everywhere, tiny EKG "
        "subsets (figures meaningless).",
    )
    parser.add_argument(
        "--flops",
        default=None,
        help="Comma-separated FLOPs targets (default 0.5,0.3).",
    )
    parser.add_argument(
        "--image_size", type=int, default=None, help="16 (8 with --quick)."
    )
    parser.add_argument("--pretrain_epochs", type=int, default=None)
    parser.add_argument("--finetune_epochs", type=int, default=None)
    parser.add_argument(
        "--nppm_epochs", type=int, default=None, help="Search epochs (30)."
    )
    parser.add_argument(
        "--nppm_options",
        dest="nppm_overrides",
        default="",
        help="More NPPM options as key=value,... (e.g. batch_statistics=true)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"Comma-separated subset of {','.join(METHODS)}.",
    )
    return parser.parse_args(argv)


def test_accuracy(model, data):
    """Inference accuracy after exact batch-norm recalibration (on a copy)."""
    import ekg_keras

    model = ekg_keras.wrap(model)
    ekg_keras.recalibrate_batchnorm(model, (data.x_train, data.y_train))
    return accuracy(model, data)


def prune(name, model, flops, data, method_options):
    import ekg_keras

    options = method_options.get(name, {})
    before = _timing.cpu_snapshot()
    method = ekg_keras.methods.get(name).create(
        model, flops, (data.x_train, data.y_train), verbose=0, **options
    )
    masked = method.run()
    own, others = _timing.other_load(before, _timing.cpu_snapshot())
    return method, masked, {"own_cores": own, "other_cores": others}


def finetuned_accuracies(method, masked, data, epochs):
    """Accuracy after each applicable fine-tuner, from the same start."""
    import keras

    from ekg_keras.training import Fitter
    from ekg_keras.training import finetuners

    start = masked.get_weights()
    results = {}
    for tuner in compared_finetuners(method):
        masked.set_weights(start)
        keras.utils.set_random_seed(1)
        fitter = Fitter((data.x_train, data.y_train), batch_size=64, verbose=0)
        finetuners.finetune(
            method, epochs, fitter, tuner, settings=FINETUNE_SETTINGS
        )
        results[tuner] = test_accuracy(masked, data)
    masked.set_weights(start)
    return results


def run_one(name, model, flops, data, args):
    method, masked, load = prune(name, model, flops, data, args.method_options)
    row = {
        "method": name,
        "flops_target": flops,
        "flops_kept": method.kept_fraction(),
        "search_s": method.seconds,
        **load,
        "accuracy_before": test_accuracy(masked, data),
        "accuracy_after": finetuned_accuracies(
            method, masked, data, args.finetune_epochs
        ),
    }
    if name == "nppm":
        final = method.history[-1]
        epochs = [h for h in method.history if "epoch" in h]
        row["nppm"] = {
            "noise_free_fraction": final["noise_free_fraction"],
            "removed_channels": final["removed_channels"],
            "added_channels": final["added_channels"],
            "last_epoch": epochs[-1] if epochs else None,
        }
    return row


def report(rows, base_accuracy, env):
    header = (
        "target",
        "method",
        "FLOPs kept",
        "search",
        "acc before FT",
        "after plain FT",
        "after EKG FT",
        "cores own/others",
    )
    lines = []
    for row in rows:
        after = row["accuracy_after"]
        others = row["other_cores"]
        lines.append(
            (
                f"{row['flops_target']:.2f}",
                row["method"].upper(),
                f"{row['flops_kept']:.3f}",
                f"{row['search_s']:.1f} s",
                f"{row['accuracy_before']:.2%}",
                f"{after['plain']:.2%}",
                f"{after['ekg']:.2%}" if "ekg" in after else "-",
                f"{row['own_cores']:.2f}/"
                + ("?" if others is None else f"{others:.2f}"),
            )
        )
    print(_timing.table(header, lines, left=2))
    print(f"(unpruned ResNet-20: {base_accuracy:.2%})")
    for row in rows:
        if "nppm" in row:
            details = row["nppm"]
            print(
                f"NPPM at {row['flops_target']}: noise-free gates kept "
                f"{details['noise_free_fraction']:.3f} of the FLOPs; "
                f"removed {details['removed_channels']}, brought back "
                f"{details['added_channels']} channels to meet the target"
            )
    warning = _timing.load_warning(
        [row["other_cores"] for row in rows],
        env["cpu_count"],
        "search times are longer than on an idle machine.",
    )
    if warning:
        print(warning)


def main(argv=None):
    start = time.perf_counter()
    args = parse_args(argv)
    quick = args.quick
    targets = [float(f) for f in (args.flops or "0.5,0.3").split(",")]
    if quick and args.flops is None:
        targets = [0.5]
    args.image_size = args.image_size or (8 if quick else 16)
    args.pretrain_epochs = args.pretrain_epochs or (3 if quick else 15)
    args.finetune_epochs = args.finetune_epochs or (1 if quick else 5)
    args.nppm_options = dict(QUICK_NPPM_OPTIONS if quick else NPPM_OPTIONS)
    if args.nppm_epochs:
        args.nppm_options["epochs"] = args.nppm_epochs

    import ekg_keras
    from ekg_keras.methods.nppm import NPPMOptions

    extra = [item for item in args.nppm_overrides.split(",") if item]
    args.nppm_options.update(
        ekg_keras.methods.parse_options(NPPMOptions, extra)
    )
    names = [name for name in args.methods.split(",") if name]
    args.method_options = {
        "nppm": args.nppm_options,
        "ekg": QUICK_EKG_OPTIONS if quick else {},
    }

    env = _timing.environment()
    print(_timing.environment_line(env))
    data = ekg_keras.data.digits(batch_size=64, image_size=args.image_size)
    print(
        f"Training ResNet-20 on digits ({args.image_size}x{args.image_size})"
        f" for {args.pretrain_epochs} epochs ...",
        flush=True,
    )
    model = train("resnet20", data, args.pretrain_epochs)
    base_accuracy = test_accuracy(model, data)
    rows = []
    for flops in targets:
        for name in names:
            print(f"flops={flops}: {name} ...", flush=True)
            rows.append(run_one(name, model, flops, data, args))
            row = rows[-1]
            print(
                f"  kept {row['flops_kept']:.3f} in {row['search_s']:.1f} s;"
                f" accuracy {row['accuracy_before']:.2%} before, "
                + ", ".join(
                    f"{k} {v:.2%}" for k, v in row["accuracy_after"].items()
                )
                + f" after {args.finetune_epochs} epochs of fine-tuning",
                flush=True,
            )
    report(rows, base_accuracy, env)
    seconds = time.perf_counter() - start
    print(f"total {seconds / 60:.1f} min")
    result = {
        "environment": env,
        "image_size": args.image_size,
        "pretrain_epochs": args.pretrain_epochs,
        "finetune_epochs": args.finetune_epochs,
        "nppm_options": args.nppm_options,
        "unpruned_accuracy": base_accuracy,
        "rows": rows,
        "seconds": seconds,
    }
    _timing.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
