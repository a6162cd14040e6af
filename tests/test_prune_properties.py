"""Property-based tests (issue 13.6): random small CNNs through `prune`.

Hypothesis draws functional CNNs from convolutions (plain, strided,
grouped, depthwise, separable), `Dense`, batch normalization, activations
(relu, swish, sigmoid, hard-swish written with `keras.ops`), residual `Add`
(layer or `+`), squeeze-excite `Multiply`, `Concatenate`, pooling,
`Flatten` and nested sub-models, and prunes each at a random `flops` with
a random criterion and allocation. Every example must:

* keep at most `flops` of the FLOPs, and within one point below it unless
  no single channel more fits (the allocation's rule allowing), or raise
  the unreachable-target error;
* slim to a model whose outputs equal the masked model's to 1e-4;
* survive a `.keras` round trip and a SavedModel export with equal
  outputs.

Examples are few and derandomized (the "ci" profile) so that the suite
stays fast and reproducible; for a long local run:

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest \
        tests/test_prune_properties.py
"""

import dataclasses
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck
from hypothesis import event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from keras import ops
from model_testing import max_relative_difference
from model_testing import randomize_batchnorm

import ekg_keras
from ekg_keras.flops import FlopsCounter
from ekg_keras.flops import keep_counts

settings.register_profile(
    "ci",
    max_examples=24,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=400,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ACTIVATIONS = ("relu", "swish", "sigmoid", "hard_swish")
BLOCKS = (
    "conv",
    "strided",
    "grouped",
    "depthwise",
    "separable",
    "residual",
    "ops_residual",
    "squeeze_excite",
    "concat",
    "pool",
    "nested",
)
WIDTHS = (16, 24, 32)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What to build and how to prune it."""

    size: int
    stem: int
    activation: str
    blocks: tuple  # (kind, width) pairs
    head: str
    flops: float
    criterion: str
    allocation: str
    seed: int


@st.composite
def recipes(draw):
    return Recipe(
        size=draw(st.sampled_from((8, 12))),
        stem=draw(st.sampled_from(WIDTHS)),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        blocks=tuple(
            draw(
                st.lists(
                    st.tuples(st.sampled_from(BLOCKS), st.sampled_from(WIDTHS)),
                    min_size=2,
                    max_size=5,
                )
            )
        ),
        head=draw(st.sampled_from(("pool", "flatten"))),
        flops=draw(st.floats(0.3, 0.9)),
        criterion=draw(st.sampled_from(("l1", "l2", "fpgm"))),
        allocation=draw(st.sampled_from(("uniform", "global"))),
        seed=draw(st.integers(0, 2**16)),
    )


def _activate(x, name):
    if name == "hard_swish":
        return x * ops.relu6(x + 3.0) / 6.0
    return keras.layers.Activation(name)(x)


def _conv(x, width, activation, **kwargs):
    kwargs.setdefault("padding", "same")
    x = keras.layers.Conv2D(width, kwargs.pop("kernel_size", 3), **kwargs)(x)
    return _activate(keras.layers.BatchNormalization()(x), activation)


def _block(x, kind, width, activation):
    channels = x.shape[-1]
    if kind == "conv":
        return _conv(x, width, activation)
    if kind == "strided":
        stride = 2 if x.shape[1] >= 4 else 1
        return _conv(x, width, activation, strides=stride)
    if kind == "grouped":
        return _conv(x, width, activation, groups=2)
    if kind == "depthwise":
        if width == 16:  # A depthwise convolution written as a grouped one.
            x = keras.layers.Conv2D(
                channels, 3, padding="same", groups=channels
            )(x)
        else:
            x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
        return _activate(keras.layers.BatchNormalization()(x), activation)
    if kind == "separable":
        x = keras.layers.SeparableConv2D(width, 3, padding="same")(x)
        return _activate(keras.layers.BatchNormalization()(x), activation)
    if kind == "residual":
        y = _conv(_conv(x, width, activation), channels, "linear")
        return _activate(keras.layers.Add()([x, y]), activation)
    if kind == "ops_residual":
        return x + _conv(x, channels, activation, kernel_size=1)
    if kind == "squeeze_excite":
        se = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
        se = keras.layers.Conv2D(4, 1, activation="relu")(se)
        se = keras.layers.Conv2D(channels, 1, activation="sigmoid")(se)
        return keras.layers.Multiply()([x, se])
    if kind == "concat":
        a = _conv(x, width, activation, kernel_size=1)
        b = _conv(x, width // 2, activation)
        return keras.layers.Concatenate()([a, b])
    if kind == "pool":
        if x.shape[1] < 4:
            return x
        pooling = (
            keras.layers.MaxPooling2D
            if width == 16
            else keras.layers.AveragePooling2D
        )
        return pooling(2)(x)
    if kind == "nested":
        inner_inputs = keras.Input(x.shape[1:])
        inner = _conv(inner_inputs, width, activation)
        inner = keras.Model(inner_inputs, inner)
        return inner(x)
    raise ValueError(f"Unknown block {kind!r}")


def build(recipe):
    """The functional model a recipe describes, random BN statistics."""
    keras.utils.set_random_seed(recipe.seed)
    inputs = keras.Input((recipe.size, recipe.size, 3))
    x = _conv(inputs, recipe.stem, recipe.activation)
    for kind, width in recipe.blocks:
        x = _block(x, kind, width, recipe.activation)
    if recipe.head == "flatten":
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(16, activation="relu")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)
    return randomize_batchnorm(keras.Model(inputs, outputs), recipe.seed)


def _could_keep_more(masked, recipe):
    """Whether one more channel in some group still fits the budget (and
    the uniform rule, for uniform allocation)."""
    graph = ekg_keras.graph.trace(masked, warn=False)
    counter = FlopsCounter(graph)
    keep = keep_counts(graph)
    target = recipe.flops * counter.macs(counter.full)
    free = np.array([g.prunable for g in graph.groups])
    sizes = graph.sizes.astype(np.float64)
    for group in np.flatnonzero(free & (keep < sizes)):
        trial = keep.copy()
        trial[group] += 1
        if recipe.allocation == "uniform":
            # The rule: some q has q*n <= keep <= q*n + 1 (floors of one
            # channel waived on the upper side).
            kept, n = trial[free], sizes[free]
            lowest_q = np.where(kept <= 1, -np.inf, (kept - 1) / n).max()
            if lowest_q > (kept / n).min() + 1e-12:
                continue  # Beyond one channel of the others.
        if counter.macs(trial) <= target:
            return True
    return False


def _assert_same(a, b, x, tolerance=1e-4):
    assert max_relative_difference(np.asarray(a), np.asarray(b)) < tolerance


@given(recipes())
@settings(max_examples=settings().max_examples)
@pytest.mark.slow
def test_prune_slim_save_and_export_random_cnns(recipe):
    keras.backend.clear_session(free_memory=False)
    model = build(recipe)
    try:
        masked = ekg_keras.prune(
            model,
            flops=recipe.flops,
            criterion=recipe.criterion,
            allocation=recipe.allocation,
            slim=False,
            verbose=0,
        )
    except ValueError as error:
        message = str(error)
        assert "below the smallest reachable fraction" in message or (
            "nothing prunable" in message
        ), message
        event("refused: " + message.split(":")[0][:40])
        return
    slim = ekg_keras.slim(masked)
    full = ekg_keras.count_flops(model).macs
    kept = ekg_keras.count_flops(slim).macs / full
    assert kept <= recipe.flops + 1e-9
    within = kept >= recipe.flops - 0.01
    event(
        f"{recipe.allocation}: "
        + ("within one point" if within else "granular, no channel more fits")
    )
    assert within or not _could_keep_more(masked, recipe)
    folds = [layer for layer in slim.layers if layer.name.endswith("_ones")]
    event(f"ones-channel folds: {bool(folds)}")
    assert ekg_keras.count_flops(masked).macs == pytest.approx(
        kept * full, rel=1e-9
    )
    rng = np.random.default_rng(recipe.seed)
    x = rng.standard_normal((2, recipe.size, recipe.size, 3)).astype("float32")
    expected = masked(x)
    _assert_same(slim(x), expected, x)
    with tempfile.TemporaryDirectory() as directory:
        slim.save(os.path.join(directory, "slim.keras"))
        loaded = keras.saving.load_model(os.path.join(directory, "slim.keras"))
        _assert_same(loaded(x), expected, x)
        ekg_keras.export(masked, os.path.join(directory, "saved_model"))
        served = tf.saved_model.load(os.path.join(directory, "saved_model"))
        _assert_same(served.serve(tf.constant(x)), expected, x)
