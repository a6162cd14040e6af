"""Keras callbacks the trainers add to every `fit`."""

import keras
import tensorflow as tf

from ekg_keras import flops as flops_lib
from ekg_keras.graph import trace
from ekg_keras.layers import prunable_layers


def network_of(model):
    """The network a training wrapper trains (or the model itself)."""
    for attribute in ("network", "student"):
        inner = getattr(model, attribute, None)
        if isinstance(inner, keras.Model):
            return inner
    return model


class PruningSummaries(keras.callbacks.Callback):
    """TensorBoard scalars at each epoch end: learning rate, FLOPs, widths.

    Writes `learning_rate`, `pruning/flops_fraction` (MACs kept relative to
    `full_macs`) and `widths/<layer>` (channels kept by each masked layer),
    beside the loss and accuracy of `keras.callbacks.TensorBoard`.

    Args:
        log_dir: Directory of the event files.
        full_macs: MACs of the unpruned model, the denominator.
        epoch_offset: Added to the epoch number, so stages that follow each
            other plot on one axis.
    """

    def __init__(self, log_dir, full_macs, epoch_offset=0):
        super().__init__()
        self.log_dir = log_dir
        self.full_macs = float(full_macs)
        self.epoch_offset = epoch_offset
        self._writer = None
        self._graph = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)
        network = network_of(self.model)
        if prunable_layers(network):
            self._graph = trace(network, warn=False)
            self._counter = flops_lib.FlopsCounter(self._graph)

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + self.epoch_offset
        with self._writer.as_default(step=step):
            rate = self.model.optimizer.learning_rate
            tf.summary.scalar("learning_rate", float(rate))
            for name, value in self.widths().items():
                tf.summary.scalar(f"widths/{name}", value)
            fraction = self.flops_fraction()
            if fraction is not None:
                tf.summary.scalar("pruning/flops_fraction", fraction)
        self._writer.flush()

    def flops_fraction(self):
        """The kept MACs over the unpruned model's, or None if unmasked."""
        if self._graph is None:
            return None
        keep = flops_lib.keep_counts(self._graph)
        return self._counter.macs(keep) / self.full_macs

    def widths(self):
        """Channels kept by each masked convolution or dense layer."""
        return {
            layer.name: float(tf.reduce_sum(layer.filter_mask))
            for layer in prunable_layers(network_of(self.model))
            if layer.filter_mask is not None
            and not isinstance(layer, keras.layers.BatchNormalization)
        }

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
