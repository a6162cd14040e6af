"""Tests for ekg_keras.criteria: importance scores per channel group."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ekg_keras import criteria
from ekg_keras import graph
from ekg_keras import layers
from ekg_keras import ties
from ekg_keras.taylor import taylor_scores


def _two_producers_model():
    inputs = keras.Input((5, 5, 2))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    x = keras.layers.Add()([a, b])
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def _group(channel_graph, producer):
    record = channel_graph.channels(producer)
    return channel_graph.groups[record.outputs[0].group[0]]


def test_norms_aggregate_over_the_groups_producers():
    model = _two_producers_model()
    channel_graph = graph.trace(model)
    group = _group(channel_graph, "a")
    ka = model.get_layer("a").kernel.numpy().reshape(-1, 4).T
    kb = model.get_layer("b").kernel.numpy().reshape(-1, 4).T
    np.testing.assert_allclose(
        criteria.score("l2", channel_graph, group),
        np.sqrt((ka**2).sum(1) + (kb**2).sum(1)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        criteria.score("l1", channel_graph, group),
        np.abs(ka).sum(1) + np.abs(kb).sum(1),
        rtol=1e-6,
    )


def test_fpgm_prunes_the_filter_nearest_the_median_first():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    # Filters (columns): three spread points and one at their centre.
    model.get_layer("hidden").kernel.assign(
        np.array(
            [[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.2], [0.0, 0.0, 0.0, 0.0]],
            "float32",
        )
    )
    channel_graph = graph.trace(model)
    scores = criteria.score(
        "fpgm", channel_graph, _group(channel_graph, "hidden")
    )
    columns = model.get_layer("hidden").kernel.numpy().T
    expected = [sum(np.linalg.norm(c - d) for d in columns) for c in columns]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert np.argmin(scores) == 3


def test_bn_scale_uses_gamma_and_needs_a_batch_norm():
    model = _two_producers_model()
    gamma = np.array([0.5, -2.0, 1.0, 0.1], "float32")
    model.get_layer("bn").gamma.assign(gamma)
    channel_graph = graph.trace(model)
    np.testing.assert_allclose(
        criteria.score("bn_scale", channel_graph, _group(channel_graph, "a")),
        np.abs(gamma),
    )
    plain = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="h"),
            keras.layers.Dense(2),
        ]
    )
    plain_graph = graph.trace(plain)
    with pytest.raises(ValueError, match="needs a BatchNormalization"):
        criteria.score("bn_scale", plain_graph, _group(plain_graph, "h"))


def test_random_is_seeded_and_custom_callables_are_checked():
    model = _two_producers_model()
    channel_graph = graph.trace(model)
    group = _group(channel_graph, "a")
    first = criteria.score("random", channel_graph, group)
    np.testing.assert_array_equal(
        first, criteria.score("random", channel_graph, group)
    )

    def mean_abs(weights):
        return np.mean([np.abs(f).mean(1) for f in weights.filters], axis=0)

    assert criteria.score(mean_abs, channel_graph, group).shape == (4,)
    with pytest.raises(ValueError, match="one score per channel"):
        criteria.score(lambda w: np.zeros(3), channel_graph, group)
    with pytest.raises(ValueError, match="not all finite"):
        criteria.score(lambda w: np.full(4, np.nan), channel_graph, group)


def test_unknown_criterion_and_missing_data():
    with pytest.raises(ValueError, match="Received: criterion='l3'"):
        criteria.get("l3")
    assert criteria.requires_data("taylor")
    assert not criteria.requires_data("l2")
    model = _two_producers_model()
    channel_graph = graph.trace(model)
    with pytest.raises(ValueError, match="needs data"):
        criteria.score("taylor", channel_graph, _group(channel_graph, "a"))


def test_taylor_scores_equal_first_order_change_of_the_loss():
    model = layers.wrap(_two_producers_model())
    channel_graph = graph.trace(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5, 5, 2)).astype("float32")
    y = rng.integers(0, 3, 6)
    scores = taylor_scores(model, channel_graph, (x[:3], y[:3]), loss=None)
    group = _group(channel_graph, "a")
    # Reference: |sum dL/dy * y| at the batch-norm output, per batch.
    bn = model.get_layer("bn")
    features = keras.Model(model.inputs, [bn.output, model.outputs[0]])
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    expected = np.zeros(4)
    for start in (0,):
        xb, yb = x[start : start + 3], y[start : start + 3]
        with tf.GradientTape() as tape:
            activations, _ = features(xb, training=False)
            tape.watch(activations)
            tail = keras.Model(bn.output, model.outputs[0])
            loss = loss_fn(yb, tail(activations, training=False))
        gradient = tape.gradient(loss, activations).numpy()
        expected += np.abs((gradient * activations.numpy()).sum((0, 1, 2)))
    np.testing.assert_allclose(scores[group.id], expected, rtol=1e-4, atol=1e-7)
    assert criteria.score("taylor", channel_graph, group, scores).shape == (4,)


def test_ties_of_data_scores_are_wider_than_ties_of_weight_scores():
    """Taylor scores come through the framework's kernels (their rounding
    differs between CPUs); norms are NumPy sums of the same weights."""
    assert criteria.get("taylor").tie_rtol == ties.SCORE_RTOL
    assert criteria.get("l1").tie_rtol == ties.WEIGHT_RTOL
    assert criteria.get("fpgm").tie_rtol == ties.WEIGHT_RTOL
