"""How channels flow through each kind of layer, and how to slim it.

A handler answers two questions about a layer class:

* `trace`: given the channel layouts of the layer's inputs (one array of
  channel ids per input tensor), what are the layouts of its outputs, and
  which channels must be pruned together?
* `slim_config` / `slim_weights`: given the kept positions of its input
  and output channels, what are the config and weights of the smaller
  layer?

A layout is an int array with one channel id per entry of the tensor's last
axis. `TraceContext` (see `tracer.py`) creates and joins channel ids.
Handlers are registered per layer class in `registry.py`; users register
their own for custom layers.
"""

import numpy as np

#: Handler kinds. "source" layers open new channels (their outputs) and
#: consume their inputs; "member" layers map channel i to channel i and
#: have per-channel weights; "passthrough" layers map channel i to channel i
#: without weights; "merge" and "reshape" layers combine or rearrange
#: channels; "model" is a nested model; "unknown" blocks pruning.
KINDS = (
    "input",
    "source",
    "member",
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


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") != "channels_first"


def _last_axis(layer, axis, rank):
    axis = (
        axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    )
    return isinstance(axis, int) and axis in (-1, rank - 1)


class LayerHandler:
    """Base handler: a channel-wise layer without weights (pass-through).

    Subclasses override `trace` and, when the layer's config or weights
    depend on the channel count, `slim_config` / `slim_weights`. They may
    also override `cost` to count their multiply-accumulates.
    """

    kind = "passthrough"

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
        if not _channels_last(layer):
            raise IncompatibleChannels("channels_first data format")
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


class PassThrough(LayerHandler):
    """Channel-wise layers without weights: activations, pooling, dropout."""


class ActivationHandler(LayerHandler):
    """`Activation` layers: channel-wise unless the function mixes channels."""

    MIXING = ("softmax", "log_softmax")

    def trace(self, ctx, layer, node, inputs):
        name = getattr(layer.activation, "__name__", "")
        if name in self.MIXING:
            raise IncompatibleChannels(f"activation '{name}' mixes channels")
        return super().trace(ctx, layer, node, inputs)


class RescalingHandler(LayerHandler):
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


class UnknownHandler(LayerHandler):
    """Layers the graph does not know: their channels stay whole."""

    kind = "unknown"

    def trace(self, ctx, layer, node, inputs):
        reason = (
            f"it reaches layer '{layer.name}' ({type(layer).__name__}), "
            "which the channel graph does not know"
        )
        for layout in inputs:
            ctx.block(layout, reason)
        return [ctx.fixed(channels_of(t)) for t in node.outputs]


class _Source(LayerHandler):
    """Layers whose outputs are new channels computed from all inputs."""

    kind = "source"

    def num_outputs(self, layer):
        raise NotImplementedError

    def trace(self, ctx, layer, node, inputs):
        if not _channels_last(layer):
            raise IncompatibleChannels("channels_first data format")
        if len(inputs) != 1:
            raise IncompatibleChannels("expected one input")
        name = getattr(getattr(layer, "activation", None), "__name__", "")
        if name in ActivationHandler.MIXING:
            # Removing an output channel would change the others, so the
            # outputs stay whole; the inputs are still read by a kernel.
            return [ctx.fixed(self.num_outputs(layer))]
        return [ctx.produce(layer, self.num_outputs(layer))]


class Conv2DHandler(_Source):
    """`Conv2D`: kernel (kh, kw, in, out)."""

    def num_outputs(self, layer):
        return layer.filters

    def trace(self, ctx, layer, node, inputs):
        if getattr(layer, "groups", 1) != 1:
            raise IncompatibleChannels("grouped convolution")
        return super().trace(ctx, layer, node, inputs)

    def slim_config(self, layer, config, in_keep, out_keep):
        config["filters"] = len(out_keep[0])
        return config

    def filters(self, layer):
        return _rows(layer.kernel)

    def fold_constants(self, layer, config, weights, removed, constants):
        # Exact away from zero-padded borders: there a tap of the kernel
        # falls outside the image and sees a zero, not the constant.
        taps = weights["kernel"][:, :, removed].sum(axis=(0, 1))
        return _add_bias(config, weights, constants @ taps)

    def slim_weights(self, layer, weights, in_keep, out_keep):
        weights["kernel"] = weights["kernel"][:, :, in_keep[0]][
            ..., out_keep[0]
        ]
        if "bias" in weights:
            weights["bias"] = weights["bias"][out_keep[0]]
        return weights

    def cost(self, layer, node):
        kh, kw = layer.kernel_size
        _, h, w, _ = node.outputs[0].shape
        terms = [
            ("conv", "macs", h * w * kh * kw, "in", "out"),
            ("conv", "params", kh * kw, "in", "out"),
        ]
        if layer.use_bias:
            terms.append(("conv", "params", 1, "out", None))
        return terms


class DenseHandler(_Source):
    """`Dense`: kernel (in, out), applied along the last axis."""

    def num_outputs(self, layer):
        return layer.units

    def slim_config(self, layer, config, in_keep, out_keep):
        config["units"] = len(out_keep[0])
        return config

    def filters(self, layer):
        return _rows(layer.kernel)

    def fold_constants(self, layer, config, weights, removed, constants):
        return _add_bias(
            config, weights, constants @ weights["kernel"][removed]
        )

    def slim_weights(self, layer, weights, in_keep, out_keep):
        weights["kernel"] = weights["kernel"][in_keep[0]][:, out_keep[0]]
        if "bias" in weights:
            weights["bias"] = weights["bias"][out_keep[0]]
        return weights

    def cost(self, layer, node):
        positions = int(np.prod(node.input_tensors[0].shape[1:-1]))
        terms = [
            ("fc", "macs", positions, "in", "out"),
            ("fc", "params", 1, "in", "out"),
        ]
        if layer.use_bias:
            terms.append(("fc", "params", 1, "out", None))
        return terms


class SeparableConv2DHandler(_Source):
    """`SeparableConv2D`: a depthwise part on the input channels, then a
    pointwise part that opens new channels."""

    def num_outputs(self, layer):
        return layer.filters

    def slim_config(self, layer, config, in_keep, out_keep):
        config["filters"] = len(out_keep[0])
        return config

    def filters(self, layer):
        return _rows(layer.pointwise_kernel)

    def fold_constants(self, layer, config, weights, removed, constants):
        # The depthwise part turns constant c into c * sum(taps) on each of
        # its multiplier channels; the pointwise part then mixes those.
        depthwise = weights["depthwise_kernel"][:, :, removed].sum(axis=(0, 1))
        after_depthwise = (constants[:, None] * depthwise).ravel()
        rows = _repeat_positions(removed, layer.depth_multiplier)
        pointwise = weights["pointwise_kernel"][0, 0, rows]
        return _add_bias(config, weights, after_depthwise @ pointwise)

    def slim_weights(self, layer, weights, in_keep, out_keep):
        multiplier = layer.depth_multiplier
        depthwise_rows = _repeat_positions(in_keep[0], multiplier)
        weights["depthwise_kernel"] = weights["depthwise_kernel"][
            :, :, in_keep[0]
        ]
        pointwise = weights["pointwise_kernel"][:, :, depthwise_rows]
        weights["pointwise_kernel"] = pointwise[..., out_keep[0]]
        if "bias" in weights:
            weights["bias"] = weights["bias"][out_keep[0]]
        return weights

    def cost(self, layer, node):
        kh, kw = layer.kernel_size
        multiplier = layer.depth_multiplier
        _, h, w, _ = node.outputs[0].shape
        terms = [
            ("conv", "macs", h * w * kh * kw * multiplier, "in", None),
            ("conv", "macs", h * w * multiplier, "in", "out"),
            ("conv", "params", kh * kw * multiplier, "in", None),
            ("conv", "params", multiplier, "in", "out"),
        ]
        if layer.use_bias:
            terms.append(("conv", "params", 1, "out", None))
        return terms


class DepthwiseConv2DHandler(LayerHandler):
    """`DepthwiseConv2D`: output channel c*m + k comes from input channel c."""

    kind = "member"

    def trace(self, ctx, layer, node, inputs):
        if not _channels_last(layer):
            raise IncompatibleChannels("channels_first data format")
        return [np.repeat(inputs[0], layer.depth_multiplier)]

    def slim_weights(self, layer, weights, in_keep, out_keep):
        weights["kernel"] = weights["kernel"][:, :, in_keep[0]]
        if "bias" in weights:
            weights["bias"] = weights["bias"][out_keep[0]]
        return weights

    def cost(self, layer, node):
        kh, kw = layer.kernel_size
        _, h, w, _ = node.outputs[0].shape
        terms = [
            ("conv", "macs", h * w * kh * kw, "out", None),
            ("conv", "params", kh * kw, "out", None),
        ]
        if layer.use_bias:
            terms.append(("conv", "params", 1, "out", None))
        return terms


class BatchNormalizationHandler(LayerHandler):
    """`BatchNormalization` over the last axis: per-channel weights."""

    kind = "member"

    def trace(self, ctx, layer, node, inputs):
        rank = len(node.input_tensors[0].shape)
        if not _last_axis(layer, layer.axis, rank):
            raise IncompatibleChannels(f"normalizes axis {layer.axis}")
        return [inputs[0]]

    def slim_weights(self, layer, weights, in_keep, out_keep):
        return {name: value[in_keep[0]] for name, value in weights.items()}

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
    """

    kind = "merge"

    def trace(self, ctx, layer, node, inputs):
        width = max(len(layout) for layout in inputs)
        full = [layout for layout in inputs if len(layout) == width]
        for layout in inputs:
            if len(layout) == width:
                ctx.unify(full[0], layout)
            elif len(layout) == 1:
                ctx.block(layout, f"it is broadcast by '{layer.name}'")
            else:
                raise IncompatibleChannels("inputs of different widths")
        return [full[0]]


class ConcatenateHandler(LayerHandler):
    """`Concatenate`: along the channel axis it composes layouts; along any
    other axis the inputs share channels."""

    kind = "merge"

    def trace(self, ctx, layer, node, inputs):
        rank = len(node.outputs[0].shape)
        if _last_axis(layer, layer.axis, rank):
            return [np.concatenate(inputs)]
        for layout in inputs[1:]:
            ctx.unify(inputs[0], layout)
        return [inputs[0]]


class FlattenHandler(LayerHandler):
    """`Flatten` of (h, w, c): channel c lands on rows p*c_total + c."""

    kind = "reshape"

    def trace(self, ctx, layer, node, inputs):
        if not _channels_last(layer):
            raise IncompatibleChannels("channels_first data format")
        positions = int(np.prod(node.input_tensors[0].shape[1:-1]))
        return [np.tile(inputs[0], positions)]


class ReshapeHandler(LayerHandler):
    """`Reshape` that keeps the last axis, or flattens everything into it."""

    kind = "reshape"

    def trace(self, ctx, layer, node, inputs):
        in_shape = node.input_tensors[0].shape
        out_shape = node.outputs[0].shape
        if in_shape[-1] == out_shape[-1]:
            return [inputs[0]]
        if len(out_shape) == 2 and None not in in_shape[1:]:
            return [np.tile(inputs[0], int(np.prod(in_shape[1:-1])))]
        raise IncompatibleChannels("the reshape moves the channel axis")

    def slim_config(self, layer, config, in_keep, out_keep):
        config["target_shape"] = tuple(config["target_shape"][:-1]) + (
            len(out_keep[0]),
        )
        return config


class ModelHandler(LayerHandler):
    """A functional or Sequential model used as a layer: traced inside."""

    kind = "model"

    def trace(self, ctx, layer, node, inputs):
        return ctx.trace_model(layer, inputs, node=node)


def _repeat_positions(positions, multiplier):
    """Positions c -> c*m .. c*m+m-1, for channel-multiplied axes."""
    return (positions[:, None] * multiplier + np.arange(multiplier)).ravel()


def _add_bias(config, weights, delta):
    """Adds `delta` to the bias, creating the bias if the layer has none."""
    if "bias" not in weights:
        config["use_bias"] = True
        config["bias_initializer"] = "zeros"
        weights["bias"] = np.zeros(delta.shape, dtype="float32")
    weights["bias"] = (weights["bias"] + delta).astype(weights["bias"].dtype)
    return config, weights


def _rows(kernel):
    """A kernel whose last axis is the output channel, as (out, fan-in)."""
    value = np.asarray(kernel.numpy() if hasattr(kernel, "numpy") else kernel)
    return value.reshape(-1, value.shape[-1]).T
