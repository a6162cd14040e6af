"""Re-estimating batch-normalization statistics after pruning."""

import contextlib

import keras
import numpy as np

from ekg_keras import _backend as backend
from ekg_keras import _logging as log
from ekg_keras import validation
from ekg_keras._backend import tf
from ekg_keras._inputs import features_only


def batchnorm_layers(model):
    """Every `BatchNormalization` layer of `model`, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(batchnorm_layers(layer))
    return found


@contextlib.contextmanager
def batchnorm_settings(model, **settings):
    """Temporarily sets attributes of every batch normalization of `model`.

    For example `momentum=1.0` keeps the moving statistics while the model
    runs in training mode, `synchronized=True` normalizes with statistics
    over all replicas. A setting given as None is left alone. Settings read
    when a function is traced apply to functions traced inside the block.
    """
    settings = {k: v for k, v in settings.items() if v is not None}
    layers = batchnorm_layers(model)
    saved = [{k: getattr(layer, k) for k in settings} for layer in layers]
    for layer in layers:
        for name, value in settings.items():
            setattr(layer, name, value)
    try:
        yield
    finally:
        for layer, values in zip(layers, saved):
            for name, value in values.items():
                setattr(layer, name, value)


def recalibrate_batchnorm(model, data, steps=None, verbose=0):
    """Re-estimates the moving statistics of every batch normalization.

    Runs forward passes in training mode (each normalization uses its batch
    statistics, as during training) and sets each layer's moving mean and
    variance to the exact average of its batch means and variances over the
    batches seen, not an exponential moving average. No other weight
    changes. Use it after pruning, when the statistics learned on the full
    network no longer fit what each layer sees.

    Under a `tf.distribute` strategy (the model's, or the one in scope)
    each replica normalizes its share of the batch, and the statistics are
    averaged over replicas and batches. On JAX and PyTorch the batches run
    eagerly, one after another.

    Args:
        model: A Keras model (masked or plain).
        data: A `tf.data.Dataset` of input batches or `(inputs, labels)`
            batches, or an array of inputs.
        steps: Number of batches to use (default: all of `data`).
        verbose: 1 prints one line when done.

    Returns:
        The number of batches used.

    Raises:
        ValueError: If `data` yields no batch, or its images do not fit the
            model's input (checked before any statistic changes).
        TypeError: If `data` does not hold numbers.
        ekg_keras.validation.NonFiniteDataError: If an image holds NaN or
            infinity, or the statistics overflow (a `ValueError`; the
            statistics are left unchanged).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    # Forward passes move the statistics as they go: on any error they
    # are put back, so a refused recalibration changes nothing.
    saved = [
        (
            keras.ops.convert_to_numpy(layer.moving_mean),
            keras.ops.convert_to_numpy(layer.moving_variance),
        )
        for layer in layers
    ]
    try:
        with validation.reported_input_errors():
            return _recalibrate(model, layers, data, steps, verbose)
    except BaseException:
        for layer, (mean, variance) in zip(layers, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise


def _recalibrate(model, layers, data, steps, verbose):
    data = validation.check_images(data, model)
    # With momentum 0 each forward pass leaves exactly its batch's
    # statistics in the moving averages; they are summed here.
    with batchnorm_settings(model, momentum=0.0):
        if backend.is_tensorflow():
            sums, batches = _distributed_sums(model, layers, data, steps)
        else:
            sums, batches = _eager_sums(model, layers, data, steps)
    if batches == 0:
        raise ValueError("`data` is empty: it yielded no batches.")
    for (mean, variance), layer in zip(sums, layers):
        if not (np.isfinite(mean).all() and np.isfinite(variance).all()):
            raise validation.NonFiniteDataError(
                f"Batch normalization '{layer.name}' got non-finite "
                "statistics from finite `data`: its values overflow float32 "
                "in the network. Normalize the inputs (e.g. to [0, 1])."
            )
    for (mean, variance), layer in zip(sums, layers):
        layer.moving_mean.assign(mean / batches)
        layer.moving_variance.assign(variance / batches)
    if verbose:
        log.info(
            f"ekg_keras.recalibrate_batchnorm: {len(layers)} layers, "
            f"{batches} batches"
        )
    return batches


def _distributed_sums(model, layers, data, steps):
    """Per-layer sums of batch means and variances over `data`, each batch
    run by `tf.function` under the model's (or the in-scope) strategy."""
    dataset = features_only(data)
    if steps is not None:
        dataset = dataset.take(steps)
    strategy = getattr(model, "distribute_strategy", None) or (
        tf.distribute.get_strategy()
    )
    sums = _zero_sums(layers)
    batches = 0
    forward = tf.function(lambda x: _batch_statistics(model, layers, x))
    for inputs in strategy.experimental_distribute_dataset(dataset):
        per_replica = strategy.run(forward, args=(inputs,))
        for total, values in zip(sums, per_replica):
            for i, value in enumerate(values):
                total[i] += strategy.reduce(
                    tf.distribute.ReduceOp.MEAN, value, axis=None
                ).numpy()
        batches += 1
    return sums, batches


def _eager_sums(model, layers, data, steps):
    """`_distributed_sums` on JAX or PyTorch: eager forward passes over
    NumPy batches (no `tf.distribute` there)."""
    sums = _zero_sums(layers)
    batches = 0
    for inputs in _numpy_batches(data):
        if steps is not None and batches >= steps:
            break
        model(inputs, training=True)
        for total, layer in zip(sums, layers):
            total[0] += keras.ops.convert_to_numpy(layer.moving_mean)
            total[1] += keras.ops.convert_to_numpy(layer.moving_variance)
        batches += 1
    return sums, batches


def _numpy_batches(data, batch_size=64):
    """Input batches as NumPy arrays, from what `features_only` takes."""
    if backend.is_dataset(data):
        yield from features_only(data).as_numpy_iterator()
        return
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = data[0]  # (x, y), as `features_only` reads it.
    data = np.asarray(data)
    for start in range(0, len(data), batch_size):
        yield data[start : start + batch_size]


def _zero_sums(layers):
    return [
        [
            np.zeros(layer.moving_mean.shape),
            np.zeros(layer.moving_variance.shape),
        ]
        for layer in layers
    ]


def _batch_statistics(model, layers, inputs):
    """Runs `model` in training mode and returns, per normalization, the
    batch mean and variance its momentum-0 update left behind (read in the
    replica, so each replica reports its own share of the batch)."""
    model(inputs, training=True)
    return [
        (
            tf.identity(layer.moving_mean.value),
            tf.identity(layer.moving_variance.value),
        )
        for layer in layers
    ]
