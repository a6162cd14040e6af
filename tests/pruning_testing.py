"""Pruning helpers shared by the TensorFlow suite (`model_testing`) and
the backend-neutral tests: `ekg_keras` and nothing of TensorFlow."""

import ekg_keras


def kept_fraction(original, pruned):
    """Fraction of `original`'s MACs that `pruned` (masked or slim) keeps."""
    return (
        ekg_keras.count_flops(pruned).macs
        / ekg_keras.count_flops(original).macs
    )


def prune_masked_and_slim(model, flops, **options):
    """`ekg_keras.prune(..., slim=False)` and its `ekg_keras.slim`."""
    masked = ekg_keras.prune(
        model, flops=flops, slim=False, verbose=0, **options
    )
    return masked, ekg_keras.slim(masked)
