"""The one place (with `graph/_keras_graph.py`, its functional-graph half)
that touches private Keras API.

Keras 3 has no public way to do these few things, so they are wrapped here:
a Keras release that changes them breaks this file, not the library.
"""

import tensorflow as tf


def kernel_variable(layer):
    """The kernel *variable* of a `Conv` / `Dense` layer.

    The public `kernel` property returns a computed tensor when LoRA is on;
    masks must be written into the variable itself.
    """
    return layer._kernel


def track_training_loss(model, loss, x):
    """Adds a train step's loss to `model`'s loss metric, as Keras' own
    TensorFlow `train_step` does (unscaled for distribution, weighted by
    the batch size)."""
    from keras.src.losses import loss as loss_module

    batch = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
    model._loss_tracker.update_state(
        loss_module.unscale_loss_for_distribution(loss), sample_weight=batch
    )


def initial_epoch(model):
    """The epoch a restored run starts at, as `BackupAndRestore` sets it
    (`model._initial_epoch`); 0 when nothing was restored."""
    return int(getattr(model, "_initial_epoch", None) or 0)


def set_initial_epoch(model, epoch):
    """Sets the epoch a run starts at (what `BackupAndRestore` does)."""
    model._initial_epoch = epoch


def build_for_spec(model, element_spec):
    """Builds a compiled model's metrics, loss and optimizer variables from
    a batch's `tf.TensorSpec` structure, without running a batch."""
    model._symbolic_build(data_batch=element_spec)
