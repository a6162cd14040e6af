"""Prunable 2-D convolutions: `Conv2D`, `DepthwiseConv2D`, `SeparableConv2D`."""

import keras

from ekg_keras._api import ekg_export
from ekg_keras.layers.prunable import PrunableMixin


@ekg_export
class PrunableConv2D(PrunableMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a filter mask.

    Args:
        *args: Positional arguments of `keras.layers.Conv2D`.
        mode: `"hard"` (the output is multiplied by the mask) or `"soft"`
            (the mask only marks filters for `zero_masked_weights`).
        **kwargs: Keyword arguments of `keras.layers.Conv2D`.

    Example:

    >>> layer = PrunableConv2D(8, 3)
    >>> y = layer(np.ones((1, 5, 5, 3)))
    >>> layer.filter_mask.shape
    (8,)
    """

    base_layer_class = keras.layers.Conv2D

    def _mask_channels(self, input_shape):
        return self.filters

    def call(self, inputs):
        return self._apply_mask(super().call(inputs))

    def _output_weights(self):
        yield self._kernel, (3,)
        if self.use_bias:
            yield self.bias, (0,)


@ekg_export
class PrunableDepthwiseConv2D(PrunableMixin, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with a mask over its output channels.

    The output has `input_channels * depth_multiplier` channels; output
    channel `c * depth_multiplier + k` comes from input channel `c`.

    Args:
        *args: Positional arguments of `keras.layers.DepthwiseConv2D`.
        mode: `"hard"` or `"soft"`, see `PrunableConv2D`.
        **kwargs: Keyword arguments of `keras.layers.DepthwiseConv2D`.
    """

    base_layer_class = keras.layers.DepthwiseConv2D

    def _mask_channels(self, input_shape):
        axis = -1 if self.data_format == "channels_last" else 1
        return input_shape[axis] * self.depth_multiplier

    def call(self, inputs):
        return self._apply_mask(super().call(inputs))

    def _output_weights(self):
        # The kernel is (kh, kw, channels, depth_multiplier): output channel
        # c * depth_multiplier + k is entry (c, k) of its last two axes.
        yield self.kernel, (2, 3)
        if self.use_bias:
            yield self.bias, (0,)


@ekg_export
class PrunableSeparableConv2D(PrunableMixin, keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` with a mask over its output filters.

    Args:
        *args: Positional arguments of `keras.layers.SeparableConv2D`.
        mode: `"hard"` or `"soft"`, see `PrunableConv2D`.
        **kwargs: Keyword arguments of `keras.layers.SeparableConv2D`.
    """

    base_layer_class = keras.layers.SeparableConv2D

    def _mask_channels(self, input_shape):
        return self.filters

    def call(self, inputs):
        return self._apply_mask(super().call(inputs))

    def _output_weights(self):
        yield self.pointwise_kernel, (3,)
        if self.use_bias:
            yield self.bias, (0,)
