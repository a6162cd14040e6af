"""Plain fine-tuning with a cosine learning-rate schedule ("cosine").

LFPC fine-tunes the pruned network with a cosine schedule (thesis
Sec. 6.4.1, after TAS and SGDR without restarts), where the callers'
default optimizer (`Fitter`, the trainers) follows a piecewise-constant
one, so the fine-tuner brings its own optimizer and schedule.
"""

import math

import keras

from ekg_keras.taylor import default_loss
from ekg_keras.training.finetuners import FineTuner
from ekg_keras.training.finetuners import register_finetuner
from ekg_keras.training.fitting import TrainingPhase


class CosineLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate to a cosine of the training step.

    `lr = base * (final + (1 - final) * (1 + cos(pi * t / T)) / 2)`, with t
    the optimizer's step and T the phase's total steps (epochs times steps
    per epoch, from the callback parameters that `fit` and the trainers'
    loop set). The step comes from `optimizer.iterations`, read at every
    epoch start, so a run restored from a backup continues the curve.

    Args:
        base_rate: The learning rate at step 0.
        final_fraction: The rate at the end, as a fraction of `base_rate`.
    """

    def __init__(self, base_rate, final_fraction=0.0):
        super().__init__()
        self.base_rate = float(base_rate)
        self.final_fraction = float(final_fraction)
        self._step = 0
        self._total = None

    def rate(self, step, total):
        """The learning rate at `step` of `total`."""
        progress = min(step / max(total, 1), 1.0)
        cosine = (1 + math.cos(math.pi * progress)) / 2
        return self.base_rate * (
            self.final_fraction + (1 - self.final_fraction) * cosine
        )

    def on_epoch_begin(self, epoch, logs=None):
        epochs = self.params.get("epochs") or 1
        steps = self.params.get("steps")
        # Read once per epoch (after any restore), not per batch: reading
        # the step waits for the device.
        self._step = int(self.model.optimizer.iterations.numpy())
        if steps:
            self._total = epochs * steps
        else:  # Unknown epoch length: one value per epoch.
            self._total = None
            self.model.optimizer.learning_rate = self.rate(epoch, epochs)

    def on_train_batch_begin(self, batch, logs=None):
        if self._total is not None:
            self.model.optimizer.learning_rate = self.rate(
                self._step, self._total
            )
            self._step += 1


@register_finetuner
class CosineFineTuning(FineTuner):
    """Cross-entropy on the training data, SGD with a cosine schedule.

    SGD with Nesterov momentum; the learning rate falls from its initial
    value to `final_fraction` of it along a half cosine over the phase
    (`CosineLearningRate`). LFPC's default fine-tuner; any method's result
    can use it (`--finetuner=cosine`).

    Options (keyword arguments of `phase`, or from the run's settings):
        learning_rate: Initial rate (default: the `Fitter`'s; the trainers'
            `--learning_rate`). The thesis divides the pre-training rate by
            10 for a pre-trained model.
        weight_decay: Weight decay (default: the `Fitter`'s, the trainers'
            `--weight_decay`).
        momentum: Nesterov momentum (0.9; the trainers' `--momentum`).
        final_fraction: Final rate as a fraction of the initial one (0).
    """

    name = "cosine"

    def phase(
        self,
        model,
        epochs,
        fitter,
        trajectory=None,
        apply_keep=None,
        *,
        learning_rate=None,
        weight_decay=None,
        momentum=0.9,
        final_fraction=0.0,
    ):
        if learning_rate is None:
            learning_rate = getattr(fitter, "learning_rate", None)
        if weight_decay is None:
            weight_decay = getattr(fitter, "weight_decay", 0.0)
        if isinstance(learning_rate, bool) or not (
            isinstance(learning_rate, (int, float)) and learning_rate > 0
        ):
            raise ValueError(
                "Cosine fine-tuning needs a positive initial `learning_rate`"
                " (as an option, or from the Fitter). Received: "
                f"learning_rate={learning_rate!r}"
            )
        if not 0 <= final_fraction <= 1:
            raise ValueError(
                "`final_fraction` should be in [0, 1]. Received: "
                f"final_fraction={final_fraction!r}"
            )
        with fitter.strategy.scope():
            optimizer = keras.optimizers.SGD(
                learning_rate,
                momentum=momentum,
                nesterov=True,
                weight_decay=weight_decay or None,
            )
        return TrainingPhase(
            "finetune",
            model,
            epochs,
            optimizer=optimizer,
            loss=default_loss(model),
            callbacks=[CosineLearningRate(learning_rate, final_fraction)],
        )

    def options_from(self, settings):
        """`learning_rate`, `weight_decay` and `momentum` from a run's
        settings (the trainers' fine-tuning flags)."""
        return {
            key: settings[key]
            for key in ("learning_rate", "weight_decay", "momentum")
            if settings.get(key) is not None
        }
