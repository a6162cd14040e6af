"""Prunable `LayerNormalization` over the channel axis."""

import keras
from keras import ops

from ekg_keras._api import ekg_export
from ekg_keras.layers.prunable import PrunableMixin


@ekg_export
class PrunableLayerNormalization(
    PrunableMixin, keras.layers.LayerNormalization
):
    """`keras.layers.LayerNormalization` over the channels, with a mask.

    Layer normalization averages over all channels, so removing channels
    changes what the others become. In hard mode this layer therefore
    normalizes over the channels its mask keeps (mean and variance of
    those only) and outputs zero for the others: exactly what the slim
    `LayerNormalization` over the kept channels computes. With an all-ones
    mask it equals `LayerNormalization`. Only a normalization over the last
    axis alone is wrapped (`wraps`).

    Args:
        *args: Positional arguments of `keras.layers.LayerNormalization`.
        mode: `"hard"` (normalize over kept channels, zero the others) or
            `"soft"` (the forward pass ignores the mask).
        **kwargs: Keyword arguments of `keras.layers.LayerNormalization`.
    """

    base_layer_class = keras.layers.LayerNormalization

    @classmethod
    def wraps(cls, layer):
        """Whether `layer` normalizes over its input's last axis alone."""
        axis = layer.axis
        axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        if axes == [-1]:
            return True
        rank = len(layer.input.shape) if _has_input(layer) else None
        return rank is not None and axes == [rank - 1]

    def _mask_channels(self, input_shape):
        return input_shape[-1]

    def call(self, inputs):
        if self.mode != "hard":
            return super().call(inputs)
        x = ops.cast(inputs, "float32")
        mask = ops.cast(self.filter_mask, x.dtype)
        live = ops.maximum(ops.sum(mask), 1.0)
        mean = ops.sum(x * mask, axis=-1, keepdims=True) / live
        centred = (x - mean) * mask
        variance = ops.sum(ops.square(centred), axis=-1, keepdims=True) / live
        inverse = ops.rsqrt(variance + self.epsilon)
        if self.rms_scaling:
            outputs = x * inverse
        else:
            outputs = centred * inverse
        if self.gamma is not None:
            outputs = outputs * ops.cast(self.gamma, x.dtype)
        if self.beta is not None:
            outputs = outputs + ops.cast(self.beta, x.dtype)
        return ops.cast(outputs * mask, self.compute_dtype)

    def _output_weights(self):
        if self.gamma is not None:
            yield self.gamma, (0,)
        if self.beta is not None:
            yield self.beta, (0,)


def _has_input(layer):
    try:
        layer.input  # noqa: B018 - raises for unbuilt or shared layers
    except (AttributeError, ValueError):
        return False
    return True
