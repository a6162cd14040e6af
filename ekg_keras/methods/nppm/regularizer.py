"""NPPM's differentiable FLOPs regulariser (NPPM paper, Sec. 3.2, Eq. 4)."""

import numpy as np

from ekg_keras._backend import tf


class FlopsRegularizer:
    """`R = log(max(T(a), p) / p)`: zero at or below the FLOPs target.

    `T(a)` is the FLOPs fraction of a structure, computed with TensorFlow
    ops from the FLOPs counter's `CostTerms` (the counter `prune` checks
    the budget with), where each prunable group keeps `sum(a_g)` channels.
    On a 0/1 structure it equals the slim model's `count_flops`; with
    straight-through gates its gradient reaches every gate.

    Args:
        terms: `CostTerms` of the MACs (`FlopsCounter.terms("macs")`).
        full_macs: MACs of the unpruned model.
        target: p, the fraction of FLOPs to keep.
        group_sizes: Channels of every group of the graph.
        gated_groups: Ids of the groups the structure vector gates, in its
            order (the other groups keep all their channels).
    """

    def __init__(self, terms, full_macs, target, group_sizes, gated_groups):
        self.target = float(target)
        sizes = np.asarray(group_sizes, np.float64)
        gated = np.asarray(gated_groups, np.int64)
        fixed = sizes.copy()
        fixed[gated] = 0.0
        # Channel j of the structure adds one kept channel to its group.
        self._owner = tf.constant(
            np.repeat(gated, sizes[gated].astype(np.int64)), tf.int32
        )
        self._groups = len(sizes)
        scale = 1.0 / float(full_macs)

        def constant(value):
            return tf.constant(np.asarray(value), tf.float32)

        self._fixed = constant(fixed)
        self._coef = constant(terms.coef * scale)
        self._a_weights = constant(terms.a_weights.T)
        self._a_fixed = constant(terms.a_fixed)
        self._b_weights = constant(terms.b_weights.T)
        self._b_fixed = constant(terms.b_fixed)
        self._constant = float(terms.constant) * scale

    def counts(self, structure):
        """Kept channels per group (all groups) of a structure vector."""
        structure = tf.cast(structure, tf.float32)
        return self._fixed + tf.math.unsorted_segment_sum(
            structure, self._owner, self._groups
        )

    def fraction(self, structure):
        """T(a): the FLOPs fraction the structure keeps."""
        keep = self.counts(structure)[None]
        live_a = tf.matmul(keep, self._a_weights)[0] + self._a_fixed
        live_b = tf.matmul(keep, self._b_weights)[0] + self._b_fixed
        return tf.reduce_sum(self._coef * live_a * live_b) + self._constant

    def __call__(self, structure):
        """R(T(a), p) = log(max(T(a), p) / p)."""
        fraction = self.fraction(structure)
        return tf.math.log(tf.maximum(fraction, self.target) / self.target)
