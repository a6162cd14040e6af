"""Prunable convolutions: `Conv1D/2D/3D` (grouped too), `DepthwiseConv1D/2D`,
`SeparableConv1D/2D`."""

import keras

from ekg_keras._api import ekg_export
from ekg_keras._keras_private import kernel_variable
from ekg_keras.layers.prunable import PrunableMixin


class _FilterMask(PrunableMixin):
    """A mask over `filters`; the kernel's last axis is the filter."""

    def _mask_channels(self, input_shape):
        return self.filters

    def call(self, inputs):
        return self._apply_mask(super().call(inputs))

    def _output_weights(self):
        kernel = kernel_variable(self)
        yield kernel, (len(kernel.shape) - 1,)
        if self.use_bias:
            yield self.bias, (0,)


@ekg_export
class PrunableConv1D(_FilterMask, keras.layers.Conv1D):
    """`keras.layers.Conv1D` with a filter mask.

    Args:
        *args: Positional arguments of `keras.layers.Conv1D`.
        mode: `"hard"` (the output is multiplied by the mask) or `"soft"`
            (the mask only marks filters for `zero_masked_weights`).
        **kwargs: Keyword arguments of `keras.layers.Conv1D`.
    """

    base_layer_class = keras.layers.Conv1D


@ekg_export
class PrunableConv2D(_FilterMask, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with a filter mask.

    A grouped convolution (`groups > 1`) has the same mask over its
    filters; the channel graph removes its groups of filters whole.

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


@ekg_export
class PrunableConv3D(_FilterMask, keras.layers.Conv3D):
    """`keras.layers.Conv3D` with a filter mask.

    Args:
        *args: Positional arguments of `keras.layers.Conv3D`.
        mode: `"hard"` or `"soft"`, see `PrunableConv2D`.
        **kwargs: Keyword arguments of `keras.layers.Conv3D`.
    """

    base_layer_class = keras.layers.Conv3D


class _DepthwiseMask(PrunableMixin):
    """A mask over `input channels * depth_multiplier` outputs."""

    def _mask_channels(self, input_shape):
        axis = -1 if self.data_format == "channels_last" else 1
        return input_shape[axis] * self.depth_multiplier

    def call(self, inputs):
        return self._apply_mask(super().call(inputs))

    def _output_weights(self):
        # The kernel is (*k, channels, depth_multiplier): output channel
        # c * depth_multiplier + k is entry (c, k) of its last two axes.
        rank = len(self.kernel.shape)
        yield self.kernel, (rank - 2, rank - 1)
        if self.use_bias:
            yield self.bias, (0,)


@ekg_export
class PrunableDepthwiseConv1D(_DepthwiseMask, keras.layers.DepthwiseConv1D):
    """`keras.layers.DepthwiseConv1D` with a mask over its output channels.

    Args:
        *args: Positional arguments of `keras.layers.DepthwiseConv1D`.
        mode: `"hard"` or `"soft"`, see `PrunableConv2D`.
        **kwargs: Keyword arguments of `keras.layers.DepthwiseConv1D`.
    """

    base_layer_class = keras.layers.DepthwiseConv1D


@ekg_export
class PrunableDepthwiseConv2D(_DepthwiseMask, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with a mask over its output channels.

    The output has `input_channels * depth_multiplier` channels; output
    channel `c * depth_multiplier + k` comes from input channel `c`.

    Args:
        *args: Positional arguments of `keras.layers.DepthwiseConv2D`.
        mode: `"hard"` or `"soft"`, see `PrunableConv2D`.
        **kwargs: Keyword arguments of `keras.layers.DepthwiseConv2D`.
    """

    base_layer_class = keras.layers.DepthwiseConv2D


class _PointwiseMask(PrunableMixin):
    """A mask over the filters of the pointwise part."""

    def _mask_channels(self, input_shape):
        return self.filters

    def call(self, inputs):
        return self._apply_mask(super().call(inputs))

    def _output_weights(self):
        yield self.pointwise_kernel, (len(self.pointwise_kernel.shape) - 1,)
        if self.use_bias:
            yield self.bias, (0,)


@ekg_export
class PrunableSeparableConv1D(_PointwiseMask, keras.layers.SeparableConv1D):
    """`keras.layers.SeparableConv1D` with a mask over its output filters.

    Args:
        *args: Positional arguments of `keras.layers.SeparableConv1D`.
        mode: `"hard"` or `"soft"`, see `PrunableConv2D`.
        **kwargs: Keyword arguments of `keras.layers.SeparableConv1D`.
    """

    base_layer_class = keras.layers.SeparableConv1D


@ekg_export
class PrunableSeparableConv2D(_PointwiseMask, keras.layers.SeparableConv2D):
    """`keras.layers.SeparableConv2D` with a mask over its output filters.

    Args:
        *args: Positional arguments of `keras.layers.SeparableConv2D`.
        mode: `"hard"` or `"soft"`, see `PrunableConv2D`.
        **kwargs: Keyword arguments of `keras.layers.SeparableConv2D`.
    """

    base_layer_class = keras.layers.SeparableConv2D
