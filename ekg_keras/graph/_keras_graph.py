"""The only place that touches Keras' private functional-graph internals.

Keras 3 exposes no public API to walk the nodes of a functional model, so
tracing, probing and rebuilding go through these few helpers. Keras' own
`clone_model` relies on the same attributes.
"""

import keras
from keras.src.models.functional import Functional


def functional_of(model):
    """The `Functional` graph behind `model`, or None if it has none.

    A built `Sequential` model keeps its graph in `_functional`; a subclassed
    model has no graph.
    """
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, Functional):
        return model
    return None


def is_graph_model(layer):
    """Whether `layer` is a model with a functional graph (nestable)."""
    return isinstance(layer, keras.Model) and functional_of(layer) is not None


def graph_nodes(graph):
    """The call nodes of a `Functional` graph in topological order."""
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                yield node


def run_graph(graph, inputs, operation_fn, call_fn):
    """Runs `graph` on `inputs`, calling `call_fn(operation_fn(op), ...)`."""
    return graph._run_through_graph(
        inputs, operation_fn=operation_fn, call_fn=call_fn
    )


def input_name(tensor):
    """The name of the `InputLayer` that created a model input tensor."""
    return tensor._keras_history.operation.name


def output_layer(tensor):
    """The layer whose call produced a symbolic tensor."""
    return tensor._keras_history.operation


def node_outputs(node):
    """The symbolic output tensors of a call node."""
    return node.outputs


def node_inputs(node):
    """The symbolic input tensors of a call node."""
    return node.input_tensors


def node_call_kwargs(node):
    """The keyword arguments a call node was made with (e.g. `training`)."""
    return dict(node.arguments.kwargs)


def rebuild_model(model, clone_layer, call_layer):
    """A new model that runs `model`'s graph through replacement layers.

    Every layer call of `model` (nested graph models included) becomes a
    call of `clone_layer(layer)` (asked once per layer), made by
    `call_layer(layer, new_layer, *args, **kwargs)`, which returns the
    call's outputs: it may call `new_layer`, set its weights once it is
    built, or return an input unchanged to drop the layer. Nested graph
    models become new nested models. A Sequential model comes back as a
    functional model with the same layers.

    Args:
        model: A functional or built Sequential Keras model.
        clone_layer: `fn(layer) -> new layer` (or any value `call_layer`
            understands).
        call_layer: `fn(layer, new_layer, *args, **kwargs) -> outputs`.

    Returns:
        The new `keras.Model`.
    """
    new_layers = {}
    new_models = {}

    def operation_fn(op):
        if is_graph_model(op):
            return lambda *args, **kwargs: nested(op, args, kwargs)
        if id(op) not in new_layers:
            new_layers[id(op)] = clone_layer(op)
        new = new_layers[id(op)]
        return lambda *args, **kwargs: call_layer(op, new, *args, **kwargs)

    def call_fn(op, *args, **kwargs):
        return op(*args, **kwargs)

    def rebuild(graph, name, tensors):
        inputs = [
            keras.Input(batch_shape=t.shape, dtype=t.dtype, name=input_name(x))
            for t, x in zip(tensors, graph.inputs)
        ]
        outputs = run_graph(graph, inputs, operation_fn, call_fn)
        structure = graph.input
        if isinstance(structure, (list, tuple, dict)):
            inputs = keras.tree.pack_sequence_as(structure, inputs)
        else:
            inputs = inputs[0]
        return keras.Model(inputs, outputs, name=name)

    def nested(op, args, kwargs):
        if id(op) not in new_models:
            graph = functional_of(op)
            tensors = keras.tree.flatten(list(args))
            new_models[id(op)] = rebuild(graph, op.name, tensors)
        return new_models[id(op)](*args, **kwargs)

    graph = functional_of(model)
    return rebuild(graph, model.name, graph.inputs)
