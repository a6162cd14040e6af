"""EKG search: wall time (cached vs plain evaluation) and pruning quality.

Trains ResNet-20 and ResNet-56 briefly on the embedded digits data, then
for each model runs the same EKG search to `flops=0.5` twice in this one
process:

* **fast**: candidates are evaluated from cached frontier activations
  (`EKGSearch(..., cache=True)`, the default);
* **plain**: every candidate re-runs the whole network, as the reference
  code does (`cache=False`).

It prints the wall time of each (fine-tune on the subset, search loop, and
the engine's split of the loop into Taylor scoring, prefix caching and
candidate evaluation), the number of candidate evaluations, and whether
both chose the same sub-network (same group at every step, same final
keep masks).

Quality (ResNet-20): accuracy on the digits test split of the model pruned
to `flops=0.5` by the EKG search, by the EKG search with a relative channel
floor (`min_channels=0.5`), and by one-shot uniform L1 pruning at the same
FLOPs target: before any fine-tuning after pruning, with batch statistics
(what the search optimises), with the stale moving statistics, and after
`ekg_keras.recalibrate_batchnorm` on the training split; then after 5
epochs of fine-tuning (recalibrated first, SGD 0.01 cosine); and the
narrowest group each keeps.

    .venv/bin/python benchmarks/ekg_search.py            # ~30 min, 2 cores
    .venv/bin/python benchmarks/ekg_search.py --quick    # smoke check
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # Silences TF logging before TF is imported.

FLOPS = 0.5
FLOOR = 0.5  # Relative channel floor compared against the default of 1.
FINETUNE_EPOCHS = 5
# D^val per class (the reference's 32; 16 keeps ResNet-56 near 15 minutes).
VAL_PER_CLASS = {"resnet20": 32, "resnet56": 16}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="ResNet-20 only, fewer epochs and samples.",
    )
    parser.add_argument("--json", default=None, help="Write figures here.")
    parser.add_argument(
        "--models",
        default=None,
        help="Comma-separated subset of resnet20,resnet56.",
    )
    parser.add_argument(
        "--val_per_class",
        type=int,
        default=None,
        help="Validation samples per class (default 32, 8 with --quick).",
    )
    return parser.parse_args(argv)


def train(name, data, epochs):
    import keras

    import ekg_keras

    keras.utils.set_random_seed(0)
    model = getattr(ekg_keras.models, name)(input_shape=data.input_shape)
    steps = epochs * len(data.train)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.1, steps),
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(data.train, epochs=epochs, verbose=0)
    return model


def accuracies(model, data):
    """Test accuracy with stale, batch and recalibrated BN statistics.

    The model's weights are restored afterwards.
    """
    import numpy as np

    import ekg_keras

    def accuracy(training):
        logits = np.concatenate(
            [model(x, training=training).numpy() for x, _ in data.test]
        )
        return float(np.mean(logits.argmax(-1) == data.y_test))

    weights = model.get_weights()
    stale = accuracy(False)
    batch = accuracy(True)  # Moves the moving statistics; restored below.
    ekg_keras.recalibrate_batchnorm(model, in_order(data))
    figures = {
        "batch_statistics": batch,
        "stale_statistics": stale,
        "recalibrated": accuracy(False),
    }
    model.set_weights(weights)
    return figures


def search(model, data, cache, val_per_class, min_channels=1):
    import ekg_keras

    searcher = ekg_keras.EKGSearch(
        model,
        FLOPS,
        (data.x_train, data.y_train),
        cache=cache,
        val_per_class=val_per_class,
        min_channels=min_channels,
        verbose=0,
    )
    start = time.perf_counter()
    masked = searcher.run()
    seconds = time.perf_counter() - start
    evaluator = searcher.evaluator
    return (
        searcher,
        masked,
        {
            "seconds": seconds,
            "search_loop_s": sum(s.seconds for s in searcher.history[1:]),
            "steps": len(searcher.history) - 1,
            "candidate_evaluations": sum(
                s.candidates for s in searcher.history[1:]
            ),
            "phases_s": dict(evaluator.seconds),
            "flops_fraction": searcher.history[-1].flops_fraction,
            "val_accuracy": searcher.history[-1].accuracy,
        },
    )


def same_subnetwork(a, b):
    import numpy as np

    groups = [h.group for h in a.history] == [h.group for h in b.history]
    masks = all(
        np.array_equal(x, y)
        for x, y in zip(a.history[-1].keep_masks(), b.history[-1].keep_masks())
    )
    return bool(groups and masks)


def speed(name, model, data, val_per_class):
    fast, _, fast_figures = search(model, data, True, val_per_class)
    plain, _, plain_figures = search(model, data, False, val_per_class)
    plain_loop = plain_figures["search_loop_s"]
    return {
        "fast": fast_figures,
        "plain": plain_figures,
        "loop_speedup": plain_loop / fast_figures["search_loop_s"],
        # Even free candidate evaluation leaves the Taylor pass per step.
        "loop_speedup_bound": plain_loop
        / plain_figures["phases_s"]["importance"],
        "same_subnetwork": same_subnetwork(fast, plain),
    }, fast


def in_order(data):
    """The training split in fixed batches (deterministic recalibration)."""
    return (data.x_train, data.y_train)


def finetuned_accuracy(masked, data, epochs):
    """Inference accuracy after recalibration and `epochs` of fine-tuning.

    Works on a copy of the masked model (masked channels stay zero).
    """
    import keras
    import numpy as np

    import ekg_keras

    model = ekg_keras.wrap(masked)  # A copy, masks and weights included.
    ekg_keras.recalibrate_batchnorm(model, in_order(data))
    # A fresh pipeline, so that every model fine-tunes on the same order.
    data = ekg_keras.data.digits(batch_size=64)
    keras.utils.set_random_seed(1)
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(
                0.01, epochs * len(data.train)
            ),
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(data.train, epochs=epochs, verbose=0)
    logits = np.concatenate([model(x, training=False) for x, _ in data.test])
    return float(np.mean(logits.argmax(-1) == data.y_test))


def narrowest(masked):
    """Fewest channels kept by any group, and that group's width."""
    import ekg_keras

    graph = ekg_keras.graph.trace(masked, warn=False)
    keep = ekg_keras.flops.group_keep_masks(graph)
    counts = [
        (int(k.sum()), len(k)) for k, g in zip(keep, graph.groups) if g.prunable
    ]
    return min(counts)


def quality(model, fast_masked, data, val_per_class, epochs):
    import ekg_keras

    _, floor_masked, _ = search(
        model, data, True, val_per_class, min_channels=FLOOR
    )
    one_shot = ekg_keras.prune(
        model, flops=FLOPS, criterion="l1", slim=False, verbose=0
    )
    figures = {"unpruned": accuracies(model, data)}
    for name, masked in (
        ("ekg", fast_masked),
        (f"ekg, min_channels={FLOOR}", floor_masked),
        ("uniform_l1", one_shot),
    ):
        figures[name] = accuracies(masked, data)
        figures[name]["flops"] = (
            ekg_keras.count_flops(masked).macs
            / ekg_keras.count_flops(model).macs
        )
        figures[name]["narrowest"] = narrowest(masked)
        figures[name]["finetuned"] = finetuned_accuracy(masked, data, epochs)
    return figures


def print_speed(name, figures):
    rows = []
    for mode in ("fast", "plain"):
        f = figures[mode]
        p = f["phases_s"]
        rows.append(
            [
                mode,
                f"{f['seconds']:.1f}",
                f"{f['search_loop_s']:.1f}",
                f"{p.get('importance', 0):.1f}",
                f"{p.get('prefix', 0):.1f}",
                f"{p.get('evaluation', 0):.1f}",
                f["steps"],
                f["candidate_evaluations"],
                f"{f['flops_fraction']:.3f}",
            ]
        )
    print(f"\n{name}: EKG search to flops={FLOPS}")
    print(
        _timing.table(
            [
                "mode",
                "total s",
                "loop s",
                "taylor s",
                "prefix s",
                "eval s",
                "steps",
                "candidates",
                "FLOPs",
            ],
            rows,
        )
    )
    print(
        f"search-loop speed-up fast vs plain: "
        f"{figures['loop_speedup']:.2f}x (bound with the Taylor pass: "
        f"{figures['loop_speedup_bound']:.2f}x); same sub-network: "
        f"{figures['same_subnetwork']}"
    )


def print_quality(figures, epochs):
    rows = []
    for name, f in figures.items():
        extra = (
            ["-", "-", "-"]
            if name == "unpruned"
            else [
                f"{f['flops']:.3f}",
                "%d/%d" % tuple(f["narrowest"]),
                f"{f['finetuned']:.2%}",
            ]
        )
        rows.append(
            [
                name,
                f"{f['batch_statistics']:.2%}",
                f"{f['stale_statistics']:.2%}",
                f"{f['recalibrated']:.2%}",
            ]
            + extra
        )
    print(f"\nResNet-20 digits test accuracy, pruned to flops={FLOPS}")
    print(
        _timing.table(
            [
                "model",
                "batch stats",
                "stale stats",
                "recalibrated",
                "FLOPs",
                "narrowest",
                f"+{epochs} ep. fine-tune",
            ],
            rows,
        )
    )


def main(argv=None):
    args = parse_args(argv)
    import ekg_keras

    env = _timing.environment()
    print(_timing.environment_line(env))
    data = ekg_keras.data.digits(batch_size=64)
    names = ["resnet20"] if args.quick else ["resnet20", "resnet56"]
    if args.models:
        names = args.models.split(",")
    epochs = 2 if args.quick else 12

    figures = {"environment": env, "flops": FLOPS}
    for name in names:
        val_per_class = args.val_per_class or (
            8 if args.quick else VAL_PER_CLASS[name]
        )
        start = time.perf_counter()
        model = train(
            name, data, epochs if name == "resnet20" else max(2, epochs // 3)
        )
        print(
            f"\n{name}: trained {time.perf_counter() - start:.0f}s; "
            f"search with {val_per_class} validation images per class",
            flush=True,
        )
        figures[name], fast = speed(name, model, data, val_per_class)
        figures[name]["val_per_class"] = val_per_class
        print_speed(name, figures[name])
        if name == "resnet20":
            tune = 1 if args.quick else FINETUNE_EPOCHS
            figures["quality"] = quality(
                model, fast.model, data, val_per_class, tune
            )
            print_quality(figures["quality"], tune)
    summary = ", ".join(
        f"{n} {figures[n]['loop_speedup']:.2f}x "
        f"(same: {figures[n]['same_subnetwork']})"
        for n in names
    )
    figures["summary"] = f"search loop fast vs plain: {summary}"
    if args.json:
        _timing.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
