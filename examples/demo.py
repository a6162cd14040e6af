"""Prune a ResNet-20 trained on the embedded digits data, and compare.

    python3 dev.py demo            # or: .venv/bin/python examples/demo.py

Trains ResNet-20 on scikit-learn's handwritten digits (resized to 32x32x3,
shipped with scikit-learn, no download), prunes it to half of its FLOPs
with the EKG search (or one-shot with `--method oneshot`; or to a fraction
of its measured latency with `--latency`) with channel counts in multiples
of `--round_to` (fast kernels), which also recalibrates batch
normalization, fine-tunes the masked model briefly, slims it, and prints
accuracy (inference mode, as a deployed model computes it), FLOPs,
parameters and CPU latency before pruning, right after it, and after
fine-tuning. Latency is that of the deployed form: batch norm folded into
the convolutions (`ekg_keras.fold_batchnorm`), for every row alike.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras

import ekg_keras

#: The default width rounding (see README "What the demo prints").
ROUND_TO = 8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--flops", type=float, default=0.5, help="Fraction of FLOPs to keep."
    )
    parser.add_argument(
        "--round_to",
        type=int,
        default=ROUND_TO,
        help="Keep channel counts multiples of this (1: any count).",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=None,
        help="Prune to this fraction of the measured latency (at batch "
        "--latency_batch_size, in TensorFlow) instead of --flops.",
    )
    parser.add_argument(
        "--latency_batch_size",
        type=int,
        default=64,
        help="Batch size at which --latency is measured.",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=15,
        help="Training epochs of the unpruned model.",
    )
    parser.add_argument(
        "--finetune_epochs",
        type=int,
        default=5,
        help="Fine-tuning epochs of the pruned model.",
    )
    parser.add_argument(
        "--method",
        default="ekg",
        choices=("ekg", "oneshot"),
        help="EKG search on the training data, or one-shot pruning.",
    )
    parser.add_argument(
        "--criterion",
        default="l2",
        choices=ekg_keras.criteria.names(),
        help="Channel criterion of --method oneshot.",
    )
    parser.add_argument(
        "--val_per_class",
        type=int,
        default=32,
        help="Validation images per class of the EKG search.",
    )
    parser.add_argument(
        "--image_size", type=int, default=32, help="Digits image size."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--latency_runs",
        type=int,
        default=100,
        help="Timed passes per latency measurement.",
    )
    return parser.parse_args(argv)


def compile_for_training(model, epochs, steps_per_epoch, learning_rate):
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=epochs * steps_per_epoch
    )
    model.compile(
        optimizer=keras.optimizers.SGD(
            schedule, momentum=0.9, nesterov=True, weight_decay=5e-4
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def accuracy(model, dataset):
    """Top-1 accuracy in inference mode (moving BN statistics)."""
    model.compile(
        metrics=["accuracy"],
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"]


def describe(name, model, dataset):
    """A table row of `model` without its latency (`add_latencies`)."""
    report = ekg_keras.count_flops(model)
    return {
        "model": name,
        "accuracy": accuracy(model, dataset),
        "macs": report.macs,
        "params": report.params,
        "deployed": ekg_keras.fold_batchnorm(model),
    }


def add_latencies(rows, runs):
    """Times the deployed form of every row against the others, in
    interleaved rounds (a change in the machine's load touches all alike,
    so the speed-ups are not the load's), at batch 1 and batch 64."""
    models = [row.pop("deployed") for row in rows]
    single = ekg_keras.measure_latencies(models, batch_size=1, runs=runs)
    batched = ekg_keras.measure_latencies(
        models, batch_size=64, runs=max(3, runs // 5)
    )
    for row, one, many in zip(rows, single, batched):
        row["latency_ms"] = one.median_ms
        row["images_per_s"] = many.images_per_second


def describe_method(args):
    if args.method == "ekg":
        method = "EKG search"
    else:
        method = f"one-shot, criterion={args.criterion}"
    return f"{method}, round_to={args.round_to}"


def describe_budget(args):
    if args.latency is None:
        return f"{args.flops:.0%} of the FLOPs"
    return (
        f"{args.latency:.0%} of the latency (TensorFlow, batch "
        f"{args.latency_batch_size})"
    )


def print_table(rows):
    print()
    print(
        f"{'model':<26}{'test acc':>9}{'MFLOPs':>9}{'params':>10}"
        f"{'ms/img (b=1)':>14}{'img/s (b=64)':>14}"
    )
    for row in rows:
        print(
            f"{row['model']:<26}{row['accuracy']:>9.2%}"
            f"{row['macs'] / 1e6:>9.2f}{row['params'] / 1e3:>9.1f}k"
            f"{row['latency_ms']:>14.2f}{row['images_per_s']:>14.0f}"
        )
    first, last = rows[0], rows[-1]
    print(
        f"\nFLOPs kept: {last['macs'] / first['macs']:.1%}, params kept: "
        f"{last['params'] / first['params']:.1%}, measured speed-up: "
        f"{first['latency_ms'] / last['latency_ms']:.2f}x at batch 1, "
        f"{last['images_per_s'] / first['images_per_s']:.2f}x at batch 64 "
        f"(FLOPs ratio {first['macs'] / last['macs']:.2f}x); latency of "
        "the deployed form (batch norm folded), timed in interleaved rounds"
    )


def main(argv=None):
    """Runs the demo; returns the table rows (dicts) it prints."""
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    start = time.time()
    data = ekg_keras.data.digits(
        batch_size=64, seed=args.seed, image_size=args.image_size
    )
    steps = len(data.y_train) // 64 + 1

    print(f"Training ResNet-20 on digits for {args.epochs} epochs ...")
    model = ekg_keras.models.resnet20(
        num_classes=data.num_classes, input_shape=data.input_shape
    )
    compile_for_training(model, args.epochs, steps, learning_rate=0.05)
    model.fit(data.train, epochs=args.epochs, verbose=2, shuffle=False)
    rows = [describe("ResNet-20", model, data.test)]

    print(f"\nPruning to {describe_budget(args)} ({describe_method(args)}) ...")
    if args.method == "oneshot":
        options = {"criterion": args.criterion}
    else:
        options = {"val_per_class": args.val_per_class}
    if args.latency is None:
        budget = {"flops": args.flops}
    else:
        budget = {
            "latency": args.latency,
            "latency_batch_size": args.latency_batch_size,
        }
    masked = ekg_keras.prune(
        model,
        **budget,
        round_to=args.round_to,
        method=args.method,
        data=(data.x_train, data.y_train),
        slim=False,
        **options,
    )
    rows.append(
        describe(
            "pruned (before fine-tune)",
            ekg_keras.slim(masked),
            data.test,
        )
    )

    print(f"Fine-tuning the masked model for {args.finetune_epochs} epochs ...")
    compile_for_training(
        masked, args.finetune_epochs, steps, learning_rate=0.01
    )
    masked.fit(
        data.train, epochs=args.finetune_epochs, verbose=2, shuffle=False
    )
    slim = ekg_keras.slim(masked)
    rows.append(
        describe("pruned + fine-tuned", slim, data.test)
    )

    print("Timing the three deployed models in interleaved rounds ...")
    add_latencies(rows, args.latency_runs)
    print_table(rows)
    print(f"\nTotal time {time.time() - start:.0f} s.")
    return rows


if __name__ == "__main__":
    main()
