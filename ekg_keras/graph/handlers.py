"""How channels flow through each kind of layer, and how to slim it.

A handler answers three questions about a layer class (or a `keras.ops`
operation class):

* `trace`: given the channel layouts of the layer's inputs (one array of
  channel ids per input tensor), what are the layouts of its outputs, and
  which channels must be pruned together?
* `slim_config` / `slim_weights`: given the kept positions of its input
  and output channels, what are the config and weights of the smaller
  layer?
* `removed_values`: when channels are removed upstream (masked to zero),
  what value does each of them take after this layer? Slimming folds the
  non-zero ones into the consumer, and the FLOPs counter counts that fold.

A layout is an int array with one channel id per entry of the tensor's last
axis. `TraceContext` (see `tracer.py`) creates and joins channel ids.
Handlers are registered per class in `registry.py`; users register their
own for custom layers. The convolutions are in `conv_handlers.py`, the
`keras.ops` operations in `operation_handlers.py`, layers with per-channel
weights in `channelwise_handlers.py`.
"""

import keras
import numpy as np

#: Handler kinds. "source" layers open new channels (their outputs) and
#: consume their inputs; "member" layers map channel i to channel i, have
#: per-channel weights and carry a mask when wrapped; "channelwise" layers
#: map channel i to channel i with per-channel weights that are sliced but
#: not masked; "passthrough" layers map channel i to channel i without
#: weights; "merge" and "reshape" layers combine or rearrange channels;
#: "model" is a nested model; "unknown" blocks pruning.
KINDS = (
    "input",
    "source",
    "member",
    "channelwise",
    "passthrough",
    "merge",
    "reshape",
    "model",
    "unknown",
)


class IncompatibleChannels(ValueError):
    """Raised by a handler that cannot follow the channels of a call."""


def channels_of(tensor):
    """Size of a symbolic tensor's last axis (0 for tensors of rank < 2)."""
    shape = tensor.shape
    if len(shape) < 2 or shape[-1] is None:
        return 0
    return int(shape[-1])


def describe(operation):
    """`layer 'name' (Class)` or `operation 'name' (Class)`."""
    what = "layer" if isinstance(operation, keras.layers.Layer) else "operation"
    return f"{what} '{operation.name}' ({type(operation).__name__})"


def unknown_values(node):
    """Values of a call whose outputs are not known constants (NaN)."""
    return [np.full(channels_of(t), np.nan) for t in node.outputs]


def evaluate(function, values, shapes, elementwise=False):
    """Calls `function` on constant tensors holding `values`.

    Each value vector becomes one sample of its input's shape (unknown
    sizes 8) holding, per channel, that value everywhere. A channel whose
    output varies over positions (a zero-padded border, say) is not a
    constant (NaN).

    Args:
        function: Takes the list of tensors.
        values: One value vector per input.
        shapes: The inputs' symbolic shapes.
        elementwise: Whether `function` works entry by entry, so that
            spatial sizes of 1 give the same values, faster.

    Returns:
        The outputs as flat float arrays (one value per channel), or None
        if the call fails.
    """
    tensors = [
        _filled(value, shape, elementwise)
        for value, shape in zip(values, shapes)
    ]
    try:
        outputs = function(tensors)
    except Exception:  # noqa: BLE001 - any failure: not a known constant.
        return None
    return [_per_channel(y) for y in keras.tree.flatten(outputs)]


def _filled(value, shape, tiny):
    """One sample of `shape` (unknown sizes 8; all 1 if `tiny`) with a
    value per channel."""
    value = np.asarray(value, dtype="float32").reshape(-1)
    spatial = [1 if tiny else size or 8 for size in shape[1:-1]]
    return np.broadcast_to(value, (1, *spatial, len(value))).copy()


def _per_channel(output):
    """One value per channel of a constant output, NaN where it varies."""
    output = np.asarray(keras.ops.convert_to_numpy(output), np.float64)
    rows = output.reshape(-1, output.shape[-1] if output.ndim else 1)
    same = np.all(np.isclose(rows, rows[:1], rtol=1e-6, atol=1e-7), axis=0)
    return np.where(same, rows[0], np.nan)


def _last_axis(axis, rank):
    axis = (
        axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    )
    return isinstance(axis, int) and axis in (-1, rank - 1)


def _shapes(node):
    return [tuple(t.shape) for t in node.input_tensors]


class LayerHandler:
    """Base handler: a channel-wise layer without weights (pass-through).

    Subclasses override `trace` and, when the layer's config or weights
    depend on the channel count, `slim_config` / `slim_weights`. They may
    also override `cost` to count their multiply-accumulates and
    `removed_values` when the layer is not a function of each channel
    alone.
    """

    kind = "passthrough"

    #: Whether `ones_kernel` and `append_input_channel` are implemented.
    takes_ones_channel = False

    #: Whether the layer works entry by entry (activations, element-wise
    #: merges), so that `removed_values` may evaluate it on tiny tensors.
    elementwise = False

    def specialize(self, layer):
        """The handler for this particular layer (e.g. by its config).

        The registry calls it after the class lookup; the default keeps
        this handler.
        """
        del layer
        return self

    def trace(self, ctx, layer, node, inputs):
        """Returns the output layouts of one call.

        Args:
            ctx: The `TraceContext`.
            layer: The layer being called.
            node: The Keras node of the call (input/output tensors).
            inputs: One layout (int array of channel ids) per input tensor.

        Returns:
            One layout per output tensor.

        Raises:
            IncompatibleChannels: When the channels cannot be followed; the
                tracer then treats the call as unknown.
        """
        if len(inputs) != 1 or len(node.outputs) != 1:
            raise IncompatibleChannels("expected one input and one output")
        if channels_of(node.outputs[0]) != len(inputs[0]):
            raise IncompatibleChannels("the channel count changes")
        return [inputs[0]]

    def slim_config(self, layer, config, in_keep, out_keep):
        """Returns the config of the slimmed layer.

        Args:
            layer: The original layer.
            config: A copy of `layer.get_config()` (may be edited in place).
            in_keep: Kept channel positions, one int array per input.
            out_keep: Kept channel positions, one int array per output.
        """
        return config

    def slim_weights(self, layer, weights, in_keep, out_keep):
        """Returns the weights of the slimmed layer.

        Args:
            layer: The original layer.
            weights: Dict mapping weight name (e.g. "kernel") to its value.
            in_keep: Kept channel positions, one int array per input.
            out_keep: Kept channel positions, one int array per output.

        Returns:
            Dict mapping weight name to the sliced value.
        """
        return weights

    def removed_values(self, layer, node, values):
        """What removed channels become after this call.

        A removed channel is zero where its mask applies and then goes
        through the layers after it; an activation with `f(0) != 0`, an
        added constant or batch normalization in soft mode turn it into a
        non-zero constant, which slimming must keep.

        Args:
            layer: The layer (or operation).
            node: The Keras node of the call.
            values: Per input tensor, a float array with, per channel, the
                constant that channel holds when it is removed (NaN: not a
                constant, e.g. data).

        Returns:
            One such array per output tensor. The default evaluates the
            layer on tensors of shape (1, ..., 1, channels) holding the
            values (NaN where that fails).
        """
        out = evaluate(
            lambda xs: layer(xs[0] if len(xs) == 1 else xs),
            values,
            _shapes(node),
            self.elementwise,
        )
        return out if out is not None else unknown_values(node)

    def constants_follow_training(self, layer):
        """Whether the constants this layer gives removed channels change
        as training updates its weights (batch normalization after
        soft-zeroed filters). FLOPs budgets then assume they are non-zero.
        """
        del layer
        return False

    def holds_zero_constants(self, layer):
        """Whether zeroing the removed channels' output weights (and masking
        their gradients) makes the constants that follow training exact
        zeros for good (`SoftFilterPruning.hold_pruned`)."""
        del layer
        return False

    def fold_constants(self, layer, config, weights, removed, constants):
        """Folds removed input channels that carry constants into the bias.

        When a removed channel is not zero but a constant (an activation
        with f(0) != 0, or batch normalization after a soft-zeroed filter),
        the slim layer adds what that constant contributed to its bias.

        Args:
            layer: The original layer.
            config: A copy of its config (edit in place).
            weights: Dict of its weights by name (before slicing).
            removed: Positions of the removed input channels.
            constants: Their values, shape (len(removed),), or for `Dense`
                after `Flatten` one value per removed position.

        Returns:
            `(config, weights)`.

        Raises:
            IncompatibleChannels: If the layer cannot absorb constants.
        """
        raise IncompatibleChannels(
            f"layer '{layer.name}' cannot absorb constant input channels"
        )

    def bias_fold_exact(self, layer):
        """Whether `fold_constants` is exact at every output position.

        When it is not (a zero-padded convolution sees the constant only
        inside the image), slimming feeds the constants through extra
        input channels of ones instead (`ones_kernel`).
        """
        del layer
        return True

    def ones_channels(self, layer):
        """How many extra input channels of ones `ones_kernel` needs."""
        del layer
        return 1

    def ones_kernel(self, layer, weights, removed, constants, out_keep):
        """The weights of extra input channels of ones that add what the
        removed constant channels contributed (for handlers with
        `takes_ones_channel`).

        Args:
            layer: The original layer.
            weights: Its weights by name (before slicing).
            removed: Positions of the removed input channels.
            constants: Their constant values.
            out_keep: Kept output positions.

        Returns:
            Dict mapping weight name to the slice for the extra input
            channels (`ones_channels` of them), output channels kept.
        """
        raise IncompatibleChannels(
            f"layer '{layer.name}' cannot take an extra input channel"
        )

    def append_input_channel(self, layer, weights, extra):
        """Appends the slices `extra` (from `ones_kernel`) as the last input
        channels of the sliced weights."""
        raise IncompatibleChannels(
            f"layer '{layer.name}' cannot take an extra input channel"
        )

    def filters(self, layer):
        """The layer's filters as a matrix with one row per output channel.

        Returns:
            A float array of shape (output channels, fan-in), or None for
            layers without filters. Norm-based criteria score these rows.
        """
        return

    def cost(self, layer, node):
        """Multiply-accumulates and parameters as functions of live channels.

        Returns:
            A list of `(category, quantity, coefficient, side_a, side_b)`
            terms; `quantity` is "macs" or "params", `category` is "conv",
            "fc" or "bn", and each side is "in", "out" or None. A term
            counts `coefficient * live(side_a) * live(side_b)`, with
            `live(None) = 1`. Parameters are counted once per layer.
        """
        return []

    def ones_fold_cost(self, layer, node):
        """Cost terms (as in `cost`) of the extra ones channels and of the
        1x1 convolution that makes them, if any."""
        return []


class PassThrough(LayerHandler):
    """Channel-wise layers without weights: any layer computing each output
    channel from the same input channel."""


class ElementwiseHandler(LayerHandler):
    """Layers that work entry by entry: `ReLU`, `LeakyReLU`, `ELU`,
    `Identity`."""

    elementwise = True


class SpatialPassThrough(LayerHandler):
    """Pooling, resizing, cropping, dropout: each channel is moved or
    averaged in space only, so a constant channel stays that constant."""

    def removed_values(self, layer, node, values):
        return [values[0]]


class ZeroPaddingHandler(SpatialPassThrough):
    """`ZeroPadding*`: a non-zero constant channel gets a zero border, so
    it is no longer a constant."""

    def removed_values(self, layer, node, values):
        value = np.asarray(values[0], dtype=np.float64)
        return [np.where(value == 0, 0.0, np.nan)]


class ActivationHandler(ElementwiseHandler):
    """`Activation` layers: channel-wise unless the function mixes channels."""

    MIXING = ("softmax", "log_softmax")

    def trace(self, ctx, layer, node, inputs):
        name = getattr(layer.activation, "__name__", "")
        if name in self.MIXING:
            raise IncompatibleChannels(f"activation '{name}' mixes channels")
        return super().trace(ctx, layer, node, inputs)


class RescalingHandler(ElementwiseHandler):
    """`Rescaling` with scalar scale and offset is channel-wise."""

    def trace(self, ctx, layer, node, inputs):
        if np.size(layer.scale) != 1 or np.size(layer.offset) != 1:
            raise IncompatibleChannels("per-channel scale or offset")
        return super().trace(ctx, layer, node, inputs)


class InputHandler(LayerHandler):
    """Model inputs: their channels belong to no group."""

    kind = "input"

    def trace(self, ctx, layer, node, inputs):
        return [ctx.fixed(channels_of(t)) for t in node.outputs]

    def removed_values(self, layer, node, values):
        return unknown_values(node)


class UnknownHandler(LayerHandler):
    """Layers the graph does not know: their channels stay whole."""

    kind = "unknown"

    def trace(self, ctx, layer, node, inputs):
        reason = (
            f"it reaches {describe(layer)}, which the channel graph does "
            "not know"
        )
        for layout in inputs:
            ctx.block(layout, reason)
        return [ctx.fixed(channels_of(t)) for t in node.outputs]

    def removed_values(self, layer, node, values):
        return unknown_values(node)


class DenseHandler(LayerHandler):
    """`Dense`: kernel (in, out), applied along the last axis."""

    kind = "source"

    def trace(self, ctx, layer, node, inputs):
        return trace_source(ctx, layer, inputs, layer.units)

    def slim_config(self, layer, config, in_keep, out_keep):
        config["units"] = len(out_keep[0])
        return config

    def filters(self, layer):
        return rows(layer.kernel)

    def fold_constants(self, layer, config, weights, removed, constants):
        return add_bias(config, weights, constants @ weights["kernel"][removed])

    def slim_weights(self, layer, weights, in_keep, out_keep):
        weights["kernel"] = weights["kernel"][in_keep[0]][:, out_keep[0]]
        return slice_bias(weights, out_keep)

    def removed_values(self, layer, node, values):
        return source_values(layer, node)

    def cost(self, layer, node):
        positions = int(np.prod(node.input_tensors[0].shape[1:-1]))
        terms = [
            ("fc", "macs", positions, "in", "out"),
            ("fc", "params", 1, "in", "out"),
        ]
        if layer.use_bias:
            terms.append(("fc", "params", 1, "out", None))
        return terms


class BatchNormalizationHandler(LayerHandler):
    """`BatchNormalization` over the last axis: per-channel weights."""

    kind = "member"

    def trace(self, ctx, layer, node, inputs):
        rank = len(node.input_tensors[0].shape)
        if not _last_axis(layer.axis, rank):
            raise IncompatibleChannels(f"normalizes axis {layer.axis}")
        return [inputs[0]]

    def slim_weights(self, layer, weights, in_keep, out_keep):
        return {name: value[in_keep[0]] for name, value in weights.items()}

    def removed_values(self, layer, node, values):
        if not is_soft(layer):
            return [np.zeros(len(values[0]))]
        # Soft pruning leaves batch normalization alone: a zeroed filter
        # comes out as beta - gamma * mean / std (inference mode).
        mean = layer.moving_mean.numpy().astype(np.float64)
        variance = layer.moving_variance.numpy().astype(np.float64)
        value = (values[0] - mean) / np.sqrt(variance + layer.epsilon)
        if layer.scale:
            value = value * layer.gamma.numpy()
        if layer.center:
            value = value + layer.beta.numpy()
        return [value]

    def constants_follow_training(self, layer):
        return is_soft(layer)

    def holds_zero_constants(self, layer):
        # gamma = 0 makes the normalized term 0 whatever the statistics;
        # beta (if any) is zeroed with it.
        return is_soft(layer) and layer.scale

    def cost(self, layer, node):
        positions = int(np.prod(node.input_tensors[0].shape[1:-1]))
        per_channel = 2 + int(layer.scale) + int(layer.center)
        return [
            ("bn", "macs", 2 * positions, "in", None),
            ("bn", "params", per_channel, "in", None),
        ]


class MergeHandler(LayerHandler):
    """Element-wise merges (`Add`, `Multiply`, ...): inputs share channels.

    An input with a single channel that is broadcast against wider inputs
    (an attention map, say) is kept whole.

    Args:
        zero_absorbs: Whether a zero input makes the output zero whatever
            the other inputs are (`Multiply`).
    """

    kind = "merge"
    elementwise = True

    def __init__(self, zero_absorbs=False):
        self.zero_absorbs = zero_absorbs

    def trace(self, ctx, layer, node, inputs):
        return [merge_layouts(ctx, layer, inputs)]

    def removed_values(self, layer, node, values):
        return [
            merge_values(
                lambda xs: layer(xs),
                values,
                _shapes(node),
                self.zero_absorbs,
            )
        ]


class ScaledSumHandler(MergeHandler):
    """Inception-ResNet's `CustomScaleLayer`: `x + scale * r`, element-wise."""


class ConcatenateHandler(LayerHandler):
    """`Concatenate`: along the channel axis it composes layouts; along any
    other axis the inputs share channels."""

    kind = "merge"

    def trace(self, ctx, layer, node, inputs):
        return [concatenate_layouts(ctx, layer.axis, node, inputs)]

    def removed_values(self, layer, node, values):
        return [concatenate_values(layer.axis, node, values)]


class FlattenHandler(LayerHandler):
    """`Flatten` of (h, w, c): channel c lands on rows p*c_total + c."""

    kind = "reshape"

    def trace(self, ctx, layer, node, inputs):
        return [np.tile(inputs[0], _positions(node))]

    def removed_values(self, layer, node, values):
        return [np.tile(values[0], _positions(node))]


class ReshapeHandler(LayerHandler):
    """`Reshape` that keeps the last axis, or flattens everything into it."""

    kind = "reshape"

    def trace(self, ctx, layer, node, inputs):
        return [np.tile(inputs[0], self._repeats(node))]

    def removed_values(self, layer, node, values):
        return [np.tile(values[0], self._repeats(node))]

    def slim_config(self, layer, config, in_keep, out_keep):
        config["target_shape"] = tuple(config["target_shape"][:-1]) + (
            len(out_keep[0]),
        )
        return config

    def _repeats(self, node):
        in_shape = node.input_tensors[0].shape
        out_shape = node.outputs[0].shape
        if in_shape[-1] == out_shape[-1]:
            return 1
        if len(out_shape) == 2 and None not in in_shape[1:]:
            return _positions(node)
        raise IncompatibleChannels("the reshape moves the channel axis")


class ModelHandler(LayerHandler):
    """A functional or Sequential model used as a layer: traced inside."""

    kind = "model"

    def trace(self, ctx, layer, node, inputs):
        return ctx.trace_model(layer, inputs, node=node)


def trace_source(ctx, layer, inputs, num_outputs):
    """Layouts of a layer that opens `num_outputs` new channels."""
    if len(inputs) != 1:
        raise IncompatibleChannels("expected one input")
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    if name in ActivationHandler.MIXING:
        # Removing an output channel would change the others, so the
        # outputs stay whole; the inputs are still read by a kernel.
        return [ctx.fixed(num_outputs)]
    return [ctx.produce(layer, num_outputs)]


def source_values(layer, node):
    """Removed output channels of a source: zero under a hard mask (applied
    after the activation), `activation(0)` for soft-zeroed filters."""
    channels = channels_of(node.outputs[0])
    if not is_soft(layer):
        return [np.zeros(channels)]
    activation = getattr(layer, "activation", None)
    at_zero = 0.0 if activation is None else activation_at_zero(activation)
    return [np.full(channels, at_zero)]


def is_soft(layer):
    """Whether `layer` is a prunable layer in soft mode (zeroed weights
    instead of a mask in the forward pass)."""
    return (
        getattr(layer, "filter_mask", None) is not None
        and getattr(layer, "mode", None) == "soft"
    )


def activation_at_zero(activation):
    """Returns `activation(0.0)` for one entry of a zero vector, as a float.

    A vector of two zeros keeps channel-mixing activations (softmax: 0.5)
    meaningful.
    """
    value = activation(keras.ops.zeros((1, 2)))
    return float(keras.ops.convert_to_numpy(value)[0, 0])


def merge_layouts(ctx, operation, inputs):
    """Joins the inputs of an element-wise merge; a one-channel input that
    is broadcast against wider ones stays whole."""
    width = max(len(layout) for layout in inputs)
    full = [layout for layout in inputs if len(layout) == width]
    for layout in inputs:
        if len(layout) == width:
            ctx.unify(full[0], layout)
        elif len(layout) == 1:
            ctx.block(layout, f"it is broadcast by '{operation.name}'")
        else:
            raise IncompatibleChannels("inputs of different widths")
    return full[0]


def merge_values(function, values, shapes, zero_absorbs):
    """Removed values after an element-wise merge.

    A broadcast one-channel input is never removed, so it counts as data
    (NaN); with `zero_absorbs` (multiplication) a zero input still gives
    zero.
    """
    width = max(len(v) for v in values)
    values = [
        np.asarray(v, np.float64) if len(v) == width else np.full(1, np.nan)
        for v in values
    ]
    out = evaluate(function, values, shapes, elementwise=True)
    result = out[0] if out is not None else np.full(width, np.nan)
    if zero_absorbs:
        zero = np.zeros(width, dtype=bool)
        for value in values:
            zero |= np.broadcast_to(value == 0, (width,))
        result = np.where(zero, 0.0, result)
    return result


def concatenate_layouts(ctx, axis, node, inputs):
    """Layout after concatenation along `axis`."""
    if _last_axis(axis, len(node.outputs[0].shape)):
        return np.concatenate(inputs)
    for layout in inputs[1:]:
        ctx.unify(inputs[0], layout)
    return inputs[0]


def concatenate_values(axis, node, values):
    """Removed values after concatenation along `axis`: side by side on
    the channel axis, else one value where all inputs agree."""
    if _last_axis(axis, len(node.outputs[0].shape)):
        return np.concatenate(values)
    stacked = np.stack([np.asarray(v, np.float64) for v in values])
    agree = np.all(stacked == stacked[0], axis=0)
    return np.where(agree, stacked[0], np.nan)


def _positions(node):
    """Entries per channel of the input (product of its inner axes)."""
    shape = node.input_tensors[0].shape[1:-1]
    if None in shape:
        raise IncompatibleChannels("unknown spatial size")
    return int(np.prod(shape))


def slice_bias(weights, out_keep):
    """Keeps the bias entries (if any) of the kept output channels."""
    if "bias" in weights:
        weights["bias"] = weights["bias"][out_keep[0]]
    return weights


def add_bias(config, weights, delta):
    """Adds `delta` to the bias, creating the bias if the layer has none."""
    if "bias" not in weights:
        config["use_bias"] = True
        config["bias_initializer"] = "zeros"
        weights["bias"] = np.zeros(delta.shape, dtype="float32")
    weights["bias"] = (weights["bias"] + delta).astype(weights["bias"].dtype)
    return config, weights


def rows(kernel):
    """A kernel whose last axis is the output channel, as (out, fan-in)."""
    value = np.asarray(kernel.numpy() if hasattr(kernel, "numpy") else kernel)
    return value.reshape(-1, value.shape[-1]).T
