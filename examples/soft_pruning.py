"""Train ResNet-20 from scratch with SFP and with ASFP, then slim it.

    .venv/bin/python examples/soft_pruning.py [--epochs 20] [--flops 0.6]
        [--image_size 32]

Soft filter pruning zeroes the weakest filters of every channel group at
each epoch end and lets them regrow; ASFP raises the pruning rate
gradually. Both target about 40% fewer FLOPs (`--flops 0.6` keeps 60%).
ASFP runs twice: with regrowth (the thesis) and with the gradients of
zeroed filters masked (the official FPGM code), because regrowth behind
batch normalization is unstable (see `SoftFilterPruning`).
After training the zeroed filters are removed and the script prints the
slim model's test accuracy (inference mode) and FLOPs, on the embedded
digits data (no download), before and after re-estimating its
batch-normalization statistics: the last pruning step can zero filters
that the moving statistics were still learned with.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

import ekg_keras  # noqa: E402

METHODS = {
    "SFP": dict(schedule="constant"),
    "ASFP": dict(schedule="asymptotic"),
    "ASFP+mask": dict(schedule="asymptotic", mask_gradients=True),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--flops", type=float, default=0.6, help="Fraction of FLOPs to keep."
    )
    parser.add_argument(
        "--criterion", default="l2", choices=["l1", "l2", "fpgm", "l2+fpgm"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--image_size",
        type=int,
        default=32,
        help="Side of the digits images (8x8, upsampled).",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"Comma-separated subset of {', '.join(METHODS)}.",
    )
    args = parser.parse_args(argv)
    args.methods = args.methods.split(",")
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    return args


def resnet20(args, data):
    """A ResNet-20 for the digits at `--image_size`."""
    return ekg_keras.models.resnet20(
        input_shape=(args.image_size, args.image_size, 3),
        num_classes=data.num_classes,
    )


def train(method, args, data):
    """Trains one ResNet-20 with soft pruning and returns its summary."""
    keras.utils.set_random_seed(args.seed)
    model = resnet20(args, data)
    options = METHODS[method]
    schedule = options["schedule"]
    sfp = ekg_keras.SoftFilterPruning(
        model,
        flops=args.flops,
        criterion=args.criterion,
        epochs=args.epochs,
        **options,
    )
    steps = args.epochs * (len(data.y_train) // 64 + 1)
    sfp.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.05, steps),
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    print(
        f"\n{method}: filter rate P = {sfp.rate:.4f} "
        f"({schedule} schedule), {args.epochs} epochs"
    )
    start = time.time()
    sfp.fit(data.train, epochs=args.epochs, verbose=2, shuffle=False)
    small = sfp.slim()
    small.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    report = ekg_keras.count_flops(small)
    as_trained = small.evaluate(data.test, verbose=0, return_dict=True)[
        "accuracy"
    ]
    ekg_keras.recalibrate_batchnorm(small, data.train)
    return {
        "method": method,
        "rate": sfp.rate,
        "accuracy_as_trained": as_trained,
        "accuracy": small.evaluate(data.test, verbose=0, return_dict=True)[
            "accuracy"
        ],
        "macs": report.macs,
        "params": report.params,
        "seconds": time.time() - start,
    }


def main(argv=None):
    """Runs SFP and ASFP (twice); returns one summary dict per method."""
    args = parse_args(argv)
    data = ekg_keras.data.digits(
        batch_size=64, image_size=args.image_size, seed=args.seed
    )
    full = ekg_keras.count_flops(resnet20(args, data))
    rows = [train(method, args, data) for method in args.methods]
    print(
        f"\n{'method':<11}{'P':>8}{'test acc':>10}{'+BN recal':>11}"
        f"{'MFLOPs':>9}{'FLOPs cut':>11}{'params':>10}{'time':>8}"
    )
    for row in rows:
        print(
            f"{row['method']:<11}{row['rate']:>8.4f}"
            f"{row['accuracy_as_trained']:>10.2%}{row['accuracy']:>11.2%}"
            f"{row['macs'] / 1e6:>9.2f}{1 - row['macs'] / full.macs:>11.1%}"
            f"{row['params'] / 1e3:>9.1f}k{row['seconds']:>7.0f}s"
        )
    print(
        f"(unpruned ResNet-20: {full.macs / 1e6:.2f} MFLOPs, "
        f"{full.params / 1e3:.1f}k params)"
    )
    return rows


if __name__ == "__main__":
    main()
