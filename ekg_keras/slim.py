"""Physical filter removal: a new, smaller plain Keras model."""

import copy
import warnings

import keras
import numpy as np

from ekg_keras.flops import group_keep_masks
from ekg_keras.graph import trace
from ekg_keras.graph._keras_graph import functional_of
from ekg_keras.graph._keras_graph import input_name
from ekg_keras.graph._keras_graph import is_graph_model
from ekg_keras.graph._keras_graph import run_graph
from ekg_keras.graph.registry import get_handler
from ekg_keras.layers import is_prunable

#: Spatial size used for inputs declared with unknown height/width when
#: probing the values of removed channels.
PROBE_SIZE = 32

_CONSTANT_TOLERANCE = 1e-5


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
    activation with f(0) != 0 after a hard mask, or batch normalization
    after a soft-zeroed filter (`beta - gamma * mean / std`, SPEC 1.1). Its
    contribution is kept, not dropped: it is folded into the consumer's
    bias, which is exact for dense layers, 1x1 and unpadded convolutions.
    A zero-padded k x k convolution sees the constant only inside the
    image, so with `fold="exact"` it gets one extra input channel of ones
    (a fixed 1x1 convolution with zero kernel and bias 1) whose kernel is
    the constants' weighted kernel slices: exact everywhere, at the cost of
    `h*w*(c_in + k*k*c_out)` extra MACs for that layer. `fold="bias"`
    folds into the bias instead (no extra cost, exact except at the
    border) and warns.

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
    folds = _constant_folds(model, graph, keep, fold)
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


def _constant_folds(model, graph, keep, fold):
    """Values of removed input channels per consumer, where non-zero.

    Returns:
        Dict mapping `id(layer)` to `(how, removed positions, constants)`,
        `how` being "ones" (extra input channel of ones) or "bias".
    """
    removed = {}
    for record in graph.layers.values():
        if record.kind == "source" and record.inputs:
            positions = np.flatnonzero(~record.inputs[0].keep_mask(keep))
            if len(positions):
                removed[id(record.layer)] = (record, positions)
    if not removed:
        return {}
    values = _probe_inputs(model, removed.keys())
    folds = {}
    for key, (record, positions) in removed.items():
        constants = _constants(record, values[key][..., positions])
        if not np.any(np.abs(constants) > 1e-12):
            continue
        how = "bias"
        if _zero_padded(record.layer):
            if fold == "exact" and isinstance(
                record.layer, keras.layers.Conv2D
            ):
                how = "ones"
            else:
                warnings.warn(
                    f"Removed channels entering '{record.path}' are non-zero "
                    "constants; folding them into the bias is exact except "
                    "at the zero-padded image border.",
                    stacklevel=4,
                )
        folds[key] = (how, positions, constants)
    return folds


def _constants(record, values):
    """One constant per removed channel (per removed row for `Dense`)."""
    batch_mean = values.mean(axis=0)
    spread = np.abs(values - batch_mean).max() if values.size else 0.0
    if values.ndim == 2:
        if spread > _CONSTANT_TOLERANCE:
            _warn_not_constant(record, spread)
        return batch_mean
    centre = tuple(size // 2 for size in values.shape[1:-1])
    constants = values[(0,) + centre]
    deviation = np.abs(values - constants).max()
    if deviation > _CONSTANT_TOLERANCE * (1 + np.abs(constants).max()):
        _warn_not_constant(record, deviation)
    return constants


def _zero_padded(layer):
    """Whether some kernel taps of `layer` fall on zero padding."""
    kernel = getattr(layer, "kernel_size", (1, 1))
    return getattr(layer, "padding", "valid") == "same" and max(kernel) > 1


def _warn_not_constant(record, deviation):
    warnings.warn(
        f"Removed channels entering '{record.path}' vary by up to "
        f"{deviation:.3g} over positions or samples; the slim model differs "
        "from the masked model there.",
        stacklevel=4,
    )


def _probe_inputs(model, layer_ids):
    """Runs the masked model once and returns the first input of each
    wanted layer, as numpy arrays keyed by `id(layer)`."""
    wanted = set(layer_ids)
    seen = {}

    def call_fn(op, *args, **kwargs):
        if id(op) in wanted and id(op) not in seen:
            seen[id(op)] = keras.ops.convert_to_numpy(args[0])
        return op(*args, **kwargs)

    def operation_fn(op):
        if is_graph_model(op):
            return lambda *args, **kwargs: run_graph(
                functional_of(op), list(args), operation_fn, call_fn
            )
        return op

    graph = functional_of(model)
    rng = np.random.default_rng(0)
    inputs = [_probe_value(x, rng) for x in graph.inputs]
    run_graph(graph, inputs, operation_fn, call_fn)
    return seen


def _probe_value(tensor, rng):
    shape = [2] + [PROBE_SIZE if d is None else d for d in tensor.shape[1:]]
    if "int" in str(tensor.dtype):
        return np.zeros(shape, dtype=str(tensor.dtype))
    return rng.standard_normal(shape).astype(str(tensor.dtype))


class _Rebuilder:
    """Re-runs the graph with slimmed layers on new symbolic inputs."""

    def __init__(self, graph, keep, folds):
        self._graph = graph
        self._keep = keep
        self._folds = folds
        self._layers = {}  # id(old layer) -> new layer
        self._pending = {}  # id(new layer) -> weights to set once built
        self._models = {}  # id(old nested model) -> new nested model
        self._with_ones = set()  # ids of new layers fed an extra ones channel

    def rebuild(self, model):
        graph = functional_of(model)
        inputs = [
            keras.Input(batch_shape=x.shape, dtype=x.dtype, name=input_name(x))
            for x in graph.inputs
        ]
        outputs = run_graph(graph, inputs, self._operation, self._call)
        structure = graph.input
        if isinstance(structure, (list, tuple, dict)):
            inputs = keras.tree.pack_sequence_as(structure, inputs)
        else:
            inputs = inputs[0]
        return keras.Model(inputs, outputs, name=model.name)

    def _operation(self, op):
        if is_graph_model(op):
            return lambda *args, **kwargs: self._nested(op, args, kwargs)
        if id(op) not in self._layers:
            layer, weights = self._slim_layer(op)
            self._layers[id(op)] = layer
            self._pending[id(layer)] = weights
        return self._layers[id(op)]

    def _call(self, layer, *args, **kwargs):
        if id(layer) in self._with_ones:
            args = (_append_ones(args[0], layer.name),) + args[1:]
        outputs = layer(*args, **kwargs)
        weights = self._pending.pop(id(layer), None)
        if weights is not None:
            _set_weights(layer, weights)
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
        handler = get_handler(layer)
        config = copy.deepcopy(layer.get_config())
        layer_class = type(layer)
        if is_prunable(layer):
            layer_class = layer.base_layer_class
            config.pop("mode")
        weights = _weights_of(layer)
        ones_kernel = None
        how, positions, constants = self._folds.get(id(layer), (None,) * 3)
        if how == "bias":
            config, weights = handler.fold_constants(
                layer, config, weights, positions, constants
            )
        elif how == "ones":
            # The constants seen through the conv's own zero padding.
            ones_kernel = np.tensordot(
                constants, weights["kernel"][:, :, positions], axes=([0], [2])
            )[:, :, None, :]
        in_keep = [m.keep_positions(self._keep) for m in record.inputs]
        out_keep = [m.keep_positions(self._keep) for m in record.outputs]
        config = handler.slim_config(layer, config, in_keep, out_keep)
        weights = handler.slim_weights(layer, weights, in_keep, out_keep)
        new_layer = layer_class.from_config(config)
        if ones_kernel is not None:
            weights["kernel"] = np.concatenate(
                [weights["kernel"], ones_kernel[..., out_keep[0]]], axis=2
            ).astype(weights["kernel"].dtype)
            self._with_ones.add(id(new_layer))
        return new_layer, weights


def _append_ones(inputs, name):
    """`inputs` with one more channel of ones (zero-padded like the rest by
    the convolution that reads it)."""
    ones = keras.layers.Conv2D(
        1,
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
        values.pop(id(layer.filter_mask))
    names = [v.name for v in layer.weights if id(v) in values]
    if len(set(names)) != len(names):
        # Duplicate names: keep the order instead (layers we do not slice).
        return {
            str(i): values[id(v)]
            for i, v in enumerate(v for v in layer.weights if id(v) in values)
        }
    return {v.name: values[id(v)] for v in layer.weights if id(v) in values}


def _set_weights(layer, weights):
    if not layer.weights:
        return
    if all(str(i) in weights for i in range(len(layer.weights))):
        layer.set_weights([weights[str(i)] for i in range(len(layer.weights))])
        return
    for variable in layer.weights:
        variable.assign(weights[variable.name])
