"""NPPM's performance-prediction network PN (NPPM paper, Sec. 3.3, Eq. 5)."""

import keras
from keras import ops

from ekg_keras._api import ekg_export
from ekg_keras.methods.nppm.checks import integer_at_least


@ekg_export
class PerformancePredictor(keras.layers.Layer):
    """Predicts a sub-network's accuracy in (0, 1) from its structure.

    Each group's 0/1 structure vector is embedded by its own dense layer;
    a GRU runs over the embeddings in group order (a layer's useful width
    depends on the layers before it) and a sigmoid unit reads its last
    state. The paper gives only "fully-connected layers and GRU" (the sizes
    are in its unavailable supplementary material); `encoder_units` and
    `recurrent_units` are this library's choice (64 and 64, ReLU
    embeddings).

    Args:
        sizes: Channels per prunable group, in structure-vector order.
        encoder_units: Width of each group's embedding.
        recurrent_units: Width of the GRU state.
        **kwargs: Passed to `keras.layers.Layer`.

    Call arguments:
        structures: Float tensor (batch, sum(sizes)) of 0/1 structures.

    Returns:
        Predicted accuracies, shape (batch,).
    """

    def __init__(self, sizes, encoder_units=64, recurrent_units=64, **kwargs):
        super().__init__(**kwargs)
        self.sizes = [int(size) for size in sizes]
        self.encoder_units = integer_at_least("encoder_units", encoder_units)
        self.recurrent_units = integer_at_least(
            "recurrent_units", recurrent_units
        )
        self.encoders = [
            keras.layers.Dense(
                self.encoder_units, activation="relu", name=f"encoder_{i}"
            )
            for i in range(len(self.sizes))
        ]
        self.recurrent = keras.layers.GRU(self.recurrent_units, name="gru")
        self.head = keras.layers.Dense(1, activation="sigmoid", name="head")
        self._bounds = []
        start = 0
        for size in self.sizes:
            self._bounds.append((start, start + size))
            start += size

    def build(self, input_shape=None):
        for encoder, size in zip(self.encoders, self.sizes):
            encoder.build((None, size))
        self.recurrent.build((None, len(self.sizes), self.encoder_units))
        self.head.build((None, self.recurrent_units))
        self.built = True

    def call(self, structures):
        embedded = ops.stack(
            [
                encoder(structures[:, start:end])
                for encoder, (start, end) in zip(self.encoders, self._bounds)
            ],
            axis=1,
        )
        return self.head(self.recurrent(embedded))[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_config(self):
        return {
            **super().get_config(),
            "sizes": list(self.sizes),
            "encoder_units": self.encoder_units,
            "recurrent_units": self.recurrent_units,
        }
