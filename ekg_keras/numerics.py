"""Numerical hygiene: NaN or infinity stops a search or a training run with
an error that says where, instead of leaving a silently bad mask."""

import keras
import numpy as np


class NonFiniteError(FloatingPointError):
    """NaN or infinity where a search or training needs finite numbers."""


def check_finite(values, what, where=""):
    """Returns `values` if all are finite, else raises `NonFiniteError`.

    Args:
        values: An array-like (or scalar).
        what: What the values are ("importance scores", "loss", ...).
        where: Where they come from ("step 3, group 2 (conv1)", ...).

    Raises:
        NonFiniteError: Naming `what`, `where` and how many are bad.
    """
    array = np.asarray(values)
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        place = f" at {where}" if where else ""
        raise NonFiniteError(
            f"{what}{place} should be finite; {bad} of {array.size} values "
            "are NaN or infinite. Check the data and the learning rate."
        )
    return values


def check_finite_data(x, name="data"):
    """Raises `NonFiniteError` if an input array holds NaN or infinity,
    naming the first bad sample."""
    array = np.asarray(x)
    if array.dtype.kind not in "fc":
        return x
    finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if not finite.all():
        raise NonFiniteError(
            f"`{name}` should hold finite numbers; sample "
            f"{int(np.argmin(finite))} (and {int(np.sum(~finite)) - 1} "
            "others) holds NaN or infinity."
        )
    return x


def first_non_finite_layer(model):
    """The name of the first layer with a NaN or infinite weight, or None."""
    for layer in _layers(model):
        for weight in layer.weights:
            value = np.asarray(keras.ops.convert_to_numpy(weight))
            if value.dtype.kind in "fc" and not np.all(np.isfinite(value)):
                return f"{layer.name}/{weight.name}"
    return None


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training with `NonFiniteError` when an epoch's loss is NaN or
    infinite, naming the epoch and the first layer whose weights are no
    longer finite.

    It checks at epoch ends (the epoch's mean loss is non-finite as soon as
    one batch was), so it adds no per-batch synchronisation to training.
    """

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.isfinite(float(loss)):
            return
        layer = first_non_finite_layer(self.model)
        where = f"; first non-finite weight: {layer}" if layer else ""
        raise NonFiniteError(
            f"The training loss became {float(loss)} in epoch {epoch + 1}"
            f"{where}. Lower the learning rate or check the data."
        )


def _layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
