"""Handlers per layer class; users register their own for custom layers."""

import keras

from ekg_keras.graph import handlers as H
from ekg_keras.graph._keras_graph import is_graph_model

_REGISTRY = {}

_UNKNOWN = H.UnknownHandler()
_MODEL = H.ModelHandler()


def register_handler(layer_class, handler):
    """Registers how the channel graph treats `layer_class` and subclasses.

    Args:
        layer_class: A Keras layer class.
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
    _REGISTRY[layer_class] = handler


def register_passthrough(layer_class):
    """Registers `layer_class` as channel-wise and weightless."""
    register_handler(layer_class, H.PassThrough())


def get_handler(layer):
    """The handler for `layer`, looked up along its class hierarchy."""
    if is_graph_model(layer):
        return _MODEL
    for cls in type(layer).__mro__:
        handler = _REGISTRY.get(cls)
        if handler is not None:
            return handler
    return _UNKNOWN


def _register_builtins():
    layers = keras.layers
    register_handler(layers.InputLayer, H.InputHandler())
    register_handler(layers.Conv2D, H.Conv2DHandler())
    register_handler(layers.Dense, H.DenseHandler())
    register_handler(layers.SeparableConv2D, H.SeparableConv2DHandler())
    register_handler(layers.DepthwiseConv2D, H.DepthwiseConv2DHandler())
    register_handler(layers.BatchNormalization, H.BatchNormalizationHandler())
    register_handler(layers.Activation, H.ActivationHandler())
    register_handler(layers.Rescaling, H.RescalingHandler())
    register_handler(layers.Concatenate, H.ConcatenateHandler())
    register_handler(layers.Flatten, H.FlattenHandler())
    register_handler(layers.Reshape, H.ReshapeHandler())
    for merge in (
        layers.Add,
        layers.Subtract,
        layers.Multiply,
        layers.Maximum,
        layers.Minimum,
        layers.Average,
    ):
        register_handler(merge, H.MergeHandler())
    for name in (
        "ReLU",
        "LeakyReLU",
        "ELU",
        "Identity",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
    ):
        cls = getattr(layers, name, None)
        if cls is not None:
            register_passthrough(cls)


_register_builtins()
