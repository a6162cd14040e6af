"""Prunable transposed convolutions: `Conv1DTranspose` ... `Conv3DTranspose`."""

import keras

from ekg_keras._api import ekg_export
from ekg_keras.layers.prunable import PrunableMixin


class _TransposeFilterMask(PrunableMixin):
    """A mask over `filters`; the kernel is (*k, filters, input channels)."""

    def _mask_channels(self, input_shape):
        return self.filters

    def call(self, inputs):
        return self._apply_mask(super().call(inputs))

    def _output_weights(self):
        yield self.kernel, (len(self.kernel.shape) - 2,)
        if self.use_bias:
            yield self.bias, (0,)


@ekg_export
class PrunableConv1DTranspose(
    _TransposeFilterMask, keras.layers.Conv1DTranspose
):
    """`keras.layers.Conv1DTranspose` with a filter mask.

    Args:
        *args: Positional arguments of `keras.layers.Conv1DTranspose`.
        mode: `"hard"` (the output is multiplied by the mask) or `"soft"`
            (the mask only marks filters for `zero_masked_weights`).
        **kwargs: Keyword arguments of `keras.layers.Conv1DTranspose`.
    """

    base_layer_class = keras.layers.Conv1DTranspose


@ekg_export
class PrunableConv2DTranspose(
    _TransposeFilterMask, keras.layers.Conv2DTranspose
):
    """`keras.layers.Conv2DTranspose` with a filter mask.

    Args:
        *args: Positional arguments of `keras.layers.Conv2DTranspose`.
        mode: `"hard"` or `"soft"`, see `PrunableConv1DTranspose`.
        **kwargs: Keyword arguments of `keras.layers.Conv2DTranspose`.
    """

    base_layer_class = keras.layers.Conv2DTranspose


@ekg_export
class PrunableConv3DTranspose(
    _TransposeFilterMask, keras.layers.Conv3DTranspose
):
    """`keras.layers.Conv3DTranspose` with a filter mask.

    Args:
        *args: Positional arguments of `keras.layers.Conv3DTranspose`.
        mode: `"hard"` or `"soft"`, see `PrunableConv1DTranspose`.
        **kwargs: Keyword arguments of `keras.layers.Conv3DTranspose`.
    """

    base_layer_class = keras.layers.Conv3DTranspose
