"""Small, data-set-independent image and `tf.data` building blocks.

Every augmentation here is *stateless*: it takes an explicit `seed` (a shape
`[2]` integer tensor) and returns the same output for the same inputs, so the
functions are pure and the pipelines are reproducible. `with_seeds` gives each
element of a data set its own seed, fresh on every pass over the data.

Pipelines emit elements in one of two conventions (see `pack_example`):

* `(image, label)`, or
* `({"image": image, "id": id}, label)` with `with_ids=True`, where `id` is
  the int64 index of the example within its split (see `attach_ids`).
"""

import numbers

from ekg_keras._backend import tf

# The EKG reference code's CIFAR statistics on 0..255 pixel values. They are
# the usual RGB statistics in reversed (BGR) channel order; they are kept as
# they are so that weights trained with the reference code can be reused.
CIFAR10_MEAN = (113.9, 123.0, 125.3)
CIFAR10_STD = (66.7, 62.1, 63.0)
CIFAR100_MEAN = (112.0, 124.0, 129.0)
CIFAR100_STD = (70.0, 65.0, 68.0)

# The standard ImageNet RGB statistics on 0..255 pixel values.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# The fraction of the resized image that the evaluation centre crop keeps
# (224 / 256): the shorter side is resized to `image_size / 0.875` first.
CENTER_CROP_FRACTION = 0.875


def normalize(image, mean, std):
    """Standardises an image channel-wise: `(image - mean) / std`.

    Args:
        image: A `[..., C]` image tensor of any numeric dtype.
        mean: `C` per-channel means, on the same scale as `image`.
        std: `C` per-channel standard deviations, on the same scale.

    Returns:
        A float32 tensor with the shape of `image`.
    """
    image = tf.cast(image, tf.float32)
    mean = tf.constant(mean, dtype=tf.float32)
    std = tf.constant(std, dtype=tf.float32)
    return (image - mean) / std


def pad_crop_flip(image, seed, padding=4):
    """CIFAR training augmentation: random flip, reflect-pad, random crop.

    The image is flipped left-right with probability 1/2, padded by
    `padding` pixels on each side with REFLECT padding, and cropped back to
    its original size at a random position.

    Args:
        image: A `[H, W, C]` image tensor with `H, W > padding`.
        seed: A shape `[2]` int32/int64 tensor; the same seed gives the same
            flip and crop.
        padding: Number of pixels added on each side before cropping.

    Returns:
        A tensor with the shape and dtype of `image`.
    """
    flip_seed, crop_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    padded = tf.pad(
        image,
        [[padding, padding], [padding, padding], [0, 0]],
        mode="REFLECT",
    )
    return tf.image.stateless_random_crop(
        padded, size=tf.shape(image), seed=crop_seed
    )


def random_resized_crop(
    image,
    size,
    seed,
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    max_attempts=10,
):
    """Inception-style random crop of random area and aspect ratio, resized.

    The crop covers a fraction of the image area drawn from `scale` and has
    a width / height ratio drawn from `ratio`; when no such crop is found in
    `max_attempts` tries the whole image is used. The crop is then resized
    (bilinear) to `size x size`.

    Args:
        image: A `[H, W, C]` image tensor.
        size: Side of the square output, in pixels.
        seed: A shape `[2]` int32/int64 tensor.
        scale: `(min, max)` fraction of the image area the crop covers.
        ratio: `(min, max)` aspect ratio (width / height) of the crop.
        max_attempts: Number of crops to try before using the whole image.

    Returns:
        A float32 tensor of shape `[size, size, C]`.
    """
    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4])
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=whole_image,
        seed=seed,
        # The only box is the whole image, so `area_range` alone decides how
        # much of it the crop covers.
        min_object_covered=0.0,
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return _resize(crop, [size, size])


def center_crop(image, size, crop_fraction=CENTER_CROP_FRACTION):
    """Evaluation crop: resizes the shorter side, then crops the centre.

    The shorter side is resized (bilinear, aspect ratio kept) to
    `round(size / crop_fraction)` pixels, e.g. 256 for `size=224`, and the
    central `size x size` window is returned.

    Args:
        image: A `[H, W, C]` image tensor.
        size: Side of the square output, in pixels.
        crop_fraction: Fraction of the resized shorter side that is kept,
            in `(0, 1]`.

    Returns:
        A float32 tensor of shape `[size, size, C]`.

    Raises:
        ValueError: If `crop_fraction` is not in `(0, 1]`.
    """
    if not 0 < crop_fraction <= 1:
        raise ValueError(
            "`crop_fraction` should be in (0, 1]. "
            f"Received: crop_fraction={crop_fraction}"
        )
    resize_to = round(size / crop_fraction)
    height_width = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize_to / tf.reduce_min(height_width)
    new_size = tf.cast(tf.round(height_width * scale), tf.int32)
    # Rounding must not leave a side shorter than the crop.
    new_size = tf.maximum(new_size, size)
    image = _resize(image, new_size)
    top = (new_size[0] - size) // 2
    left = (new_size[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


def _resize(image, size):
    """Bilinear, antialiased resize to `size` that returns float32."""
    return tf.image.resize(
        tf.cast(image, tf.float32), size, method="bilinear", antialias=True
    )


def attach_ids(dataset, key="id"):
    """Adds each element's index in `dataset` to it, as int64 `key`.

    Call it before shuffling or sharding, so that the id is the position of
    the example in the split's fixed order and stays attached to it.

    Args:
        dataset: A `tf.data.Dataset` of dicts, e.g. `{"image", "label"}`.
        key: Name of the new entry.

    Returns:
        A `tf.data.Dataset` of the same dicts with `key` added.
    """
    return dataset.enumerate().map(
        lambda index, example: {**example, key: index}
    )


def pack_example(image, label, example_id=None):
    """Builds the element that the library's pipelines emit.

    Args:
        image: The preprocessed image.
        label: The class index; cast to int32.
        example_id: The int64 id from `attach_ids`, or `None`.

    Returns:
        `(image, label)` when `example_id` is `None`, else
        `({"image": image, "id": example_id}, label)`.
    """
    label = tf.cast(label, tf.int32)
    if example_id is None:
        return image, label
    return {"image": image, "id": tf.cast(example_id, tf.int64)}, label


def with_seeds(dataset, seed):
    """Zips `dataset` with a per-element seed for stateless augmentation.

    The seeds are drawn afresh on every iteration over the data set (every
    epoch), and the sequence of draws is fixed by `seed`.

    Args:
        dataset: Any `tf.data.Dataset`.
        seed: Python int seed of the seed sequence.

    Returns:
        A `tf.data.Dataset` of `(element, element_seed)` pairs, where
        `element_seed` is a shape `[2]` int64 tensor.
    """
    seeds = tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True
    ).batch(2, drop_remainder=True)
    return tf.data.Dataset.zip((dataset, seeds))


def check_positive_int(name, value):
    """Checks an argument that must be a positive integer.

    Args:
        name: The argument's name, for the error message.
        value: Its value.

    Raises:
        ValueError: If `value` is not a positive integer (bools are not).
    """
    integral = isinstance(value, numbers.Integral)
    if isinstance(value, bool) or not integral or value <= 0:
        raise ValueError(
            f"`{name}` should be a positive integer. Received: {name}={value!r}"
        )
