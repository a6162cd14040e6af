"""Helpers shared by tests that build, randomise and compare models."""

import keras
import numpy as np
import tensorflow as tf


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


def reference_importance(
    masked, graph, batches, labels, targets=None, objective=None
):
    """Taylor importance as `SubnetworkEvaluator.importance` computed it
    before issue 21, in eager mode: per batch and terminal masked layer
    the mask gradient times the mask, summed per group channel in NumPy,
    absolute value per layer and batch, summed.

    Args:
        masked: The hard-masked model (training-mode forward).
        graph: Its `ChannelGraph`.
        batches: List of input arrays, one per batch.
        labels: All labels, batches one after another.
        targets: (N, classes) targets of `objective` (zeros if None).
        objective: `(labels, targets, logits) -> per-sample loss`;
            cross-entropy if None.
    """
    from ekg_keras.layers import is_prunable

    gates = [
        r
        for r in graph.maskable_layers()
        if r.terminal and is_prunable(r.layer)
    ]
    if objective is None:

        def objective(y, t, z):
            del t
            return keras.losses.sparse_categorical_crossentropy(
                y, z, from_logits=True
            )

    scores = [np.zeros(g.size) for g in graph.groups]
    start = 0
    for x in batches:
        end = start + len(x)
        y = np.asarray(labels[start:end])
        t = (
            np.zeros((len(x), masked.outputs[0].shape[-1]), "float32")
            if targets is None
            else np.asarray(targets[start:end], "float32")
        )
        start = end
        variables = [r.layer.filter_mask.value for r in gates]
        with tf.GradientTape() as tape:
            tape.watch(variables)
            logits = masked(x, training=True)
            loss = tf.reduce_mean(objective(y, t, logits))
        for record, gradient in zip(gates, tape.gradient(loss, variables)):
            gradient = gradient.numpy() * record.layer.filter_mask.numpy()
            out = record.outputs[0]
            for group_id in np.unique(out.group[out.group >= 0]):
                rows = out.group == group_id
                per_channel = np.zeros(graph.groups[group_id].size)
                np.add.at(per_channel, out.index[rows], gradient[rows])
                scores[group_id] += np.abs(per_channel)
    return scores
