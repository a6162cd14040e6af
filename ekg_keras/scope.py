"""`PruningScope`: what every pruning method shares, in one object.

The budget (a fraction of FLOPs or of measured latency), the FLOPs
convention, the layers kept whole, channel floors and `round_to`, and
where and how latency is measured: `prune` builds one scope from its
arguments, validates it once, and hands it whole to the method, the
method's set-up and its inner models, which save it whole in their
configs.
"""

import dataclasses
import numbers
import types

import keras
import numpy as np

from ekg_keras.allocation.levels import check_min_channels
from ekg_keras.latency import check_budget
from ekg_keras.latency import check_runtime
from ekg_keras.latency.counter import check_batch_size
from ekg_keras.validation import real_number


@keras.saving.register_keras_serializable(package="ekg_keras")
@dataclasses.dataclass(frozen=True)
class PruningScope:
    """The set-up every pruning method shares (frozen, serialisable).

    Give at most one budget: `flops` or `latency` (neither for a model
    that is not driven by a target, such as a soft-pruning network built
    with an explicit rate). NumPy scalars are accepted wherever a number
    is.

    Attributes:
        flops: Fraction of the original FLOPs (multiply-accumulates) to
            keep, in (0, 1]; 0.45 keeps 45 %.
        latency: Fraction of the original model's measured latency to
            keep, in (0, 1], instead of `flops` (see
            `ekg_keras.latency.LatencyCounter`).
        ignored_layers: Names of layers kept whole (their input and output
            channels are not pruned).
        round_to: Keep channel counts multiples of this (e.g. 8 for fast
            kernels), except for groups kept whole.
        min_channels: Fewest channels a group may keep, or a float in
            (0, 1): that fraction of each group's width (rounded up).
        include_bn: Count batch normalization in FLOPs (the EKG reference
            code's convention).
        include_fc: Count dense layers in FLOPs.
        latency_batch_size: Batch size at which latency is measured.
        runtime: Where latency is measured: "tf" (a compiled `model(x)`),
            "litert", "onnx" or "openvino" (the model as `ekg_keras.export`
            writes it; the package must be installed).
        latency_cache: The latency tables' cache file (default
            `ekg_keras.latency.default_cache_path()`).
        latency_options: Options of the `LatencyCounter` (`grid`, `runs`,
            `warmup`, `attempts`, `verbose`).
        input_shape: The input size FLOPs and latency are counted at,
            without the batch axis (e.g. `(224, 224, 3)`; one shape per
            input for a model with several): needed for a model with
            dynamic sizes (KerasHub's default `(None, None, 3)`), whose
            cost depends on the image size. The pruned model keeps its
            dynamic input. Methods that train see the model at this size.

    Raises:
        ValueError: For a budget outside (0, 1] or both budgets, a bad
            `round_to`, `min_channels`, `latency_batch_size` or
            `input_shape`, an unknown `runtime`, or `ignored_layers` that
            are not names.
        ImportError: If `runtime`'s package is not installed.

    Example:

    ```python
    scope = ekg_keras.PruningScope(flops=0.5, round_to=8)
    method = ekg_keras.methods.get("oneshot").create(model, scope)
    ```
    """

    flops: float = None
    latency: float = None
    ignored_layers: tuple = ()
    round_to: int = 1
    min_channels: float = 1
    include_bn: bool = False
    include_fc: bool = True
    latency_batch_size: int = 1
    runtime: str = "tf"
    latency_cache: str = None
    latency_options: dict = None
    input_shape: tuple = None

    def __post_init__(self):
        flops, latency = _number(self.flops), _number(self.latency)
        budget, _ = check_budget(flops, latency, required=False)
        self._set("flops", flops)
        self._set("latency", latency)
        if budget == "latency":
            check_runtime(self.runtime)
            check_batch_size(self.latency_batch_size)
        self._set("ignored_layers", _names(self.ignored_layers))
        self._set("round_to", _round_to(self.round_to))
        self._set(
            "min_channels", check_min_channels(_number(self.min_channels))
        )
        self._set("latency_options", _frozen(self.latency_options))
        self._set("input_shape", check_input_shape(self.input_shape))

    def _set(self, name, value):
        object.__setattr__(self, name, value)

    @property
    def budget(self):
        """ "flops", "latency", or None without a target."""
        if self.latency is not None:
            return "latency"
        return "flops" if self.flops is not None else None

    @property
    def fraction(self):
        """The fraction of the budget's cost to keep (None without one)."""
        return self.latency if self.latency is not None else self.flops

    def with_fraction(self, fraction):
        """The same scope with another fraction of the same budget (a
        FLOPs budget when it has none)."""
        name = "latency" if self.budget == "latency" else "flops"
        return dataclasses.replace(self, **{name: fraction})

    def without_budget(self):
        """The same scope without a target (e.g. for a model whose rate
        is set explicitly)."""
        return dataclasses.replace(self, flops=None, latency=None)

    @classmethod
    def of(cls, scope=None, **fields):
        """A scope from a `PruningScope`, a FLOPs fraction or None, with
        `fields` replacing its values.

        Raises:
            TypeError: If `scope` is neither, or `fields` names a field the
                scope does not have.
        """
        unknown = sorted(set(fields) - set(FIELDS))
        if unknown:
            raise TypeError(
                f"Unknown scope option(s) {unknown}. Expected some of "
                f"{list(FIELDS)}."
            )
        if isinstance(scope, cls):
            return dataclasses.replace(scope, **fields) if fields else scope
        if scope is None or isinstance(scope, (numbers.Number, np.ndarray)):
            return cls(**{"flops": scope, **fields})
        raise TypeError(
            "`scope` should be a PruningScope, a fraction of FLOPs to keep "
            f"or None. Received: {scope!r}"
        )

    @staticmethod
    def split(options):
        """Splits keyword options into `(scope fields, the rest)`."""
        scope = {k: v for k, v in options.items() if k in FIELDS}
        rest = {k: v for k, v in options.items() if k not in FIELDS}
        return scope, rest

    def get_config(self):
        """The scope as JSON-compatible values."""
        config = {name: getattr(self, name) for name in FIELDS}
        config["ignored_layers"] = list(self.ignored_layers)
        if self.latency_options is not None:
            config["latency_options"] = dict(self.latency_options)
        if self.input_shape is not None:
            config["input_shape"] = _lists(self.input_shape)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def check_input_shape(input_shape):
    """`input_shape` as a tuple of positive ints (or a tuple of such
    tuples, one per model input), or None.

    Raises:
        ValueError: Otherwise, saying what was received.
    """
    if input_shape is None:
        return None
    value = _shape(input_shape)
    if value is None and isinstance(input_shape, (tuple, list)):
        shapes = [_shape(s) for s in input_shape]
        if shapes and None not in shapes:
            return tuple(shapes)
    if value is None:
        raise ValueError(
            "`input_shape` should be the input size without the batch axis, "
            "positive integers such as (224, 224, 3) (or one such shape per "
            f"model input). Received: input_shape={input_shape!r}"
        )
    return value


def _shape(value):
    if not isinstance(value, (tuple, list)) or not value:
        return None
    sizes = [_number(v) for v in value]
    if any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes
    ):
        return None
    return tuple(sizes)


def _lists(shape):
    if all(isinstance(s, tuple) for s in shape):
        return [list(s) for s in shape]
    return list(shape)


#: The scope's field names, in order.
FIELDS = tuple(f.name for f in dataclasses.fields(PruningScope))


def _number(value):
    """A real scalar (NumPy scalars, 0-d arrays, `numbers.Real`) as a
    Python number; other values as they are (the budget checks say what
    they expected)."""
    return real_number(value)


def _names(layers):
    if isinstance(layers, str):
        layers = (layers,)
    layers = tuple(layers or ())
    bad = [name for name in layers if not isinstance(name, str)]
    if bad:
        raise ValueError(
            "`ignored_layers` should be layer names (strings). Received: "
            f"{bad!r}"
        )
    return layers


def _round_to(value):
    value = _number(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            "`round_to` should be a positive integer. Received: "
            f"round_to={value!r}"
        )
    return value


def _frozen(options):
    if options is None:
        return None
    return types.MappingProxyType(dict(options))
