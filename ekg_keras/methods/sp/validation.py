"""The held-out validation split that SP searches on (SP paper, Sec. 4.1)."""

import dataclasses

import numpy as np

from ekg_keras._inputs import check_labels
from ekg_keras.numerics import check_finite_data
from ekg_keras.training.fitting import check_ids


@dataclasses.dataclass(frozen=True, eq=False)
class ValidationSplit:
    """Samples held out of super-net training to score sub-networks.

    Attributes:
        images: (N, ...) float32 inputs.
        labels: (N,) int32 labels.
        ids: (N,) int64 sample ids (what the training batches carry).
    """

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self):
        return len(self.labels)


def hold_out(data, num_classes, per_class):
    """Takes up to `per_class` samples of every class, in data order.

    A class gives at most half of its samples, so the super-net still
    trains on every class: the data is read until each class has shown
    `2 * per_class` samples (or to its end), and a class that showed `n`
    gives `min(per_class, n // 2)`. Only the candidates are kept in memory.

    Args:
        data: `({"image": x, "id": id}, y)` batches (a fitter's ordered
            data with ids).
        num_classes: Number of model outputs; labels must lie below it.
        per_class: Validation samples wanted per class (SP: 200 on CIFAR,
            50 on ImageNet).

    Returns:
        A `ValidationSplit`, ordered by id.

    Raises:
        ValueError: For data without labels or ids, labels out of range, or
            data that yields no validation sample.
        NonFiniteError: For inputs holding NaN or infinity.
    """
    seen = np.zeros(num_classes, dtype=np.int64)
    candidates = [[] for _ in range(num_classes)]
    for images, ids, labels in _batches(data):
        check_labels(labels, num_classes)
        for image, sample_id, label in zip(images, ids, labels):
            seen[label] += 1
            if len(candidates[label]) < per_class:
                candidates[label].append((int(sample_id), image))
        if np.all(seen >= 2 * per_class):
            break
    chosen = []
    for label, bucket in enumerate(candidates):
        share = min(per_class, int(seen[label]) // 2)
        chosen += [(i, image, label) for i, image in bucket[:share]]
    if not chosen:
        raise ValueError(
            "The data yields no validation sample: every class needs at "
            f"least 2 samples. Received: {int(seen.sum())} samples."
        )
    chosen.sort(key=lambda item: item[0])
    images = np.stack([image for _, image, _ in chosen]).astype("float32")
    check_finite_data(images)
    return ValidationSplit(
        images=images,
        labels=np.array([label for *_, label in chosen], dtype=np.int32),
        ids=np.array([i for i, *_ in chosen], dtype=np.int64),
    )


def _batches(data):
    check_ids(data)
    for features, labels, *_ in data:
        yield (
            np.asarray(features["image"]),
            np.asarray(features["id"]).reshape(-1),
            np.asarray(labels).reshape(-1).astype(np.int64),
        )
