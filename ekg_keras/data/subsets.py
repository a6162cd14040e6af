"""Per-class subsets of labelled data, as the EKG and NPPM searches draw
them: a validation subset that scores sub-networks and a training subset."""

import dataclasses

import numpy as np

from ekg_keras._backend import tf
from ekg_keras._inputs import check_labels
from ekg_keras.numerics import check_finite_data


@dataclasses.dataclass(frozen=True, eq=False)
class SearchData:
    """Two per-class subsets of labelled data (EKG paper, Alg. 1, line 1).

    Attributes:
        x_val, y_val: D^val, which scores candidates.
        x_subset, y_subset: D_subset, for the one-epoch fine-tune (may be
            empty).
    """

    x_val: np.ndarray
    y_val: np.ndarray
    x_subset: np.ndarray
    y_subset: np.ndarray


def collect_subsets(
    data, num_classes, val_per_class=32, subset_per_class=256, seed=1
):
    """Draws D^val and D_subset per class from labelled data.

    Reads `data` in order, keeping the first `subset_per_class +
    val_per_class` samples of each class and stopping once every class is
    full (so a large training set is not read to its end). Per class the
    last `val_per_class` kept samples form D^val and the rest D_subset, so
    the two never overlap; a class with fewer samples gives D^val its share
    first. Both sets are then shuffled with `seed` (the reference fixes 1).

    Args:
        data: `tf.data.Dataset` of `(inputs, labels)` (batched or not), or an
            `(x, y)` tuple of arrays.
        num_classes: Number of model outputs; labels must lie below it.
        val_per_class: D^val size per class (32 in the reference).
        subset_per_class: D_subset size per class (256 in the reference).
        seed: Shuffle seed.

    Returns:
        A `SearchData`.

    Raises:
        ValueError: For data without labels, empty data, or labels out of
            range.
        NonFiniteError: For inputs holding NaN or infinity.
    """
    per_class = val_per_class + subset_per_class
    buckets = [[] for _ in range(num_classes)]
    for x, y in _samples(data):
        check_labels([y], num_classes)
        bucket = buckets[int(y)]
        if len(bucket) < per_class:
            bucket.append(x)
            if all(len(b) >= per_class for b in buckets):
                break
    if not any(buckets):
        raise ValueError("`data` is empty: it yielded no samples.")
    val_x, val_y, sub_x, sub_y = [], [], [], []
    for label, bucket in enumerate(buckets):
        n_val = min(val_per_class, len(bucket))
        val_x += bucket[len(bucket) - n_val :][::-1]
        val_y += [label] * n_val
        sub_x += bucket[: len(bucket) - n_val]
        sub_y += [label] * (len(bucket) - n_val)
    check_finite_data(np.stack(val_x + sub_x))
    rng = np.random.RandomState(seed)
    val_order = rng.permutation(len(val_y))
    sub_order = rng.permutation(len(sub_y))
    shape = np.asarray(val_x[0]).shape
    return SearchData(
        x_val=np.stack(val_x)[val_order].astype("float32"),
        y_val=np.asarray(val_y, dtype=np.int32)[val_order],
        x_subset=(
            np.stack(sub_x)[sub_order].astype("float32")
            if sub_x
            else np.zeros((0,) + shape, "float32")
        ),
        y_subset=np.asarray(sub_y, dtype=np.int32)[sub_order],
    )


def _samples(data):
    if isinstance(data, (tuple, list)) and len(data) == 2:
        for x, y in zip(np.asarray(data[0]), np.asarray(data[1])):
            yield x, y
        return
    if not isinstance(data, tf.data.Dataset):
        raise ValueError(
            "`data` should be a tf.data.Dataset of (inputs, labels) or an "
            f"(x, y) tuple of arrays. Received: {type(data)}"
        )
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(
            "`data` should yield (inputs, labels); drawing per-class "
            f"subsets needs labels. Received elements with spec {spec}."
        )
    batched = len(spec[1].shape) > 0
    for element in data:
        features = element[0]
        if isinstance(features, dict):  # ({"image": x, "id": id}, y)
            features = features["image"]
        x, y = features.numpy(), element[1].numpy()
        if batched:
            for xi, yi in zip(x, y):
                yield xi, yi
        else:
            yield x, y
