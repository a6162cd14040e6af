"""First-order Taylor importance of channel groups, from data.

For a channel c of a group, the first-order estimate of the change in the
loss when the channel is zeroed is `sum over positions of dL/dy * y` at the
layers where the group's channels leave (the last masked layer on each path,
e.g. the batch normalization after a convolution). In a hard-masked model
that sum is exactly `dL/dm`, the gradient of the loss with respect to the
channel's mask value, so the score is accumulated as
`S_c = sum over batches | sum over those layers dL/dm_c |`.
"""

import keras
import numpy as np
import tensorflow as tf

from ekg_keras._inputs import as_dataset
from ekg_keras._inputs import check_labels
from ekg_keras._keras_private import output_layer
from ekg_keras.layers import is_prunable


def ends_in_softmax(model):
    """Whether the model's first output is a softmax (probabilities)."""
    last = output_layer(model.outputs[0])
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    return activation == "softmax"


def default_loss(model):
    """Sparse categorical cross-entropy, from logits unless the model ends
    with a softmax."""
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=not ends_in_softmax(model)
    )


def taylor_scores(model, graph, data, loss=None):
    """Accumulates Taylor importance for every group over `data`.

    The model runs in inference mode (batch-normalization statistics are
    not updated).

    Args:
        model: A hard-masked model (from `ekg_keras.wrap`).
        graph: Its `ChannelGraph`.
        data: `(inputs, labels)` batches, see `as_dataset`.
        loss: A Keras loss; defaults to `default_loss(model)`.

    Returns:
        List with one float array per group (zeros for groups without a
        masked layer).

    Raises:
        ValueError: For empty data or labels out of range.
    """
    loss = default_loss(model) if loss is None else loss
    gates = [
        record
        for record in graph.maskable_layers()
        if record.terminal and is_prunable(record.layer)
    ]
    masks = [record.layer.filter_mask for record in gates]
    gradient_step = _gradient_step(model, masks, loss)
    num_outputs = model.outputs[0].shape[-1]
    scores = [np.zeros(group.size) for group in graph.groups]
    batches = 0
    for inputs, labels in as_dataset(data):
        check_labels(labels, num_outputs)
        gradients = gradient_step(inputs, labels)
        per_group = [np.zeros(group.size) for group in graph.groups]
        for record, gradient in zip(gates, gradients):
            out = record.outputs[0]
            inside = out.group >= 0
            values = np.asarray(gradient)[inside]
            for group_id in np.unique(out.group[inside]):
                rows = out.group[inside] == group_id
                np.add.at(
                    per_group[group_id], out.index[inside][rows], values[rows]
                )
        for total, batch in zip(scores, per_group):
            total += np.abs(batch)
        batches += 1
    if batches == 0:
        raise ValueError("`data` is empty: it yielded no batches.")
    return scores


def _gradient_step(model, masks, loss):
    variables = [mask.value for mask in masks]

    @tf.function(reduce_retracing=True)
    def step(inputs, labels):
        with tf.GradientTape() as tape:
            tape.watch(variables)
            predictions = model(inputs, training=False)
            value = loss(labels, predictions)
        return tape.gradient(value, variables)

    return step
