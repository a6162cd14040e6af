"""Tests for the embedded digits data set."""

import re

import numpy as np
import pytest
import tensorflow as tf

from ekg_keras.data import DigitsData
from ekg_keras.data import digits


@pytest.fixture(scope="module")
def data():
    return digits()


def _epoch(dataset):
    """All batches of one pass, concatenated, as numpy arrays."""
    batches = list(dataset.as_numpy_iterator())
    return tuple(
        np.concatenate([batch[i] for batch in batches])
        for i in range(len(batches[0]))
    )


def _epoch_with_ids(dataset):
    images, ids, labels = [], [], []
    for inputs, label in dataset.as_numpy_iterator():
        images.append(inputs["image"])
        ids.append(inputs["id"])
        labels.append(label)
    return np.concatenate(images), np.concatenate(ids), np.concatenate(labels)


def test_shapes_and_dtypes(data):
    assert isinstance(data, DigitsData)
    assert data.num_classes == 10
    assert data.input_shape == (32, 32, 3)
    image_spec, label_spec = data.train.element_spec
    assert image_spec.shape.as_list() == [None, 32, 32, 3]
    assert image_spec.dtype == tf.float32
    assert label_spec.dtype == tf.int32
    images, labels = next(iter(data.train))
    assert images.shape == (64, 32, 32, 3)
    assert labels.shape == (64,)
    assert data.test.element_spec == data.train.element_spec
    for array in (data.x_train, data.x_test):
        assert array.dtype == np.float32
        assert array.shape[1:] == (32, 32, 3)
    assert data.y_train.dtype == np.int32
    assert data.y_test.dtype == np.int32
    assert data.mean.shape == data.std.shape == (3,)


def test_channels_repeat_the_gray_image(data):
    np.testing.assert_array_equal(data.x_train[..., 0], data.x_train[..., 2])


def test_split_sizes(data):
    assert len(data.x_train) + len(data.x_test) == 1797
    assert len(data.x_test) == 450  # ceil(0.25 * 1797)
    assert len(data.y_train) == len(data.x_train)
    assert len(data.y_test) == len(data.x_test)
    train_images, _ = _epoch(data.train)
    test_images, test_labels = _epoch(data.test)
    assert len(train_images) == len(data.x_train)
    # The test split is never shuffled.
    np.testing.assert_array_equal(test_images, data.x_test)
    np.testing.assert_array_equal(test_labels, data.y_test)


def test_split_is_stable_and_depends_on_the_seed(data):
    again = digits()
    np.testing.assert_array_equal(again.x_train, data.x_train)
    np.testing.assert_array_equal(again.y_test, data.y_test)
    other = digits(seed=1)
    assert not np.array_equal(other.y_train, data.y_train)


def test_split_is_stratified(data):
    train_counts = np.bincount(data.y_train, minlength=10)
    test_counts = np.bincount(data.y_test, minlength=10)
    assert (train_counts > 0).all() and (test_counts > 0).all()
    fractions = test_counts / (train_counts + test_counts)
    np.testing.assert_allclose(fractions, 0.25, atol=0.01)


def test_train_split_is_standardised_per_channel(data):
    x_train = data.x_train.astype(np.float64)
    np.testing.assert_allclose(x_train.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(x_train.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_normalize_false_gives_unit_interval_and_same_statistics(data):
    raw = digits(normalize=False)
    assert raw.x_train.min() >= 0 and raw.x_train.max() <= 1
    assert raw.x_train.max() > 0.9
    np.testing.assert_allclose(raw.mean, data.mean)
    np.testing.assert_allclose(raw.std, data.std)
    np.testing.assert_allclose(
        (raw.x_test - data.mean) / data.std, data.x_test, atol=1e-5
    )


def test_image_size(data):
    small = digits(image_size=8, batch_size=10)
    assert small.input_shape == (8, 8, 3)
    assert small.x_train.shape[1:] == (8, 8, 3)
    images, _ = next(iter(small.train))
    assert images.shape == (10, 8, 8, 3)
    # The split does not depend on the image size.
    np.testing.assert_array_equal(small.y_train, data.y_train)


def test_train_is_reshuffled_each_epoch_and_reproducible():
    first, second = digits(), digits()
    epoch_1 = _epoch(first.train)[1]
    epoch_2 = _epoch(first.train)[1]
    assert not np.array_equal(epoch_1, epoch_2)
    assert not np.array_equal(epoch_1, first.y_train)
    np.testing.assert_array_equal(epoch_1, _epoch(second.train)[1])


def test_shuffle_false_keeps_the_array_order():
    data = digits(shuffle=False)
    images, labels = _epoch(data.train)
    np.testing.assert_array_equal(images, data.x_train)
    np.testing.assert_array_equal(labels, data.y_train)


def test_with_ids_are_unique_and_aligned_after_shuffling():
    data = digits(with_ids=True)
    inputs_spec, label_spec = data.train.element_spec
    assert set(inputs_spec) == {"image", "id"}
    assert inputs_spec["id"].dtype == tf.int64
    assert label_spec.dtype == tf.int32
    images, ids, labels = _epoch_with_ids(data.train)
    assert not np.array_equal(ids, np.sort(ids)), "train is not shuffled"
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(data.x_train)))
    np.testing.assert_array_equal(images, data.x_train[ids])
    np.testing.assert_array_equal(labels, data.y_train[ids])
    _, test_ids, test_labels = _epoch_with_ids(data.test)
    np.testing.assert_array_equal(test_ids, np.arange(len(data.x_test)))
    np.testing.assert_array_equal(test_labels, data.y_test)


@pytest.mark.parametrize(
    "argument, value",
    [
        ("batch_size", 0),
        ("batch_size", -1),
        ("batch_size", 2.5),
        ("image_size", 4),
        ("image_size", 16.0),
        ("test_fraction", 1.5),
        ("test_fraction", 0),
        ("test_fraction", 0.001),
        ("test_fraction", 0.999),
        ("seed", -1),
        ("seed", "0"),
    ],
)
def test_bad_arguments_raise_value_error(argument, value):
    message = re.escape(f"{argument}={value!r}")
    with pytest.raises(ValueError, match=message):
        digits(**{argument: value})
