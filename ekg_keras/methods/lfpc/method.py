"""LFPC as a registered method: the criteria sampler's search, then one
pruning with the learned criteria and widths."""

import os
import typing

import keras
import numpy as np

from ekg_keras import _logging as log
from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.methods.base import PruningMethod
from ekg_keras.methods.claims import Claim
from ekg_keras.methods.claims import register_claim
from ekg_keras.methods.lfpc.callbacks import SamplerHistory
from ekg_keras.methods.lfpc.data import validation_split
from ekg_keras.methods.lfpc.options import OPTION_SETS
from ekg_keras.methods.lfpc.options import LFPCOptions
from ekg_keras.methods.lfpc.sampler import CriteriaSampler
from ekg_keras.methods.lfpc.structure import TOLERANCE
from ekg_keras.methods.lfpc.structure import choose_structure
from ekg_keras.methods.lfpc.trajectory import criteria_trajectory
from ekg_keras.methods.registry import register_method
from ekg_keras.training.fitting import TrainingPhase


@register_method(
    "lfpc", summary="LFPC: learned criterion and width per group (DCS)"
)
class LFPC(PruningMethod):
    """Learning Filter Pruning Criteria: a criterion per group, learned.

    A differentiable criteria sampler (`CriteriaSampler`) learns, on a
    random half of the training data with the network's weights fixed,
    which criterion (L1, L2, geometric median by default) and how many
    channels each prunable channel group should keep, under the FLOPs
    target (thesis Sec. 6.3.2.3 and 6.4.1). Then each group takes its
    most probable criterion; the learned widths are scaled to meet `flops`
    within half a point below it; the network is pruned once. The fine-tuning
    the caller asks for follows: by default "cosine" (plain cross-entropy
    with the thesis' cosine schedule), or EKG's distillation ("ekg") from
    the sub-networks of `trajectory()`.

    `history` holds a `SamplerEpoch` per search epoch (criterion
    probabilities and the most probable criterion per group, expected
    counts and FLOPs, losses); `structure` the `LearnedStructure`;
    `ekg_keras.methods.lfpc.plot_criteria` draws them. With
    `checkpoint_dir` the sampler is backed up at every epoch end and a new
    run on the same directory resumes there (the trainers also back it up
    themselves); `tensorboard_dir` receives the criterion probabilities
    per group, the expected FLOPs and the losses. Under a `tf.distribute`
    strategy every replica samples the same structure and batch
    normalization is synchronised, so the result does not depend on the
    number of replicas.

    Example:

    ```python
    small = ekg_keras.prune(model, 0.5, method="lfpc", data=train,
                            search_epochs=600, finetune_epochs=100)
    ```

    Reference:
        He et al., "Learning Filter Pruning Criteria for Deep Convolutional
        Neural Networks Acceleration", CVPR 2020 (thesis ch. 6).
    """

    # Custom train steps in TensorFlow (tf.GradientTape, tf.function).
    backends = ("tensorflow",)
    Options = LFPCOptions
    option_sets = OPTION_SETS
    needs_data = True
    finetuner = "cosine"
    smoke_options: typing.ClassVar[dict] = {
        "search_epochs": 2,
        "batch_size": 16,
        "trajectory_steps": 2,
        "trajectory_samples": 16,
    }
    # benchmarks/lfpc.py's CPU setting (the thesis' 600 epochs at lr 1e-3
    # take a GPU).
    compare_options: typing.ClassVar[dict] = {
        "search_epochs": 50,
        "batch_size": 128,
        "learning_rate": 0.1,
    }

    def __init__(self, model, scope, data=None, **kwargs):
        super().__init__(model, scope, data, **kwargs)
        self.sampler = None
        self.structure = None
        self._trajectory = None
        self._validation = None

    def search(self, fitter):
        self.history, self.structure, self._trajectory = [], None, None
        if self.target >= 1.0:
            if self.verbose:
                log.info("LFPC: flops=1.0 keeps every channel; no search.")
            return self.model
        options = self.options
        data, samples = validation_split(
            self.data,
            int(self.setup.source.outputs[0].shape[-1]),
            fraction=options.val_fraction,
            batch_size=options.batch_size,
            seed=options.seed,
            buffer=options.shuffle_buffer,
        )
        self._validation = data
        sampler = self._sampler(int(data.cardinality()))
        if self.verbose:
            log.info(
                f"LFPC: training the criteria sampler ({len(sampler.groups)}"
                f" groups, criteria {', '.join(options.criteria)}) for "
                f"{options.search_epochs} epochs on {samples} samples of "
                f"`data`, target {self.target} of the FLOPs"
            )
        synchronized = self.strategy.num_replicas_in_sync > 1 or None
        with batchnorm_settings(
            self.model, momentum=1.0, synchronized=synchronized
        ):
            fitter.fit(
                TrainingPhase(
                    "lfpc_sampler",
                    sampler,
                    options.search_epochs,
                    optimizer=self._optimizer(),
                    data=data,
                    augment=False,
                    callbacks=self._callbacks(),
                )
            )
        self.history = sampler.epoch_history()
        self.structure = choose_structure(sampler, self.setup, options.counts)
        self.setup.apply(self.structure.keep)
        self._report()
        return self.model

    def trajectory(self):
        """Sub-networks from the unpruned network to the result along the
        learned criteria, each scored on validation samples (computed on
        the first call; see `criteria_trajectory`), or None before `run`."""
        if self.structure is None:
            return None
        if self._trajectory is None:
            options = self.options
            inputs, labels = _first_samples(
                self._validation, options.trajectory_samples
            )
            self._trajectory = criteria_trajectory(
                self.sampler,
                self.setup,
                self.structure,
                inputs,
                labels,
                steps=options.trajectory_steps,
                batch_size=options.batch_size,
                strategy=self.strategy,
            )
        return self._trajectory

    @property
    def criteria_per_group(self):
        """Dict mapping each prunable group's label to its criterion."""
        if self.structure is None:
            return {}
        groups = self.setup.graph.groups
        return {
            groups[g].producers[0]: name
            for g, name in zip(
                self.structure.group_ids, self.structure.criteria
            )
        }

    # Set-up.

    def _sampler(self, steps_per_epoch):
        options, setup = self.options, self.setup
        with self.strategy.scope():
            self.sampler = CriteriaSampler(
                self.model,
                setup.scope,
                options.criteria,
                widths=options.widths,
                epochs=options.search_epochs,
                steps_per_epoch=steps_per_epoch,
                lambda_comp=options.lambda_comp,
                tau_start=options.tau_start,
                tau_end=options.tau_end,
                seed=options.seed,
                batch_statistics=options.batch_statistics,
                cost=setup.counter,
                name="lfpc_sampler",
            )
        return self.sampler

    def _optimizer(self):
        with self.strategy.scope():
            return keras.optimizers.Adam(
                self.options.learning_rate,
                weight_decay=self.options.weight_decay or None,
            )

    def _callbacks(self):
        callbacks = [SamplerHistory(self.tensorboard_dir, self.verbose)]
        if self.checkpoint_dir is not None:
            # After the history: each backup holds its epoch's record.
            callbacks.append(
                keras.callbacks.BackupAndRestore(
                    os.path.join(str(self.checkpoint_dir), "sampler"),
                    delete_checkpoint=False,
                )
            )
        return callbacks

    def _report(self):
        structure = self.structure
        gap = self.target - structure.flops_fraction
        if self.verbose:
            counts = {
                name: structure.criteria.count(name)
                for name in self.options.criteria
            }
            log.info(
                "LFPC: criteria per group "
                + ", ".join(f"{k} {v}" for k, v in counts.items())
                + f"; pruned once to {structure.flops_fraction:.4f} of the "
                f"FLOPs (target {self.target})"
            )
        if gap > TOLERANCE and self.verbose:
            log.info(
                f"LFPC: the allowed keep counts (round_to="
                f"{self.scope.round_to}, min_channels="
                f"{self.scope.min_channels}) leave the structure {gap:.4f} "
                "below the target: no single allowed step more fits the budget."
            )


def _first_samples(dataset, count):
    """The first `count` samples of a batched dataset, as arrays."""
    images, labels = [], []
    taken = 0
    for x, y in dataset:
        images.append(np.asarray(x))
        labels.append(np.asarray(y))
        taken += len(labels[-1])
        if taken >= count:
            break
    return (
        np.concatenate(images)[:count],
        np.concatenate(labels)[:count].astype(np.int64),
    )

register_claim(
    Claim(
        "lfpc_ge_fpgm",
        "LFPC >= FPGM at the same budget",
        "lfpc",
        "fpgm",
        "He thesis Sec. 6.4.2, Table 6.2",
    )
)
