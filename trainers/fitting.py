"""How a run trains: every `TrainingPhase` through the distributed loop.

A method or fine-tuner asks for training as `TrainingPhase`s; `RunFitter`
runs each with the run's settings: its optimizer (unless the phase brings
one), its input pipeline (unless the phase brings its data), atomic
backups (so a killed run resumes mid-phase), TensorBoard and pruning
summaries, validation at every epoch end, under the run's strategy.
"""

import os

import keras

from ekg_keras.numerics import StopOnNonFinite
from trainers import callbacks as callbacks_lib
from trainers import loop


class RunFitter:
    """Runs training phases for one stage of a run.

    Implements what methods expect of a `ekg_keras.training.Fitter`:
    `fit(phase)`, `ordered_data(with_ids)` and `strategy`.

    Args:
        config: The `RunConfig`.
        pipelines: The run's `Pipelines`.
        directory: This worker's directory of the stage (backups go to
            `<directory>/backup/<phase>` and stay until the stage ends, so
            a phase that finished is not trained again after a restart).
        log_dir: The stage's TensorBoard directory, or None (not chief).
        full_macs: MACs of the unpruned model, for the summaries.
        validate: `network -> dict` of validation results per epoch.
        pretrain: Use the pre-training schedule (else fine-tuning's).
        verbose: Keras verbosity.
        say: Called with one-line messages (a damaged backup); default:
            printed.
    """

    def __init__(
        self,
        config,
        pipelines,
        directory,
        log_dir,
        full_macs,
        validate,
        pretrain=False,
        verbose=1,
        say=None,
    ):
        self.config = config
        self.pipelines = pipelines
        self.strategy = pipelines.strategy
        self.directory = directory
        self.log_dir = log_dir
        self.full_macs = full_macs
        self.validate = validate
        self.prefix = "pretrain_" if pretrain else ""
        self.verbose = verbose
        self.say = say
        self.resumed_at_epoch = 0

    def ordered_data(self, with_ids=False):
        """The training split in order (banks, statistics)."""
        return self.pipelines.ordered(with_ids)

    def fit(self, phase):
        """Trains `phase.model` for `phase.epochs` with the run's loop.

        Returns:
            The trained model; `resumed_at_epoch` holds the epoch it
            started at (> 0 after a restart).
        """
        if phase.data is None:
            steps = self.pipelines.steps_per_epoch()
            augment = None if phase.augment else False

            def dataset(epoch):
                return self.pipelines.training(epoch, phase.with_ids, augment)

            spec = self.pipelines.training_spec(phase.with_ids)
        else:
            steps = int(phase.data.cardinality())
            dataset = self.strategy.experimental_distribute_dataset(
                phase.data.repeat()
            )
            spec = phase.data.element_spec
        self._compile(phase, phase.epochs * steps)
        network = callbacks_lib.network_of(phase.model)
        self.resumed_at_epoch = loop.train(
            phase.model,
            self.strategy,
            dataset,
            epochs=phase.epochs,
            steps_per_epoch=steps,
            element_spec=spec,
            callbacks=self._callbacks(phase),
            validate=lambda: self.validate(network),
            verbose=self.verbose,
            jit_compile=self.config.jit_compile,
            sync_batchnorm=self.config.sync_batchnorm,
        )
        return phase.model

    def _callbacks(self, phase):
        backup = callbacks_lib.Backup(
            os.path.join(self.directory, "backup", phase.name),
            self.config.backup_every_steps,
            delete_when_done=False,
            say=self.say,
        )
        callbacks = [*phase.callbacks, backup, StopOnNonFinite()]
        if self.log_dir is not None:
            log_dir = os.path.join(self.log_dir, phase.name)
            callbacks += [
                keras.callbacks.TensorBoard(log_dir),
                callbacks_lib.PruningSummaries(
                    log_dir,
                    self.full_macs,
                    input_shape=self.pipelines.source.input_shape,
                ),
            ]
        return callbacks

    def _compile(self, phase, total_steps):
        config = self.config
        optimizer = phase.optimizer
        with self.strategy.scope():
            if optimizer is None:
                optimizer = self._optimizer(total_steps)
            if phase.loss is None:
                phase.model.compile(
                    optimizer=optimizer, jit_compile=config.jit_compile
                )
                return
            phase.model.compile(
                optimizer=optimizer,
                loss=phase.loss,
                metrics=[
                    keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                    keras.metrics.SparseTopKCategoricalAccuracy(
                        k=min(5, self.pipelines.source.num_classes),
                        name="top5",
                    ),
                ],
                jit_compile=config.jit_compile,
            )

    def _optimizer(self, total_steps):
        """SGD (Nesterov) with the run's piecewise-constant schedule."""
        config, prefix = self.config, self.prefix
        rate = getattr(config, f"{prefix}learning_rate")
        decay = getattr(config, f"{prefix}decay_rate")
        points = getattr(config, f"{prefix}decay_points")
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [max(1, int(total_steps * p)) for p in points],
            [rate * decay**k for k in range(len(points) + 1)],
        )
        return keras.optimizers.SGD(
            schedule,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=getattr(config, f"{prefix}weight_decay") or None,
        )
