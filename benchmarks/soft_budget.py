"""Where soft pruning spends an equal training budget, and what it costs.

    .venv/bin/python benchmarks/soft_budget.py            # ~5 min, 2 cores idle
    .venv/bin/python benchmarks/soft_budget.py --epochs 10

SFP / ASFP / FPGM prune at every epoch and let zeroed filters regrow
(He et al., IJCAI 2018, Sec. 3.3); in the comparison (`compare.py`) they
fit that schedule into the same budget as every other method, the last
`RECOVERY_SHARE` of it spent training the hard-pruned network. On the
"hard" digits an epoch is 5 batches (300 images, batch 64), where CIFAR's
is ~390: this script measures, on the comparison's cached ResNet-20
baseline at half the FLOPs, how accuracy after the budget depends on the
split between soft pruning and recovery, the pruning interval and
gradient masking, beside uniform L1 with the whole budget as fine-tuning.
Results: `results/soft_budget.json` and a table on stdout.
"""

import argparse
import json
import time

import _timing  # noqa: F401  (silences TensorFlow; puts the repo on the path)
import compare

CASE = "resnet20/hard"
FLOPS = 0.5


def variants(epochs):
    """(label, method, options) of the runs at a budget of `epochs`."""
    share = max(1, round(epochs * 0.2))
    half = epochs // 2
    return [
        (f"sfp {epochs - share} soft + {share} recovery (compare.py)", "sfp",
         {"epochs": epochs - share, "recovery_epochs": share}),
        (f"sfp {epochs - share} + {share}, mask_gradients", "sfp",
         {"epochs": epochs - share, "recovery_epochs": share,
          "mask_gradients": True}),
        (f"sfp {epochs - share} + {share}, a step every 4 epochs", "sfp",
         {"epochs": epochs - share, "recovery_epochs": share,
          "interval_epochs": 4}),
        (f"sfp {half} soft + {epochs - half} recovery", "sfp",
         {"epochs": half, "recovery_epochs": epochs - half}),
        (f"sfp 1 soft + {epochs - 1} recovery", "sfp",
         {"epochs": 1, "recovery_epochs": epochs - 1}),
        (f"sfp {epochs - share} soft, no recovery: before the last", "sfp",
         {"epochs": epochs - share, "recovery_epochs": 0}),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    import ekg_keras

    settings = compare.settings_from(compare.parse_args(["--quick"]))
    data = compare.load_data(CASE.partition("/")[2], settings)
    model, _ = compare.baseline(CASE, settings, data)
    rows = []
    for seed in map(int, args.seeds.split(",")):
        for label, name, options in variants(args.epochs):
            start = time.perf_counter()
            entry = ekg_keras.methods.get(name)
            method, pruned = compare.search(
                entry, model, FLOPS, seed, options, data
            )
            kept = ekg_keras.count_flops(ekg_keras.slim(method.model)).macs
            rows.append({
                "variant": label,
                "seed": seed,
                "accuracy": pruned["accuracy"],
                "flops_kept": kept / ekg_keras.count_flops(model).macs,
                "seconds": time.perf_counter() - start,
            })
            print(f"{label:<48} seed {seed}: {pruned['accuracy']:.2%} "
                  f"({rows[-1]['seconds']:.0f} s)", flush=True)
    path = compare.RESULTS / "soft_budget.json"
    path.write_text(json.dumps({"epochs": args.epochs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
