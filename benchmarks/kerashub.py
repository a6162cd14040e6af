"""Every KerasHub vision family of the test suite through `prune(flops=0.5)`.

For each family of `tests/kerashub_models.py` (a small random-weight
configuration of its classifier or segmenter task at 64x64, the same
models `tests/test_prune_kerashub.py` checks), this script reports

1. the channel groups the graph finds and how many are prunable,
2. the prunable share of MACs: the part of the count that depends on
   prunable groups (1 - MACs with every prunable group emptied / MACs),
3. the smallest reachable fraction (every prunable group at one channel),
4. the wall time of `ekg_keras.prune(model, 0.5, slim=False)` and of
   `ekg_keras.slim`, and the kept fraction by the TensorFlow graph count.

Prints a Markdown table (README "What models work").

    .venv/bin/python benchmarks/kerashub.py
    .venv/bin/python benchmarks/kerashub.py --only vit,mit
"""

import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import _timing  # noqa: E402,F401  Silences TF logging before TF loads.


def _row(family):
    import kerashub_models as hub
    import numpy as np

    import ekg_keras
    from ekg_keras.methods.setup import PruningSetup
    from ekg_keras.traced_macs import traced_macs

    model = hub.build(family)
    setup = PruningSetup(model, 0.5)
    counter = setup.flops_counter
    prunable = np.array([g.prunable for g in setup.graph.groups])
    emptied = np.where(prunable, 0.0, counter.full)
    share = 1 - counter.macs(emptied) / counter.macs(counter.full)
    start = time.perf_counter()
    masked = ekg_keras.prune(model, 0.5, slim=False, verbose=0)
    pruned = time.perf_counter() - start
    start = time.perf_counter()
    slim = ekg_keras.slim(masked)
    slimmed = time.perf_counter() - start
    kept = traced_macs(slim) / traced_macs(model)
    return (
        family,
        len(setup.graph.groups),
        int(prunable.sum()),
        share,
        setup.smallest_fraction(),
        pruned,
        slimmed,
        kept,
    )


def main(argv):
    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import kerashub_models as hub

    only = None
    if "--only" in argv:
        only = argv[argv.index("--only") + 1].split(",")
    families = [f for f in hub.BUILDERS if only is None or f in only]
    print(
        "| family | groups (prunable) | prunable share of MACs | smallest "
        "reachable | prune s | slim s | kept at 0.5 |"
    )
    print("|---|---|---|---|---|---|---|")
    for family in families:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            name, groups, prunable, share, smallest, p, s, kept = _row(family)
        print(
            f"| {name} | {groups} ({prunable}) | {share:.1%} | "
            f"{smallest:.3f} | {p:.2f} | {s:.2f} | {kept:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
