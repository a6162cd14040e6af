"""Retraining from scratch: the found sub-network with fresh weights."""

import keras

from ekg_keras.layers import prunable_layers
from ekg_keras.taylor import default_loss
from ekg_keras.training.finetuners import FineTuner
from ekg_keras.training.finetuners import register_finetuner
from ekg_keras.training.fitting import TrainingPhase


@register_finetuner
class ScratchTraining(FineTuner):
    """Trains the pruned network from fresh weights ("scratch").

    SP (and the AutoML pruning methods it compares with) keep only the
    architecture they found and retrain it from scratch. Every weight of the
    masked model is drawn again from its layer's initializer (batch
    normalization statistics reset), its masks are kept, and the phase is
    plain cross-entropy on the training data with the caller's schedule.
    Usable after any method; a from-scratch schedule wants a higher
    learning rate and more epochs than fine-tuning (the trainers'
    `--learning_rate`, `--epochs`).
    """

    name = "scratch"

    def phase(
        self,
        model,
        epochs,
        fitter,
        trajectory=None,
        apply_keep=None,
        **options,
    ):
        if options:
            raise ValueError(
                "Training from scratch takes no options. Received: "
                f"{', '.join(sorted(options))}"
            )
        reinitialize(model)
        return TrainingPhase(
            "finetune", model, epochs, loss=default_loss(model)
        )


def reinitialize(model):
    """Draws every weight of `model` again from its initializers, keeping
    the filter masks.

    A clone of the model (same configs, hence the same initializers) is
    built with new weights, which are copied over.
    """
    masks = [
        (layer.filter_mask, layer.filter_mask.numpy())
        for layer in prunable_layers(model)
    ]
    fresh = keras.models.clone_model(model)
    model.set_weights(fresh.get_weights())
    for variable, value in masks:
        variable.assign(value)
