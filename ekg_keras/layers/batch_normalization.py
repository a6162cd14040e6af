"""Prunable `BatchNormalization`."""

import keras

from ekg_keras._api import ekg_export
from ekg_keras.layers.prunable import PrunableMixin


@ekg_export
class PrunableBatchNormalization(
    PrunableMixin, keras.layers.BatchNormalization
):
    """`keras.layers.BatchNormalization` with a channel mask.

    Batch normalization of a zero channel is not zero (it is `beta` in
    training mode and `beta - gamma * mean / std` in inference mode), so the
    normalization after a masked convolution carries the same mask.

    Args:
        *args: Positional arguments of `keras.layers.BatchNormalization`.
        mode: `"hard"` (the output is multiplied by the mask) or `"soft"`
            (the mask is informational; soft pruning leaves BN weights
            alone, as SFP does).
        **kwargs: Keyword arguments of `keras.layers.BatchNormalization`.
    """

    base_layer_class = keras.layers.BatchNormalization

    def _mask_channels(self, input_shape):
        return input_shape[self.axis]

    @property
    def channel_axis(self):
        return self.axis

    def call(self, inputs, training=None, mask=None):
        outputs = super().call(inputs, training=training, mask=mask)
        return self._apply_mask(outputs)

    def _output_weights(self):
        if self.scale:
            yield self.gamma, (0,)
        if self.center:
            yield self.beta, (0,)
