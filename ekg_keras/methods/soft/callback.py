"""The callback that runs soft pruning's steps during `fit`."""

import keras


class SoftPruningCallback(keras.callbacks.Callback):
    """Runs `SoftFilterPruning.prune_step` at the right epochs.

    `SoftFilterPruning.fit` adds it; it keeps no state of its own (the
    schedule position is in the model's weights), so a resumed run picks up
    where the interrupted one stopped.
    """

    def on_epoch_begin(self, epoch, logs=None):
        # Not on_train_begin: BackupAndRestore restores a run there, and a
        # restored run must not prune its untrained start again.
        model = self.model
        if model.holding:
            return
        if (
            model.prune_before_training
            and int(model.last_pruned_epoch.numpy()) < 0
        ):
            model.prune_step()

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        if model.holding:
            return
        model.completed_epochs.assign_add(1)
        done = int(model.completed_epochs.numpy())
        last = epoch + 1 >= self.params.get("epochs", epoch + 1)
        if done % model.interval_epochs == 0 or last:
            step = model.prune_step()
            if logs is not None:
                logs["pruning_rate"] = step.rate
