"""NPPM's differentiable channel gates (Eq. 1-2): one logit per channel."""

import keras
import numpy as np

from ekg_keras._api import ekg_export
from ekg_keras._backend import tf
from ekg_keras.methods.nppm.checks import number_above

# Keeps the uniform draws away from 0 and 1, where the logistic noise is
# infinite.
_EPSILON = 1e-6


@ekg_export
class ChannelGates(keras.layers.Layer):
    """Learnable gate logits, one vector per prunable channel group.

    A sampled structure is `a = 1[o > 1/2]` with `o = sigmoid((w + s) /
    tau)` and logistic noise `s` per channel (the binary Gumbel-softmax),
    so a channel is kept with probability `sigmoid(w)`; the forward value is
    exactly 0 or 1 and the gradient passes straight through the threshold
    (`da/do := 1`). Channels of a residual group are one gate each, shared
    by every layer that writes them. The logits are the layer's weights, so
    checkpoints and `.keras` files carry them.

    Args:
        sizes: Channels per prunable group (the structure vector is their
            concatenation, in this order).
        tau: Temperature of the relaxation, > 0.
        initial_logit: Starting logit of every gate (3: each channel is
            kept with probability sigmoid(3) = 0.95).
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, sizes, tau=0.5, initial_logit=3.0, **kwargs):
        super().__init__(**kwargs)
        self.sizes = [int(size) for size in sizes]
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(
                "`sizes` should list at least one group of at least one "
                f"channel. Received: sizes={sizes!r}"
            )
        self.tau = number_above("tau", tau)
        self.initial_logit = float(initial_logit)
        self.logits = [
            self.add_weight(
                name=f"logits_{i}",
                shape=(size,),
                initializer=keras.initializers.Constant(self.initial_logit),
            )
            for i, size in enumerate(self.sizes)
        ]
        self.built = True

    @property
    def length(self):
        """Length of the structure vector (channels over all groups)."""
        return sum(self.sizes)

    def sample(self, seed):
        """A structure with straight-through gradients to the logits.

        Args:
            seed: A stateless seed, shape (2,) integers; the same seed gives
                the same structure on every replica.

        Returns:
            The flat structure vector (float32 0/1, length `length`).
        """
        logits = tf.concat([tf.convert_to_tensor(w) for w in self.logits], 0)
        uniform = tf.random.stateless_uniform(
            [self.length],
            seed=seed,
            minval=_EPSILON,
            maxval=1.0 - _EPSILON,
        )
        noise = tf.math.log(uniform) - tf.math.log1p(-uniform)
        relaxed = tf.sigmoid((logits + noise) / self.tau)
        return straight_through(relaxed)

    def noise_free(self):
        """The structure without noise, `sigmoid(w / tau) > 1/2`, i.e.
        `w > 0`: one boolean array per group."""
        return [np.asarray(w.numpy()) > 0 for w in self.logits]

    def logit_values(self):
        """The logits as NumPy arrays, one per group."""
        return [np.asarray(w.numpy()) for w in self.logits]

    def get_config(self):
        return {
            **super().get_config(),
            "sizes": list(self.sizes),
            "tau": self.tau,
            "initial_logit": self.initial_logit,
        }


def straight_through(relaxed):
    """`1[relaxed > 1/2]` forward, the identity's gradient backward."""
    hard = tf.cast(relaxed > 0.5, relaxed.dtype)
    return relaxed + tf.stop_gradient(hard - relaxed)
