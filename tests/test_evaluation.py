"""Tests for ekg_keras.SubnetworkEvaluator: many keep configurations of one
model, evaluated from cached frontiers, equal to running the whole net."""

import keras
import numpy as np
import pytest
from model_testing import reference_importance

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


def test_importance_equals_the_per_layer_sums_on_a_resnet():
    # Residual groups span several terminal layers; some channels masked.
    masked = ekg_keras.wrap(_model())
    graph = ekg_keras.graph.trace(masked)
    keep = graph.full_keep()
    for group in graph.prunable_groups[:4]:
        keep[group.id][: group.size // 4] = False
    apply_keep(masked, graph, keep)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 20)
    evaluator = ekg_keras.SubnetworkEvaluator(masked, graph, x, y, batch_size=8)
    evaluator.set_keep(keep)
    scores = evaluator.importance()
    reference = reference_importance(masked, graph, [x[:8], x[8:16], x[16:]], y)
    for a, b, k in zip(scores, reference, keep, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
        assert (a[~k] == 0).all()
    assert any(s.max() > 0 for s in scores)


def _residual():
    """A stem, one residual block and a head: four groups, three frontiers."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    stem = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    stem = keras.layers.ReLU()(keras.layers.BatchNormalization()(stem))
    x = keras.layers.Conv2D(6, 3, padding="same", name="a")(stem)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(8, 3, padding="same", name="b")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(keras.layers.Add()([x, stem]))
    x = keras.layers.Conv2D(10, 3, strides=2, padding="same", name="c")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


@pytest.mark.parametrize("cache", [True, False])
def test_stacked_layout_equals_the_sequential_one(cache):
    masked = ekg_keras.wrap(_residual())
    graph = ekg_keras.graph.trace(masked)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((20, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 20)
    configurations = [graph.full_keep() for _ in graph.prunable_groups]
    for keep, group in zip(configurations, graph.prunable_groups):
        keep[group.id][: group.size // 2] = False  # One per group.
    several = graph.full_keep()  # Changes two groups: runs from the inputs.
    for group in graph.prunable_groups[1:3]:
        several[group.id][:2] = False
    configurations.append(several)
    results = {}
    for layout in ("sequential", "stacked"):
        evaluator = ekg_keras.SubnetworkEvaluator(
            masked, graph, x, y, batch_size=8, cache=cache, layout=layout
        )
        evaluator.importance()
        results[layout] = evaluator.evaluate(configurations)
        results[layout] += evaluator.evaluate(configurations[:1])
        assert evaluator.evaluations == len(configurations) + 1
        assert all(m.all() for m in ekg_keras.flops.group_keep_masks(graph))
    for a, b in zip(results["sequential"], results["stacked"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(results["stacked"][0], results["stacked"][1])


def test_xla_compiled_pieces_give_the_same_results():
    masked = ekg_keras.wrap(_chain())
    graph = ekg_keras.graph.trace(masked)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 12)
    configurations = _configurations(graph, 2, seed=1)
    results = []
    for jit_compile in (False, True):
        evaluator = ekg_keras.SubnetworkEvaluator(
            masked, graph, x, y, batch_size=12, jit_compile=jit_compile
        )
        results.append(
            (evaluator.importance(), evaluator.evaluate(configurations))
        )
    (scores, logits), (xla_scores, xla_logits) = results
    for a, b in zip(scores, xla_scores, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    for a, b in zip(logits, xla_logits, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mixed_precision_is_close_to_float32_and_restores_the_policies():
    masked = ekg_keras.wrap(_chain())
    graph = ekg_keras.graph.trace(masked)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 16)
    evaluator = ekg_keras.SubnetworkEvaluator(masked, graph, x, y)
    scores = evaluator.importance()
    logits = evaluator.logits()
    with ekg_keras.evaluation.compute_precision(masked, "mixed_float16"):
        assert masked.get_layer("a").compute_dtype == "float16"
        half = ekg_keras.SubnetworkEvaluator(masked, graph, x, y)
        half_scores = half.importance()
        half_logits = half.logits()
    assert {layer.compute_dtype for layer in masked.layers} == {"float32"}
    assert half_logits.dtype == np.float32
    assert not np.array_equal(half_logits, logits)
    np.testing.assert_allclose(half_logits, logits, rtol=0.05, atol=0.02)
    for a, b in zip(half_scores, scores, strict=True):
        np.testing.assert_allclose(a, b, rtol=0.1, atol=0.05 * b.max())


def test_bad_options_are_refused():
    masked = ekg_keras.wrap(_chain())
    graph = ekg_keras.graph.trace(masked)
    x = np.zeros((4, 8, 8, 3), "float32")
    with pytest.raises(ValueError, match="`layout` should be one of"):
        ekg_keras.SubnetworkEvaluator(masked, graph, x, layout="grid")
    with pytest.raises(ValueError, match="`jit_compile` should be a bool"):
        ekg_keras.SubnetworkEvaluator(
            masked, graph, x, jit_compile={"prefix": True}
        )
    with (
        pytest.raises(ValueError, match="`precision` should be one of"),
        ekg_keras.evaluation.compute_precision(masked, "float16"),
    ):
        pass
