"""Batch-norm folding: inference normalizations merged into their producers.

At inference a `BatchNormalization` is a per-channel affine map,
`y = s * x + t` with `s = gamma / sqrt(moving_variance + epsilon)` and
`t = beta - s * moving_mean`. When `x` is the output of a convolution or
dense layer with a linear activation, scaling that layer's kernel by `s`
along its output channels and setting its bias to `s * bias + t` computes
the same `y` without the normalization: one pass over the activations
less, as deployment converters do.
"""

import collections
import dataclasses
import warnings

import keras
import numpy as np

from ekg_keras._keras_private import functional_of
from ekg_keras._keras_private import graph_nodes
from ekg_keras._keras_private import is_graph_model
from ekg_keras._keras_private import node_call_kwargs
from ekg_keras._keras_private import node_inputs
from ekg_keras._keras_private import node_outputs
from ekg_keras._keras_private import rebuild_model
from ekg_keras._warnings import user_stacklevel
from ekg_keras.layers import prunable_layers
from ekg_keras.layers.wrapping import from_config_of
from ekg_keras.layers.wrapping import plain_copy
from ekg_keras.slim import slim


def _layer_classes(*names):
    """The `keras.layers` classes of these names (those that exist)."""
    return tuple(
        getattr(keras.layers, name)
        for name in names
        if hasattr(keras.layers, name)
    )


# Layers that are the identity at inference: any per-channel affine map
# moves through them unchanged.
_IDENTITY_AT_INFERENCE = _layer_classes(
    "Identity",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
)
# Layers whose outputs are weighted averages (weights summing to one) or
# selections of their inputs, channel by channel: `P(s * x + t) == s *
# P(x) + t`. TensorFlow's average pooling with "same" padding averages over
# the valid inputs only, so it stays exact at the border.
_AFFINE_COMMUTING = _layer_classes(
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
)
# Maxima commute with `s * x + t` only where every scale `s` is positive.
_MAX_POOLING = _layer_classes(
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
)


@dataclasses.dataclass(frozen=True)
class _Fold:
    """One normalization to fold into `producer`, as `scale`, `shift`."""

    bn: object
    producer: object
    scale: np.ndarray
    shift: np.ndarray


def fold_batchnorm(model):
    """Folds inference batch normalizations into the layers before them.

    Every `BatchNormalization` that follows a `Conv1D/2D/3D`, a transposed
    convolution, `DepthwiseConv1D/2D`, `SeparableConv1D/2D` or `Dense`
    with a linear activation is merged into that layer's kernel and bias
    (`use_bias` is switched on where needed) and removed. It may follow
    the producer directly or through layers it moves across exactly:
    dropout and noise layers (the identity at inference), cropping,
    up-sampling and average pooling (global or not), and max pooling when
    all of the normalization's scales are positive. The result computes,
    in inference mode, what `model` computes (equal to float32 rounding,
    about 1e-6 relative).

    A normalization stays, and a warning names it with the reason, when
    folding it would not be exact: it comes before the convolution, the
    producer has a non-linear activation, the producer's output (or a
    layer's output on the way) is also used by another layer or is a model
    output, the producer or the normalization is called more than once,
    the normalization is called with `training=True`, or it normalizes
    another axis than the producer's channels.

    `model` is not modified. The new model contains only the layers of
    `model` (built-in Keras layers load without `ekg_keras`), with the same
    names; nested models stay nested; a Sequential model comes back as a
    functional one. A model with prunable (masked) layers is slimmed first
    (`ekg_keras.slim`). The folded model is meant for inference: training
    it would no longer normalize.

    Args:
        model: A functional or built Sequential Keras model.

    Returns:
        The folded `keras.Model`.

    Raises:
        ValueError: If `model` has no functional graph (a subclassed model).

    Example:

    ```python
    deployed = ekg_keras.fold_batchnorm(ekg_keras.prune(model, flops=0.5))
    ```
    """
    if functional_of(model) is None:
        raise ValueError(
            "`model` should be a functional or built Sequential Keras "
            f"model. Received: {type(model).__name__} '{model.name}', which "
            "has no functional graph (a subclassed model, or a Sequential "
            "model without an `Input`)."
        )
    if prunable_layers(model):
        model = slim(model)
    folds, kept = _plan(model)
    if kept:
        _warn_kept(kept)
    return _Folder(folds).rebuild(model)


def _plan(model):
    """The normalizations to fold, and `(path, reason)` of the others."""
    calls = collections.Counter()
    graphs = []
    _collect(model, "", calls, graphs)
    folds, kept = [], []
    for graph, prefix in graphs:
        _GraphPlan(graph, prefix, calls).find(folds, kept)
    return folds, kept


def _collect(model, prefix, calls, graphs):
    """Counts the calls of every layer and lists the (nested) graphs."""
    graph = functional_of(model)
    graphs.append((graph, prefix))
    for node in graph_nodes(graph):
        layer = node.operation
        calls[id(layer)] += 1
        if is_graph_model(layer) and calls[id(layer)] == 1:
            _collect(layer, f"{prefix}{layer.name}/", calls, graphs)


class _GraphPlan:
    """Finds the foldable normalizations of one functional graph."""

    def __init__(self, graph, prefix, calls):
        self._prefix = prefix
        self._calls = calls
        self._nodes = list(graph_nodes(graph))
        self._producer = {}
        self._consumers = collections.Counter()
        for node in self._nodes:
            for tensor in node_outputs(node):
                self._producer[id(tensor)] = node
            for tensor in node_inputs(node):
                self._consumers[id(tensor)] += 1
        for tensor in graph.outputs:
            self._consumers[id(tensor)] += 1  # The model's output is a use.

    def find(self, folds, kept):
        for node in self._nodes:
            if isinstance(node.operation, keras.layers.BatchNormalization):
                bn = node.operation
                result = self._fold(node, bn)
                if isinstance(result, str):
                    kept.append((self._prefix + bn.name, result))
                else:
                    folds.append(result)

    def _fold(self, node, bn):
        """A `_Fold`, or the reason why `bn` cannot be folded."""
        if self._calls[id(bn)] > 1:
            return "it is called more than once"
        if node_call_kwargs(node).get("training"):
            return "it is called with training=True"
        scale, shift = _affine(bn)
        bn_input = tensor = node_inputs(node)[0]
        between = []
        while True:
            parent = self._producer.get(id(tensor))
            if parent is None:
                return "its input is an input of its model"
            layer = parent.operation
            if self._consumers[id(tensor)] > 1:
                return (
                    f"the output of '{layer.name}' is also used by another "
                    "layer or is a model output"
                )
            if self._calls[id(layer)] > 1:
                return f"'{layer.name}' is called more than once"
            if isinstance(layer, _PRODUCERS):
                reason = _producer_problem(layer, bn, between, bn_input)
                if reason:
                    return reason
                return _Fold(bn, layer, scale, shift)
            reason = _through_problem(layer, scale)
            if reason:
                return reason
            between.insert(0, layer)
            tensor = node_inputs(parent)[0]


_PRODUCERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def _through_problem(layer, scale):
    """Why the affine map cannot move back through `layer` (or None)."""
    if isinstance(layer, _IDENTITY_AT_INFERENCE + _AFFINE_COMMUTING):
        return None
    if isinstance(layer, keras.layers.Activation) and _linear(layer):
        return None
    if isinstance(layer, _MAX_POOLING):
        if np.all(scale > 0):
            return None
        return (
            f"it follows max pooling '{layer.name}' and some of its scales "
            "are not positive"
        )
    return (
        f"it follows '{layer.name}' ({type(layer).__name__}), which is not a"
        " convolution or dense layer, nor a layer it can move through "
        "exactly"
    )


def _producer_problem(layer, bn, between, bn_input):
    """Why `bn` cannot be folded into `layer` (or None)."""
    if not _linear(layer):
        return (
            f"'{layer.name}' has the non-linear activation "
            f"{keras.activations.serialize(layer.activation)!r}"
        )
    policy = getattr(layer, "dtype_policy", None)
    if getattr(policy, "quantization_mode", None):
        return f"'{layer.name}' is quantized"
    if getattr(layer, "lora_enabled", False):
        return f"'{layer.name}' has LoRA weights"
    axis = _channel_axis(layer)
    for passed in between:
        axis = _axis_after(passed, axis)
        if axis is None:
            return (
                f"'{passed.name}' uses another data format than '{layer.name}'"
            )
    rank = len(bn_input.shape)
    if bn.axis % rank != axis % rank:
        return (
            f"it normalizes axis {bn.axis}, not the channel axis of "
            f"'{layer.name}'"
        )
    return None


def _linear(layer):
    activation = getattr(layer, "activation", None)
    return activation is None or activation is keras.activations.linear


def _channel_axis(layer):
    """The output channel axis of a producer: -1, or 1 (channels_first)."""
    return 1 if getattr(layer, "data_format", None) == "channels_first" else -1


def _axis_after(layer, axis):
    """The channel axis after a pass-through layer, None if it disagrees."""
    data_format = getattr(layer, "data_format", None)
    if data_format is not None and _channel_axis(layer) != axis:
        return None
    if "Global" in type(layer).__name__ and not layer.keepdims:
        return -1 if axis == -1 else 1  # (batch, channels) either way.
    return axis


def _affine(bn):
    """`(scale, shift)` of an inference batch normalization, float64."""
    variance = np.asarray(bn.moving_variance.numpy(), dtype=np.float64)
    mean = np.asarray(bn.moving_mean.numpy(), dtype=np.float64)
    scale = 1.0 / np.sqrt(variance + bn.epsilon)
    if bn.scale:
        scale = scale * np.asarray(bn.gamma.numpy(), dtype=np.float64)
    shift = -scale * mean
    if bn.center:
        shift = shift + np.asarray(bn.beta.numpy(), dtype=np.float64)
    return scale, shift


def _folded_weights(layer, scale, shift):
    """The producer's weights by name with `scale`, `shift` folded in."""
    weights = {v.name: np.asarray(v.numpy()) for v in layer.weights}
    if isinstance(
        layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
    ):
        name, axis = "pointwise_kernel", -1
    elif isinstance(
        layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
    ):
        name, axis = "kernel", None  # (..., in, multiplier) channels.
    elif isinstance(
        layer,
        (
            keras.layers.Conv1DTranspose,
            keras.layers.Conv2DTranspose,
            keras.layers.Conv3DTranspose,
        ),
    ):
        name, axis = "kernel", -2  # (..., out, in).
    else:
        name, axis = "kernel", -1
    kernel = weights[name].astype(np.float64)
    if axis is None:
        factors = scale.reshape(kernel.shape[-2:])
    elif axis == -1:
        factors = scale
    else:
        factors = scale[:, None]
    folded = dict(weights)
    folded[name] = (kernel * factors).astype(weights[name].dtype)
    bias = weights.get("bias", np.zeros(len(scale)))
    folded["bias"] = (np.asarray(bias, np.float64) * scale + shift).astype(
        weights[name].dtype
    )
    return folded


def _warn_kept(kept):
    details = "; ".join(f"'{path}': {reason}" for path, reason in kept)
    warnings.warn(
        f"fold_batchnorm kept {len(kept)} batch normalization layer(s) "
        f"that cannot be folded exactly: {details}.",
        stacklevel=user_stacklevel(),
    )


class _Folder:
    """Rebuilds a model with folded producers and without their BNs."""

    _DROPPED = object()

    def __init__(self, folds):
        self._by_producer = {id(f.producer): f for f in folds}
        self._dropped = {id(f.bn) for f in folds}
        self._built = set()

    def rebuild(self, model):
        return rebuild_model(model, self._clone, self._call)

    def _clone(self, layer):
        if id(layer) in self._dropped:
            return self._DROPPED
        if id(layer) not in self._by_producer:
            return plain_copy(layer)
        config = dict(layer.get_config(), use_bias=True)
        return from_config_of(layer, config)

    def _call(self, layer, new, *args, **kwargs):
        if new is self._DROPPED:
            return args[0]
        outputs = new(*args, **kwargs)
        if id(new) not in self._built:
            self._built.add(id(new))
            self._set_weights(layer, new)
        return outputs

    def _set_weights(self, layer, new):
        fold = self._by_producer.get(id(layer))
        if fold is None:
            if getattr(layer, "weights", None):  # keras.ops nodes have none.
                new.set_weights(layer.get_weights())
            return
        values = _folded_weights(layer, fold.scale, fold.shift)
        for variable in new.weights:
            variable.assign(values[variable.name])
