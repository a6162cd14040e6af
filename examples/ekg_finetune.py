"""EKG end to end on the embedded digits data: search, bank, fine-tuning.

    .venv/bin/python examples/ekg_finetune.py [--flops 0.45] [--epochs 10]

Trains ResNet-20 on scikit-learn's digits (32x32x3, no download), runs the
EKG search to `--flops`, and fine-tunes the searched model for
`--finetune_epochs` twice from the same start: with plain cross-entropy on
one augmented view, and with EKG's memory bank (five teachers from the
search, two views, cross-entropy plus distillation toward the filtered
teachers). Prints the test accuracy (inference mode, after batch-norm
recalibration) of the unpruned model, of search + plain fine-tuning and of
search + EKG fine-tuning.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ekg_keras  # noqa: E402
from ekg_keras.training import augment  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flops", type=float, default=0.45)
    parser.add_argument(
        "--epochs",
        type=int,
        default=15,
        help="Training epochs of the unpruned model.",
    )
    parser.add_argument("--finetune_epochs", type=int, default=10)
    parser.add_argument("--val_per_class", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def test_accuracy(model, data):
    """Inference-mode accuracy after exact batch-norm recalibration."""
    model = ekg_keras.wrap(model)  # A copy: statistics change below.
    ekg_keras.recalibrate_batchnorm(model, (data.x_train, data.y_train))
    logits = np.concatenate(
        [
            model(data.x_test[i : i + 128])
            for i in range(0, len(data.y_test), 128)
        ]
    )
    return float(np.mean(logits.argmax(-1) == data.y_test))


def plain_finetune(masked, data, epochs, seed):
    """Cross-entropy on one pad-crop-flip view, the same optimizer."""

    class OneView(keras.Model):
        def __init__(self, student):
            super().__init__()
            self.student = student

        def call(self, inputs, training=False):
            return self.student(inputs["image"], training=training)

        def train_step(self, batch):
            features, labels = batch
            images = augment.pad_crop_flip(
                features["image"],
                features["id"],
                self.optimizer.iterations,
                0,
                seed=seed,
            )
            features = {"image": images, "id": features["id"]}
            return super().train_step((features, labels))

    trainer = OneView(masked)
    steps = epochs * len(data.train)
    trainer.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.PiecewiseConstantDecay(
                [int(steps * f) for f in (0.3, 0.6, 0.8)],
                [1e-2 * 0.2**i for i in range(4)],
            ),
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    trainer.fit(data.train, epochs=epochs, verbose=0)
    return masked


def main(argv=None):
    """Runs the example; returns {name: test accuracy}."""
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    data = ekg_keras.data.digits(
        batch_size=64, image_size=args.image_size, with_ids=True, seed=args.seed
    )
    model = ekg_keras.models.resnet20(input_shape=data.input_shape)
    steps = args.epochs * len(data.train)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.1, steps),
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    print(f"Training ResNet-20 on digits for {args.epochs} epochs ...")
    images = data.train.map(lambda f, y: (f["image"], y))
    model.fit(images, epochs=args.epochs, verbose=0)
    results = {"unpruned": test_accuracy(model, data)}

    print(f"EKG search to {args.flops:.0%} of the FLOPs ...")
    search = ekg_keras.EKGSearch(
        model,
        args.flops,
        (data.x_train, data.y_train),
        val_per_class=args.val_per_class,
        verbose=0,
    )
    searched = search.run()
    print(
        f"  {len(search.history) - 1} steps, FLOPs "
        f"{search.history[-1].flops_fraction:.3f}"
    )
    results["searched, no fine-tuning"] = test_accuracy(searched, data)

    print(f"Plain fine-tuning, {args.finetune_epochs} epochs ...")
    plain = plain_finetune(
        ekg_keras.wrap(searched), data, args.finetune_epochs, args.seed
    )
    results["search + plain fine-tuning"] = test_accuracy(plain, data)

    print(f"EKG fine-tuning (memory bank), {args.finetune_epochs} epochs ...")
    ekg_keras.training.finetune(
        search,
        args.finetune_epochs,
        ekg_keras.training.Fitter(
            (data.x_train, data.y_train), batch_size=64, verbose=0
        ),
        verbose=0,
    )
    results["search + EKG fine-tuning"] = test_accuracy(search.model, data)

    print()
    for name, accuracy in results.items():
        print(f"{name:<28} {accuracy:7.2%}")
    print(f"\nTotal time {time.time() - start:.0f} s.")
    return results


if __name__ == "__main__":
    main()
