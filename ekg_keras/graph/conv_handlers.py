"""Handlers of the convolution family, in 1, 2 and 3 dimensions.

* `ConvHandler`: `Conv1D`, `Conv2D`, `Conv3D`, kernel (*k, in, out).
* `GroupedConvHandler`: the same with `groups > 1`. Input channel block j
  of the `groups` blocks feeds only output block j, so a block is removed
  whole, inputs and outputs together; `groups == filters == inputs` is a
  depthwise convolution (one channel per block).
* `ConvTransposeHandler`: `Conv1DTranspose` ... `Conv3DTranspose`, kernel
  (*k, out, in).
* `DepthwiseConvHandler`: `DepthwiseConv1D`, `DepthwiseConv2D`.
* `SeparableConvHandler`: `SeparableConv1D`, `SeparableConv2D`.
"""

import numpy as np

from ekg_keras.graph.handlers import IncompatibleChannels
from ekg_keras.graph.handlers import LayerHandler
from ekg_keras.graph.handlers import add_bias
from ekg_keras.graph.handlers import describe
from ekg_keras.graph.handlers import rows
from ekg_keras.graph.handlers import slice_bias
from ekg_keras.graph.handlers import source_values
from ekg_keras.graph.handlers import trace_source


def _spatial(tensor):
    """Number of positions of a (batch, *spatial, channels) tensor."""
    shape = tensor.shape[1:-1]
    if None in shape:
        raise IncompatibleChannels("unknown spatial size")
    return int(np.prod(shape))


def _taps(layer):
    return int(np.prod(layer.kernel_size))


def _bias_terms(layer, side):
    return [("conv", "params", 1, side, None)] if layer.use_bias else []


class ConvHandler(LayerHandler):
    """`Conv1D` / `Conv2D` / `Conv3D`: kernel (*k, in, out)."""

    kind = "source"
    takes_ones_channel = True

    def specialize(self, layer):
        if getattr(layer, "groups", 1) != 1:
            return GroupedConvHandler()
        return self

    def trace(self, ctx, layer, node, inputs):
        return trace_source(ctx, layer, inputs, layer.filters)

    def slim_config(self, layer, config, in_keep, out_keep):
        config["filters"] = len(out_keep[0])
        return config

    def slim_weights(self, layer, weights, in_keep, out_keep):
        kernel = np.take(weights["kernel"], in_keep[0], axis=-2)
        weights["kernel"] = np.take(kernel, out_keep[0], axis=-1)
        return slice_bias(weights, out_keep)

    def filters(self, layer):
        return rows(layer.kernel)

    def removed_values(self, layer, node, values):
        return source_values(layer, node)

    def fold_constants(self, layer, config, weights, removed, constants):
        return add_bias(
            config, weights, constants @ self._tap_sums(weights, removed)
        )

    def bias_fold_exact(self, layer):
        # Every output position sees every tap unless zero padding adds
        # taps outside the input.
        return layer.padding != "same" or _taps(layer) == 1

    def ones_kernel(self, layer, weights, removed, constants, out_keep):
        kernel = np.take(weights["kernel"], removed, axis=-2)
        extra = np.tensordot(kernel, constants, axes=([-2], [0]))
        return {"kernel": extra[..., None, out_keep]}

    def append_input_channel(self, layer, weights, extra):
        return _concatenate(weights, extra, axis=-2)

    def cost(self, layer, node):
        taps = _taps(layer)
        return [
            ("conv", "macs", _spatial(node.outputs[0]) * taps, "in", "out"),
            ("conv", "params", taps, "in", "out"),
        ] + _bias_terms(layer, "out")

    def ones_fold_cost(self, layer, node):
        taps = _taps(layer)
        return _ones_generator_cost(_spatial(node.input_tensors[0]), 1) + [
            ("conv", "macs", _spatial(node.outputs[0]) * taps, "out", None),
            ("conv", "params", taps, "out", None),
        ]

    def _tap_sums(self, weights, removed):
        kernel = np.take(weights["kernel"], removed, axis=-2)
        return kernel.reshape(-1, *kernel.shape[-2:]).sum(axis=0)


class GroupedConvHandler(LayerHandler):
    """A convolution with `groups > 1`: blocks are removed whole.

    The `groups` blocks of input channels each feed their own block of
    output channels, so a block's input and output channels form one unit
    of the channel group: removing it removes `in / groups` input and
    `filters / groups` output channels, and slimming lowers `groups`. With
    `groups == filters == inputs` (a depthwise convolution) a unit is one
    channel, passed through like batch normalization.
    """

    kind = "member"

    def trace(self, ctx, layer, node, inputs):
        if len(inputs) != 1:
            raise IncompatibleChannels("expected one input")
        blocks = np.asarray(inputs[0]).reshape(layer.groups, -1)
        for column in range(1, blocks.shape[1]):
            ctx.unify(blocks[:, 0], blocks[:, column])
        if blocks.shape[1] > 1 and ctx.reads_fixed(inputs[0]):
            ctx.warn(
                f"{describe(layer)} keeps its {layer.filters} filters whole: "
                f"its {layer.groups} groups are removed only with their "
                "input channels, and it reads channels that are never "
                "pruned (a model input)"
            )
        return [np.repeat(blocks[:, 0], layer.filters // layer.groups)]

    def slim_config(self, layer, config, in_keep, out_keep):
        per_block = len(out_keep[0]) * layer.groups // layer.filters
        config["filters"] = len(out_keep[0])
        config["groups"] = per_block
        return config

    def slim_weights(self, layer, weights, in_keep, out_keep):
        # The kernel's input axis holds one block; whole blocks go with
        # their output channels.
        weights["kernel"] = np.take(weights["kernel"], out_keep[0], axis=-1)
        return slice_bias(weights, out_keep)

    def removed_values(self, layer, node, values):
        # Hard: masked. Soft: zeroed weights and bias give activation(0).
        return source_values(layer, node)

    def cost(self, layer, node):
        taps = _taps(layer)
        per_block = layer.kernel.shape[-2]
        spatial = _spatial(node.outputs[0])
        return [
            ("conv", "macs", spatial * taps * per_block, "out", None),
            ("conv", "params", taps * per_block, "out", None),
        ] + _bias_terms(layer, "out")


class ConvTransposeHandler(ConvHandler):
    """`Conv1DTranspose` / `Conv2DTranspose` / `Conv3DTranspose`: kernel
    (*k, out, in); each input position spreads over a window of outputs."""

    def specialize(self, layer):
        return self

    def slim_weights(self, layer, weights, in_keep, out_keep):
        kernel = np.take(weights["kernel"], in_keep[0], axis=-1)
        weights["kernel"] = np.take(kernel, out_keep[0], axis=-2)
        return slice_bias(weights, out_keep)

    def filters(self, layer):
        kernel = np.asarray(layer.kernel.numpy())
        return rows(np.swapaxes(kernel, -1, -2))

    def bias_fold_exact(self, layer):
        # With strides or a kernel wider than 1, output positions receive
        # different numbers of taps.
        return _taps(layer) == 1 and all(s == 1 for s in layer.strides)

    def ones_kernel(self, layer, weights, removed, constants, out_keep):
        kernel = np.take(weights["kernel"], removed, axis=-1)
        extra = np.tensordot(kernel, constants, axes=([-1], [0]))
        return {"kernel": extra[..., out_keep, None]}

    def append_input_channel(self, layer, weights, extra):
        return _concatenate(weights, extra, axis=-1)

    def cost(self, layer, node):
        # A transposed convolution does k multiply-accumulates per input
        # position, input channel and output channel.
        taps = _taps(layer)
        spatial = _spatial(node.input_tensors[0])
        return [
            ("conv", "macs", spatial * taps, "in", "out"),
            ("conv", "params", taps, "in", "out"),
        ] + _bias_terms(layer, "out")

    def ones_fold_cost(self, layer, node):
        taps = _taps(layer)
        spatial = _spatial(node.input_tensors[0])
        return _ones_generator_cost(spatial, 1) + [
            ("conv", "macs", spatial * taps, "out", None),
            ("conv", "params", taps, "out", None),
        ]

    def _tap_sums(self, weights, removed):
        kernel = np.take(weights["kernel"], removed, axis=-1)
        kernel = np.swapaxes(kernel, -1, -2)
        return kernel.reshape(-1, *kernel.shape[-2:]).sum(axis=0)


class DepthwiseConvHandler(LayerHandler):
    """`DepthwiseConv1D` / `DepthwiseConv2D`: output channel c*m + k comes
    from input channel c (m = `depth_multiplier`)."""

    kind = "member"

    def trace(self, ctx, layer, node, inputs):
        return [np.repeat(inputs[0], layer.depth_multiplier)]

    def slim_weights(self, layer, weights, in_keep, out_keep):
        weights["kernel"] = np.take(weights["kernel"], in_keep[0], axis=-2)
        return slice_bias(weights, out_keep)

    def removed_values(self, layer, node, values):
        return source_values(layer, node)

    def cost(self, layer, node):
        taps = _taps(layer)
        return [
            ("conv", "macs", _spatial(node.outputs[0]) * taps, "out", None),
            ("conv", "params", taps, "out", None),
        ] + _bias_terms(layer, "out")


class SeparableConvHandler(LayerHandler):
    """`SeparableConv1D` / `SeparableConv2D`: a depthwise part on the input
    channels, then a pointwise part that opens new channels."""

    kind = "source"
    takes_ones_channel = True

    def trace(self, ctx, layer, node, inputs):
        return trace_source(ctx, layer, inputs, layer.filters)

    def slim_config(self, layer, config, in_keep, out_keep):
        config["filters"] = len(out_keep[0])
        return config

    def filters(self, layer):
        return rows(layer.pointwise_kernel)

    def removed_values(self, layer, node, values):
        return source_values(layer, node)

    def fold_constants(self, layer, config, weights, removed, constants):
        # The depthwise part turns constant c into c * sum(taps) on each of
        # its multiplier channels; the pointwise part then mixes those.
        depthwise = np.take(weights["depthwise_kernel"], removed, axis=-2)
        depthwise = depthwise.reshape(-1, *depthwise.shape[-2:]).sum(axis=0)
        after_depthwise = (constants[:, None] * depthwise).ravel()
        positions = _repeat_positions(removed, layer.depth_multiplier)
        pointwise = weights["pointwise_kernel"].reshape(
            -1, weights["pointwise_kernel"].shape[-1]
        )[positions]
        return add_bias(config, weights, after_depthwise @ pointwise)

    def bias_fold_exact(self, layer):
        return layer.padding != "same" or _taps(layer) == 1

    def ones_channels(self, layer):
        # One depthwise tap per extra channel and multiplier: enough to
        # rebuild any per-output kernel of the constants.
        return -(-_taps(layer) // layer.depth_multiplier)

    def ones_kernel(self, layer, weights, removed, constants, out_keep):
        multiplier = layer.depth_multiplier
        depthwise = np.take(weights["depthwise_kernel"], removed, axis=-2)
        spatial_shape = depthwise.shape[:-2]
        taps = int(np.prod(spatial_shape))
        depthwise = depthwise.reshape(taps, len(removed), multiplier)
        pointwise = weights["pointwise_kernel"]
        pointwise = pointwise.reshape(-1, pointwise.shape[-1])[
            _repeat_positions(removed, multiplier)
        ].reshape(len(removed), multiplier, -1)
        # What the constants add to output o, as one spatial kernel.
        per_tap = np.einsum("j,pjt,jto->po", constants, depthwise, pointwise)
        extra = self.ones_channels(layer) * multiplier
        one_hot = np.eye(taps, extra, dtype=depthwise.dtype)
        rows = np.zeros((extra, per_tap.shape[-1]), per_tap.dtype)
        rows[:taps] = per_tap
        return {
            "depthwise_kernel": one_hot.reshape(
                spatial_shape + (extra // multiplier, multiplier)
            ),
            "pointwise_kernel": rows[:, out_keep].reshape(
                (1,) * len(spatial_shape) + (extra, len(out_keep))
            ),
        }

    def append_input_channel(self, layer, weights, extra):
        return _concatenate(weights, extra, axis=-2)

    def ones_fold_cost(self, layer, node):
        taps = _taps(layer)
        multiplier = layer.depth_multiplier
        extra = self.ones_channels(layer)
        spatial = _spatial(node.outputs[0])
        depthwise = extra * taps * multiplier
        inputs = _spatial(node.input_tensors[0])
        return _ones_generator_cost(inputs, extra) + [
            ("conv", "macs", spatial * depthwise, None, None),
            ("conv", "params", depthwise, None, None),
            ("conv", "macs", spatial * extra * multiplier, "out", None),
            ("conv", "params", extra * multiplier, "out", None),
        ]

    def slim_weights(self, layer, weights, in_keep, out_keep):
        multiplier = layer.depth_multiplier
        depthwise_rows = _repeat_positions(in_keep[0], multiplier)
        weights["depthwise_kernel"] = np.take(
            weights["depthwise_kernel"], in_keep[0], axis=-2
        )
        pointwise = np.take(weights["pointwise_kernel"], depthwise_rows, -2)
        weights["pointwise_kernel"] = np.take(pointwise, out_keep[0], axis=-1)
        return slice_bias(weights, out_keep)

    def cost(self, layer, node):
        taps = _taps(layer)
        multiplier = layer.depth_multiplier
        spatial = _spatial(node.outputs[0])
        return [
            ("conv", "macs", spatial * taps * multiplier, "in", None),
            ("conv", "macs", spatial * multiplier, "in", "out"),
            ("conv", "params", taps * multiplier, "in", None),
            ("conv", "params", multiplier, "in", "out"),
        ] + _bias_terms(layer, "out")


def _ones_generator_cost(input_positions, channels):
    """Cost of the 1x1 convolution that makes `channels` channels of ones
    from the layer's input (zero kernel, bias one)."""
    return [
        ("conv", "macs", input_positions * channels, "in", None),
        ("conv", "params", channels, "in", None),
        ("conv", "params", channels, None, None),
    ]


def _concatenate(weights, extra, axis):
    """Each weight in `extra` appended along `axis` (the input channels)."""
    for name, value in extra.items():
        weights[name] = np.concatenate(
            [weights[name], value], axis=axis
        ).astype(weights[name].dtype)
    return weights


def _repeat_positions(positions, multiplier):
    """Positions c -> c*m .. c*m+m-1, for channel-multiplied axes."""
    return (positions[:, None] * multiplier + np.arange(multiplier)).ravel()
