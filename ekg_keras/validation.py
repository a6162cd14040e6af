"""One validation pass over what a user hands the library, before any work.

Every pruning method runs it through the method protocol
(`PruningMethod.__init__`), `prune` for its own arguments, and
`recalibrate_batchnorm` and the `Fitter` for the data they read, so a
method added to the registry is covered without an edit here:

* numbers: any real scalar (`numbers.Real`, NumPy scalars, 0-d arrays)
  becomes a Python number (`real_number`);
* the model: an already masked model (`prune(..., slim=False)`) is
  slimmed first, so that pruning it again prunes it (`check_model`);
* the data: images finite, x and y of one length, labels integer class
  ids in range for the model's outputs, images shaped like the model's
  input (`check_data`). Arrays are checked whole at once; a
  `tf.data.Dataset` is checked on its first batch at once and on every
  batch as it is read, so nothing is materialised;
* options without effect (latency settings under a FLOPs budget) warn
  (`warn_unused_scope_fields`).

Each problem is one `ValueError` (or `TypeError`) line naming what was
expected and what was received. Problems found in a dataset while it is
read surface inside TensorFlow; `reported_input_errors` turns them back
into that one line.
"""

import contextlib
import numbers
import re
import warnings

import numpy as np

from ekg_keras import _backend as backend
from ekg_keras import _logging as log
from ekg_keras._backend import tf
from ekg_keras._warnings import user_stacklevel
from ekg_keras.numerics import NonFiniteError


class NonFiniteDataError(NonFiniteError, ValueError):
    """NaN or infinity in the data given to the library (a `ValueError`
    and an `ekg_keras.numerics.NonFiniteError`)."""


# Problems found while a dataset is read are raised in TensorFlow with
# this tag and the error class, then re-raised as that class in Python.
_TAG = "ekg_keras input check"
_ERRORS = {
    "ValueError": ValueError,
    "TypeError": TypeError,
    "NonFinite": NonFiniteDataError,
}
_TAGGED = re.compile(rf"\[{_TAG}:(\w+)\] (.*?) \[/{_TAG}\]", re.DOTALL)


def real_number(value):
    """`value` as a Python `int` or `float` if it is a real scalar.

    Accepts `numbers.Real` (fractions included), NumPy scalars and 0-d
    arrays or tensors; booleans and anything else come back unchanged,
    for the caller's own check to name.
    """
    if hasattr(value, "shape") and tuple(value.shape) == ():
        if not isinstance(value, (np.ndarray, np.generic)):
            value = np.asarray(value)  # A 0-d tensor.
        value = value[()] if isinstance(value, np.ndarray) else value
    if isinstance(value, (bool, np.bool_)):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def real_numbers(values):
    """A dict with every real scalar among its values as a Python number
    (see `real_number`); other values unchanged."""
    return {key: real_number(value) for key, value in values.items()}


def check_model(model, verbose=1):
    """The model a method should prune: `model`, or its slim version if it
    is already masked (prunable layers from `prune(..., slim=False)`).

    Pruning a masked model again used to count it unpruned and keep its
    masks, a silent no-op; its slim version is the network it computes,
    so the budget becomes a fraction of that. The user's model is not
    modified.
    """
    from ekg_keras.layers import prunable_layers

    try:
        masked = bool(prunable_layers(model))
    except (AttributeError, TypeError):
        return model  # Not a Keras model: the set-up names the problem.
    if not masked:
        return model
    from ekg_keras.slim import slim

    if verbose:
        log.info(
            f"ekg_keras: model '{model.name}' is already masked (prunable "
            "layers); pruning its slim version, so the budget is a "
            "fraction of what it computes now."
        )
    return slim(model)


def warn_unused_scope_fields(scope):
    """Warns about latency settings that a FLOPs budget ignores."""
    if scope.budget == "latency":
        return
    unused = {
        name: value
        for name, value, default in (
            ("runtime", scope.runtime, "tf"),
            ("latency_batch_size", scope.latency_batch_size, 1),
            ("latency_cache", scope.latency_cache, None),
            ("latency_options", scope.latency_options, None),
        )
        if value != default
    }
    if unused:
        settings = ", ".join(f"{k}={v!r}" for k, v in unused.items())
        warnings.warn(
            f"{settings} has no effect under a FLOPs budget (flops="
            f"{scope.flops!r}); it applies to `latency=` budgets only.",
            stacklevel=user_stacklevel(),
        )


def warn_unused(name, value, why):
    """Warns that an argument has no effect, saying why."""
    warnings.warn(
        f"`{name}={value!r}` has no effect: {why}.",
        stacklevel=user_stacklevel(),
    )


def model_expectations(model, input_shape=None):
    """`(image shape without the batch axis, number of classes)` that data
    for `model` should have; None where unknown (several inputs or
    outputs, dynamic sizes are None inside the shape).

    Args:
        model: A Keras model.
        input_shape: The scope's `input_shape` (the size a dynamic model
            is pruned at), or None.
    """
    shape = classes = None
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        return None, None
    if input_shape is not None:
        if not isinstance(input_shape[0], tuple):
            shape = tuple(input_shape)
    elif inputs is not None and len(inputs) == 1:
        shape = tuple(inputs[0].shape[1:])
    if outputs is not None and len(outputs) == 1:
        last = outputs[0].shape[-1]
        if isinstance(last, int) and last >= 2:
            classes = last
    return shape, classes


def check_data(data, model=None, input_shape=None, name="data"):
    """Checks training data against `model`; returns the data to read.

    Args:
        data: An `(x, y)` tuple of arrays, or a `tf.data.Dataset` of
            `(inputs, labels)` batches (inputs may be `{"image": x,
            "id": ids}`).
        model: The model the data is for (its input shape and number of
            classes), or None to check only what needs no model.
        input_shape: The scope's `input_shape`, if any.
        name: The argument's name, for messages.

    Returns:
        `data` itself for arrays (checked whole); for a dataset, the same
        batches with every one checked as it is read (the first one
        checked already).

    Raises:
        TypeError: For data of another kind, or images or labels that
            are not numbers.
        ValueError: For an empty data set, x and y of different lengths,
            labels that are not class ids in range, or images of another
            shape than the model's input.
        NonFiniteDataError: For NaN or infinity, naming the sample.
    """
    shape, classes = (
        model_expectations(model, input_shape) if model else (None, None)
    )
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(
                f"`{name}` should be an (x, y) tuple of images and labels. "
                f"Received a {type(data).__name__} of {len(data)} items."
            )
        x, y = data
        labels = _array(y, f"{name}` labels")
        _check_batch(_images(x), labels, shape, classes, name)
        return data
    if backend.is_dataset(data):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(
                f"`{name}` should yield (inputs, labels) batches: pruning "
                f"needs labels. Received elements with spec {spec}."
            )
        _check_spec(_image_spec(spec[0]), shape, name)
        return _checked_stream(data, shape, classes, name, labels=True)
    raise TypeError(
        f"`{name}` should be a tf.data.Dataset of (inputs, labels) batches "
        f"or an (x, y) tuple of arrays. Received: {type(data).__name__}"
    )


def check_images(data, model=None, name="data"):
    """Like `check_data` for data whose labels are not read (batch-norm
    recalibration): images, `(images, labels)` or datasets of either.

    Returns:
        `data` itself, or for a dataset the same batches checked as they
        are read.
    """
    shape, _ = model_expectations(model) if model else (None, None)
    if backend.is_dataset(data):
        spec = data.element_spec
        images = spec[0] if isinstance(spec, tuple) else spec
        _check_spec(_image_spec(images), shape, name)
        return _checked_stream(
            data, shape, None, name, labels=isinstance(spec, tuple)
        )
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        labels = _array(y, f"{name}` labels")
        _check_batch(_images(x), labels, shape, None, name)
        return data
    _check_batch(_images(data), None, shape, None, name)
    return data


@contextlib.contextmanager
def reported_input_errors():
    """Turns a data problem found inside TensorFlow while a checked dataset
    is read back into its one-line Python error (no TensorFlow trace)."""
    try:
        yield
    except backend.op_errors() as error:
        found = _TAGGED.search(error.message or "")
        if found is None:
            raise
        kind, message = found.groups()
        raise _ERRORS[kind](message) from None


# Arrays (and the first batch of a dataset).


def _array(values, name):
    if isinstance(values, dict):
        return None  # Several inputs: checked by the model when called.
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` should be an array of numbers. Received: "
            f"{type(values).__name__} ({error})"
        ) from None
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"`{name}` should hold numbers. Received dtype {array.dtype}."
        )
    return array


def _images(x):
    if isinstance(x, dict) and "image" in x:
        x = x["image"]
    return _array(x, "data` images")


def _check_batch(x, y, shape, classes, name, where=""):
    """Checks images `x` and labels `y` (None to skip) of one batch or of
    the whole data set; `where` says which batch."""
    if x is not None:
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(f"`{name}` is empty{where}. Received: 0 samples.")
        if y is not None and (y.ndim == 0 or len(y) != len(x)):
            received = "a scalar" if y.ndim == 0 else f"{len(y)} labels"
            raise ValueError(
                f"`{name}` should have one label per image{where}. "
                f"Received {len(x)} images and {received}."
            )
        _check_shape(x.shape[1:], shape, name, where)
        _check_finite(x, f"`{name}`", where)
    if y is not None:
        _check_labels(y, classes, name, where)


def _check_shape(received, expected, name, where=""):
    if expected is None:
        return
    received = tuple(received)
    matches = len(received) == len(expected) and all(
        e is None or r is None or int(r) == int(e)
        for r, e in zip(received, expected)
    )
    if not matches:
        raise ValueError(
            f"Images in `{name}` should have the model's input shape "
            f"{_text(expected)} (without the batch axis){where}. Received "
            f"{_text(received)}. Resize the images or pass `input_shape=`."
        )


def _check_finite(array, what, where=""):
    if array.dtype.kind != "f":
        return
    flat = array.reshape(len(array), -1) if array.ndim else array[None]
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        others = int(np.sum(~finite)) - 1
        more = f" (and {others} other samples)" if others else ""
        raise NonFiniteDataError(
            f"{what} should hold finite numbers; sample {first}{where}{more} "
            "holds NaN or infinity."
        )


def _check_labels(y, classes, name, where=""):
    if y.ndim > 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise ValueError(
            f"Labels in `{name}` should be integer class ids, one per "
            f"sample{where}. Received labels of shape {y.shape} (one-hot "
            "labels? pass their argmax)."
        )
    y = y.reshape(-1)
    _check_finite(y, f"Labels in `{name}`", where)
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        first = int(np.argmax(y != np.round(y)))
        raise ValueError(
            f"Labels in `{name}` should be integer class ids. Received "
            f"{_label(y[first])} for sample {first}{where}."
        )
    if classes is not None and y.size and (y.min() < 0 or y.max() >= classes):
        first = int(np.argmax((y < 0) | (y >= classes)))
        raise ValueError(
            f"Labels in `{name}` should be in [0, {classes}) for a model "
            f"with {classes} outputs. Received {_label(y[first])} for "
            f"sample {first}{where} (labels from {_label(y.min())} to "
            f"{_label(y.max())})."
        )


def _label(value):
    value = value.item()
    return int(value) if float(value).is_integer() else value


def _text(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


# Datasets: the element spec, the first batch, then every batch as read.


def _image_spec(features):
    if isinstance(features, dict) and "image" in features:
        return features["image"]
    return features if isinstance(features, tf.TensorSpec) else None


def _check_spec(spec, shape, name):
    if spec is None:
        return
    if not (spec.dtype.is_floating or spec.dtype.is_integer):
        raise TypeError(
            f"Images in `{name}` should be numbers. Received dtype "
            f"{spec.dtype.name}."
        )
    if shape is not None and spec.shape.rank is not None:
        if spec.shape.rank != len(shape) + 1:
            raise ValueError(
                f"`{name}` should yield batches of images of shape "
                f"{_text(shape)}, i.e. elements of rank {len(shape) + 1}. "
                f"Received elements of shape {_text(spec.shape)}; batch "
                "the dataset?"
            )
        _check_shape(spec.shape[1:], shape, name)


def _checked_stream(dataset, shape, classes, name, labels):
    """The dataset with every batch checked in-graph as it is read, after
    checking its first batch here."""
    for element in dataset.take(1):
        x, y = _parts(element, labels)
        x = None if x is None else np.asarray(x)
        y = None if y is None else np.asarray(y)
        _check_batch(x, y, shape, classes, name, where=" of the first batch")

    # No Python control flow on tensors: nothing for autograph to convert.
    @tf.autograph.experimental.do_not_convert
    def check(index, element):
        x, y = _parts(element, labels)
        asserts = _graph_checks(x, y, index, shape, classes, name)
        with tf.control_dependencies(asserts):
            return tf.nest.map_structure(tf.identity, element)

    return dataset.enumerate().map(check)


def _parts(element, labels):
    features = element[0] if labels else element
    x = features
    if isinstance(features, dict):
        x = features.get("image")
    elif isinstance(features, (tuple, list)):
        x = None
    return x, (element[1] if labels else None)


def _graph_checks(x, y, index, shape, classes, name):
    """In-graph assertions over one batch (tagged for
    `reported_input_errors`)."""
    asserts = []

    def require(condition, kind, template, *values):
        message = tf.strings.format(
            f"[{_TAG}:{kind}] {template} [/{_TAG}]", values
        )
        asserts.append(tf.debugging.Assert(condition, [message]))

    if x is not None:
        if shape is not None and x.shape.rank == len(shape) + 1:
            expected = tf.constant([-1 if s is None else s for s in shape])
            received = tf.shape(x)[1:]
            require(
                tf.reduce_all((expected < 0) | (expected == received)),
                "ValueError",
                f"Images in `{name}` should have the model's input shape "
                f"{_text(shape)} (without the batch axis). Received {{}} "
                "in batch {}.",
                received,
                index,
            )
        if x.dtype.is_floating:
            flat = tf.reshape(x, [tf.shape(x)[0], -1])
            finite = tf.reduce_all(tf.math.is_finite(flat), axis=1)
            require(
                tf.reduce_all(finite),
                "NonFinite",
                f"`{name}` should hold finite numbers; sample {{}} of "
                "batch {} holds NaN or infinity.",
                tf.argmin(tf.cast(finite, tf.int32)),
                index,
            )
    if y is None:
        return asserts
    if x is not None:
        require(
            tf.shape(x)[0] == tf.shape(y)[0],
            "ValueError",
            f"`{name}` should have one label per image. Received {{}} "
            "images and {} labels in batch {}.",
            tf.shape(x)[0],
            tf.shape(y)[0],
            index,
        )
    labels = tf.reshape(y, [-1])
    if labels.dtype.is_floating:
        whole = tf.math.is_finite(labels) & tf.equal(labels, tf.round(labels))
        require(
            tf.reduce_all(whole),
            "ValueError",
            f"Labels in `{name}` should be finite integer class ids. "
            "Received {} for sample {} of batch {}.",
            labels[tf.argmin(tf.cast(whole, tf.int32))],
            tf.argmin(tf.cast(whole, tf.int32)),
            index,
        )
    if classes is not None:
        inside = (labels >= 0) & (labels < tf.cast(classes, labels.dtype))
        require(
            tf.reduce_all(inside),
            "ValueError",
            f"Labels in `{name}` should be in [0, {classes}) for a model "
            f"with {classes} outputs. Received {{}} for sample {{}} of "
            "batch {}.",
            labels[tf.argmin(tf.cast(inside, tf.int32))],
            tf.argmin(tf.cast(inside, tf.int32)),
            index,
        )
    return asserts
