"""EKG's search criterion `CE(y, z) + CE(softmax(T), z)`, where T is the
ensemble knowledge: in Keras for the evaluator, in NumPy for ranking."""

import keras
import numpy as np

from ekg_keras._backend import tf


def ensemble_objective(labels, ensemble, logits):
    """EKG's per-sample criterion `CE(y, z) + CE(softmax(T), z)`."""
    return keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True
    ) + keras.losses.categorical_crossentropy(
        tf.nn.softmax(ensemble), logits, from_logits=True
    )


def softmax(logits):
    """Softmax over the last axis of a NumPy array."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def log_softmax(logits):
    """Log-softmax over the last axis, shifted for stability."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(labels, logits):
    """Per-sample cross-entropy of integer `labels` under `logits`."""
    return -log_softmax(logits)[np.arange(len(labels)), labels]


def soft_cross_entropy(targets, logits):
    """Per-sample cross-entropy of probability `targets` under `logits`."""
    return -(targets * log_softmax(logits)).sum(axis=-1)
