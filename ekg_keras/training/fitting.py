"""Training phases, and the default way of running them (`compile` + `fit`).

A method that trains (soft pruning, learned gates, a super-net) or a
fine-tuner describes what it trains as a `TrainingPhase`; how the phase runs
(which loop, data pipeline, callbacks, checkpoints, strategy) is the
caller's: `Fitter` runs it with Keras' `fit` on the data given to `prune`,
and the trainers run it with their distributed, resumable loop. So a method
never knows which of the two runs it.
"""

import dataclasses

import keras
import numpy as np

from ekg_keras import _backend as backend
from ekg_keras import validation
from ekg_keras._backend import tf
from ekg_keras._inputs import as_dataset
from ekg_keras.numerics import StopOnNonFinite
from ekg_keras.progress import EpochProgress


@dataclasses.dataclass
class TrainingPhase:
    """One stretch of training that a method or fine-tuner asks for.

    Attributes:
        name: What is trained ("soft_pruning", "finetune", "gates", ...);
            callers name directories and logs after it.
        model: The `keras.Model` to train through its `train_step`.
        epochs: Epochs to train.
        optimizer: A Keras optimizer, or None for the caller's training
            optimizer (the trainers' flags; `Fitter`'s defaults).
        loss: A Keras loss for `compile` (with an accuracy metric), or
            None when the model's `train_step` brings its own loss.
        data: Batches to train on, or None for the caller's training data.
        with_ids: The caller's training data must carry sample ids
            (`({"image": x, "id": id}, y)`).
        augment: Whether the caller's pipeline should augment (False when
            the model augments in its own step).
        callbacks: Callbacks the phase needs, run before the caller's.
    """

    name: str
    model: object
    epochs: int
    optimizer: object = None
    loss: object = None
    data: object = None
    with_ids: bool = False
    augment: bool = True
    callbacks: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if isinstance(self.epochs, bool) or int(self.epochs) < 1:
            raise ValueError(
                f"Training phase '{self.name}' should train at least one "
                f"epoch. Received: epochs={self.epochs!r}"
            )


class Fitter:
    """Runs training phases with `compile` and `fit` on the given data.

    The training optimizer (for phases that bring none) is SGD with
    Nesterov momentum 0.9 whose learning rate is divided by 5 at 30%, 60%
    and 80% of the phase (the fine-tuning of the EKG reference code's
    `train_cifar.py`).

    Args:
        data: Training data: an `(x, y)` tuple of arrays, or a
            `tf.data.Dataset` of `(inputs, labels)` batches (with sample ids,
            `({"image": x, "id": id}, y)`, for phases that need them).
        batch_size: Batch size for array data.
        learning_rate: Initial learning rate of the training optimizer.
        weight_decay: Its weight decay.
        shuffle_seed: Seed of the per-epoch shuffle of array data.
        callbacks: Extra Keras callbacks for every phase.
        strategy: `tf.distribute` strategy (default: the one in scope).
        verbose: Keras verbosity of `fit`.
    """

    def __init__(
        self,
        data,
        *,
        batch_size=128,
        learning_rate=1e-2,
        weight_decay=5e-4,
        shuffle_seed=1,
        callbacks=(),
        strategy=None,
        verbose=1,
    ):
        if data is None:
            raise ValueError(
                "Training needs data: pass `data=` with (inputs, labels) "
                "batches or an (x, y) tuple of arrays."
            )
        # Finite, one label per image, integer labels: what needs no model.
        self.data = validation.check_data(data)
        self.batch_size = int(batch_size)
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.shuffle_seed = shuffle_seed
        self.callbacks = list(callbacks)
        self.strategy = backend.check_strategy(strategy, "Fitter")
        self.verbose = verbose

    def fit(self, phase):
        """Compiles `phase.model` and trains it for `phase.epochs`."""
        data = phase.data
        if data is None:
            data = self.training_data(phase.with_ids)
        steps = _cardinality(data)
        optimizer = phase.optimizer or self.training_optimizer(
            phase.epochs * steps
        )
        with backend.scope(self.strategy):
            if phase.loss is None:
                phase.model.compile(optimizer=optimizer)
            else:
                phase.model.compile(
                    optimizer=optimizer, loss=phase.loss, metrics=["accuracy"]
                )
            _build_before_tracing(phase.model, data, phase.loss is not None)
        with validation.reported_input_errors():
            phase.model.fit(
                data,
                epochs=phase.epochs,
                # Datasets are shuffled by their pipelines (`training_data`).
                shuffle=False,
                callbacks=[
                    *phase.callbacks,
                    StopOnNonFinite(),
                    self._progress(phase),
                    *self.callbacks,
                ],
                verbose=self.verbose,
            )
        return phase.model

    def _progress(self, phase):
        """An estimate after the first epoch of a long phase; progress
        lines every 30 s when Keras prints no progress bar."""
        interactive = keras.config.is_interactive_logging_enabled()
        bar = self.verbose == 1 and interactive
        return EpochProgress(
            f"ekg_keras: {phase.name}",
            phase.epochs,
            verbose=1 if self.verbose else 0,
            lines=not bar,
            hint="Fewer epochs shorten it.",
        )

    def training_optimizer(self, total_steps):
        """SGD, Nesterov 0.9, learning rate / 5 at 30%, 60%, 80%."""
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [max(1, int(total_steps * f)) for f in (0.3, 0.6, 0.8)],
            [self.learning_rate * 0.2**i for i in range(4)],
        )
        with backend.scope(self.strategy):
            return keras.optimizers.SGD(
                schedule,
                momentum=0.9,
                nesterov=True,
                weight_decay=self.weight_decay or None,
            )

    def ordered_data(self, with_ids=False):
        """The training data in a fixed order, as given (no shuffling)."""
        if isinstance(self.data, (tuple, list)) and len(self.data) == 2:
            x, y = (np.asarray(a) for a in self.data)
            features = x
            if with_ids:
                ids = np.arange(len(x), dtype=np.int64)
                features = {"image": x, "id": ids}
            return tf.data.Dataset.from_tensor_slices((features, y)).batch(
                self.batch_size
            )
        if with_ids:
            check_ids(self.data)
            return self.data
        return as_dataset(self.data, self.batch_size)

    def training_data(self, with_ids=False):
        """Shuffled full batches of the training data, every epoch anew.

        Array data is shuffled per epoch; a dataset with sample ids is
        unbatched, shuffled and batched again (its rows are read by id, so
        order is free); any other dataset is used as given.
        """
        if not (isinstance(self.data, (tuple, list)) or with_ids):
            return as_dataset(self.data, self.batch_size)
        ordered = self.ordered_data(with_ids)
        samples = _count_samples(ordered)
        batch = min(_static_batch(ordered) or self.batch_size, samples)
        batches = samples // batch
        return (
            ordered.unbatch()
            .shuffle(
                samples, seed=self.shuffle_seed, reshuffle_each_iteration=True
            )
            .batch(batch, drop_remainder=True)
            .apply(tf.data.experimental.assert_cardinality(batches))
            .prefetch(tf.data.AUTOTUNE)
        )


def check_ids(data):
    """Checks that `data` yields `({"image": ..., "id": ...}, ...)`.

    Raises:
        ValueError: Naming how to add ids, when they are missing.
    """
    spec = getattr(data, "element_spec", None)
    features = spec[0] if isinstance(spec, tuple) else spec
    if not (isinstance(features, dict) and {"image", "id"} <= set(features)):
        raise ValueError(
            "This training is indexed by sample id: `data` should yield "
            '({"image": images, "id": ids}, labels), e.g. '
            "ekg_keras.data.digits(with_ids=True); for an unbatched "
            "(image, label) dataset: ds.enumerate().map(lambda i, e: "
            '({"image": e[0], "id": i}, e[1])) before batching. Received '
            f"elements with spec {spec}."
        )


def _count_samples(dataset):
    def size(features, *_):
        first = features["image"] if isinstance(features, dict) else features
        return tf.shape(first)[0]

    return int(dataset.map(size).reduce(0, lambda total, n: total + n))


def _static_batch(dataset):
    spec = dataset.element_spec[0]
    first = spec["image"] if isinstance(spec, dict) else spec
    return first.shape[0]


def _build_before_tracing(model, data, standard_loss):
    """Creates a compiled model's variables before `fit` traces its step.

    Without a strategy of its own, `fit` creates the metric, loss and
    optimizer variables while tracing the train step; a `tf.function` that
    creates variables on its first trace is traced a second time, so every
    phase would pay two traces (about 2 s each for a ResNet-20 on a CPU).
    A model with its own `train_step` (compiled without a loss) gets its
    optimizer built on its `trainable_variables`, the variables its step
    updates or a superset of them.
    """
    spec = getattr(data, "element_spec", None)
    if standard_loss and spec is not None:
        from ekg_keras.training import custom_loop

        custom_loop.build_from_spec(model, spec)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _cardinality(dataset):
    count = int(dataset.cardinality())
    if count > 0:
        return count
    return int(dataset.reduce(0, lambda total, _: total + 1))
