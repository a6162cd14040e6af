"""Tests for ekg_keras.SubnetworkEvaluator: many keep configurations of one
model, evaluated from cached frontiers, equal to running the whole net."""

import keras
import numpy as np
import pytest

import ekg_keras
from ekg_keras.methods import apply_keep


def _model():
    keras.utils.set_random_seed(0)
    return ekg_keras.models.resnet20(input_shape=(8, 8, 3), num_classes=4)


def _configurations(graph, count, seed=0):
    rng = np.random.default_rng(seed)
    configurations = []
    for _ in range(count):
        keep = graph.full_keep()
        group = rng.choice([g.id for g in graph.prunable_groups])
        keep[group][
            rng.permutation(len(keep[group]))[: len(keep[group]) // 2]
        ] = False
        configurations.append(keep)
    return configurations


def test_evaluate_equals_the_whole_network_for_every_configuration():
    masked = ekg_keras.wrap(_model())
    graph = ekg_keras.graph.trace(masked)
    x = np.random.default_rng(1).standard_normal((24, 8, 8, 3)).astype("f")
    configurations = _configurations(graph, 5)
    fast = ekg_keras.SubnetworkEvaluator(
        masked, graph, x, batch_size=8, batch_statistics=False
    )
    results = fast.evaluate(configurations)
    # The masks are as they were (all kept).
    assert all(m.all() for m in ekg_keras.flops.group_keep_masks(graph))
    for keep, logits in zip(configurations, results, strict=True):
        apply_keep(masked, graph, keep)
        expected = masked(x, training=False)
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    apply_keep(masked, graph, graph.full_keep())
    plain = ekg_keras.SubnetworkEvaluator(
        masked, graph, x, batch_size=8, cache=False, batch_statistics=False
    )
    for a, b in zip(results, plain.evaluate(configurations), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert fast.evaluations == plain.evaluations == len(configurations)


def _chain():
    """Conv-BN-ReLU twice: one terminal masked layer per group."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for name, width in (("a", 8), ("b", 16)):
        x = keras.layers.Conv2D(width, 3, padding="same", name=name)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def test_importance_is_the_mask_gradient_of_the_objective():
    # Per terminal layer it is Taylor importance (`taylor_scores` sums the
    # layers of a group before the absolute value; here each group has one).
    masked = ekg_keras.wrap(_chain())
    graph = ekg_keras.graph.trace(masked)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 16)
    evaluator = ekg_keras.SubnetworkEvaluator(
        masked, graph, x, y, batch_size=16, batch_statistics=False
    )
    scores = evaluator.importance()
    reference = ekg_keras.taylor.taylor_scores(masked, graph, (x, y))
    for a, b in zip(scores, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_a_model_with_several_inputs_takes_one_array_per_input():
    # The "logits" are the first output, e.g. a per-sample loss against a
    # second input (SP scores its stage sub-networks so).
    keras.utils.set_random_seed(0)
    images = keras.Input((8, 8, 3))
    target = keras.Input((8, 8, 6))
    x = keras.layers.Conv2D(6, 3, padding="same", name="a")(images)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(6, 1, name="b")(keras.layers.ReLU()(x))
    body = ekg_keras.wrap(keras.Model(images, x))
    error = keras.ops.mean(
        keras.ops.square(body.outputs[0] - target), axis=(1, 2, 3)
    )
    masked = keras.Model(
        [body.inputs[0], target], keras.ops.expand_dims(error, -1)
    )
    graph = ekg_keras.graph.trace(masked, warn=False)
    rng = np.random.default_rng(3)
    arrays = [
        rng.standard_normal((10, 8, 8, 3)).astype("float32"),
        rng.standard_normal((10, 8, 8, 6)).astype("float32"),
    ]
    evaluator = ekg_keras.SubnetworkEvaluator(
        masked, graph, arrays, batch_size=4, cache=False
    )
    keep = graph.full_keep()
    group = graph.channels("a").outputs[0].group[0]
    keep[group][:3] = False
    losses = evaluator.evaluate([graph.full_keep(), keep])
    apply_keep(masked, graph, keep)
    expected = np.concatenate(
        [
            masked([arrays[0][a:b], arrays[1][a:b]], training=True)
            for a, b in evaluator.batches
        ]
    )
    np.testing.assert_allclose(losses[1], expected, rtol=1e-5, atol=1e-6)
    assert losses[1].shape == (10, 1)
    assert not np.allclose(losses[0], losses[1])
    assert len(evaluator.batch_inputs[0]) == 2
    with pytest.raises(ValueError, match="one array per model input"):
        ekg_keras.SubnetworkEvaluator(masked, graph, arrays[0])
