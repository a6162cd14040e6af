"""Helpers shared by tests that build, randomise and compare models."""

import keras
import numpy as np


def randomize_batchnorm(model, seed=0):
    """Gives every BatchNormalization non-trivial statistics and affine
    weights, so that inference outputs depend on them."""
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []
            for weight in layer.weights:
                shape = weight.shape
                if weight.name == "moving_variance":
                    values.append(rng.uniform(0.5, 1.5, shape))
                elif weight.name == "gamma":
                    values.append(rng.uniform(0.5, 1.5, shape))
                elif weight.name == "mask":
                    values.append(np.ones(shape))
                else:
                    values.append(rng.normal(0.0, 0.3, shape))
            layer.set_weights([v.astype("float32") for v in values])
    return model


def all_layers(model):
    """Layers of `model`, nested models included (depth first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def images(batch=4, size=32, channels=3, seed=0):
    """A batch of random images."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, size, size, channels)).astype("float32")


def max_relative_difference(a, b):
    """max |a - b| / max |b|."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def layer_classes(model):
    """The set of `module.ClassName` of every layer, nested included."""
    return {
        f"{type(layer).__module__}.{type(layer).__name__}"
        for layer in all_layers(model)
    }


def accuracy(model, x, y, training=False, batch_size=64):
    """Top-1 accuracy of `model` on arrays, in batches.

    `training=True` normalizes with batch statistics (and, as Keras does,
    moves the moving averages; callers that care restore the weights).
    """
    logits = np.concatenate(
        [
            np.asarray(model(x[i : i + batch_size], training=training))
            for i in range(0, len(x), batch_size)
        ]
    )
    return float(np.mean(logits.argmax(-1) == y))


def kept_fraction(original, pruned):
    """Fraction of `original`'s MACs that `pruned` (masked or slim) keeps."""
    import ekg_keras

    return (
        ekg_keras.count_flops(pruned).macs
        / ekg_keras.count_flops(original).macs
    )


def prune_masked_and_slim(model, flops, **options):
    """`ekg_keras.prune(..., slim=False)` and its `ekg_keras.slim`."""
    import ekg_keras

    masked = ekg_keras.prune(
        model, flops=flops, slim=False, verbose=0, **options
    )
    return masked, ekg_keras.slim(masked)


def assert_same_outputs(a, b, x, tolerance=1e-4):
    """Asserts max |a(x) - b(x)| / max |b(x)| < tolerance, outputs not all 0."""
    ya, yb = np.asarray(a(x)), np.asarray(b(x))
    assert ya.shape == yb.shape
    assert np.abs(yb).max() > 0
    assert max_relative_difference(ya, yb) < tolerance


def group_of(channel_graph, layer_name):
    """The group opened by a producer layer (its first output channel)."""
    record = channel_graph.channels(layer_name)
    return channel_graph.groups[record.outputs[0].group[0]]
