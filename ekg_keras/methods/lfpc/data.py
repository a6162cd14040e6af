"""The sampler's data: a random part of the training data, in batches."""

import numpy as np

from ekg_keras._backend import tf
from ekg_keras._inputs import as_dataset
from ekg_keras._inputs import check_labels
from ekg_keras.numerics import check_finite_data


def validation_split(
    data, num_classes, fraction=0.5, batch_size=256, seed=0, buffer=10_000
):
    """A random `fraction` of the training data as the sampler's batches.

    The thesis trains the criteria sampler on a random half of the training
    set (Sec. 6.4.1). Samples are drawn once with `seed` and kept in one
    fixed shuffled order, so every epoch (and a resumed run) sees the same
    batches. Arrays are split exactly; a dataset is read once to draw each
    sample with probability `fraction` and count them (its batches may
    carry sample ids, `({"image": x, "id": id}, y)`; the ids are dropped),
    and is shuffled with a buffer of `buffer` samples.

    Args:
        data: An `(x, y)` tuple of arrays, or a `tf.data.Dataset` of
            `(inputs, labels)` batches.
        num_classes: The model's outputs (labels must lie below).
        fraction: The share of the samples to keep, in (0, 1].
        batch_size: Batch size (at most the number of samples drawn).
        seed: Seed of the draw and of the order.
        buffer: Shuffle buffer (samples) for a dataset.

    Returns:
        `(batches, samples)`: a `tf.data.Dataset` of `(images, labels)`
        batches with a known cardinality, and the number of samples.

    Raises:
        ValueError: For data without labels, empty data or a draw with no
            sample, or labels out of range.
        NonFiniteError: For array inputs holding NaN or infinity.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2:
        dataset, samples = _from_arrays(data, num_classes, fraction, seed)
    else:
        dataset, samples = _from_dataset(
            data, num_classes, fraction, seed, buffer
        )
    batch = min(int(batch_size), samples)
    batches = -(-samples // batch)
    return (
        dataset.batch(batch)
        .apply(tf.data.experimental.assert_cardinality(batches))
        .prefetch(tf.data.AUTOTUNE)
    ), samples


def _from_arrays(data, num_classes, fraction, seed):
    x, y = (np.asarray(a) for a in data)
    if len(x) == 0:
        raise ValueError("`data` is empty: it holds no samples.")
    count = max(1, round(fraction * len(x)))
    chosen = np.random.default_rng(seed).permutation(len(x))[:count]
    check_labels(y[chosen], num_classes)
    check_finite_data(x[chosen])
    return tf.data.Dataset.from_tensor_slices((x[chosen], y[chosen])), count


def _from_dataset(data, num_classes, fraction, seed, buffer):
    samples = as_dataset(data).unbatch().map(_images_and_labels)
    drawn = (
        samples.enumerate()
        .filter(
            lambda index, _: (
                tf.random.stateless_uniform(
                    (), seed=tf.stack([tf.constant(seed, tf.int64), index])
                )
                < fraction
            )
        )
        .map(lambda _, element: element)
    )
    count, low, high = drawn.reduce(
        (np.int64(0), np.int64(np.iinfo(np.int64).max), np.int64(-1)),
        lambda state, element: (
            state[0] + 1,
            tf.minimum(state[1], tf.cast(element[1], tf.int64)),
            tf.maximum(state[2], tf.cast(element[1], tf.int64)),
        ),
    )
    count = int(count)
    if count == 0:
        raise ValueError(
            f"The sampler's split of `data` is empty: drawing a fraction "
            f"{fraction} of its samples kept none. Pass more data."
        )
    check_labels([int(low), int(high)], num_classes)
    return drawn.shuffle(
        min(buffer, count), seed=seed, reshuffle_each_iteration=False
    ), count


def _images_and_labels(features, labels):
    if isinstance(features, dict):
        features = features["image"]
    return features, labels
