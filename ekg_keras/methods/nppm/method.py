"""NPPM as a registered pruning method ("nppm")."""

import math
import typing

import keras
import numpy as np

from ekg_keras import _logging as log
from ekg_keras._backend import tf
from ekg_keras._inputs import as_dataset
from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.data.subsets import collect_subsets
from ekg_keras.evaluation import SubnetworkEvaluator
from ekg_keras.methods.base import PruningMethod
from ekg_keras.methods.claims import Claim
from ekg_keras.methods.claims import register_claim
from ekg_keras.methods.nppm.options import OPTION_SETS
from ekg_keras.methods.nppm.options import NPPMOptions
from ekg_keras.methods.nppm.search_model import METRICS
from ekg_keras.methods.nppm.search_model import PerformanceMaximization
from ekg_keras.methods.nppm.structure import final_structure
from ekg_keras.methods.registry import register_method
from ekg_keras.methods.trajectory import Trajectory
from ekg_keras.numerics import check_finite
from ekg_keras.training.fitting import Fitter
from ekg_keras.training.fitting import TrainingPhase

#: The name of the search's training phase (trainers back it up under it).
PHASE = "nppm_search"


@register_method(
    "nppm",
    summary="NPPM: learned channel gates guided by an accuracy predictor",
)
class NPPM(PruningMethod):
    """Network pruning via performance maximization (NPPM).

    Learns a keep/prune gate per channel on a subset of the training data
    while the network's weights stay fixed: the gates follow the task
    loss, a differentiable FLOPs regulariser that vanishes at the target,
    and a performance-prediction network trained on the sub-networks met
    so far (an episodic memory of structures and their mini-batch
    accuracies), whose gradient is made orthogonal to the task loss's. The
    search is `PerformanceMaximization`, a `keras.Model` trained through the
    caller's fitter (Keras `fit` here, the trainers' distributed loop
    there), so it runs under any strategy and resumes from backups.

    The result is the noise-free structure (`w > 0`), made to meet `flops`
    exactly: the paper stops near the target, this method guarantees at or
    below it, within half a point (the lowest-logit channels go while it
    is above; the highest-logit pruned ones come back if it is more than
    half a point below, as far as single channels allow), and says so in
    `history`. Fine-tuning is plain by
    default; `trajectory()` holds the noise-free structure at
    `trajectory_points` epochs (and the start and the result) with their
    validation losses, so EKG's memory-bank distillation
    (`finetuner="ekg"`) works after NPPM too.

    With `checkpoint_dir` (and the library's own fitter) the search backs
    up at every epoch end (`keras.callbacks.BackupAndRestore`, kept when
    done): a new run on the same directory resumes, or reuses a finished
    search. With `tensorboard_dir` it writes the step metrics (FLOPs of
    the sampled structure, predictor loss, gamma, memory size, loss,
    accuracy) per epoch. The trainers back up and log every phase
    themselves.

    Options are the fields of `NPPMOptions`; common arguments are those of
    `ekg_keras.methods.PruningMethod`.

    Example:

    ```python
    small = ekg_keras.prune(model, 0.5, method="nppm", data=train,
                            epochs=200, finetune_epochs=30)
    ```

    Reference:
        Gao, Huang, Cai and Huang, "Network Pruning via Performance
        Maximization", CVPR 2021.
    """

    # Custom train steps in TensorFlow (tf.GradientTape, tf.function).
    backends = ("tensorflow",)
    Options = NPPMOptions
    option_sets = OPTION_SETS
    needs_data = True
    finetuner = "plain"
    smoke_options: typing.ClassVar[dict] = {
        "epochs": 2,
        "subset_size": 48,
        "batch_size": 16,
        "memory_size": 4,
        "window": 1,
        "predictor_batch_size": 2,
        "encoder_units": 4,
        "recurrent_units": 4,
        "trajectory_points": 2,
        "val_samples": 16,
    }
    # A CPU budget on digits (benchmarks/nppm.py): ~1,200 steps instead of
    # the paper's 200 epochs; a gate learning rate and window from the
    # authors' code, since 1e-3 cannot move the gates in so few steps.
    compare_options: typing.ClassVar[dict] = {
        "epochs": 30,
        "batch_size": 32,
        "learning_rate": 0.05,
        "window": 2,
        "val_samples": 100,
    }

    def __init__(self, model, scope, data=None, **kwargs):
        super().__init__(model, scope, data, **kwargs)
        as_dataset(data)  # Labels are needed: fail before anything runs.
        self.search_model = None
        self.evaluator = None
        self._final = None

    # The protocol.

    def search(self, fitter):
        options = self.options
        self._final = None
        subsets = self._subsets()
        with self.strategy.scope():
            self.search_model = self._search_model()
            optimizer = keras.optimizers.Adam(options.learning_rate)
        self.evaluator = SubnetworkEvaluator(
            self.model,
            self.graph,
            subsets.x_val,
            subsets.y_val,
            batch_size=options.eval_batch_size,
            strategy=self.strategy,
            cache=False,
            batch_statistics=options.batch_statistics,
        )
        phase = TrainingPhase(
            PHASE,
            self.search_model,
            options.epochs,
            optimizer=optimizer,
            data=self._training_data(subsets),
            augment=False,
            callbacks=[
                _SearchProgress(self, self._snapshot_epochs()),
                *self._own_callbacks(fitter),
            ],
        )
        synchronized = self.strategy.num_replicas_in_sync > 1 or None
        momentum = 1.0 if options.batch_statistics else None
        with batchnorm_settings(
            self.model, synchronized=synchronized, momentum=momentum
        ):
            fitter.fit(phase)
            self._finish()
        return self.model

    def trajectory(self):
        """The start, the noise-free structure at `trajectory_points`
        epochs and the result, with their validation losses."""
        if self._final is None:
            return None
        keeps, losses = self.search_model.snapshots()
        keeps = [*keeps, self._final["keep"]]
        losses = np.append(losses, self._final["loss"])
        fractions = [
            self.setup.fraction(self.setup.keep_counts(k)) for k in keeps
        ]
        return Trajectory(keeps, losses, np.asarray(fractions))

    # Steps of the search.

    def _subsets(self):
        options = self.options
        num_classes = int(self.setup.source.outputs[0].shape[-1])
        return collect_subsets(
            self.data,
            num_classes,
            val_per_class=math.ceil(options.val_samples / num_classes),
            subset_per_class=math.ceil(options.subset_size / num_classes),
            seed=options.seed,
        )

    def _search_model(self):
        return PerformanceMaximization(
            self.model,
            self.setup.scope,
            options=self.options,
            cost=self.setup.counter,
            name=PHASE,
        )

    def _training_data(self, subsets):
        """Shuffled full batches of the subset, every epoch anew."""
        options = self.options
        x = subsets.x_subset[: options.subset_size]
        y = subsets.y_subset[: options.subset_size]
        if len(y) == 0:
            raise ValueError(
                "NPPM needs training samples besides the validation subset, "
                f"but `data` holds only {len(subsets.y_val)}, all taken by "
                "it: pass a smaller `val_samples`. Received: "
                f"val_samples={options.val_samples}"
            )
        batch = min(options.batch_size, len(y))
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(y), seed=options.seed, reshuffle_each_iteration=True)
            .batch(batch, drop_remainder=True)
            .apply(tf.data.experimental.assert_cardinality(len(y) // batch))
            .prefetch(tf.data.AUTOTUNE)
        )

    def _snapshot_epochs(self):
        epochs, points = self.options.epochs, self.options.trajectory_points
        return sorted(
            {max(1, round(epochs * j / points)) for j in range(1, points + 1)}
        )

    def _own_callbacks(self, fitter):
        """Backups and TensorBoard, unless the caller's fitter (the
        trainers') does both for every phase."""
        if not isinstance(fitter, Fitter):
            return []
        callbacks = []
        if self.checkpoint_dir is not None:
            callbacks.append(
                keras.callbacks.BackupAndRestore(
                    str(self.checkpoint_dir), delete_checkpoint=False
                )
            )
        if self.tensorboard_dir is not None:
            callbacks.append(
                keras.callbacks.TensorBoard(str(self.tensorboard_dir))
            )
        return callbacks

    def show_noise_free(self):
        """Writes the noise-free structure into the network's masks (what
        per-epoch validation and summaries then see)."""
        self.evaluator.set_keep(self.search_model.noise_free_keep())

    def snapshot(self):
        """Stores the noise-free structure and its validation loss."""
        keep = self.search_model.noise_free_keep()
        self.search_model.add_snapshot(keep, self.validation_loss(keep))

    def validation_loss(self, keep):
        """Mean cross-entropy of a sub-network on the validation subset
        (its masks stay in the network)."""
        self.evaluator.set_keep(keep)
        logits = self.evaluator.logits()
        labels = self.evaluator.labels
        loss = float(
            np.mean(
                keras.losses.sparse_categorical_crossentropy(
                    labels, logits, from_logits=True
                )
            )
        )
        return check_finite(loss, "The validation loss", "the NPPM search")

    def _finish(self):
        logits = self.search_model.gate_logits()
        for group, values in zip(self.graph.groups, logits):
            if values is not None:
                check_finite(
                    values,
                    "NPPM gate logits",
                    f"group {group.id} ({', '.join(group.producers)})",
                )
        keep, record = final_structure(logits, self.setup)
        self.setup.apply(keep)
        self._final = {"keep": keep, "loss": self.validation_loss(keep)}
        self.history.append({"final": True, **record})
        if self.verbose:
            log.info(_describe(record, self.target))


class _SearchProgress(keras.callbacks.Callback):
    """The NPPM method's eyes on its search.

    Keeps the network's masks showing the noise-free structure after the
    last batch of each epoch (so per-epoch validation and FLOPs summaries
    see the current result), stores the start and the structure at
    `snapshot_epochs` for the trajectory (in the search model's weights,
    so backups keep them), and appends each epoch's metrics to the
    method's history.

    Args:
        method: The `NPPM` method.
        snapshot_epochs: Epoch numbers (1-based) after which to snapshot.
    """

    def __init__(self, method, snapshot_epochs):
        super().__init__()
        self.method = method
        self.snapshot_epochs = set(snapshot_epochs)

    def on_train_begin(self, logs=None):
        # Before a backup is restored (callbacks of the phase come first),
        # which then brings its own snapshots.
        if int(self.method.search_model.snapshot_count.numpy()) == 0:
            self.method.snapshot()

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.params.get("steps"):
            self.method.show_noise_free()

    def on_epoch_end(self, epoch, logs=None):
        self.method.show_noise_free()
        if epoch + 1 in self.snapshot_epochs:
            self.method.snapshot()
        logs = logs or {}
        self.method.history.append(
            {
                "epoch": epoch + 1,
                **{k: float(logs[k]) for k in METRICS if k in logs},
            }
        )


def _describe(record, target):
    text = (
        f"NPPM: the noise-free gates keep {record['noise_free_fraction']:.1%}"
        f" of the FLOPs (target {target:.1%})"
    )
    if record["removed_channels"]:
        text += (
            f"; removed the {record['removed_channels']} lowest-logit "
            "channels to meet the target"
        )
    if record["added_channels"]:
        text += (
            f"; brought back the {record['added_channels']} highest-logit "
            "pruned channels (more than a point below the target)"
        )
    return text + f"; result {record['fraction']:.1%}"

register_claim(
    Claim(
        "nppm_ge_uniform",
        "NPPM >= uniform pruning (uniform L1) at the same budget",
        "nppm",
        "l1",
        "Gao et al. CVPR 2021, Sec. 4.3, Table 2 (Uniform rows)",
    )
)
