"""The one place that touches private Keras API.

Keras 3 has no public way to do these few things, so they are wrapped
here: a Keras release that changes them breaks this file, not the library.

* The functional graph: Keras 3 exposes no public API to walk the nodes of
  a functional model, so tracing, probing and rebuilding go through these
  helpers (Keras' own `clone_model` relies on the same attributes). The
  classes of `keras.ops` operations (the nodes that `x + 1.0` or
  `keras.ops.mean(x)` leave in a functional graph) and the custom layers of
  `keras.applications` are only importable from `keras.src`, so they are
  looked up here too, and so is the lazy initialization of variables that
  lets `wrap` and `slim` create each variable once, with its value
  (`deferred_variables`).
* Layers and training: the kernel variable under LoRA, the train step's
  loss tracker, the epoch `BackupAndRestore` restores, building a compiled
  model's variables from a batch spec.
"""

import contextlib

import keras
import numpy as np
from keras.src.applications import convnext as _convnext
from keras.src.applications import inception_resnet_v2 as _inception_resnet
from keras.src.backend.common.variables import initialize_all_variables
from keras.src.models.functional import Functional
from keras.src.ops import core as _ops_core
from keras.src.ops import image as _ops_image
from keras.src.ops import math as _ops_math
from keras.src.ops import nn as _ops_nn
from keras.src.ops import numpy as _ops_numpy

from ekg_keras._backend import tf

# Element-wise functions of one tensor (`f(x)` entry by entry). Constant
# arguments (`clip`'s bounds, `leaky_relu`'s slope) are scalars.
_UNARY_OPS = {
    _ops_numpy: (
        "Abs Absolute Fabs Ceil Floor Round Trunc Sign Negative Square Sqrt "
        "Cbrt Exp Exp2 Expm1 Log Log10 Log1p Log2 Reciprocal Sin Cos Tan "
        "Sinh Cosh Tanh Arcsin Arccos Arctan Arcsinh Arccosh Arctanh Clip "
        "NanToNum Copy Sinc Deg2rad Rad2deg"
    ),
    _ops_nn: (
        "Relu Relu6 Sigmoid SparseSigmoid Softplus Softsign SoftShrink "
        "SparsePlus Silu Squareplus LogSigmoid LeakyRelu HardSigmoid "
        "HardSilu Elu Selu Gelu Celu TanhShrink HardTanh HardShrink Threshold"
    ),
    _ops_core: "Cast StopGradient",
    _ops_math: "Rsqrt Erf Erfc",
}

# Element-wise functions of two operands (tensors or broadcast constants).
_BINARY_OPS = {
    _ops_numpy: (
        "Add Subtract Multiply Divide DivideNoNan TrueDivide Power Maximum "
        "Minimum Fmax Fmin FloorDivide Mod Fmod Arctan2 Hypot Logaddexp "
        "Logaddexp2"
    ),
}

# Reductions that keep the channel axis when they reduce other axes.
_REDUCTION_OPS = {_ops_numpy: "Mean Max Min Amax Amin Sum"}

# Spatial operations that treat every channel alike.
_SPATIAL_OPS = {
    _ops_image: "Resize",
    _ops_nn: "MaxPool AveragePool",
}


def _classes(table):
    found = []
    for module, names in table.items():
        for name in names.split():
            cls = getattr(module, name, None)
            if cls is not None:
                found.append(cls)
    return tuple(found)


def unary_operation_classes():
    """Classes of element-wise `keras.ops` functions of one tensor."""
    return _classes(_UNARY_OPS)


def binary_operation_classes():
    """Classes of element-wise `keras.ops` functions of two operands."""
    return _classes(_BINARY_OPS)


def reduction_operation_classes():
    """Classes of `keras.ops` reductions with an `axis` and `keepdims`."""
    return _classes(_REDUCTION_OPS)


def spatial_operation_classes():
    """Classes of `keras.ops` resizing and pooling (per channel)."""
    return _classes(_SPATIAL_OPS)


def reshape_operation_class():
    """The class of `keras.ops.reshape` nodes."""
    return _ops_numpy.Reshape


def pad_operation_class():
    """The class of `keras.ops.pad` nodes."""
    return _ops_numpy.Pad


def concatenate_operation_class():
    """The class of `keras.ops.concatenate` nodes."""
    return _ops_numpy.Concatenate


def applications_layers():
    """Custom layers of `keras.applications` models, by role.

    Returns:
        A dict: "passthrough" (stochastic depth, identity at inference),
        "scaled_sum" (Inception-ResNet's `x + scale * r`).
    """
    return {
        "passthrough": (_convnext.StochasticDepth,),
        "scaled_sum": (_inception_resnet.CustomScaleLayer,),
    }


def is_layer(operation):
    """Whether a graph node's operation is a `Layer` (else a `keras.ops`
    operation, which has no weights and no `get_weights`)."""
    return isinstance(operation, keras.layers.Layer)


def lambda_output_shape(layer):
    """The `output_shape` a `keras.layers.Lambda` was made with (None,
    a shape or a function), which its config holds only serialized."""
    return layer._output_shape


def node_constants(node):
    """The arguments of a node's call that are not symbolic tensors.

    Returns:
        A list of the flattened non-tensor arguments (numbers, arrays,
        strings, None), positional then keyword.
    """
    flat = keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
    return [x for x in flat if not isinstance(x, keras.KerasTensor)]


def call_node(node, operation, values):
    """Calls `operation` with the node's arguments, tensors replaced.

    Args:
        node: A functional-graph node.
        operation: What to call (the node's operation or a stand-in).
        values: One value per `node.input_tensors`, in order.

    Returns:
        The operation's outputs.
    """
    by_id = {id(t): v for t, v in zip(node.input_tensors, values)}
    args, kwargs = node.arguments.fill_in(by_id)
    return operation(*args, **kwargs)


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


def rebuild_model(model, clone_layer, call_layer, input_shapes=None):
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
        input_shapes: Batch shapes of the new model's inputs (one per
            input), default those of `model`'s.

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

    def rebuild(graph, name, tensors, shapes=None):
        shapes = shapes or [t.shape for t in tensors]
        inputs = [
            keras.Input(batch_shape=shape, dtype=t.dtype, name=input_name(x))
            for shape, t, x in zip(shapes, tensors, graph.inputs)
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
    return rebuild(graph, model.name, graph.inputs, input_shapes)


@contextlib.contextmanager
def deferred_variables():
    """Layers built inside create their variables without values.

    Building a layer runs its initializers (a random kernel, say) and
    copying weights in overwrites them: for a whole model the two cost
    more than the rest of the build. Keras defers initialization inside
    a `keras.StatelessScope` (its lazy-initialization mechanism); the
    variables created here wait for `initialize_deferred`, which gives
    them their values at creation. On an error every pending variable is
    initialized by its own initializer, as Keras would at the next scope.
    """
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    except BaseException:
        initialize_all_variables()
        raise


def initialize_deferred(values):
    """Initializes the variables `deferred_variables` left pending.

    Args:
        values: `(variable, value)` pairs (NumPy arrays or tensors): the
            value each variable starts with. Pending variables not listed
            take their initializer's value; listed variables that already
            have one are assigned.

    Raises:
        ValueError: If a value's shape is not its variable's.
    """
    try:
        for variable, value in values:
            shape = tuple(getattr(value, "shape", None) or np.shape(value))
            if shape != tuple(variable.shape):
                raise ValueError(
                    f"The value for variable '{variable.path}' should have "
                    f"shape {tuple(variable.shape)}. Received: shape {shape}"
                )
            if variable._value is None:
                variable._initializer = _constant_initializer(value)
            else:
                variable.assign(value)
    finally:
        initialize_all_variables()  # Leaves none pending, even on errors.


def _constant_initializer(value):
    def initializer(shape, dtype=None):
        del shape, dtype  # The variable casts and checks them.
        return value

    return initializer


# Layers and training.


def kernel_variable(layer):
    """The kernel *variable* of a `Conv` / `Dense` layer.

    The public `kernel` property returns a computed tensor when LoRA is on;
    masks must be written into the variable itself.
    """
    return layer._kernel


def track_training_loss(model, loss, x):
    """Adds a train step's loss to `model`'s loss metric, as Keras' own
    TensorFlow `train_step` does (unscaled for distribution, weighted by
    the batch size)."""
    from keras.src.losses import loss as loss_module

    batch = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
    model._loss_tracker.update_state(
        loss_module.unscale_loss_for_distribution(loss), sample_weight=batch
    )


def initial_epoch(model):
    """The epoch a restored run starts at, as `BackupAndRestore` sets it
    (`model._initial_epoch`); 0 when nothing was restored."""
    return int(getattr(model, "_initial_epoch", None) or 0)


def set_initial_epoch(model, epoch):
    """Sets the epoch a run starts at (what `BackupAndRestore` does)."""
    model._initial_epoch = epoch


def build_for_spec(model, element_spec):
    """Builds a compiled model's metrics, loss and optimizer variables from
    a batch's `tf.TensorSpec` structure, without running a batch."""
    model._symbolic_build(data_batch=element_spec)
