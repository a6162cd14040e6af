"""Handlers of `keras.ops` operations in functional graphs.

Writing `x + 3.0`, `x * y`, `keras.ops.mean(x, axis=(1, 2))` or hard-swish
as `x * keras.ops.relu6(x + 3.0) / 6.0` on symbolic tensors leaves
operation nodes in the graph, which are not layers and have no weights:

* element-wise functions of one tensor, or of a tensor and a scalar or
  broadcast constant, pass channels through;
* element-wise functions of two tensors of the same channels join their
  groups, like `keras.layers.Add`;
* reductions over other axes than the channel axis, resizing and pooling
  pass channels through; concatenation composes them;
* a reshape that keeps the channel axis (tokens to an image and back)
  passes channels through; slimming gives it the kept channel count;
* reductions over the channel axis, other reshapes, transposes, slicing,
  a per-channel constant and every other operation make the groups they
  touch unprunable, with a warning that names the operation.

Slimming keeps the operation nodes with their constants.
"""

import numpy as np

from ekg_keras._keras_private import call_node
from ekg_keras._keras_private import node_constants
from ekg_keras.graph.handlers import IncompatibleChannels
from ekg_keras.graph.handlers import LayerHandler
from ekg_keras.graph.handlers import channels_of
from ekg_keras.graph.handlers import concatenate_layouts
from ekg_keras.graph.handlers import concatenate_values
from ekg_keras.graph.handlers import merge_layouts
from ekg_keras.graph.handlers import merge_values


class ReshapeOperationHandler(LayerHandler):
    """`keras.ops.reshape` that keeps the last axis, e.g. (b, h*w, c) to
    (b, h, w, c): channel i stays channel i."""

    kind = "reshape"

    def trace(self, ctx, layer, node, inputs):
        in_shape = node.input_tensors[0].shape
        out_shape = node.outputs[0].shape
        if len(inputs) != 1 or in_shape[-1] is None:
            raise IncompatibleChannels("expected one tensor of known channels")
        if out_shape[-1] != in_shape[-1]:
            raise IncompatibleChannels("the reshape moves the channel axis")
        return [inputs[0]]

    def removed_values(self, layer, node, values):
        return [values[0]]

    def slim_config(self, layer, config, in_keep, out_keep):
        shape = list(config["newshape"])
        if shape[-1] != -1:
            shape[-1] = len(out_keep[0])
        config["newshape"] = tuple(shape)
        return config


def _check_constants(node):
    for constant in node_constants(node):
        shape = np.shape(constant)
        if len(shape) and shape[-1] != 1:
            raise IncompatibleChannels(
                f"a per-channel constant of shape {tuple(shape)}"
            )


def _check_width(node, width):
    if channels_of(node.outputs[0]) != width:
        raise IncompatibleChannels("the channel count changes")


def _shapes(node):
    return [tuple(t.shape) for t in node.input_tensors]


class UnaryOperationHandler(LayerHandler):
    """Element-wise functions of one tensor (`relu6`, `sigmoid`, `x + 3.0`,
    `clip`, `cast`, ...): channel i comes from channel i alone."""

    zero_absorbs = False

    def trace(self, ctx, operation, node, inputs):
        if len(inputs) != 1 or len(node.outputs) != 1:
            raise IncompatibleChannels("expected one tensor input and output")
        _check_constants(node)
        _check_width(node, len(inputs[0]))
        return [inputs[0]]

    def removed_values(self, operation, node, values):
        return [
            merge_values(
                lambda xs: call_node(node, operation, xs),
                values,
                _shapes(node),
                self.zero_absorbs,
            )
        ]


class BinaryOperationHandler(UnaryOperationHandler):
    """Element-wise functions of two operands. With two tensors their
    channels are joined (a one-channel tensor broadcast against a wider
    one stays whole); with a tensor and a constant the tensor's channels
    pass through.

    Args:
        zero_absorbs: Whether a zero operand gives a zero result
            (multiplication).
    """

    kind = "merge"

    def __init__(self, zero_absorbs=False):
        self.zero_absorbs = zero_absorbs

    def trace(self, ctx, operation, node, inputs):
        if len(inputs) == 1:
            return super().trace(ctx, operation, node, inputs)
        _check_constants(node)
        layout = merge_layouts(ctx, operation, inputs)
        _check_width(node, len(layout))
        return [layout]


class ReductionOperationHandler(LayerHandler):
    """`mean`, `max`, `min`, `sum` over axes other than the channel axis
    (global pooling written with `keras.ops`) pass channels through; a
    reduction over the channel axis mixes them."""

    def trace(self, ctx, operation, node, inputs):
        rank = len(node.input_tensors[0].shape)
        axes = self._axes(operation, rank)
        if axes is None or rank - 1 in axes:
            raise IncompatibleChannels("it reduces over the channel axis")
        _check_width(node, len(inputs[0]))
        return [inputs[0]]

    def removed_values(self, operation, node, values):
        if type(operation).__name__ != "Sum":
            return [values[0]]
        shape = node.input_tensors[0].shape
        axes = self._axes(operation, len(shape))
        sizes = [shape[axis] for axis in axes]
        value = np.asarray(values[0], np.float64)
        if None in sizes:
            return [np.where(value == 0, 0.0, np.nan)]
        return [value * float(np.prod(sizes))]

    def _axes(self, operation, rank):
        axis = getattr(operation, "axis", None)
        if axis is None:
            return None
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        return [int(a) % rank for a in axes]


class SpatialOperationHandler(LayerHandler):
    """`keras.ops.image.resize`, `keras.ops.max_pool`, `average_pool`:
    every channel is resampled alike."""

    def removed_values(self, operation, node, values):
        if getattr(operation, "pad_to_aspect_ratio", False):
            value = np.asarray(values[0], np.float64)
            return [np.where(value == 0, 0.0, np.nan)]
        return [values[0]]


class ConcatenateOperationHandler(LayerHandler):
    """`keras.ops.concatenate`: like the `Concatenate` layer."""

    kind = "merge"

    def trace(self, ctx, operation, node, inputs):
        return [concatenate_layouts(ctx, operation.axis, node, inputs)]

    def removed_values(self, operation, node, values):
        return [concatenate_values(operation.axis, node, values)]


class PadOperationHandler(LayerHandler):
    """`keras.ops.pad` of the spatial axes only: channels pass through;
    a padded border breaks a removed channel's constant unless it is the
    padding value itself."""

    def trace(self, ctx, operation, node, inputs):
        widths = tuple(tuple(w) for w in operation.pad_width)
        last = widths[-1] if len(widths) == len(node.outputs[0].shape) else None
        if len(inputs) != 1 or last is None or tuple(last) != (0, 0):
            raise IncompatibleChannels("it pads the channel axis")
        return [inputs[0]]

    def removed_values(self, operation, node, values):
        value = np.asarray(values[0], dtype=np.float64)
        fill = [c for c in node_constants(node) if np.ndim(c) == 0]
        fill = float(fill[0]) if fill and operation.mode == "constant" else 0.0
        if operation.mode != "constant":
            return [value]  # Reflect / edge padding repeats the constant.
        return [np.where(value == fill, value, np.nan)]
