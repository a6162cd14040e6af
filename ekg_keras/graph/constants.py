"""What removed channels hold where they are consumed.

A removed channel is zero right after the layer that masks it, but the
layers after it may turn it into a non-zero constant: an activation with
`f(0) != 0` (sigmoid gives 0.5), an added constant (`x + 3.0`), or batch
normalization after a soft-zeroed filter (`beta - gamma * mean / std`).
The consumer of such a channel cannot just drop it: slimming folds the
constant into the consumer's bias, or, where zero padding makes a bias
inexact, into an extra input channel of ones, which costs FLOPs.

This module follows those constants through the graph from the layers'
weights and the handlers' `removed_values`, without running the model,
so that `slim` and the FLOPs counter agree on every fold.
"""

import numpy as np

from ekg_keras._keras_private import functional_of
from ekg_keras._keras_private import graph_nodes
from ekg_keras._keras_private import is_layer
from ekg_keras.graph.handlers import channels_of
from ekg_keras.graph.registry import get_handler

#: Constants at most this large (in absolute value) count as zero.
ZERO_TOLERANCE = 1e-12


def consumer_constants(graph, assume_trained=False, held=False):
    """The constant each input channel of each consumer holds when removed.

    Args:
        graph: A `ChannelGraph`.
        assume_trained: Replace the constants that training may still
            change (`LayerHandler.constants_follow_training`, e.g. batch
            normalization in soft mode) by 1.0 wherever they are known, so
            that a budget holds whatever training makes of them.
        held: Take those constants as exact zeros wherever the layer can
            hold them there (`LayerHandler.holds_zero_constants`): the
            constants once the removed channels' weights are zeroed and
            their gradients masked (`SoftFilterPruning.hold_pruned`).

    Returns:
        Dict mapping `id(layer)` of every source layer (convolution, dense)
        with an input to a float array over the positions of its (first
        call's) first input: the value that position holds when its
        channel is removed, NaN where it would not be a constant (it
        depends on the data, or a zero border is padded around it).
    """
    found = {}
    inputs = [np.full(channels_of(x), np.nan) for x in _inputs(graph.model)]
    trained = {"assume_trained": assume_trained, "held": held}
    _walk(graph, graph.model, inputs, found, trained, memo={})
    return {
        key: values[0]
        for key, values in found.items()
        if graph.layers[key].kind == "source" and values
    }


def nonzero_positions(values):
    """Boolean mask of the positions whose constant is known and non-zero."""
    values = np.asarray(values, dtype=np.float64)
    return ~np.isnan(values) & (np.abs(values) > ZERO_TOLERANCE)


def _inputs(model):
    return functional_of(model).inputs


def follows_training(graph):
    """Whether some layer's removed-channel constants follow training."""
    return any(
        record.handler is not None
        and record.handler.constants_follow_training(record.layer)
        for record in graph.layers.values()
    )


def _walk(graph, model, inputs, found, trained, memo):
    """Propagates removed values through `model`; returns its outputs'."""
    functional = functional_of(model)
    values = {id(x): v for x, v in zip(functional.inputs, inputs)}
    for node in graph_nodes(functional):
        operation = node.operation
        arriving = [values[id(t)] for t in node.input_tensors]
        found.setdefault(id(operation), arriving)
        record = graph.layers[id(operation)]
        if record.kind == "model":
            leaving = _walk(
                graph, operation, arriving, found, trained, memo
            )
        else:
            handler = record.handler or get_handler(operation)
            leaving = _removed_values(handler, operation, node, arriving, memo)
            leaving = _as_trained(handler, operation, leaving, **trained)
        for tensor, value in zip(node.outputs, leaving):
            values[id(tensor)] = _checked(value, tensor)
    return [values[id(x)] for x in functional.outputs]


def _as_trained(handler, operation, values, assume_trained, held):
    """`values` as `consumer_constants` asks: held at zero, assumed
    non-zero (1.0), or as the weights give them now."""
    if not handler.constants_follow_training(operation):
        return values
    if held and handler.holds_zero_constants(operation):
        fill = 0.0
    elif assume_trained:
        fill = 1.0
    else:
        return values
    return [np.where(np.isnan(v), np.nan, fill) for v in values]


def _removed_values(handler, operation, node, values, memo):
    """`handler.removed_values`, computed once per distinct call of a
    built-in weightless layer (most calls evaluate a layer, and a ResNet
    has dozens of equal ReLUs and adds seeing equal constants)."""
    key = _call_key(operation, node, values)
    if key is None:
        return handler.removed_values(operation, node, values)
    if key not in memo:
        memo[key] = handler.removed_values(operation, node, values)
    return [np.array(value, copy=True) for value in memo[key]]


def _call_key(operation, node, values):
    """What the result of a built-in Keras layer without weights depends
    on: its class and config, its input shapes and the values; None for
    other operations."""
    if not is_layer(operation) or operation.weights:
        return None
    if not type(operation).__module__.startswith("keras."):
        return None
    try:
        config = dict(operation.get_config())
    except NotImplementedError:  # Built with arguments it cannot serialize.
        return None
    config.pop("name", None)
    return (
        type(operation),
        repr(sorted(config.items())),
        tuple(tuple(t.shape) for t in node.input_tensors),
        tuple(np.asarray(v, dtype=np.float64).tobytes() for v in values),
    )


def _checked(value, tensor):
    value = np.asarray(value, dtype=np.float64).reshape(-1)
    channels = channels_of(tensor)
    if len(value) != channels:
        return np.full(channels, np.nan)
    return value
