"""`wrap` a model into prunable layers and `strip` it back to plain ones."""

import inspect
import warnings

import keras
import numpy as np

from ekg_keras._keras_private import deferred_variables
from ekg_keras._keras_private import initialize_deferred
from ekg_keras._keras_private import input_name
from ekg_keras._keras_private import is_layer
from ekg_keras._keras_private import lambda_output_shape
from ekg_keras._warnings import user_stacklevel
from ekg_keras.graph.handlers import activation_at_zero
from ekg_keras.layers.attention import PrunableMultiHeadAttention
from ekg_keras.layers.batch_normalization import PrunableBatchNormalization
from ekg_keras.layers.conv import PrunableConv1D
from ekg_keras.layers.conv import PrunableConv2D
from ekg_keras.layers.conv import PrunableConv3D
from ekg_keras.layers.conv import PrunableDepthwiseConv1D
from ekg_keras.layers.conv import PrunableDepthwiseConv2D
from ekg_keras.layers.conv import PrunableSeparableConv1D
from ekg_keras.layers.conv import PrunableSeparableConv2D
from ekg_keras.layers.conv_transpose import PrunableConv1DTranspose
from ekg_keras.layers.conv_transpose import PrunableConv2DTranspose
from ekg_keras.layers.conv_transpose import PrunableConv3DTranspose
from ekg_keras.layers.dense import PrunableDense
from ekg_keras.layers.layer_normalization import PrunableLayerNormalization
from ekg_keras.layers.prunable import PrunableMixin
from ekg_keras.layers.prunable import check_mode

PRUNABLE_CLASSES = {
    cls.base_layer_class: cls
    for cls in (
        PrunableConv1D,
        PrunableConv2D,
        PrunableConv3D,
        PrunableConv1DTranspose,
        PrunableConv2DTranspose,
        PrunableConv3DTranspose,
        PrunableDepthwiseConv1D,
        PrunableDepthwiseConv2D,
        PrunableSeparableConv1D,
        PrunableSeparableConv2D,
        PrunableDense,
        PrunableBatchNormalization,
        PrunableLayerNormalization,
        PrunableMultiHeadAttention,
    )
}


def is_prunable(layer):
    """Whether `layer` carries a filter mask."""
    return isinstance(layer, PrunableMixin)


def prunable_layers(model):
    """All prunable layers of `model`, nested models included, each
    followed by its prunable parts (an attention layer's heads)."""
    found = []
    for layer in _flat_layers(model):
        if is_prunable(layer):
            found.append(layer)
            found.extend(layer.parts)
    return found


def wrap(model, mode="hard"):
    """Returns a clone of `model` whose prunable layers carry masks.

    Every convolution (`Conv1D/2D/3D`, their `Transpose`, `DepthwiseConv1D/2D`,
    `SeparableConv1D/2D`), `Dense`, `BatchNormalization`,
    `LayerNormalization` over the last axis and `MultiHeadAttention` (exactly
    these classes, not user
    subclasses; `PRUNABLE_CLASSES`) becomes its prunable counterpart, with
    the same config, the same weights and an all-ones mask, so the clone
    computes the same outputs. Layers that are already prunable keep their
    masks and take the new `mode`. Nested models are wrapped recursively;
    `keras.ops` operation nodes are kept. `model` itself is not modified.

    Args:
        model: A functional or Sequential Keras model.
        mode: `"hard"` or `"soft"`, see `ekg_keras.layers.PrunableConv2D`.

    Returns:
        The wrapped clone.
    """
    check_mode(mode)

    def make(layer):
        if is_prunable(layer):
            return type(layer).from_config({**layer.get_config(), "mode": mode})
        prunable_class = PRUNABLE_CLASSES.get(type(layer))
        if prunable_class is None or not prunable_class.wraps(layer):
            return plain_copy(layer)
        return prunable_class.from_config({**layer.get_config(), "mode": mode})

    def weights(old, new):
        values = old.get_weights()
        if is_prunable(new) and not is_prunable(old):
            # The new masks are all ones, wherever they sit among the
            # weights (after a Dense's bias, before attention projections).
            masks = {id(mask) for mask in new.mask_weights()}
            given = iter(values)
            values = [
                np.ones(w.shape, "float32") if id(w) in masks else next(given)
                for w in new.weights
            ]
        return values

    return _clone(model, make, weights)


def strip(model):
    """Returns a clone of `model` with plain Keras layers instead of prunable.

    Hard masks are baked into the weights: the weights of masked channels
    are zeroed (as `zero_masked_weights` does), so for activations with
    `f(0) = 0` the plain clone computes what the hard-masked model computes
    (a warning names layers whose activation is not zero at zero). Soft-mode
    layers keep their weights as they are, since their forward pass already
    ignores the mask. Shapes are unchanged; use `ekg_keras.slim` to remove
    the channels. `model` itself is not modified.

    Args:
        model: A model that may contain prunable layers.

    Returns:
        The stripped clone.
    """

    for layer in prunable_layers(model):
        _warn_if_nonzero_at_zero(layer)

    def make(layer):
        if not is_prunable(layer):
            return plain_copy(layer)
        config = dict(layer.get_config())
        config.pop("mode")
        return layer.base_layer_class.from_config(config)

    def weights(old, new):
        if not is_prunable(old):
            return old.get_weights()
        return _baked_weights(old)

    return _clone(model, make, weights)


def _baked_weights(layer):
    """The layer's weights, masks excluded, with masked channels zeroed."""
    baked = {}
    if layer.mode == "hard":
        baked = {id(v): value for v, value in layer.masked_weight_values()}
    masks = {id(mask) for mask in layer.mask_weights()}
    return [
        baked.get(id(v), v.numpy()) for v in layer.weights if id(v) not in masks
    ]


def _warn_if_nonzero_at_zero(layer):
    """Warns (pointing at the caller of `strip`) when baking `layer`'s hard
    mask into weights leaves a non-zero constant in masked channels."""
    activation = getattr(layer, "activation", None)
    if (
        activation is None
        or layer.mode != "hard"
        or np.asarray(layer.filter_mask.numpy()).all()
    ):
        return
    at_zero = activation_at_zero(activation)
    if at_zero != 0.0:
        warnings.warn(
            f"Layer '{layer.name}' has an activation with f(0) = {at_zero}; "
            "the stripped layer outputs that constant for masked channels "
            "instead of 0. Use `ekg_keras.slim`, which folds it into the "
            "consumer.",
            stacklevel=user_stacklevel(),
        )


def plain_copy(operation):
    """A fresh copy of a layer (no weights set) or of a `keras.ops`
    operation (which has none), by `from_config_of`.

    A layer without weights that cannot be copied (built from arguments
    it cannot serialize) is shared, as are operations.

    Raises:
        ValueError: If a layer with weights cannot be copied.
    """
    try:
        if is_layer(operation):
            return from_config_of(operation, operation.get_config())
        return type(operation).from_config(operation.get_config())
    except (
        TypeError,
        ValueError,
        AttributeError,
        NotImplementedError,
    ) as error:
        if not is_layer(operation):
            return operation  # Stateless: sharing it is harmless.
        if not operation.weights:
            return _default_copy(operation)
        raise ValueError(
            f"Cannot copy layer '{operation.name}' "
            f"({type(operation).__name__}): its `from_config(get_config())` "
            f"fails ({type(error).__name__}: {str(error)[:200]}). Give it a "
            "`get_config` that its `from_config` accepts."
        ) from error


def _default_copy(layer):
    """A weightless layer built from arguments it cannot serialize (such
    as KerasHub's `Identity` layers): a new one with default arguments if
    that one serializes, else the layer itself (it has no state)."""
    try:
        copy = type(layer)(name=layer.name)
        copy.get_config()
    except Exception:  # Its constructor needs the arguments after all.
        return layer
    return copy


#: The `Lambda` config entries that hold functions (or their arguments).
_LAMBDA_OBJECTS = ("function", "output_shape", "mask", "arguments")


def from_config_of(layer, config, layer_class=None):
    """A new layer of `layer_class` (default: `layer`'s class) from
    `config`, as `layer_class.from_config(config)` (through
    `layer_from_config`).

    A `keras.layers.Lambda` is the exception: its config cannot always
    rebuild its function (a Python lambda is refused in safe mode, a
    function defined inside another cannot be located by name), so the new
    `Lambda` calls the same function object, with the same `output_shape`,
    `mask` and `arguments`, and takes the rest (name, dtype, trainable)
    from `config`.
    """
    layer_class = layer_class or type(layer)
    if layer_class is not keras.layers.Lambda:
        return layer_from_config(layer_class, config)
    rest = {k: v for k, v in config.items() if k not in _LAMBDA_OBJECTS}
    return keras.layers.Lambda(
        layer.function,
        output_shape=lambda_output_shape(layer),
        mask=layer.mask,
        arguments=dict(layer.arguments),
        **rest,
    )


def layer_from_config(layer_class, config):
    """`layer_class.from_config(config)`, tolerant of a third-party layer
    whose `get_config` writes computed values its constructor does not
    take (KerasHub's `ViTPatchingAndEmbedding` writes `num_patches`):
    those keys are dropped, and the new layer reports its config without
    them, so that it also saves and loads."""
    try:
        layer = layer_class.from_config(config)
    except (TypeError, ValueError):
        accepted = _constructor_arguments(layer_class)
        if accepted is None:
            raise
        config = {k: v for k, v in config.items() if k in accepted}
        layer = layer_class.from_config(config)
    _repair_written_config(layer)
    return layer


def _repair_written_config(layer):
    accepted = _constructor_arguments(type(layer))
    if accepted is None:
        return
    try:
        written = layer.get_config()
    except (AttributeError, NotImplementedError):
        return
    if not set(written) - accepted:
        return
    try:
        type(layer).from_config(written)
    except (TypeError, ValueError):
        repaired = {k: v for k, v in written.items() if k in accepted}
        layer.get_config = lambda: dict(repaired)


def _constructor_arguments(layer_class):
    """Names a layer class's `__init__` takes, or None if it takes any
    (a class of Keras itself, or one with its own `from_config`)."""
    if layer_class.__module__.split(".")[0] == "keras" or not issubclass(
        layer_class, keras.layers.Layer
    ):
        return None
    if "from_config" in vars(layer_class):
        return None  # Its own `from_config` reads the config.
    names = set(inspect.signature(layer_class.__init__).parameters)
    names |= set(inspect.signature(keras.layers.Layer.__init__).parameters)
    return names | {"name", "trainable", "dtype"}


def _clone(model, make, weights):
    """Clones `model` with `make(layer)` and copies `weights(old, new)`.

    Each new layer is built as its original was, with its variables left
    uninitialized (`deferred_variables`), and then created once with the
    original's values: no initializer runs and nothing is copied twice.
    The values are given at the end, since a layer with initialized
    variables costs more to call on the clone's symbolic inputs, unless
    `clone_model` compiles the clone (its optimizer needs them at once).
    """
    deferred, built_later = [], []
    compiled = any(m.compiled for m in _models_in(model))

    def clone_function(layer):
        new = make(layer)
        if _build_deferred(layer, new):
            deferred.append((layer, new))
            if compiled:
                _initialize(deferred, weights)
        else:
            built_later.append((layer, new))
        return new

    try:
        clone = keras.models.clone_model(
            model,
            clone_function=clone_function,
            recursive=True,
            input_tensors=_named_inputs(model),
        )
    finally:
        _initialize(deferred, weights)
    for old, new in built_later:
        if is_layer(old) and old.weights:
            new.set_weights(weights(old, new))
    return clone


def _build_deferred(old, new):
    """Builds `new` as `old` was built, its variables left uninitialized.

    Returns:
        Whether it did: not for operations, input layers and layers without
        a build config, which the clone builds when it calls them.
    """
    if not (is_layer(old) and is_layer(new)) or new.built or not old.built:
        return False
    config = old.get_build_config()
    if not config or isinstance(new, keras.layers.InputLayer):
        return False
    with deferred_variables():
        new.build_from_config(config)
    return True


def _initialize(deferred, weights):
    """Creates the deferred variables of `(old, new)` layer pairs with the
    values `weights(old, new)`, and empties the list."""
    values = []
    try:
        for old, new in deferred:
            if old.weights:
                values.extend(weight_pairs(new, weights(old, new)))
    finally:
        deferred.clear()
        initialize_deferred(values)


def _models_in(model):
    """`model` and the models nested in it."""
    return [model] + [
        layer for layer in _flat_layers(model) if isinstance(layer, keras.Model)
    ]


def weight_pairs(layer, values):
    """`(variable, value)` pairs of `layer`'s weights and `values` (in
    `layer.weights` order, as `set_weights` takes them).

    Raises:
        ValueError: If there are not as many values as weights.
    """
    if len(values) != len(layer.weights):
        raise ValueError(
            f"Layer '{layer.name}' should receive {len(layer.weights)} "
            f"weights. Received: {len(values)}"
        )
    return list(zip(layer.weights, values))


def _named_inputs(model):
    """New inputs with the names of the model's input layers.

    Without them `clone_model` names each input after its symbolic tensor
    ("keras_tensor"), not after its `InputLayer`.
    """
    if isinstance(model, keras.Sequential):
        return None  # Sequential cloning keeps the input layer's name.
    return keras.tree.map_structure(
        lambda x: keras.Input(
            batch_shape=x.shape, dtype=x.dtype, name=input_name(x)
        ),
        model.input,
    )


def _flat_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)
