"""Turning the `data` arguments users pass into `tf.data` batches."""

import numpy as np

from ekg_keras import _backend as backend
from ekg_keras._backend import tf


def as_dataset(data, batch_size=64, name="data"):
    """Accepts a `tf.data.Dataset` of batches or an `(x, y)` array pair.

    Args:
        data: A dataset yielding `(inputs, labels)` (or `(inputs, labels,
            weights)`) batches, or a tuple `(x, y)` of arrays.
        batch_size: Batch size for array input.
        name: Argument name for error messages.

    Returns:
        A batched `tf.data.Dataset` of `(inputs, labels)`.

    Raises:
        ValueError: If `data` has no labels or is empty.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if len(x) == 0:
            raise ValueError(f"`{name}` is empty. Received: 0 samples.")
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    if not backend.is_dataset(data):
        raise ValueError(
            f"`{name}` should be a tf.data.Dataset of (inputs, labels) "
            f"batches or an (x, y) tuple of arrays. Received: {type(data)}"
        )
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(
            f"`{name}` should yield (inputs, labels) pairs; labels are "
            f"needed. Received elements with spec {spec}."
        )
    return data.map(lambda *element: (element[0], element[1]))


def check_labels(labels, num_outputs, name="data"):
    """Raises if integer labels fall outside `[0, num_outputs)`."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_outputs):
        raise ValueError(
            f"Labels in `{name}` should be in [0, {num_outputs}) for a model "
            f"with {num_outputs} outputs. Received labels from "
            f"{labels.min()} to {labels.max()}."
        )


def features_only(data, batch_size=64):
    """A dataset of input batches from inputs, `(inputs, labels)` batches
    (inputs may be `{"image": x, "id": id}`), an array of inputs or an
    `(x, y)` tuple of arrays."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = data[0]  # (x, y), as `as_dataset` reads it.
    if not backend.is_dataset(data):
        data = tf.data.Dataset.from_tensor_slices(np.asarray(data)).batch(
            batch_size
        )
    spec = data.element_spec
    if isinstance(spec, tuple):
        data = data.map(lambda *element: element[0])
        spec = data.element_spec
    if isinstance(spec, dict) and "image" in spec:  # With sample ids.
        data = data.map(lambda features: features["image"])
    return data
