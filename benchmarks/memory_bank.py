"""EKG memory bank: bytes per storage mode, and the cost of the bank in a step.

Bytes: a CIFAR-10 bank (50,000 samples x 5 teachers x 10 classes) and an
ImageNet bank (1,281,167 x 5 x 1000) in float32, float16, and top-10
(float16 values + int32 class ids), from `bank_bytes` (the exact size of
the weights `MemoryBank` creates; the CIFAR-10 float32 and float16 banks are
also created and their weights' bytes counted, as a check).

Step time: ResNet-20 at 32x32, batch 128, one compiled train step of
`EKGFineTuning` (two augmented views, bank read by ids, teacher filter,
cross-entropy + distillation) against the same two-view step without the
bank (cross-entropy on both views only), in alternating rounds in one
process; target <= 1.10x.

    .venv/bin/python benchmarks/memory_bank.py            # about 3 min
    .venv/bin/python benchmarks/memory_bank.py --quick
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.

BANKS = {
    "CIFAR-10": (50_000, 5, 10),
    "ImageNet": (1_281_167, 5, 1000),
}
MODES = {
    "float32": ("float32", None),
    "float16": ("float16", None),
    "top-10 float16": ("float16", 10),
}
TARGET = 1.10


def parse_args(argv=None):
    parser = _timing.base_parser(
        __doc__.splitlines()[0], "two rounds of three steps"
    )
    return parser.parse_args(argv)


def bank_sizes():
    import numpy as np

    from ekg_keras.methods.ekg.memory_bank import MemoryBank
    from ekg_keras.methods.ekg.memory_bank import bank_bytes

    sizes = {
        name: {
            mode: bank_bytes(*shape, storage, top_k)
            for mode, (storage, top_k) in MODES.items()
            if top_k is None or top_k < shape[2]  # Top-k needs k < classes.
        }
        for name, shape in BANKS.items()
    }
    for storage in ("float32", "float16"):
        bank = MemoryBank(*BANKS["CIFAR-10"], storage=storage)
        created = sum(
            np.dtype(w.dtype).itemsize * int(np.prod(w.shape))
            for w in bank.weights
        )
        if created != sizes["CIFAR-10"][storage]:
            raise RuntimeError(
                f"{storage}: created {created} bytes, computed "
                f"{sizes['CIFAR-10'][storage]}"
            )
    return sizes


def step_models(batch):
    import keras
    import numpy as np
    import tensorflow as tf

    import ekg_keras
    from ekg_keras.methods.ekg import EKGFineTuning
    from ekg_keras.methods.ekg import MemoryBank
    from ekg_keras.methods.ekg.distillation import _cross_entropy

    class TwoViews(EKGFineTuning):
        """The same step without the bank: cross-entropy on both views."""

        def compute_objective(self, features, labels, step, training=True):
            images, ids = features["image"], features["id"]
            views = [self.augment(images, ids, step, v) for v in (0, 1)]
            logits = [self.student(v, training=training) for v in views]
            loss = tf.reduce_mean(
                0.5 * sum(_cross_entropy(labels, z) for z in logits)
            )
            return loss, logits[0], tf.constant(0.0), tf.constant(0.0)

    rng = np.random.default_rng(0)
    bank = MemoryBank(50_000, 5, 10)
    bank.write(
        np.arange(50_000), 0, rng.standard_normal((50_000, 10)).astype("f4")
    )
    features = {
        "image": rng.standard_normal((batch, 32, 32, 3)).astype("float32"),
        "id": rng.choice(50_000, batch, replace=False).astype("int64"),
    }
    labels = rng.integers(0, 10, batch).astype("int32")
    models = {}
    for name, cls in (("with bank", EKGFineTuning), ("without", TwoViews)):
        keras.utils.set_random_seed(0)
        model = cls(ekg_keras.models.resnet20(), bank)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        models[name] = model
    return models, features, labels


def time_steps(rounds, steps, batch):
    models, features, labels = step_models(batch)
    for model in models.values():  # Trace and warm up.
        model.train_on_batch(features, labels)
        model.train_on_batch(features, labels)
    seconds = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(features, labels)
            seconds[name].append((time.perf_counter() - start) / steps)
    ratios = [a / b for a, b in zip(seconds["with bank"], seconds["without"])]
    return {
        "batch": batch,
        "step_s": {n: statistics.median(s) for n, s in seconds.items()},
        "ratio_median": statistics.median(ratios),
        "ratio_rounds": ratios,
    }


def main(argv=None):
    args = parse_args(argv)
    env = _timing.environment()
    print(_timing.environment_line(env))
    sizes = bank_sizes()
    rows = [
        [name]
        + [
            f"{sizes[name][m] / 2**20:,.1f} MiB" if m in sizes[name] else "-"
            for m in MODES
        ]
        for name in BANKS
    ]
    print("\nMemory bank bytes (samples x 5 teachers x classes)")
    print(_timing.table(["bank"] + list(MODES), rows))
    rounds, steps = (2, 3) if args.quick else (6, 5)
    timing = time_steps(rounds, steps, batch=128)
    step = timing["step_s"]
    print(
        f"\nResNet-20 32x32, batch 128, one train step: with bank "
        f"{step['with bank'] * 1e3:.0f} ms, two views without bank "
        f"{step['without'] * 1e3:.0f} ms: {timing['ratio_median']:.3f}x "
        f"(median of {rounds} paired rounds; target <= {TARGET}x)"
    )
    figures = {
        "environment": env,
        "bytes": sizes,
        "step": timing,
        "summary": f"bank step {timing['ratio_median']:.3f}x "
        f"(target <= {TARGET}x)",
    }
    if args.json:
        _timing.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
