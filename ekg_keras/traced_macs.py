"""MACs counted from the TensorFlow graph a model or a layer runs.

`count_flops` counts from Keras layers: their configs and the shapes of
their calls. This module counts from what TensorFlow executes instead —
the convolutions and matrix products of the traced `tf.function` graph,
at batch size 1 — so it sees inside layers the channel graph cannot
follow. `count_flops` uses it for such layers; `traced_macs` of a whole
model is an independent check of `count_flops`.
"""

import numpy as np

from ekg_keras import _backend as backend
from ekg_keras._keras_private import call_node
from ekg_keras.graph.expansion import input_batch_shapes

# TensorFlow ops that multiply and accumulate, by the way their MACs follow
# from shapes.
_CONVOLUTIONS = ("Conv2D", "Conv3D", "Conv")
_DEPTHWISE = ("DepthwiseConv2dNative",)
_TRANSPOSED = ("Conv2DBackpropInput", "Conv3DBackpropInputV2")
_MATMULS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")


def traced_macs(model, input_shape=None):
    """MACs of one sample through `model`, from its TensorFlow graph.

    Args:
        model: A Keras model (any kind).
        input_shape: The input size without the batch axis, for a model
            with dynamic sizes (one shape per input for several).

    Returns:
        The number of multiply-accumulates of convolutions (plain,
        depthwise, transposed), matrix products and einsums, as an int.

    Raises:
        ValueError: If a size is still unknown.
    """
    shapes = [
        (1,) + tuple(s)[1:] for s in input_batch_shapes(model, input_shape)
    ]
    dtypes = [x.dtype for x in model.inputs]

    def run(*xs):
        return model(list(xs) if len(xs) > 1 else xs[0], training=False)

    return _macs_of(run, shapes, dtypes, model.name)


def node_macs(operation, node):
    """MACs of one sample through one call of a layer or operation.

    Args:
        operation: The layer or `keras.ops` operation.
        node: Its call node (its tensors give the shapes).

    Returns:
        The MACs as an int.

    Raises:
        ValueError: If a size of the call is unknown.
    """
    tensors = node.input_tensors
    shapes = [(1,) + tuple(t.shape)[1:] for t in tensors]

    def run(*xs):
        return call_node(node, operation, list(xs))

    return _macs_of(run, shapes, [t.dtype for t in tensors], operation.name)


def _macs_of(run, shapes, dtypes, name):
    backend.require_tensorflow(
        f"Counting the MACs of '{name}' (a layer the FLOPs table does not "
        "know, counted from its traced TensorFlow graph)",
        "Count the model under KERAS_BACKEND=tensorflow, or register a "
        "FLOPs handler for its class.",
    )
    import tensorflow as tf

    unknown = [s for s in shapes if None in s]
    if unknown:
        raise ValueError(
            f"Cannot count the MACs of '{name}' at an unknown size: its "
            f"inputs have shapes {unknown}. Pass `input_shape=`."
        )
    specs = [tf.TensorSpec(s, d) for s, d in zip(shapes, dtypes)]
    graph = tf.function(run).get_concrete_function(*specs).graph
    return _graph_macs(graph)


def _graph_macs(graph):
    total = 0
    for op in graph.get_operations():
        total += _op_macs(op)
        for function in _called_functions(op):
            total += _graph_macs(function.graph)
    return int(total)


def _called_functions(op):
    """Graphs of the functions an op calls (`PartitionedCall`, `If`)."""
    graph = op.graph
    found = []
    for attr in ("f", "then_branch", "else_branch", "body"):
        try:
            name = op.get_attr(attr).name
        except (ValueError, AttributeError):
            continue
        function = graph._get_function(name)
        if function is not None and hasattr(function, "graph"):
            found.append(function)
    return found


def _shape(tensor):
    return [d if d is not None else 0 for d in tensor.shape.as_list()]


def _op_macs(op):
    kind = op.type
    if kind in _CONVOLUTIONS:
        kernel = _shape(op.inputs[1])
        return np.prod(_shape(op.outputs[0])) * np.prod(kernel[:-1])
    if kind in _DEPTHWISE:
        kernel = _shape(op.inputs[1])
        return np.prod(_shape(op.outputs[0])) * np.prod(kernel[:-2])
    if kind in _TRANSPOSED:
        kernel = _shape(op.inputs[1])  # (*k, out channels, in channels)
        return np.prod(_shape(op.inputs[2])) * np.prod(kernel[:-1])
    if kind in _MATMULS:
        a = _shape(op.inputs[0])
        transposed = _flag(op, "transpose_a") or _flag(op, "adj_x")
        inner = a[-2] if transposed else a[-1]
        return np.prod(_shape(op.outputs[0])) * inner
    if kind == "Einsum":
        return _einsum_macs(op)
    return 0


def _flag(op, name):
    try:
        return bool(op.get_attr(name))
    except ValueError:
        return False


def _einsum_macs(op):
    """Product of the sizes of every index of the equation (each output
    entry sums over the contracted indices)."""
    inputs, _ = op.get_attr("equation").decode().split("->")
    sizes = {}
    for term, tensor in zip(inputs.split(","), op.inputs):
        shape = _shape(tensor)
        letters = term.replace("...", "")
        for letter, size in zip(letters, shape[len(shape) - len(letters) :]):
            sizes[letter] = size
    if "..." in inputs:
        shape = _shape(op.inputs[0])
        ellipsis = len(shape) - len(inputs.split(",")[0].replace("...", ""))
        sizes_of_ellipsis = np.prod(shape[:ellipsis]) if ellipsis else 1
    else:
        sizes_of_ellipsis = 1
    return int(np.prod(list(sizes.values()))) * int(sizes_of_ellipsis)
