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
