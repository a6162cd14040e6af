"""Keras callbacks the trainers add to every training run."""

import json
import os
import shutil

import keras
import tensorflow as tf

from ekg_keras import flops as flops_lib
from ekg_keras.graph import trace
from ekg_keras.graph.expansion import expand
from ekg_keras.layers import prunable_layers
from ekg_keras.training import custom_loop
from ekg_keras.training import inner_model


def network_of(model):
    """The network a training wrapper trains (or the model itself), as its
    class declares it (`ekg_keras.training.inner_model`)."""
    return inner_model(model)


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
        input_shape: The image size FLOPs are counted at (needed when the
            model takes images of any size), or None for the model's own.
    """

    def __init__(self, log_dir, full_macs, epoch_offset=0, input_shape=None):
        super().__init__()
        self.log_dir = log_dir
        self.full_macs = float(full_macs)
        self.epoch_offset = epoch_offset
        self.input_shape = input_shape
        self._writer = None
        self._graph = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)
        network = network_of(self.model)
        if prunable_layers(network):
            # The layers (and their masks) are shared with `network`.
            counted = expand(network, self.input_shape, warn_opaque=False).model
            self._graph = trace(counted, warn=False)
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


class Backup(keras.callbacks.Callback):
    """Backs up training at every epoch end; a restarted run resumes there.

    Like `keras.callbacks.BackupAndRestore` (weights, optimizer state and
    the epoch, restored in `on_train_begin` by setting the model's initial
    epoch), but every write is atomic: the weights go to a new file, then
    `backup.json` is replaced to name it, then the older file is removed. A
    process killed at any moment, even while writing, leaves the last
    complete backup (Keras' callback writes its only copy in place, and a
    kill during the first write leaves a run that cannot resume). The
    backup is deleted when training ends, unless `delete_when_done` is
    False (then whoever owns the directory deletes it later).

    Args:
        directory: Where the backup lives (created when first written).
        every_steps: Also back up every this many batches (0: epochs only);
            a run resumed from such a backup restarts that epoch with the
            weights of the backup, as `BackupAndRestore` does.
        delete_when_done: Delete the backup when training ends. A run of
            several trainings in one stage keeps each one's final backup,
            so a restart does not train a finished one again.
    """

    def __init__(self, directory, every_steps=0, delete_when_done=True):
        super().__init__()
        self.directory = directory
        self.every_steps = every_steps
        self.delete_when_done = delete_when_done
        self._epoch = 0
        self._writes = 0

    @property
    def _state_path(self):
        return os.path.join(self.directory, "backup.json")

    def on_train_begin(self, logs=None):
        if not os.path.exists(self._state_path):
            return
        with open(self._state_path) as handle:
            state = json.load(handle)
        self.model.load_weights(os.path.join(self.directory, state["weights"]))
        custom_loop.set_initial_epoch(self.model, state["epoch"])
        self._writes = state["writes"]

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.every_steps and (batch + 1) % self.every_steps == 0:
            self._save(self._epoch)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1)

    def on_train_end(self, logs=None):
        if self.delete_when_done:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _save(self, epoch):
        os.makedirs(self.directory, exist_ok=True)
        self._writes += 1
        name = f"backup-{self._writes}.weights.h5"
        self.model.save_weights(os.path.join(self.directory, name))
        state = {"epoch": epoch, "weights": name, "writes": self._writes}
        temporary = f"{self._state_path}.tmp"
        with open(temporary, "w") as handle:
            json.dump(state, handle)
        os.replace(temporary, self._state_path)
        for old in os.listdir(self.directory):
            if old.endswith(".weights.h5") and old != name:
                os.remove(os.path.join(self.directory, old))
