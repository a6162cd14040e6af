"""The sampler's epoch ends: history in weights, TensorBoard, progress."""

import collections

import keras

from ekg_keras import _logging as log
from ekg_keras._backend import tf
from ekg_keras.methods.lfpc.history import SCALARS
from ekg_keras.methods.lfpc.history import group_label


class SamplerHistory(keras.callbacks.Callback):
    """Records every epoch of a `CriteriaSampler` and reports it.

    At each epoch end the sampler stores its criteria probabilities,
    expected keep counts and mean losses in its history weights (so a
    resumed search keeps the epochs before the restart; put this callback
    before any backup callback), raises `NonFiniteError` if a logit went
    NaN or infinite, writes TensorBoard scalars and, with `verbose`, prints
    a progress line about `lines` times per search.

    TensorBoard scalars: `lfpc/<loss, criteria_loss, computation_loss,
    expected_flops, tau>` and `criteria/<group>/<criterion>` (each group's
    criterion probabilities).

    Args:
        tensorboard_dir: Directory of the event files, or None.
        verbose: 1 prints progress lines.
        lines: About how many progress lines a search prints.
    """

    def __init__(self, tensorboard_dir=None, verbose=1, lines=10):
        super().__init__()
        self.tensorboard_dir = tensorboard_dir
        self.verbose = verbose
        self.lines = max(int(lines), 1)
        self._writer = None

    def on_train_begin(self, logs=None):
        if self.tensorboard_dir is not None:
            self._writer = tf.summary.create_file_writer(
                str(self.tensorboard_dir)
            )

    def on_epoch_end(self, epoch, logs=None):
        sampler = self.model
        record = sampler.record_epoch(epoch, logs)
        if self._writer is not None:
            self._summarize(sampler, record)
        interval = max(sampler.epochs // self.lines, 1)
        if self.verbose and (
            (epoch + 1) % interval == 0 or epoch + 1 == sampler.epochs
        ):
            log.info(_progress_line(sampler, record))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _summarize(self, sampler, record):
        with self._writer.as_default():
            for name in SCALARS:
                tf.summary.scalar(
                    f"lfpc/{name}", getattr(record, name), record.epoch
                )
            for p, group in enumerate(sampler.groups):
                label = group_label(group).replace(" ", "")
                for s, criterion in enumerate(record.criteria):
                    tf.summary.scalar(
                        f"criteria/{label}/{criterion}",
                        record.criteria_probabilities[p, s],
                        record.epoch,
                    )
        self._writer.flush()


def _progress_line(sampler, record):
    chosen = collections.Counter(record.chosen)
    choices = ", ".join(f"{name} {chosen[name]}" for name in record.criteria)
    return (
        f"LFPC sampler epoch {record.epoch + 1}/{sampler.epochs}: tau "
        f"{record.tau:.2f}, loss {record.loss:.4f} (CE "
        f"{record.criteria_loss:.4f}), expected FLOPs "
        f"{record.expected_flops:.3f} (target {sampler.target}), criteria: "
        f"{choices}"
    )
