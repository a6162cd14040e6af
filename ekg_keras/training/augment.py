"""In-graph, per-sample deterministic augmentation for two-view training.

Each sample's random draws are seeded by its id, the training step and the
view, so two views of one image differ, a sample gets the same draws
wherever it lands in a batch, and a run gives the same augmentations on one
device or split over several replicas.
"""

from ekg_keras._backend import tf


def sample_uniform(ids, step, view, count, seed=0):
    """Uniform [0, 1) draws per sample, `count` each: shape (B, count).

    Args:
        ids: int64 sample ids, shape (B,).
        step: The training step (scalar integer tensor).
        view: Which view (0 or 1), a Python int.
        count: Draws per sample.
        seed: Run seed.
    """
    ids = tf.cast(ids, tf.int64)
    step = tf.cast(step, tf.int64)
    salt = step * 2 + view + tf.constant(seed, tf.int64) * 1_000_003

    def draw(sample_id):
        return tf.random.stateless_uniform(
            [count], seed=tf.stack([sample_id, salt])
        )

    return tf.map_fn(draw, ids, fn_output_signature=tf.float32)


def pad_crop_flip(images, ids, step, view, padding=4, seed=0):
    """Reflect-pad by `padding`, crop back at a random offset, random flip.

    The EKG reference code's CIFAR pad-crop-flip, per sample, in the graph.

    Args:
        images: Float images, (B, H, W, C).
        ids, step, view, seed: See `sample_uniform`.
        padding: Pixels of reflect padding on each side.

    Returns:
        Augmented images of the same shape.
    """
    height = images.shape[1] or tf.shape(images)[1]
    width = images.shape[2] or tf.shape(images)[2]
    draws = sample_uniform(ids, step, view, 3, seed)
    span = 2 * padding + 1
    top = tf.cast(draws[:, 0] * span, tf.int32)
    left = tf.cast(draws[:, 1] * span, tf.int32)
    padded = tf.pad(
        images,
        [[0, 0], [padding, padding], [padding, padding], [0, 0]],
        mode="REFLECT",
    )
    rows = top[:, None] + tf.range(height)[None, :]
    cols = left[:, None] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flip = draws[:, 2] < 0.5
    return tf.where(
        flip[:, None, None, None], tf.reverse(cropped, axis=[2]), cropped
    )


def flip(images, ids, step, view, seed=0):
    """Random horizontal flip per sample, for inputs cropped beforehand.

    The two-view augmentation for ImageNet-style pipelines, whose random
    resized crop happens in `tf.data` (it needs the full decoded image):
    the views of a sample then differ by their flips.

    Args:
        images: Float images, (B, H, W, C).
        ids, step, view, seed: See `sample_uniform`.

    Returns:
        Images of the same shape.
    """
    flipped = sample_uniform(ids, step, view, 1, seed)[:, 0] < 0.5
    return tf.where(
        flipped[:, None, None, None], tf.reverse(images, axis=[2]), images
    )
