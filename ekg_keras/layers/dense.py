"""Prunable `Dense`."""

import keras

from ekg_keras._api import ekg_export
from ekg_keras._keras_private import kernel_variable
from ekg_keras.layers.prunable import PrunableMixin


@ekg_export
class PrunableDense(PrunableMixin, keras.layers.Dense):
    """`keras.layers.Dense` with a mask over its output units.

    Args:
        *args: Positional arguments of `keras.layers.Dense`.
        mode: `"hard"` (the output is multiplied by the mask) or `"soft"`
            (the mask only marks units for `zero_masked_weights`).
        **kwargs: Keyword arguments of `keras.layers.Dense`.
    """

    base_layer_class = keras.layers.Dense

    def _mask_channels(self, input_shape):
        return self.units

    def call(self, inputs, training=None):
        return self._apply_mask(super().call(inputs, training=training))

    def _output_weights(self):
        yield kernel_variable(self), (1,)
        if self.use_bias:
            yield self.bias, (0,)
