"""NPPM's episodic memory of (structure, accuracy) samples (Eq. 6-7)."""

import keras

from ekg_keras._api import ekg_export
from ekg_keras._backend import tf
from ekg_keras.methods.nppm.checks import integer_at_least
from ekg_keras.methods.nppm.replicas import replicated_state


@ekg_export
class EpisodicMemory(keras.layers.Layer):
    """Sub-networks seen during the search and their accuracies, as weights.

    Every step adds one `(structure, mini-batch accuracy)` pair to a window;
    every `window` steps (NPPM's c) the window becomes one enhanced sample
    `(1[mean(a) > 1/2], mean(q))` (Eq. 6). Samples are appended until the
    memory holds `capacity` (K_max) of them; then each new one replaces the
    entry with the closest accuracy, which keeps the memory spread over
    accuracies (Eq. 7). Entries are drawn for the predictor with
    probabilities inverse to the size of their accuracy bin (`bins` bins of
    width `(max - min) / (bins - 1)` over the stored accuracies), so rare
    accuracies are seen as often as common ones.

    All of it (samples, their count, the open window) lives in
    non-trainable weights updated inside the compiled train step, so a
    checkpoint or `BackupAndRestore` resumes with the same memory. Updates
    are written identically on every replica of a `tf.distribute` strategy
    (each replica computes the same values; the first one's are kept).

    Args:
        length: Length of a structure vector.
        capacity: K_max, the most samples held (500).
        window: c, the steps averaged into one sample (5).
        bins: N, accuracy bins for re-sampling (10).
        **kwargs: Passed to `keras.layers.Layer`.
    """

    def __init__(self, length, capacity=500, window=5, bins=10, **kwargs):
        super().__init__(**kwargs)
        self.length = integer_at_least("length", length)
        self.capacity = integer_at_least("capacity", capacity)
        self.window = integer_at_least("window", window)
        self.bins = integer_at_least("bins", bins, minimum=2)
        self.structures = replicated_state(
            self, "structures", (self.capacity, self.length)
        )
        self.accuracies = replicated_state(self, "accuracies", (self.capacity,))
        self.size = replicated_state(self, "size", (), "int32")
        self.window_structure = replicated_state(
            self, "window_structure", (self.length,)
        )
        self.window_accuracy = replicated_state(self, "window_accuracy", ())
        self.window_count = replicated_state(self, "window_count", (), "int32")
        self.built = True

    def record(self, structure, accuracy):
        """Adds one step's structure and accuracy (inside a train step).

        Args:
            structure: The sampled 0/1 structure vector.
            accuracy: Its mini-batch accuracy, in [0, 1].

        Returns:
            Whether this step closed a window and stored a sample.
        """
        structure = tf.cast(tf.stop_gradient(structure), tf.float32)
        count = self.window_count + 1
        total = self.window_structure + structure
        accuracy_total = self.window_accuracy + tf.cast(accuracy, tf.float32)
        commit = count >= self.window
        enhanced = tf.cast(total / self.window > 0.5, tf.float32)
        mean_accuracy = accuracy_total / self.window
        size = tf.convert_to_tensor(self.size)
        full = size >= self.capacity
        slot = tf.where(
            full, self.closest(mean_accuracy), tf.minimum(size, self.capacity)
        )
        slot = tf.minimum(slot, self.capacity - 1)
        # One row is written every step (unchanged unless `commit`): a
        # conditional write would need control flow around a cross-replica
        # update, which tf.distribute does not allow in a replica step.
        row = tf.where(commit, enhanced, tf.gather(self.structures, slot))
        value = tf.where(
            commit, mean_accuracy, tf.gather(self.accuracies, slot)
        )
        _write_row(self.structures, slot, row)
        _write_row(self.accuracies, slot, value)
        self.size.assign(size + tf.cast(commit & ~full, tf.int32))
        self.window_count.assign(tf.where(commit, 0, count))
        self.window_structure.assign(
            tf.where(commit, tf.zeros_like(total), total)
        )
        self.window_accuracy.assign(tf.where(commit, 0.0, accuracy_total))
        return commit

    def closest(self, accuracy):
        """Index of the stored sample whose accuracy is closest (Eq. 7)."""
        gaps = tf.abs(tf.convert_to_tensor(self.accuracies) - accuracy)
        gaps = tf.where(self._valid(), gaps, float("inf"))
        return tf.argmin(gaps, output_type=tf.int32)

    def sampling_probabilities(self):
        """Per entry, the probability of drawing it: inverse to the count
        of its accuracy bin, zero for empty slots, summing to one (all zero
        while the memory is empty)."""
        valid = self._valid()
        counts = tf.math.unsorted_segment_sum(
            tf.cast(valid, tf.float32), self.bin_indices(), self.bins
        )
        per_entry = tf.gather(counts, self.bin_indices())
        weights = tf.where(valid, 1.0 / tf.maximum(per_entry, 1.0), 0.0)
        total = tf.reduce_sum(weights)
        return tf.math.divide_no_nan(weights, total)

    def bin_indices(self):
        """Accuracy bin of every entry: the nearest of the `bins` points
        `min, min + width, ..., max` with `width = (max - min) / (bins -
        1)` over the stored samples (so the N bins of that width span the
        accuracies, the extremes at bin centres)."""
        valid = self._valid()
        accuracies = tf.convert_to_tensor(self.accuracies)
        low = tf.reduce_min(tf.where(valid, accuracies, float("inf")))
        high = tf.reduce_max(tf.where(valid, accuracies, float("-inf")))
        width = (high - low) / (self.bins - 1)
        position = tf.math.divide_no_nan(accuracies - low, width)
        position = tf.where(tf.math.is_finite(position), position, 0.0)
        bins = tf.cast(tf.floor(position + 0.5), tf.int32)
        return tf.clip_by_value(bins, 0, self.bins - 1)

    def sample(self, batch_size, seed):
        """Draws `batch_size` entries (with replacement) by
        `sampling_probabilities`; deterministic for a given stateless seed.

        Returns:
            `(structures, accuracies)` of the drawn entries.
        """
        probabilities = self.sampling_probabilities()
        # While empty, draw slot 0 (zeros): callers do not learn from it.
        probabilities = tf.where(
            tf.reduce_sum(probabilities) > 0,
            probabilities,
            tf.one_hot(0, self.capacity),
        )
        # Inverse-CDF draws (XLA compiles these, not `stateless_categorical`).
        cumulative = tf.cumsum(probabilities)
        uniform = tf.random.stateless_uniform([batch_size], seed)
        indices = tf.searchsorted(
            cumulative, uniform * cumulative[-1], side="right"
        )
        indices = tf.minimum(indices, self.capacity - 1)
        return (
            tf.gather(self.structures, indices),
            tf.gather(self.accuracies, indices),
        )

    def _valid(self):
        return tf.range(self.capacity) < self.size

    def get_config(self):
        return {
            **super().get_config(),
            "length": self.length,
            "capacity": self.capacity,
            "window": self.window,
            "bins": self.bins,
        }


def _write_row(variable, index, value):
    """Writes `variable[index] = value` as a sparse update of one row."""
    target = variable.value
    target.scatter_update(
        tf.IndexedSlices(value[None], tf.reshape(index, (1,)))
    )
