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

from ekg_keras import _backend as backend
from ekg_keras._backend import tf
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
    batches_of_data = as_dataset(data)
    if not backend.is_tensorflow():
        batches_of_data = batches_of_data.as_numpy_iterator()
    for inputs, labels in batches_of_data:
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
    """A function `(inputs, labels) -> [dL/dmask]`, through the gradient of
    the Keras backend that runs (`tf.GradientTape`, `jax.grad`,
    `torch.autograd`)."""
    if backend.name() not in _GRADIENT_STEPS:
        raise NotImplementedError(
            "The Taylor criterion needs gradients: it runs on KERAS_BACKEND="
            f"{'|'.join(_GRADIENT_STEPS)}. Received: KERAS_BACKEND="
            f"{backend.name()}. Use a weight criterion (l1, l2, fpgm)."
        )
    return _GRADIENT_STEPS[backend.name()](model, masks, loss)


def _tensorflow_step(model, masks, loss):
    variables = [mask.value for mask in masks]

    @tf.function(reduce_retracing=True)
    def step(inputs, labels):
        with tf.GradientTape() as tape:
            tape.watch(variables)
            predictions = model(inputs, training=False)
            value = loss(labels, predictions)
        return tape.gradient(value, variables)

    return step


def _jax_step(model, masks, loss):
    import jax

    held = model.non_trainable_variables
    positions = [
        next(i for i, v in enumerate(held) if v is mask) for mask in masks
    ]

    def value(non_trainable, trainable, inputs, labels):
        predictions, _ = model.stateless_call(
            trainable, non_trainable, inputs, training=False
        )
        return loss(labels, predictions)

    gradient = jax.jit(jax.grad(value))

    def step(inputs, labels):
        grads = gradient(
            [v.value for v in held],
            [v.value for v in model.trainable_variables],
            inputs,
            labels,
        )
        return [grads[i] for i in positions]

    return step


def _torch_step(model, masks, loss):
    import torch

    def step(inputs, labels):
        values = [mask.value for mask in masks]
        for tensor in values:
            tensor.requires_grad_(True)
        try:
            predictions = model(inputs, training=False)
            grads = torch.autograd.grad(loss(labels, predictions), values)
        finally:
            for tensor in values:
                tensor.requires_grad_(False)
        return [g.detach().cpu().numpy() for g in grads]

    return step


_GRADIENT_STEPS = {
    "tensorflow": _tensorflow_step,
    "jax": _jax_step,
    "torch": _torch_step,
}
