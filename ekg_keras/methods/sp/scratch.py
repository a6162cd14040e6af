"""Retraining from scratch: the found sub-network with fresh weights."""

import keras

from ekg_keras.layers import prunable_layers
from ekg_keras.training.finetuners import PlainFineTuning
from ekg_keras.training.finetuners import register_finetuner


@register_finetuner
class ScratchTraining(PlainFineTuning):
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

    def phase(self, model, epochs, fitter, **options):
        phase = super().phase(model, epochs, fitter, **options)
        reinitialize(model)
        return phase


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
