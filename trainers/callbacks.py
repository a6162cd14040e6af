"""Keras callbacks the trainers add to every training run."""

import os
import shutil

import keras
import tensorflow as tf

from ekg_keras import _logging
from ekg_keras import flops as flops_lib
from ekg_keras.graph import trace
from ekg_keras.graph.expansion import expand
from ekg_keras.layers import prunable_layers
from ekg_keras.training import custom_loop
from ekg_keras.training import inner_model
from trainers import files


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
    `backup.json` is replaced to name it, then older files are removed. A
    process killed at any moment, even while writing, leaves the last
    complete backup (Keras' callback writes its only copy in place, and a
    kill during the first write leaves a run that cannot resume). The
    backup is deleted when training ends, unless `delete_when_done` is
    False (then whoever owns the directory deletes it later).

    `backup.json` (with its own checksum) records the size and SHA-256 of
    the newest weights file and of the one before it, which is kept too. A
    restart checks them before loading: a damaged newest backup resumes
    from the one before it; with none intact, or `backup.json` damaged,
    training starts from its first epoch, as a run killed before its first
    backup does. Each case is said in one line naming the file.

    Args:
        directory: Where the backup lives (created when first written).
        every_steps: Also back up every this many batches (0: epochs only);
            a run resumed from such a backup restarts that epoch with the
            weights of the backup, as `BackupAndRestore` does.
        delete_when_done: Delete the backup when training ends. A run of
            several trainings in one stage keeps each one's final backup,
            so a restart does not train a finished one again.
        say: Called with the one-line message about a damaged backup
            (default: printed).
    """

    def __init__(
        self, directory, every_steps=0, delete_when_done=True, say=None
    ):
        super().__init__()
        self.directory = directory
        self.every_steps = every_steps
        self.delete_when_done = delete_when_done
        self.say = say or _logging.info
        self._epoch = 0
        self._writes = 0
        # The newest backup written or resumed from (kept at the next).
        self._latest = None

    @property
    def _state_path(self):
        return os.path.join(self.directory, "backup.json")

    def on_train_begin(self, logs=None):
        if not os.path.exists(self._state_path):
            return
        try:
            state = files.load_json(self._state_path)
            backups = _backups_in(state, self._state_path)
        except files.DamagedFileError as error:
            self._start_over(error)
            return
        damaged = None
        for backup in backups:
            path = os.path.join(self.directory, backup["weights"])
            record = backup if "sha256" in backup else None
            try:
                files.read(path, self.model.load_weights, record)
            except files.DamagedFileError as error:
                damaged = damaged or error
                continue
            if damaged is not None:
                self.say(
                    f"{damaged.path} is damaged ({damaged.reason}): resumed"
                    f" from the backup before it, {path} (epoch "
                    f"{backup['epoch']})"
                )
            custom_loop.set_initial_epoch(self.model, backup["epoch"])
            self._writes = state["writes"]
            self._latest = backup
            return
        self._start_over(damaged)

    def _start_over(self, error):
        self.say(
            f"{error.path} is damaged ({error.reason}) and no intact backup "
            "is left: this training starts again from its first epoch"
        )
        shutil.rmtree(self.directory, ignore_errors=True)

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
        path = os.path.join(self.directory, name)
        # A new file, named in backup.json only once it is whole.
        self.model.save_weights(path)
        latest = {"epoch": epoch, "weights": name, **files.fingerprint(path)}
        previous = self._latest
        files.dump_json(
            self._state_path,
            {**latest, "writes": self._writes, "previous": previous},
        )
        self._latest = latest
        keep = {name, previous["weights"] if previous else None}
        for old in os.listdir(self.directory):
            if old.endswith(".weights.h5") and old not in keep:
                os.remove(os.path.join(self.directory, old))


def _backups_in(state, path):
    """The backups `backup.json` names, newest first."""
    backups = [state]
    if state.get("previous") is not None:
        backups.append(state["previous"])
    valid = isinstance(state.get("writes"), int) and all(
        isinstance(b, dict)
        and isinstance(b.get("epoch"), int)
        and isinstance(b.get("weights"), str)
        for b in backups
    )
    if not valid:
        raise files.DamagedFileError(path, "not a backup record")
    return backups
