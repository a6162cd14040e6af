"""Tests for the pure image and `tf.data` helpers of ekg_keras.data."""

import numpy as np
import pytest
import tensorflow as tf

from ekg_keras.data import preprocessing


def _image(height, width, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def _seed(value):
    return tf.constant([value, 17], dtype=tf.int64)


def _windows(image, size):
    """All `size[0] x size[1]` windows of a numpy image."""
    height, width = size
    rows, cols = image.shape[:2]
    return [
        image[top : top + height, left : left + width]
        for top in range(rows - height + 1)
        for left in range(cols - width + 1)
    ]


def test_constants_are_the_reference_values():
    assert preprocessing.CIFAR10_MEAN == (113.9, 123.0, 125.3)
    assert preprocessing.CIFAR10_STD == (66.7, 62.1, 63.0)
    assert preprocessing.CIFAR100_MEAN == (112, 124, 129)
    assert preprocessing.CIFAR100_STD == (70, 65, 68)
    assert preprocessing.IMAGENET_MEAN == (123.675, 116.28, 103.53)
    assert preprocessing.IMAGENET_STD == (58.395, 57.12, 57.375)


@pytest.mark.parametrize(
    "mean, std",
    [
        (preprocessing.CIFAR10_MEAN, preprocessing.CIFAR10_STD),
        (preprocessing.IMAGENET_MEAN, preprocessing.IMAGENET_STD),
    ],
)
def test_normalize_matches_the_constants(mean, std):
    image = _image(5, 6)
    result = preprocessing.normalize(image, mean, std)
    assert result.dtype == tf.float32
    expected = (image.astype(np.float64) - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_pad_crop_flip_keeps_shape_and_dtype():
    image = tf.constant(_image(32, 32))
    result = preprocessing.pad_crop_flip(image, _seed(0))
    assert result.shape == (32, 32, 3)
    assert result.dtype == tf.uint8


def test_pad_crop_flip_takes_a_window_of_the_reflect_padded_image():
    image = _image(8, 10, seed=1)
    pads = [[4, 4], [4, 4], [0, 0]]
    padded = np.pad(image, pads, mode="reflect")
    flipped = np.pad(image[:, ::-1], pads, mode="reflect")
    windows = _windows(padded, (8, 10)) + _windows(flipped, (8, 10))
    outcomes = set()
    for value in range(30):
        result = preprocessing.pad_crop_flip(image, _seed(value)).numpy()
        matches = [
            index
            for index, window in enumerate(windows)
            if np.array_equal(result, window)
        ]
        assert matches, f"seed {value}: not a window of the padded image"
        outcomes.add(matches[0])
    # The crop position and the flip both vary with the seed.
    assert len(outcomes) > 10
    half = len(windows) // 2
    assert min(outcomes) < half <= max(outcomes)


def test_pad_crop_flip_is_deterministic_per_seed():
    image = _image(32, 32)
    first = preprocessing.pad_crop_flip(image, _seed(3))
    second = preprocessing.pad_crop_flip(image, _seed(3))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("height, width", [(47, 17), (64, 48), (300, 400)])
def test_random_resized_crop_output_size(height, width):
    image = _image(height, width)
    for value in range(5):
        result = preprocessing.random_resized_crop(image, 24, _seed(value))
        assert result.shape == (24, 24, 3)
        assert result.dtype == tf.float32
        assert 0 <= float(tf.reduce_min(result))
        assert float(tf.reduce_max(result)) <= 255


def test_random_resized_crop_is_deterministic_per_seed():
    image = _image(64, 48)
    first = preprocessing.random_resized_crop(image, 16, _seed(5))
    second = preprocessing.random_resized_crop(image, 16, _seed(5))
    other = preprocessing.random_resized_crop(image, 16, _seed(6))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_random_resized_crop_of_a_constant_image_is_constant():
    image = np.full((40, 60, 3), 7, dtype=np.uint8)
    result = preprocessing.random_resized_crop(image, 16, _seed(0))
    np.testing.assert_allclose(result.numpy(), 7.0, atol=1e-4)


@pytest.mark.parametrize(
    "height, width, size", [(47, 17, 32), (64, 48, 32), (256, 320, 224)]
)
def test_center_crop_output_size(height, width, size):
    result = preprocessing.center_crop(_image(height, width), size)
    assert result.shape == (size, size, 3)
    assert result.dtype == tf.float32


def test_center_crop_resizes_the_shorter_side_then_takes_the_centre():
    image = _image(64, 48)
    result = preprocessing.center_crop(image, 32)
    # Shorter side 48 -> round(32 / 0.875) = 37, so 64 -> round(49.33) = 49.
    resized = tf.image.resize(
        tf.cast(image, tf.float32), (49, 37), antialias=True
    ).numpy()
    np.testing.assert_allclose(result.numpy(), resized[8:40, 2:34], atol=1e-4)


def test_center_crop_rejects_bad_crop_fraction():
    with pytest.raises(ValueError, match=r"crop_fraction=1\.5"):
        preprocessing.center_crop(_image(8, 8), 4, crop_fraction=1.5)


def test_attach_ids_numbers_elements_in_order():
    values = np.arange(10, 16)
    dataset = tf.data.Dataset.from_tensor_slices({"value": values})
    dataset = preprocessing.attach_ids(dataset)
    assert dataset.element_spec["id"].dtype == tf.int64
    elements = list(dataset.as_numpy_iterator())
    assert [e["id"] for e in elements] == list(range(6))
    assert [e["value"] for e in elements] == list(values)


def test_pack_example_conventions():
    image = tf.zeros((2, 2, 3))
    label = tf.constant(3, tf.int64)
    packed_image, packed_label = preprocessing.pack_example(image, label)
    assert packed_image is image
    assert packed_label.dtype == tf.int32
    inputs, packed_label = preprocessing.pack_example(
        image, label, tf.constant(5, tf.int64)
    )
    assert set(inputs) == {"image", "id"}
    assert inputs["id"].dtype == tf.int64
    assert int(inputs["id"]) == 5
    assert int(packed_label) == 3


def test_with_seeds_fresh_per_element_and_per_epoch():
    dataset = preprocessing.with_seeds(tf.data.Dataset.range(4), seed=1)
    first = [seed for _, seed in dataset.as_numpy_iterator()]
    second = [seed for _, seed in dataset.as_numpy_iterator()]
    assert all(seed.shape == (2,) for seed in first)
    assert len({tuple(seed) for seed in first}) == 4
    assert not np.array_equal(first, second)
    again = preprocessing.with_seeds(tf.data.Dataset.range(4), seed=1)
    np.testing.assert_array_equal(
        first, [seed for _, seed in again.as_numpy_iterator()]
    )


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "8"])
def test_check_positive_int_rejects(value):
    with pytest.raises(ValueError, match=f"batch_size={value!r}"):
        preprocessing.check_positive_int("batch_size", value)


def test_check_positive_int_accepts_numpy_ints():
    preprocessing.check_positive_int("batch_size", np.int64(4))
