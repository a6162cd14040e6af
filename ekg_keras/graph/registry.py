"""Handlers per layer or operation class; users register their own."""

import keras

from ekg_keras import _keras_private as K
from ekg_keras.graph import attention_handlers as A
from ekg_keras.graph import channelwise_handlers as CH
from ekg_keras.graph import conv_handlers as C
from ekg_keras.graph import handlers as H
from ekg_keras.graph import operation_handlers as O
from ekg_keras.layers.attention import AttentionHeads
from ekg_keras.registry import Registry

# Keyed by class; registering a class again replaces its handler (a user's
# handler over a built-in one).
_REGISTRY = Registry("layer handler", replace=True, key_type=type)

_UNKNOWN = H.UnknownHandler()
_MODEL = H.ModelHandler()
_CHANNELWISE = CH.ChannelwiseHandler()


def register_handler(layer_class, handler):
    """Registers how the channel graph treats `layer_class` and subclasses.

    Args:
        layer_class: A Keras layer class, or a `keras.ops` operation class
            (e.g. `type(node.operation)` of an operation node).
        handler: A `ekg_keras.graph.handlers.LayerHandler` instance.

    Raises:
        TypeError: If the arguments have the wrong types.

    Example:

    ```python
    class Scale(keras.layers.Layer):  # multiplies by a learned scalar
        ...

    ekg_keras.graph.register_handler(Scale, ekg_keras.graph.PassThrough())
    ```
    """
    if not isinstance(layer_class, type):
        raise TypeError(
            f"`layer_class` should be a class. Received: {layer_class!r}"
        )
    if not isinstance(handler, H.LayerHandler):
        raise TypeError(
            "`handler` should be a `LayerHandler` instance. "
            f"Received: {handler!r}"
        )
    _REGISTRY.register(layer_class, handler)


def register_passthrough(layer_class):
    """Registers `layer_class` as channel-wise and weightless.

    A removed channel's constant goes through the layer itself (called on
    tiny constant tensors); for a layer that only moves or averages values
    in space (a custom pooling), register `SpatialPassThrough()` instead.
    """
    register_handler(layer_class, H.PassThrough())


def get_handler(layer):
    """The handler for `layer`, looked up along its class hierarchy.

    A layer of no registered class whose weights are all per-channel
    vectors gets the generic `ChannelwiseHandler`; anything else unknown
    gets the `UnknownHandler`, which keeps its channels whole.
    """
    if K.is_graph_model(layer):
        return _MODEL
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY.get(cls).specialize(layer)
    if K.is_layer(layer) and CH.per_channel_weights(layer):
        return _CHANNELWISE
    return _UNKNOWN


def _register_builtins():
    layers = keras.layers
    register_handler(layers.InputLayer, H.InputHandler())
    register_handler(layers.Dense, H.DenseHandler())
    for name in ("Conv1D", "Conv2D", "Conv3D"):
        register_handler(getattr(layers, name), C.ConvHandler())
    for name in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        register_handler(getattr(layers, name), C.ConvTransposeHandler())
    for name in ("SeparableConv1D", "SeparableConv2D"):
        register_handler(getattr(layers, name), C.SeparableConvHandler())
    for name in ("DepthwiseConv1D", "DepthwiseConv2D"):
        register_handler(getattr(layers, name), C.DepthwiseConvHandler())
    register_handler(layers.BatchNormalization, H.BatchNormalizationHandler())
    register_handler(layers.LayerNormalization, CH.LayerNormalizationHandler())
    register_handler(layers.Normalization, _CHANNELWISE)
    register_handler(layers.Activation, H.ActivationHandler())
    register_handler(layers.Rescaling, H.RescalingHandler())
    register_handler(layers.Concatenate, H.ConcatenateHandler())
    register_handler(layers.MultiHeadAttention, A.MultiHeadAttentionHandler())
    register_handler(AttentionHeads, A.AttentionHeadsHandler())
    register_handler(layers.Flatten, H.FlattenHandler())
    register_handler(layers.Reshape, H.ReshapeHandler())
    for merge in (
        layers.Add,
        layers.Subtract,
        layers.Maximum,
        layers.Minimum,
        layers.Average,
    ):
        register_handler(merge, H.MergeHandler())
    register_handler(layers.Multiply, H.MergeHandler(zero_absorbs=True))
    for name in ("ReLU", "LeakyReLU", "ELU", "Identity"):
        register_handler(getattr(layers, name), H.ElementwiseHandler())
    spatial = [
        f"{kind}{rank}D"
        for rank in (1, 2, 3)
        for kind in (
            "Cropping",
            "UpSampling",
            "MaxPooling",
            "AveragePooling",
            "GlobalAveragePooling",
            "GlobalMaxPooling",
            "SpatialDropout",
        )
    ]
    spatial += [
        "Dropout",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
    ]
    for name in spatial:
        cls = getattr(layers, name, None)
        if cls is not None:
            register_handler(cls, H.SpatialPassThrough())
    for rank in (1, 2, 3):
        register_handler(
            getattr(layers, f"ZeroPadding{rank}D"), H.ZeroPaddingHandler()
        )
    register_handler(layers.Resizing, O.SpatialOperationHandler())
    _register_operations()
    _register_applications_layers()


def _register_operations():
    for cls in K.unary_operation_classes():
        register_handler(cls, O.UnaryOperationHandler())
    for cls in K.binary_operation_classes():
        register_handler(
            cls,
            O.BinaryOperationHandler(zero_absorbs=cls.__name__ == "Multiply"),
        )
    for cls in K.reduction_operation_classes():
        register_handler(cls, O.ReductionOperationHandler())
    for cls in K.spatial_operation_classes():
        register_handler(cls, O.SpatialOperationHandler())
    register_handler(
        K.concatenate_operation_class(), O.ConcatenateOperationHandler()
    )
    register_handler(K.reshape_operation_class(), O.ReshapeOperationHandler())
    register_handler(K.pad_operation_class(), O.PadOperationHandler())


def _register_applications_layers():
    found = K.applications_layers()
    for cls in found["passthrough"]:
        register_handler(cls, H.SpatialPassThrough())
    for cls in found["scaled_sum"]:
        register_handler(cls, H.ScaledSumHandler())


_register_builtins()
