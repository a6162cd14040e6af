"""Physical filter removal: a new, smaller plain Keras model."""

import copy
import warnings

import keras
import numpy as np

from ekg_keras._keras_private import deferred_variables
from ekg_keras._keras_private import functional_of
from ekg_keras._keras_private import initialize_deferred
from ekg_keras._keras_private import input_name
from ekg_keras._keras_private import is_graph_model
from ekg_keras._keras_private import is_layer
from ekg_keras._keras_private import run_graph
from ekg_keras._warnings import user_stacklevel
from ekg_keras.flops import group_keep_masks
from ekg_keras.graph import trace
from ekg_keras.graph.constants import consumer_constants
from ekg_keras.graph.constants import nonzero_positions
from ekg_keras.layers import is_prunable
from ekg_keras.layers.wrapping import from_config_of
from ekg_keras.layers.wrapping import plain_copy
from ekg_keras.layers.wrapping import weight_pairs

FOLDS = ("exact", "bias")


def slim(model, graph=None, fold="exact"):
    """Builds a smaller plain model without the masked channels.

    A channel is removed when every prunable layer carrying it has mask 0.
    Its filters, batch-normalization entries and the consumers' input
    weights are sliced away; the new model contains only built-in Keras
    layers (its `.keras` file loads without `ekg_keras`) and computes, in
    inference mode, what the masked model computes. `model` is not
    modified. Sequential models come back as functional models with the
    same layers.

    A removed channel may be a non-zero constant rather than zero: an
    activation with f(0) != 0 after a hard mask, an added constant, or
    batch normalization after a soft-zeroed filter (`beta - gamma * mean /
    std` in inference mode); `ekg_keras.graph.constants` finds these from
    the weights. Their contribution is kept, not dropped: it is folded into
    the consumer's bias, which is exact for dense layers, 1x1 and unpadded
    convolutions. A zero-padded k x k convolution sees the constant only
    inside the image (a transposed convolution with strides or a wider
    kernel sees it unevenly), so with `fold="exact"` it gets one extra
    input channel of ones (a fixed 1x1 convolution with zero kernel and
    bias 1) whose kernel is the constants' weighted kernel slices: exact
    everywhere, at the cost of `h*w*(c_in + k*k*c_out)` extra MACs for that
    layer, which `count_flops` and `FlopsCounter` count as well.
    `fold="bias"` folds into the bias instead (no extra cost, exact except
    at the border) and warns. Operation nodes (`x + 1.0`, `keras.ops.mean`)
    are kept with their constants.

    Args:
        model: A model with prunable layers (from `ekg_keras.wrap`,
            `ekg_keras.prune(..., slim=False)` or soft-pruning training).
        graph: Its `ChannelGraph`, if already traced.
        fold: `"exact"` or `"bias"`, see above.

    Returns:
        The slim `keras.Model`.

    Raises:
        ValueError: If a soft-mode layer still has non-zero weights in
            masked filters (run its pruning step first).
    """
    if fold not in FOLDS:
        raise ValueError(
            f"`fold` should be one of {FOLDS}. Received: fold={fold!r}"
        )
    graph = trace(model, warn=False) if graph is None else graph
    _check_soft_layers(graph)
    keep = group_keep_masks(graph)
    folds = _constant_folds(graph, keep, fold)
    return _Rebuilder(graph, keep, folds).rebuild(model)


def _check_soft_layers(graph):
    for record in graph.maskable_layers():
        layer = record.layer
        if (
            not is_prunable(layer)
            or layer.mode != "soft"
            or record.kind != "source"
        ):
            continue
        for variable, masked in layer.masked_weight_values():
            if not np.array_equal(np.asarray(variable.numpy()), masked):
                raise ValueError(
                    f"Layer '{record.path}' is in soft mode and its masked "
                    "filters are not zero. Call `zero_masked_weights()` on "
                    "it (the soft-pruning step) before slimming."
                )


def _constant_folds(graph, keep, fold):
    """Values of removed input channels per consumer, where non-zero.

    Returns:
        Dict mapping `id(layer)` to `(how, removed positions, constants)`,
        `how` being "ones" (extra input channel of ones) or "bias".
    """
    folds = {}
    for key, values in consumer_constants(graph).items():
        record = graph.layers[key]
        removed = np.flatnonzero(~record.inputs[0].keep_mask(keep))
        if not len(removed):
            continue
        if np.isnan(values[removed]).any():
            _warn_not_constant(record)
        nonzero = removed[nonzero_positions(values[removed])]
        if not len(nonzero):
            continue
        handler = record.handler
        how = "bias"
        if not handler.bias_fold_exact(record.layer):
            if fold == "exact" and handler.takes_ones_channel:
                how = "ones"
            else:
                warnings.warn(
                    f"Removed channels entering '{record.path}' are non-zero "
                    "constants; folding them into the bias is exact except "
                    "at the zero-padded image border.",
                    stacklevel=user_stacklevel(),
                )
        folds[key] = (how, nonzero, values[nonzero])
    return folds


def _warn_not_constant(record):
    warnings.warn(
        f"Removed channels entering '{record.path}' are not constants (they "
        "depend on the data, or a zero border was padded around a non-zero "
        "constant); the slim model differs from the masked model there.",
        stacklevel=user_stacklevel(),
    )


class _Rebuilder:
    """Re-runs the graph with slimmed layers on new symbolic inputs."""

    def __init__(self, graph, keep, folds):
        self._graph = graph
        self._keep = keep
        self._folds = folds
        self._layers = {}  # id(old layer) -> new layer
        self._pending = {}  # id(new layer) -> weights to set once built
        self._models = {}  # id(old nested model) -> new nested model
        # id(new layer) -> [extra channels of ones, calls so far]
        self._with_ones = {}
        self._values = []  # (new variable, its value) pairs

    def rebuild(self, model):
        graph = functional_of(model)
        with deferred_variables():
            inputs = [
                keras.Input(
                    batch_shape=x.shape, dtype=x.dtype, name=input_name(x)
                )
                for x in graph.inputs
            ]
            outputs = run_graph(graph, inputs, self._operation, self._call)
            structure = graph.input
            if isinstance(structure, (list, tuple, dict)):
                inputs = keras.tree.pack_sequence_as(structure, inputs)
            else:
                inputs = inputs[0]
            slim = keras.Model(inputs, outputs, name=model.name)
        initialize_deferred(self._values)
        return slim

    def _operation(self, op):
        if is_graph_model(op):
            return lambda *args, **kwargs: self._nested(op, args, kwargs)
        if id(op) not in self._layers:
            if is_layer(op):
                layer, weights = self._slim_layer(op)
                self._pending[id(layer)] = weights
            else:
                layer = self._slim_operation(op)
            self._layers[id(op)] = layer
        return self._layers[id(op)]

    def _slim_operation(self, op):
        """A copy of a `keras.ops` operation (no weights), its config
        slimmed by its handler (a reshape's channel count)."""
        new = plain_copy(op)
        record = self._graph.layers.get(id(op))
        if new is op or record is None:
            return new
        config = record.handler.slim_config(
            op,
            copy.deepcopy(op.get_config()),
            [m.keep_positions(self._keep) for m in record.inputs],
            [m.keep_positions(self._keep) for m in record.outputs],
        )
        return type(op).from_config(config)

    def _call(self, layer, *args, **kwargs):
        if id(layer) in self._with_ones:
            channels, calls = self._with_ones[id(layer)]
            self._with_ones[id(layer)][1] += 1
            name = layer.name if not calls else f"{layer.name}_{calls}"
            args = (_append_ones(args[0], name, channels),) + args[1:]
        outputs = layer(*args, **kwargs)
        weights = self._pending.pop(id(layer), None)
        if weights is not None:
            self._values.extend(_weight_pairs(layer, weights))
        return outputs

    def _nested(self, op, args, kwargs):
        if id(op) not in self._models:
            graph = functional_of(op)
            flat = keras.tree.flatten(list(args))
            inputs = [
                keras.Input(
                    batch_shape=t.shape, dtype=t.dtype, name=input_name(x)
                )
                for t, x in zip(flat, graph.inputs)
            ]
            outputs = run_graph(graph, inputs, self._operation, self._call)
            self._models[id(op)] = keras.Model(
                inputs if len(inputs) > 1 else inputs[0],
                outputs,
                name=op.name,
            )
        return self._models[id(op)](*args, **kwargs)

    def _slim_layer(self, layer):
        record = self._graph.layers[id(layer)]
        handler = record.handler
        try:
            config = copy.deepcopy(layer.get_config())
        except NotImplementedError:  # Built from unserializable arguments.
            if layer.weights:
                raise
            return plain_copy(layer), {}
        layer_class = type(layer)
        if is_prunable(layer):
            layer_class = layer.base_layer_class
            config.pop("mode")
        weights = _weights_of(layer)
        extra = None
        how, positions, constants = self._folds.get(id(layer), (None,) * 3)
        if how == "bias":
            config, weights = handler.fold_constants(
                layer, config, weights, positions, constants
            )
        in_keep = [m.keep_positions(self._keep) for m in record.inputs]
        out_keep = [m.keep_positions(self._keep) for m in record.outputs]
        if how == "ones":
            # The constants, seen through the layer's own zero padding.
            extra = handler.ones_kernel(
                layer, weights, positions, constants, out_keep[0]
            )
        config = handler.slim_config(layer, config, in_keep, out_keep)
        weights = handler.slim_weights(layer, weights, in_keep, out_keep)
        new_layer = from_config_of(layer, config, layer_class)
        if extra is not None:
            weights = handler.append_input_channel(layer, weights, extra)
            self._with_ones[id(new_layer)] = [handler.ones_channels(layer), 0]
        return new_layer, weights


def _append_ones(inputs, name, channels):
    """`inputs` with `channels` more channels of ones (zero-padded like the
    rest by the convolution that reads them)."""
    rank = len(inputs.shape) - 2
    conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D}.get(
        rank, keras.layers.Conv3D
    )
    ones = conv(
        channels,
        1,
        kernel_initializer="zeros",
        bias_initializer="ones",
        trainable=False,
        name=f"{name}_ones",
    )(inputs)
    return keras.layers.Concatenate(name=f"{name}_with_ones")([inputs, ones])


def _weights_of(layer):
    """The layer's weights by name, masks baked in and dropped."""
    values = {id(v): np.array(v.numpy()) for v in layer.weights}
    if is_prunable(layer):
        if layer.mode == "hard":
            for variable, value in layer.masked_weight_values():
                values[id(variable)] = value
        for mask in layer.mask_weights():
            values.pop(id(mask))
    names = [v.name for v in layer.weights if id(v) in values]
    if len(set(names)) != len(names):
        # Duplicate names: keep the order instead (layers we do not slice).
        return {
            str(i): values[id(v)]
            for i, v in enumerate(v for v in layer.weights if id(v) in values)
        }
    return {v.name: values[id(v)] for v in layer.weights if id(v) in values}


def _weight_pairs(layer, weights):
    """`(variable, value)` pairs matched by name, or in order where the new
    layer's weights are named otherwise (auto-named weights get fresh
    names)."""
    names = [v.name for v in layer.weights]
    if sorted(names) == sorted(weights):
        return [(v, weights[v.name]) for v in layer.weights]
    return weight_pairs(layer, list(weights.values()))
