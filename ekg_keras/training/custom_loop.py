"""What a training loop of its own, outside `Model.fit`, needs from Keras.

`fit` builds a compiled model's metric, loss and optimizer variables from
its first batch, and `keras.callbacks.BackupAndRestore` tells it the epoch
a restored run resumes at. A loop of its own (the trainers' `loop.train`,
which runs one compiled step under any `tf.distribute` strategy) does both
through these functions; Keras has no public API for them.
"""

from ekg_keras import _keras_private


def build_from_spec(model, element_spec):
    """Builds a compiled model's metrics, loss and optimizer variables.

    What `fit` does from a first batch, here from the batch's structure
    of `tf.TensorSpec`s, without running a batch (reducing a real batch
    across replicas is what fails on several workers).

    Args:
        model: A compiled `keras.Model`.
        element_spec: The `element_spec` of the training dataset.
    """
    _keras_private.build_for_spec(model, element_spec)


def initial_epoch(model):
    """The epoch a restored run starts at: what a backup callback set in
    `on_train_begin` (as `BackupAndRestore` does for `fit`); 0 if none."""
    return _keras_private.initial_epoch(model)


def set_initial_epoch(model, epoch):
    """Sets the epoch a run starts at: a backup callback restoring a run
    calls it in `on_train_begin`; a loop calls it with 0 before that."""
    _keras_private.set_initial_epoch(model, epoch)
