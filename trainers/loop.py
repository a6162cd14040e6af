"""A distributed training loop that drives Keras models and callbacks.

Why not `Model.fit`: under `MultiWorkerMirroredStrategy` with more than one
worker, Keras 3's `fit` and `evaluate` fail (the first batch is reduced
eagerly for a symbolic build, and step outputs are reduced with a
concatenation that rejects scalars; see tensorflow/tensorflow#72388). This
loop is what the EKG reference code does instead: `strategy.run` of the
model's own `train_step` inside one `tf.function`, over a dataset the
strategy distributes. Everything else stays Keras: the model's
`train_step` (so `SoftFilterPruning`, `EKGFineTuning` and compiled models
train as with `fit`), its metrics, and callbacks (backups, `TensorBoard`,
progress bars) through `keras.callbacks.CallbackList`.

Evaluation runs on each worker's own device over the whole evaluation set,
outside the strategy, so it needs no collective and every worker reports
the same numbers.
"""

import keras
import numpy as np
import tensorflow as tf

from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.training import custom_loop


def train(
    model,
    strategy,
    dataset,
    *,
    epochs,
    steps_per_epoch,
    element_spec,
    callbacks=(),
    validate=None,
    verbose=1,
    jit_compile=False,
    sync_batchnorm=True,
):
    """Trains a compiled `model` like `fit`, with a custom distributed loop.

    Args:
        model: A compiled `keras.Model` whose variables were created under
            `strategy`.
        strategy: The `tf.distribute.Strategy`.
        dataset: An infinite distributed dataset (from
            `strategy.distribute_datasets_from_function`), or a function
            `epoch -> distributed dataset` giving each epoch its own data
            (so a run resumed at epoch e sees the batches a straight run
            sees there).
        epochs: Epochs to train (a restored run starts at the epoch that
            a backup callback restores through the model's initial
            epoch, as `keras.callbacks.BackupAndRestore` does).
        steps_per_epoch: Batches per epoch.
        element_spec: The per-replica batch's `tf.TensorSpec` structure,
            to build the metrics and optimizer before the first step.
        callbacks: Keras callbacks.
        validate: Optional no-argument callable returning a dict of
            validation results, merged into each epoch's logs as `val_*`.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        jit_compile: Compile the step with XLA.
        sync_batchnorm: Over several replicas, normalize with the
            statistics of the global batch (synchronized batch
            normalization): training then does not depend on how the batch
            is split, and every replica keeps the same moving statistics,
            so all workers end with identical weights.

    Returns:
        The epoch training started at: 0, or the restored epoch.
    """
    synchronized = sync_batchnorm and strategy.num_replicas_in_sync > 1
    with batchnorm_settings(model, synchronized=synchronized or None):
        _build(model, strategy, element_spec)
        callback_list = keras.callbacks.CallbackList(
            list(callbacks),
            add_history=False,
            add_progbar=verbose != 0,
            model=model,
            verbose=verbose,
            epochs=epochs,
            steps=steps_per_epoch,
        )

        step = step_function(model, strategy, jit_compile)
        model.stop_training = False
        # Backups restore the epoch to start at here, as with `fit`.
        custom_loop.set_initial_epoch(model, 0)
        callback_list.on_train_begin()
        start = custom_loop.initial_epoch(model)
        per_epoch = callable(dataset)
        iterator = None if per_epoch else iter(dataset)
        logs = {}
        for epoch in range(start, epochs):
            if per_epoch:
                iterator = iter(dataset(epoch))
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for batch in range(steps_per_epoch):
                callback_list.on_train_batch_begin(batch)
                outputs = step(next(iterator))
                # Reading the results waits for the step: only for the bar.
                callback_list.on_train_batch_end(
                    batch,
                    _local_logs(strategy, outputs) if verbose == 1 else {},
                )
            with strategy.scope():
                logs = _to_floats(model.get_metrics_result())
            if validate is not None:
                logs.update({f"val_{k}": v for k, v in validate().items()})
            callback_list.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        callback_list.on_train_end(logs)
        return start


def step_function(model, strategy, jit_compile=False):
    """The compiled, replicated train step: `strategy.run(model.train_step)`
    in one `tf.function`, compiled with XLA when `jit_compile`."""

    @tf.function(jit_compile=jit_compile)
    def step(batch):
        return strategy.run(model.train_step, args=(batch,))

    return step


def _build(model, strategy, element_spec):
    """Creates the metric, loss and optimizer variables under `strategy`.

    `fit` does this from a first batch that it reduces across replicas,
    which is what fails on several workers; the batch's spec is enough.
    """
    with strategy.scope():
        custom_loop.build_from_spec(model, element_spec)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)


def _local_logs(strategy, outputs):
    """The first local replica's step results, for the progress bar."""
    local = strategy.experimental_local_results(outputs)[0]
    return _to_floats(local)


def _to_floats(results):
    return {
        name: float(np.asarray(value))
        for name, value in results.items()
        if np.size(value) == 1
    }


class Evaluator:
    """Top-1 and top-5 accuracy of a network, in inference mode.

    Runs on this process's device, outside any strategy, over the whole
    data set; the compiled forward pass is kept between calls.

    Args:
        network: The Keras model to evaluate (logits or probabilities out).
        num_classes: Number of classes (top-k uses k = min(5, classes)).
    """

    def __init__(self, network, num_classes):
        self.network = network
        self.k = min(5, num_classes)
        shape = tuple(network.inputs[0].shape[1:])
        # One trace, whatever the size of the last batch.
        self._hits = tf.function(
            self._batch_hits,
            input_signature=[
                tf.TensorSpec((None, *shape), network.inputs[0].dtype),
                tf.TensorSpec((None,), tf.int32),
            ],
        )

    def _batch_hits(self, images, labels):
        logits = tf.cast(self.network(images, training=False), tf.float32)
        labels = tf.cast(labels, tf.int32)
        top1 = tf.math.in_top_k(labels, logits, 1)
        topk = tf.math.in_top_k(labels, logits, self.k)
        return tf.stack(
            [
                tf.reduce_sum(tf.cast(top1, tf.int64)),
                tf.reduce_sum(tf.cast(topk, tf.int64)),
                tf.size(labels, tf.int64),
            ]
        )

    def __call__(self, dataset):
        """`{"top1": ..., "top5": ...}` over `(images, labels)` batches.

        Raises:
            ValueError: If `dataset` is empty.
        """
        totals = np.zeros(3, dtype=np.int64)
        for images, labels in dataset:
            totals += self._hits(images, tf.cast(labels, tf.int32)).numpy()
        if totals[2] == 0:
            raise ValueError("The evaluation data set is empty.")
        return {
            "top1": float(totals[0] / totals[2]),
            "top5": float(totals[1] / totals[2]),
        }
