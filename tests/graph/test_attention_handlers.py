"""Tests for the `MultiHeadAttention` handlers: heads as a channel group of
their own, the layer's output channels as a source's, slimming and cost
(issue 28.4)."""

import keras
import numpy as np
from model_testing import assert_same_outputs
from model_testing import vit

import ekg_keras
from ekg_keras import criteria
from ekg_keras import graph
from ekg_keras.methods.setup import apply_keep


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _group(channel_graph, path):
    record = channel_graph.channels(path)
    return channel_graph.groups[record.outputs[0].group[0]]


def test_heads_form_a_group_of_their_own_and_outputs_join_the_residual():
    channel_graph = graph.trace(vit(heads=4, width=32), warn=False)

    heads = _group(channel_graph, "attention0/heads")
    residual = _group(channel_graph, "attention0")
    hidden = _group(channel_graph, "mlp0_in")

    assert (heads.size, heads.prunable) == (4, True)
    assert heads.producers == ("attention0/heads",)
    assert residual.size == 32 and residual.prunable
    assert set(residual.producers) == {
        "patch",
        "attention0",
        "attention1",
        "mlp0_out",
        "mlp1_out",
    }
    assert {"ln0_attention", "ln1_mlp"} <= set(residual.members)
    assert (hidden.size, hidden.prunable) == (128, True)
    assert _group(channel_graph, "attention1/heads").id != heads.id
    record = channel_graph.channels("attention0")
    assert len(record.outputs) == 2  # The output, then the heads.
    assert record.outputs[1].group.tolist() == [heads.id] * 4


def test_ignoring_an_attention_layer_freezes_its_heads():
    channel_graph = graph.trace(vit(), warn=False)

    channel_graph.freeze_layers(["attention1"])

    assert not _group(channel_graph, "attention1/heads").prunable
    assert not _group(channel_graph, "attention1").prunable
    assert _group(channel_graph, "attention0/heads").prunable


def test_criteria_score_a_head_by_all_its_weights():
    model = vit(heads=4, width=32)
    layer = model.get_layer("attention0")
    channel_graph = graph.trace(model, warn=False)
    heads = _group(channel_graph, "attention0/heads")

    scores = criteria.score("l1", channel_graph, heads)

    expected = np.zeros(4)
    for projection in (layer.query_dense, layer.key_dense, layer.value_dense):
        expected += np.abs(projection.kernel.numpy()).sum(axis=(0, 2))
    expected += np.abs(layer.output_dense.kernel.numpy()).sum(axis=(1, 2))
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def _cross_attention_model():
    queries = keras.Input((6, 5), name="queries")
    memory = keras.Input((4, 3), name="memory")
    q = keras.layers.Dense(8, name="q_in")(queries)
    v = keras.layers.Dense(10, name="v_in")(memory)
    k = keras.layers.Dense(9, name="k_in")(memory)
    x = keras.layers.MultiHeadAttention(
        3, 4, value_dim=2, output_shape=7, name="cross"
    )(q, v, key=k)
    x = keras.layers.Dense(6, activation="relu", name="after")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(
        [queries, memory], keras.layers.Dense(2, name="logits")(x)
    )


def test_cross_attention_with_key_and_output_shape_slims_exactly():
    model = _cross_attention_model()
    masked = ekg_keras.wrap(model)
    channel_graph = graph.trace(masked, warn=False)
    keep = channel_graph.full_keep()
    rng = np.random.default_rng(1)
    for group in channel_graph.prunable_groups:
        mask = np.ones(group.size, dtype=bool)
        mask[rng.permutation(group.size)[: group.size // 2]] = False
        keep[group.id] = mask
    apply_keep(masked, channel_graph, keep)
    x = [_random((2, 6, 5), seed=2), _random((2, 4, 3), seed=3)]

    slim = ekg_keras.slim(masked)

    layer = slim.get_layer("cross")
    assert type(layer) is keras.layers.MultiHeadAttention
    assert layer.num_heads == 2
    assert layer.query_dense.kernel.shape == (4, 2, 4)
    assert layer.key_dense.kernel.shape == (5, 2, 4)
    assert layer.value_dense.kernel.shape == (5, 2, 2)
    assert layer.output_dense.kernel.shape == (2, 2, 4)
    assert_same_outputs(slim, masked, x)
    count = ekg_keras.count_flops(masked).macs
    assert ekg_keras.count_flops(slim).macs == count


def test_attention_cost_counts_projections_scores_and_weighted_sums():
    model = _cross_attention_model()

    report = ekg_keras.count_flops(model)

    # Query 6 positions, key 4; 3 heads of key_dim 4 and value_dim 2.
    projections = 6 * 8 * 12 + 4 * 9 * 12 + 4 * 10 * 6 + 6 * 6 * 7
    attention = 6 * 4 * 3 * (4 + 2)
    assert report.layer_macs["cross"] == projections + attention
    layer_params = report.layer_params["cross"]
    assert layer_params == model.get_layer("cross").count_params()
