"""The models of a run: built from the zoo, or a `--pretrained` file."""

import os

import keras

import ekg_keras
from trainers.config import ConfigError
from trainers.config import first_line


def build_model(config, source):
    """A fresh model of `config.model` for `source` (logits out)."""
    options = {
        "num_classes": source.num_classes,
        "input_shape": source.input_shape,
    }
    if ekg_keras.models.is_application(config.model):
        options.update(weights=None, classifier_activation=None)
    model = ekg_keras.models.get(config.model, **options)
    if keras.mixed_precision.global_policy().compute_dtype == "float16":
        # Keras' advice for mixed precision: float32 outputs (losses and
        # top-k metrics are not float16-safe).
        outputs = keras.layers.Activation(
            "linear", dtype="float32", name="logits_float32"
        )(model.outputs[0])
        model = keras.Model(model.inputs, outputs, name=model.name)
    return model


def load_pretrained(path, source):
    """Loads a `.keras` model and checks that it fits `source`.

    Raises:
        ConfigError: If the file cannot be read as a Keras model, or its
            input shape or class count differ from the data's.
    """
    if not os.path.isfile(path):
        raise ConfigError(
            f"--pretrained should be a .keras file. Not found: {path!r}"
        )
    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # Keras raises many kinds here.
        raise ConfigError(
            f"--pretrained should be a .keras model file; {path!r} could not "
            f"be loaded: {type(error).__name__}: {first_line(error)}"
        ) from error
    check_compatible(model, source, what=f"--pretrained {path!r}")
    return model


def check_compatible(model, source, what):
    """Raises ConfigError if `model` cannot take `source`'s images/classes."""
    inputs = tuple(model.inputs[0].shape[1:])
    fits = len(inputs) == len(source.input_shape) and all(
        a is None or a == b for a, b in zip(inputs, source.input_shape)
    )
    classes = model.outputs[0].shape[-1]
    if not fits or classes != source.num_classes:
        raise ConfigError(
            f"{what} should take {source.name} images of shape "
            f"{source.input_shape} and output {source.num_classes} classes. "
            f"Received: input shape {inputs}, {classes} outputs."
        )
