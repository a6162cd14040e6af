"""The one decorator that marks a class public and serializable."""

import keras

PACKAGE = "ekg_keras"


def ekg_export(symbol):
    """Registers `symbol` with Keras serialization under `ekg_keras>Name`.

    Every public class of the library goes through this decorator, so a
    `.keras` file that contains it loads with `keras.saving.load_model` once
    `ekg_keras` is imported, without `custom_objects`.

    Args:
        symbol: A class (or function) to register.

    Returns:
        `symbol` itself.
    """
    return keras.saving.register_keras_serializable(package=PACKAGE)(symbol)
