"""The embedded data set: scikit-learn's 8x8 handwritten digits.

`sklearn.datasets.load_digits` ships 1797 real images inside the
scikit-learn wheel, so this data set needs no download. The images are
resized to `image_size x image_size` and given three channels, so CIFAR
architectures (32x32x3) run on it unchanged; that makes it the data set of
the demo and the end-to-end tests.
"""

import dataclasses
import math
import numbers

import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection

from ekg_keras._backend import tf
from ekg_keras.data import preprocessing

NUM_CLASSES = 10
NUM_SAMPLES = 1797
# load_digits pixel values are integers in 0..16.
_MAX_PIXEL = 16.0
_SOURCE_SIZE = 8


@dataclasses.dataclass(frozen=True, eq=False)
class DigitsData:
    """The digits data set, split, resized and (optionally) normalised.

    Attributes:
        train: `tf.data.Dataset` of batches of the training split, shuffled
            every epoch when `digits(shuffle=True)`. Elements are
            `(image, label)`, or `({"image": image, "id": id}, label)` with
            `digits(with_ids=True)`; `image` is float32 `[H, W, 3]`, `label`
            int32, `id` int64 (see `digits`).
        test: The test split, in the same format, never shuffled.
        x_train: float32 numpy array `[N_train, H, W, 3]`, as fed by `train`
            (resized, and normalised when `normalize=True`), in id order.
        y_train: int32 numpy array `[N_train]` of labels.
        x_test: float32 numpy array `[N_test, H, W, 3]`, in id order.
        y_test: int32 numpy array `[N_test]` of labels.
        num_classes: Number of classes (10).
        input_shape: `(image_size, image_size, 3)`.
        mean: float32 numpy array `[3]`, the per-channel mean of the train
            split's [0, 1] images. Always computed; it has been subtracted
            from `x_*` only when `normalize=True`.
        std: float32 numpy array `[3]`, the matching standard deviation.
    """

    train: "tf.data.Dataset"
    test: "tf.data.Dataset"
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple
    mean: np.ndarray
    std: np.ndarray


def digits(
    batch_size=64,
    image_size=32,
    test_fraction=0.25,
    seed=0,
    shuffle=True,
    with_ids=False,
    normalize=True,
):
    """Loads the embedded 8x8 digits as a small image-classification task.

    The 1797 images are scaled to [0, 1], resized (bilinear, once, here) to
    `image_size x image_size`, their gray channel is repeated to 3 channels,
    and they are split into train and test sets with a stratified split
    that depends only on `seed`. With `normalize=True` both splits are then
    standardised with the per-channel mean and std of the train split.

    With `with_ids=True` every element of `train` and `test` is
    `({"image": image, "id": id}, label)`, where `id` is the int64 index of
    the sample within its split: `x_train[id]` (or `x_test[id]`) is the
    image, however `train` is shuffled.

    Args:
        batch_size: Batch size of `train` and `test`.
        image_size: Side of the resized square images, at least 8.
        test_fraction: Fraction of the samples in the test split, in (0, 1);
            both splits must hold at least one sample per class.
        seed: Seed of the split and of the training-set shuffle.
        shuffle: Whether `train` is shuffled (afresh every epoch).
        with_ids: Whether elements carry their sample id (see above).
        normalize: Whether to standardise with the train statistics; if
            `False`, images stay in [0, 1].

    Returns:
        A `DigitsData`.

    Raises:
        ValueError: If an argument is out of range.
    """
    _check_arguments(batch_size, image_size, test_fraction, seed)
    images, labels = _load_resized(image_size)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        images,
        labels,
        test_size=test_fraction,
        stratify=labels,
        random_state=seed,
    )
    mean = x_train.mean(axis=(0, 1, 2), dtype=np.float64)
    std = x_train.std(axis=(0, 1, 2), dtype=np.float64)
    if normalize:
        x_train = ((x_train - mean) / std).astype(np.float32)
        x_test = ((x_test - mean) / std).astype(np.float32)
    train = _make_dataset(
        x_train,
        y_train,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        with_ids=with_ids,
    )
    test = _make_dataset(
        x_test,
        y_test,
        batch_size,
        shuffle=False,
        seed=seed,
        with_ids=with_ids,
    )
    return DigitsData(
        train=train,
        test=test,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=NUM_CLASSES,
        input_shape=(image_size, image_size, 3),
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
    )


def _check_arguments(batch_size, image_size, test_fraction, seed):
    """Raises a ValueError naming the first out-of-range argument."""
    preprocessing.check_positive_int("batch_size", batch_size)
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, numbers.Integral)
        or image_size < _SOURCE_SIZE
    ):
        raise ValueError(
            f"`image_size` should be an integer >= {_SOURCE_SIZE}. "
            f"Received: image_size={image_size!r}"
        )
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, numbers.Real)
        or not 0 < test_fraction < 1
    ):
        raise ValueError(
            "`test_fraction` should be in (0, 1). "
            f"Received: test_fraction={test_fraction!r}"
        )
    # train_test_split puts ceil(test_fraction * n) samples in the test split.
    num_test = math.ceil(test_fraction * NUM_SAMPLES)
    if min(num_test, NUM_SAMPLES - num_test) < NUM_CLASSES:
        raise ValueError(
            "`test_fraction` should leave at least one sample per class "
            f"({NUM_CLASSES}) in each of the {NUM_SAMPLES}-sample data set's "
            f"splits. Received: test_fraction={test_fraction!r}"
        )
    if (
        isinstance(seed, bool)
        or not isinstance(seed, numbers.Integral)
        or not 0 <= seed < 2**32
    ):
        raise ValueError(
            "`seed` should be an integer in [0, 2**32). "
            f"Received: seed={seed!r}"
        )


def _load_resized(image_size):
    """Returns all digits as float32 `[N, S, S, 3]` in [0, 1], int32 labels."""
    bunch = sk_datasets.load_digits()
    images = bunch.images.astype(np.float32) / _MAX_PIXEL
    images = tf.image.resize(
        images[..., np.newaxis], (image_size, image_size), method="bilinear"
    ).numpy()
    images = np.repeat(images, 3, axis=-1)
    return images, bunch.target.astype(np.int32)


def _make_dataset(images, labels, batch_size, shuffle, seed, with_ids):
    """Builds the batched `tf.data.Dataset` of one split."""
    dataset = tf.data.Dataset.from_tensor_slices(
        {"image": images, "label": labels}
    )
    if with_ids:
        # Before shuffling, so that each id stays with its image.
        dataset = preprocessing.attach_ids(dataset)
    if shuffle:
        dataset = dataset.shuffle(
            len(images), seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.map(
        lambda example: preprocessing.pack_example(
            example["image"], example["label"], example.get("id")
        )
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
