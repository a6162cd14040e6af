"""Custom layers traced through, and models fixed at one input size.

A `Layer` subclass whose `call` is made of Keras layers and `keras.ops`
(the blocks of KerasHub and of most user code) is, as far as the channel
graph is concerned, a small functional model: calling its `call` on
symbolic inputs makes the inner layers leave nodes. `expand` rebuilds a
model with every such layer replaced by that functional sub-graph (the
same inner layer objects, so no weight is copied), so that its channels
join the channel graph, its MACs are counted, and `wrap` and `slim` treat
it as any nested model. A custom layer that cannot be replaced (its `call`
does not run on symbolic inputs, or it holds weights of its own besides
its sub-layers') stays as it is, with its channels whole.

The same rebuild fixes the model's input size (`input_shape`), which a
model with dynamic image shapes (`(None, None, 3)`, KerasHub's default)
needs to have its FLOPs and latency counted; `with_input_shapes` puts the
original (dynamic) inputs back on the result.
"""

import dataclasses
import warnings

import keras
import numpy as np

from ekg_keras._keras_private import functional_of
from ekg_keras._keras_private import graph_nodes
from ekg_keras._keras_private import is_graph_model
from ekg_keras._keras_private import is_layer
from ekg_keras._keras_private import rebuild_model
from ekg_keras._warnings import user_stacklevel
from ekg_keras.graph.handlers import describe


@dataclasses.dataclass
class Expansion:
    """The result of `expand`.

    Attributes:
        model: The rebuilt model (or the given one, if nothing changed).
        opaque: Per custom layer kept as it is, its name and the reason.
        changed: Whether `model` is a rebuilt model.
    """

    model: keras.Model
    opaque: dict
    changed: bool


class NotTraceable(Exception):
    """A custom layer's `call` cannot be replaced by its sub-graph."""


def is_custom_layer(operation):
    """Whether `operation` is a user or third-party `Layer` subclass the
    channel graph has no handler for (built-in Keras layers and layers
    with a registered or channel-wise handler are not)."""
    from ekg_keras.graph.registry import get_handler

    if not is_layer(operation) or is_graph_model(operation):
        return False
    if type(operation).__module__.split(".")[0] == "keras":
        return False
    return get_handler(operation).kind == "unknown"


def expand(model, input_shape=None, warn_opaque=True):
    """Rebuilds `model` with custom layers traced through, at a fixed size.

    Args:
        model: A functional or built Sequential model.
        input_shape: The input size to count at, without the batch axis:
            one shape, or one per model input (e.g. `(224, 224, 3)`).
            None keeps the model's own input shapes.
        warn_opaque: Warn about each custom layer kept as it is.

    Returns:
        An `Expansion`. The model is rebuilt only when it holds custom
        layers, an `input_shape` is given, or a nested model has sizes
        its outer model fixes; else `model` itself comes back.

    Raises:
        ValueError: If `input_shape` does not fit the model's inputs.
    """
    shapes = input_batch_shapes(model, input_shape)
    if input_shape is None and not _needs_rebuild(model):
        return Expansion(model, {}, changed=False)
    opaque = {}
    # Custom layers are expanded at the model's own input shapes, so that
    # a sub-graph never holds a size the dynamic model does not fix.
    rebuilt = _rebuild(model, None, opaque)
    if shapes != model_input_shapes(model):
        rebuilt = with_input_shapes(rebuilt, shapes)
        _check_same_model_outputs(model, rebuilt, opaque)
    if warn_opaque:
        for name, reason in opaque.items():
            warnings.warn(
                f"Custom layer '{name}' is not traced through: {reason}. "
                "Its channels stay whole; its MACs are counted from the "
                "TensorFlow graph of its call.",
                stacklevel=user_stacklevel(),
            )
    return Expansion(rebuilt, opaque, changed=True)


def _check_same_model_outputs(model, rebuilt, opaque):
    """Compares `model` and its expansion at a fixed size on one random
    batch (custom layers expanded at dynamic sizes were not compared one
    by one).

    Raises:
        ValueError: If they differ.
    """
    expanded = _custom_layers(model) - set(opaque)
    if not expanded:
        return
    inputs = functional_of(rebuilt).inputs
    rng = np.random.default_rng(0)
    values = [
        rng.normal(size=(2,) + tuple(x.shape)[1:]).astype(x.dtype)
        for x in inputs
    ]
    values = values if len(values) > 1 else values[0]
    expected = keras.tree.flatten(model(values, training=False))
    try:
        received = keras.tree.flatten(rebuilt(values, training=False))
    except Exception:
        received = [None] * len(expected)
    if not all(
        b is not None and _close(a, b) for a, b in zip(expected, received)
    ):
        raise ValueError(
            "Expected the custom layers traced through "
            f"({', '.join(sorted(expanded))}) to compute what their `call` "
            "computes at `input_shape`. Received other outputs: some read "
            "sizes at trace time. Register a handler for them "
            "(`ekg_keras.graph.register_handler`) or prune the model "
            "built at a fixed size."
        )


def _custom_layers(model):
    return {
        node.operation.name
        for node, _ in _nodes(model)
        if is_custom_layer(node.operation)
    }


def _close(a, b):
    a = np.asarray(keras.ops.convert_to_numpy(a), np.float64)
    b = np.asarray(keras.ops.convert_to_numpy(b), np.float64)
    if a.shape != b.shape:
        return False
    scale = max(np.max(np.abs(a)), 1e-6) if a.size else 1.0
    return np.max(np.abs(a - b)) <= 1e-4 * scale


def with_input_shapes(model, shapes):
    """`model`'s layers (shared, not copied) on inputs of other batch
    shapes, e.g. the dynamic `(None, None, None, 3)` of the model it was
    pruned from."""
    current = [tuple(x.shape) for x in functional_of(model).inputs]
    if [tuple(s) for s in shapes] == current:
        return model
    return rebuild_model(
        model,
        lambda layer: layer,
        lambda layer, new, *args, **kwargs: new(*args, **kwargs),
        input_shapes=shapes,
    )


def model_input_shapes(model):
    """Batch shapes of `model`'s inputs.

    Raises:
        ValueError: If `model` has no functional graph.
    """
    return input_batch_shapes(model, None)


def input_batch_shapes(model, input_shape):
    """Batch shapes of `model`'s inputs with `input_shape` filled in.

    Raises:
        ValueError: If `input_shape` does not fit the model's inputs (one
            shape per input, each of the input's rank, agreeing with every
            size the model fixes).
    """
    graph = functional_of(model)
    if graph is None:
        raise ValueError(
            "Expected a functional or built Sequential Keras model, whose "
            "graph of layer calls can be traced. Received: "
            f"{type(model).__name__} '{model.name}' without a functional "
            "graph (a subclassed model, or a Sequential model that was "
            "never built: give it an `Input` first)."
        )
    current = [tuple(x.shape) for x in graph.inputs]
    if input_shape is None:
        return current
    given = list(input_shape)
    if all(isinstance(s, (tuple, list)) for s in given):
        per_input = [tuple(s) for s in given]
    else:
        per_input = [tuple(given)]
    if len(per_input) != len(current):
        raise ValueError(
            f"Expected one `input_shape` per model input ({len(current)}: "
            f"{_without_batch(current)}). Received: input_shape="
            f"{input_shape!r}"
        )
    shapes = []
    for shape, batch_shape in zip(per_input, current):
        fits = len(shape) == len(batch_shape) - 1 and all(
            old is None or old == new
            for old, new in zip(batch_shape[1:], shape)
        )
        if not fits:
            raise ValueError(
                "Expected `input_shape` to fit the model's input shape "
                f"{_without_batch([batch_shape])[0]} (same rank, the same "
                "size wherever the model fixes one). Received: "
                f"input_shape={input_shape!r}"
            )
        shapes.append((batch_shape[0],) + shape)
    return shapes


def _without_batch(shapes):
    return [tuple(s[1:]) for s in shapes]


def _needs_rebuild(model):
    """Whether `model` holds custom layers or nested models whose sizes
    are unknown inside although its own inputs fix them."""
    outer_static = all(
        None not in tuple(x.shape)[1:] for x in functional_of(model).inputs
    )
    for node, nested in _nodes(model):
        if is_custom_layer(node.operation):
            return True
        if nested and outer_static and _unknown_size(node):
            return True
    return False


def _nodes(model, nested=False):
    """(node, inside a nested model) pairs of `model`'s graph."""
    for node in graph_nodes(functional_of(model)):
        yield node, nested
        if is_graph_model(node.operation):
            yield from _nodes(node.operation, nested=True)


def _unknown_size(node):
    return any(None in tuple(t.shape)[1:] for t in node.outputs)


def _rebuild(model, shapes, opaque, call=None):
    """`model` rebuilt on inputs of `shapes`, custom layers expanded, each
    other operation called by `call(op, args, kwargs)` (default: as is)."""
    subgraphs = {}

    def call_layer(layer, new, *args, **kwargs):
        if not is_custom_layer(layer) or layer.name in opaque:
            if call is not None:
                return call(new, args, kwargs)
            return new(*args, **kwargs)
        tensors = _tensors((args, kwargs))
        key = (id(layer), tuple(tuple(t.shape) for t in tensors))
        if key not in subgraphs:
            try:
                subgraphs[key] = _subgraph(layer, args, kwargs, opaque)
            except NotTraceable as reason:
                opaque[layer.name] = str(reason)
                return new(*args, **kwargs)
        sub = subgraphs[key]
        if sub is None:  # The layer is the identity at inference.
            return tensors[0]
        return sub(tensors if len(tensors) > 1 else tensors[0])

    return rebuild_model(model, lambda layer: layer, call_layer, shapes)


def _tensors(structure):
    return [
        x
        for x in keras.tree.flatten(structure)
        if isinstance(x, keras.KerasTensor)
    ]


# The batch size custom layers see while traced: static, so that shapes
# they read with `ops.shape(x)[0]` are numbers, and unusual, so that the
# places it ends up in can be found and made batch-free again.
TRACE_BATCH = 7919


def _subgraph(layer, args, kwargs, opaque):
    """The functional model `layer.call` builds on symbolic copies of the
    call's tensors (its non-tensor arguments kept as they are), with the
    custom layers inside expanded too; None if it returns its input.

    `call` runs on a batch of `TRACE_BATCH`: a reshape to that batch size
    becomes a reshape to -1, then the sub-graph is rebuilt for any batch.

    Raises:
        NotTraceable: If `call` fails on symbolic inputs, the batch size
            ends up anywhere but a reshape's first axis, the layer holds
            weights its sub-layers do not, or the sub-graph computes
            other values than `call` on a test batch.
    """
    tensors = _tensors((args, kwargs))
    inputs = [
        keras.Input(
            batch_shape=(TRACE_BATCH,) + tuple(t.shape)[1:], dtype=t.dtype
        )
        for t in tensors
    ]
    by_id = {id(t): x for t, x in zip(tensors, inputs)}
    args, kwargs = keras.tree.map_structure(
        lambda x: by_id.get(id(x), x), (args, kwargs)
    )
    try:
        outputs = layer.call(*args, **kwargs)
    except Exception as error:  # Any failure means: not symbolic-friendly.
        raise NotTraceable(
            "its `call` does not run on symbolic inputs "
            f"({type(error).__name__}: {_first_line(error)})"
        ) from error
    if len(inputs) == 1 and outputs is inputs[0]:
        return None
    try:
        traced = keras.Model(
            inputs if len(inputs) > 1 else inputs[0], outputs, name=layer.name
        )
    except Exception as error:
        raise NotTraceable(
            "its `call` does not return symbolic tensors of its inputs "
            f"({type(error).__name__}: {_first_line(error)})"
        ) from error
    held = {id(v) for v in traced.weights}
    own = [v.path for v in layer.weights if id(v) not in held]
    if own:
        raise NotTraceable(
            "it holds weights of its own besides its sub-layers' "
            f"({', '.join(own[:3])}{', ...' if len(own) > 3 else ''})"
        )
    sub = _rebuild(
        traced,
        [(None,) + tuple(x.shape)[1:] for x in inputs],
        opaque,
        call=_batch_free_call,
    )
    _check_same_outputs(layer, sub, args, kwargs, inputs)
    return sub


def _batch_free_call(op, node_args, node_kwargs):
    """Calls `op` as the trace did, but for any batch size: a reshape to
    `(TRACE_BATCH, ...)` becomes a reshape to `(-1, ...)` (an inferred
    size it also held taken from its input's static size).

    Raises:
        NotTraceable: If the batch size is a constant anywhere else.
    """
    shape = getattr(op, "newshape", None)
    if not is_layer(op) and shape is not None and len(tuple(shape)):
        shape = list(shape)
        if shape[0] == TRACE_BATCH:
            x = node_args[0]
            if -1 in shape:
                known = int(np.prod([d for d in shape if d != -1]))
                size = int(np.prod(tuple(x.shape)[1:])) * TRACE_BATCH
                shape[shape.index(-1)] = size // known
            shape[0] = -1
            return keras.ops.reshape(x, tuple(shape))
    if _holds_batch((node_args, node_kwargs)):
        raise NotTraceable(
            f"its {describe(op)} depends on the batch size read at trace time"
        )
    return op(*node_args, **node_kwargs)


def _holds_batch(value):
    return any(
        isinstance(x, (int, np.integer)) and x == TRACE_BATCH
        for x in keras.tree.flatten(value)
    )


# The size given to axes a dynamic model leaves unknown, to compare a
# custom layer with its sub-graph.
_PROBE_SIZE = 32


def _check_same_outputs(layer, sub, args, kwargs, inputs):
    """Runs the layer and its sub-graph on one random batch of two (at
    `_PROBE_SIZE` along axes of unknown size).

    Raises:
        NotTraceable: If the sub-graph fails or computes other values (the
            call read a size or a value at trace time that is no constant).
    """
    rng = np.random.default_rng(0)
    values = []
    for x in inputs:
        shape = tuple(_PROBE_SIZE if d is None else d for d in x.shape[1:])
        if "float" in str(x.dtype):
            values.append(rng.normal(size=(2,) + shape).astype(x.dtype))
        else:
            values.append(np.zeros((2,) + shape, x.dtype))
    by_id = {
        id(x): keras.ops.convert_to_tensor(v) for x, v in zip(inputs, values)
    }
    real_args, real_kwargs = keras.tree.map_structure(
        lambda x: by_id.get(id(x), x), (args, kwargs)
    )
    real_kwargs["training"] = False  # Also sets it for nested calls.
    try:
        expected = layer(*real_args, **real_kwargs)
    except Exception:
        return  # The probe size does not suit the layer: nothing to compare.
    try:
        received = sub(values if len(values) > 1 else values[0], training=False)
    except Exception as error:
        raise NotTraceable(
            "its sub-graph does not run where its `call` does "
            f"({type(error).__name__}: {_first_line(error)})"
        ) from error
    for a, b in zip(keras.tree.flatten(expected), keras.tree.flatten(received)):
        if not _close(a, b):
            raise NotTraceable(
                "its sub-graph computes other values than its `call` "
                "(it reads sizes or values at trace time)"
            )


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""
