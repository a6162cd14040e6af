"""Which Keras backend runs, and TensorFlow imported only where needed.

The core (tracing, wrapping, counting, criteria, allocation, one-shot
pruning, slimming, folding, recalibration, fitting) runs on every Keras
backend. Modules that use TensorFlow import it as

```python
from ekg_keras._backend import tf
```

a module object that imports TensorFlow on first attribute access, so
`import ekg_keras` on JAX or PyTorch does not load TensorFlow's runtime.
What needs TensorFlow (tf.distribute, the custom train steps of EKG, NPPM,
LFPC and SP, SavedModel) calls `require_tensorflow` first, which raises a
one-line `NotImplementedError` on another backend.
"""

import contextlib
import importlib
import sys
import types

import keras


class _LazyModule(types.ModuleType):
    """A module imported on first attribute access."""

    def __init__(self, name):
        super().__init__(name)
        self._module = None

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        if self._module is None:
            self._module = importlib.import_module(self.__name__)
        return getattr(self._module, attribute)


#: TensorFlow, imported on first use.
tf = _LazyModule("tensorflow")


def name():
    """The Keras backend of this process ("tensorflow", "jax", "torch")."""
    return keras.backend.backend()


def is_tensorflow():
    """Whether Keras runs on TensorFlow."""
    return name() == "tensorflow"


def tensorflow_loaded():
    """Whether TensorFlow has been imported in this process."""
    return "tensorflow" in sys.modules


def is_dataset(data):
    """Whether `data` is a `tf.data.Dataset` (without importing TensorFlow:
    if it is not loaded, nothing can be one)."""
    return tensorflow_loaded() and isinstance(
        data, sys.modules["tensorflow"].data.Dataset
    )


def op_errors():
    """`tf.errors.OpError` as an `except` clause target, or `()` (matches
    nothing) while TensorFlow is not loaded."""
    if not tensorflow_loaded():
        return ()
    return sys.modules["tensorflow"].errors.OpError


def default_strategy():
    """The `tf.distribute` strategy in scope on TensorFlow; None on another
    backend (which has no `tf.distribute`)."""
    if not is_tensorflow():
        return None
    return tf.distribute.get_strategy()


def check_strategy(strategy, what):
    """Returns `strategy`, or the one in scope; refuses a strategy on a
    backend other than TensorFlow.

    Raises:
        NotImplementedError: For a strategy on JAX or PyTorch.
    """
    if strategy is not None:
        require_tensorflow(
            f"{what} with a tf.distribute strategy",
            "Leave `strategy` unset on this backend.",
        )
        return strategy
    return default_strategy()


def require_tensorflow(what, alternative):
    """Raises a one-line `NotImplementedError` unless Keras runs on
    TensorFlow.

    Args:
        what: What needs TensorFlow, e.g. "Method 'ekg'".
        alternative: What to use instead on this backend (a sentence, or
            "" to name only KERAS_BACKEND=tensorflow).

    Raises:
        NotImplementedError: On JAX or PyTorch.
    """
    if is_tensorflow():
        return
    instead = f" {alternative}" if alternative else ""
    raise NotImplementedError(
        f"{what} needs TensorFlow (KERAS_BACKEND=tensorflow). Received: "
        f"KERAS_BACKEND={name()}.{instead}"
    )


def scope(strategy):
    """`strategy.scope()`, or no scope for None (no `tf.distribute`)."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()
