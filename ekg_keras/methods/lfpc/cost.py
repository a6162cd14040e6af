"""The computation loss: expected FLOPs of the sampled structure in TF.

The thesis leaves the computation loss to its unavailable supplement
(Eq. 6.14); this follows TAS (Dong and Yang, NeurIPS 2019), which the
thesis cites for it: the expected cost comes from the probabilities of the
candidate keep counts, and the loss is TAS's logarithm of it, here relative
to the target and clipped at zero below the target ([impl]).
"""

import numpy as np

from ekg_keras._backend import tf


class ExpectedFlops:
    """FLOPs fraction of per-group keep counts, written with TF ops.

    `setup.counter.terms("macs")` gives the MACs as an explicit function of
    the keep counts k (`sum_t coef * (a_w @ k + a_0) * (b_w @ k + b_0)`);
    evaluated at expected keep counts it is differentiable in the sampler's
    count logits. Plugging in E[k] is TAS's expected cost: exact for terms
    whose two sides depend on different groups (sampled independently).

    Args:
        terms: `CostTerms` of the MACs.
        full_macs: MACs of the unpruned model (the fraction's denominator).
    """

    def __init__(self, terms, full_macs):
        scale = 1.0 / float(full_macs)
        self._coef = tf.constant(terms.coef * scale, tf.float32)
        self._a_weights = tf.constant(terms.a_weights, tf.float32)
        self._a_fixed = tf.constant(terms.a_fixed, tf.float32)
        self._b_weights = tf.constant(terms.b_weights, tf.float32)
        self._b_fixed = tf.constant(terms.b_fixed, tf.float32)
        self._constant = float(terms.constant) * scale
        self._numpy = (terms, scale)

    def __call__(self, keep_counts):
        """The fraction at keep counts, a (groups,) float32 tensor."""
        keep = tf.cast(keep_counts, tf.float32)
        live_a = tf.linalg.matvec(self._a_weights, keep) + self._a_fixed
        live_b = tf.linalg.matvec(self._b_weights, keep) + self._b_fixed
        return tf.reduce_sum(self._coef * live_a * live_b) + self._constant

    def numpy(self, keep_counts):
        """The same fraction in float64 NumPy."""
        terms, scale = self._numpy
        return terms(np.asarray(keep_counts, np.float64)) * scale


def computation_loss(fraction, target):
    """`max(0, log(fraction / target))` ([impl], see the module docstring).

    Positive when the expected FLOPs fraction exceeds the target, with TAS's
    gradient `1 / fraction` there; zero at or below it, where the criteria
    loss alone already favours keeping more channels.

    Args:
        fraction: Expected FLOPs fraction (a scalar tensor).
        target: The fraction to keep, in (0, 1].
    """
    return tf.nn.relu(tf.math.log(fraction / target))
