"""Tests for the sampler's validation split."""

import numpy as np
import pytest
import tensorflow as tf
from lfpc_testing import data

from ekg_keras.methods.lfpc.data import validation_split


def _arrays(batches):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in batches])
    return np.concatenate(images), np.concatenate(labels)


def test_arrays_give_an_exact_random_half_in_a_fixed_order():
    x, y = data(64)
    batches, count = validation_split((x, y), 4, batch_size=10, seed=3)
    assert count == 32
    assert int(batches.cardinality()) == 4
    images, labels = _arrays(batches)
    again, _ = _arrays(batches)
    np.testing.assert_array_equal(images, again)  # Every epoch the same.
    rows = [
        int(np.flatnonzero((x == image).all(axis=(1, 2, 3)))[0])
        for image in images
    ]
    assert len(set(rows)) == 32 and rows != sorted(rows)
    np.testing.assert_array_equal(labels, y[rows])
    other, _ = _arrays(validation_split((x, y), 4, batch_size=10, seed=4)[0])
    assert not np.array_equal(other, images)


def test_a_dataset_with_ids_gives_a_seeded_share():
    x, y = data(200)
    ids = np.arange(200, dtype="int64")
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"image": x, "id": ids}, y)
    ).batch(32)
    batches, count = validation_split(dataset, 4, fraction=0.5, seed=1)
    assert 70 < count < 130
    assert int(batches.cardinality()) == 1
    assert batches.element_spec[0].shape[1:] == (8, 8, 3)
    images, labels = _arrays(batches)
    assert len(labels) == count
    np.testing.assert_array_equal(_arrays(batches)[0], images)
    same, again = validation_split(dataset, 4, fraction=0.5, seed=1)
    assert again == count
    np.testing.assert_array_equal(_arrays(same)[0], images)
    with pytest.raises(ValueError, match="Labels in `data` should be in"):
        validation_split(dataset, 2)
    with pytest.raises(ValueError, match="kept none"):
        validation_split(dataset.take(1), 4, fraction=1e-9)
