"""NPPM's gradient rules: the orthogonal modification (Eq. 9) and the
predictor's confidence factor gamma (Eq. 8)."""

from ekg_keras._backend import tf


def orthogonal_part(gradient, reference):
    """`gradient` minus its projection on `reference` (per tensor).

    Where `reference` is zero there is no direction to remove, and
    `gradient` is returned unchanged.
    """
    norm = tf.reduce_sum(tf.square(reference))
    dot = tf.reduce_sum(gradient * reference)
    scale = tf.math.divide_no_nan(dot, norm)
    return gradient - scale * reference


def modified_gradient(task, performance, regularizer, orthogonal=True):
    """One gate tensor's update direction (NPPM paper, Sec. 3.6, Eq. 8-9).

    `g = g_L + orth(g_P, g_L) + g_R`: the task-loss gradient, the part of
    the (gamma-scaled) performance gradient orthogonal to it, and the FLOPs
    regulariser's gradient unchanged. With `orthogonal=False` the
    performance gradient is added whole (the paper's "PM w/o GM").
    """
    if orthogonal:
        performance = orthogonal_part(performance, task)
    return task + performance + regularizer


def confidence(memory_size, capacity, predictor_loss):
    """gamma = 1[K >= K_max / 4] * (1 - L_P)^2, in [0, 1]."""
    enough = tf.cast(
        tf.cast(memory_size, tf.float32) >= capacity / 4.0, tf.float32
    )
    return enough * tf.square(1.0 - tf.cast(predictor_loss, tf.float32))
