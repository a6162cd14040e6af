"""Tests for ekg_keras.graph.trace: channel groups from functional graphs."""

import keras
import numpy as np
import pytest

import ekg_keras
from ekg_keras import graph
from ekg_keras import models


def _group_of(channel_graph, layer_name):
    """The group opened by a producer layer (its first output channel)."""
    record = channel_graph.channels(layer_name)
    return channel_graph.groups[record.outputs[0].group[0]]


def test_resnet56_has_the_ekg_gates():
    # The EKG reference code's gates: 30 = stem/stage-0 group (stem + 9
    # conv2), 27 conv1 gates and 2 projection groups (projection + 9 conv2).
    model = models.resnet56()
    channel_graph = graph.trace(model)
    prunable = channel_graph.prunable_groups
    assert len(prunable) == 30
    producer_counts = sorted(len(g.producers) for g in prunable)
    assert producer_counts == [1] * 27 + [10] * 3
    stem = _group_of(channel_graph, "stem_conv")
    assert stem.size == 16 and len(stem.producers) == 10
    assert not _group_of(
        channel_graph, channel_graph.calls[-1].layer.name
    ).prunable


def test_group_roles_of_a_residual_stream():
    model = models.resnet20()
    channel_graph = graph.trace(model)
    stem = _group_of(channel_graph, "stem_conv")
    assert len(stem.members) == 4  # stem BN + the three conv2 BNs
    # Consumers: conv1 of the 3 stage-0 blocks, the stage-1 projection and
    # the stage-1 first conv1.
    assert len(stem.consumers) == 5


def test_resnet50_groups_match_spec():
    # Gated as the EKG reference code gates it, bottleneck ResNet-50 has
    # 1 + 32 + 4 = 37 gates.
    model = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    channel_graph = graph.trace(model)
    assert len(channel_graph.prunable_groups) == 37
    sizes = sorted(
        g.size for g in channel_graph.prunable_groups if len(g.producers) > 1
    )
    assert sizes == [256, 512, 1024, 2048]


def test_efficientnet_squeeze_excite_multiply_joins_groups():
    model = keras.applications.EfficientNetB0(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    channel_graph = graph.trace(model)
    expand = _group_of(channel_graph, "block2a_expand_conv")
    # The SE expand conv's output multiplies the depthwise branch, so both
    # share one group: it has the expand conv and the SE conv as producers.
    assert set(expand.producers) == {"block2a_expand_conv", "block2a_se_expand"}
    assert expand.prunable
    assert "block2a_dwconv" in expand.members


def test_mobilenet_v2_and_densenet_trace_fully():
    for builder in (
        keras.applications.MobileNetV2,
        keras.applications.DenseNet121,
    ):
        model = builder(weights=None, input_shape=(32, 32, 3), classes=10)
        channel_graph = graph.trace(model)
        # The softmax classifier's outputs form no group; everything else
        # is prunable.
        assert all(g.prunable for g in channel_graph.groups)


def test_densenet_concatenate_composes_groups():
    model = keras.applications.DenseNet121(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    channel_graph = graph.trace(model)
    record = channel_graph.channels("conv2_block2_1_conv")
    # Its input is concat(stem pool, block1 output): 64 + 32 channels from
    # two groups, laid side by side.
    channel_map = record.inputs[0]
    assert len(channel_map) == 96
    first, second = (
        np.unique(channel_map.group[:64]),
        np.unique(channel_map.group[64:]),
    )
    assert len(first) == 1 and len(second) == 1 and first[0] != second[0]
    np.testing.assert_array_equal(channel_map.index[64:], np.arange(32))


def test_vgg_flatten_maps_channels_to_dense_rows():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(5, 3, padding="same")(inputs)
    x = keras.layers.Flatten()(x)
    hidden = keras.layers.Dense(7, name="hidden")(x)
    outputs = keras.layers.Dense(2)(hidden)
    channel_graph = graph.trace(keras.Model(inputs, outputs))
    record = channel_graph.channels("hidden")
    channel_map = record.inputs[0]
    assert len(channel_map) == 80
    # Row p*5 + c of the flattened vector is channel c.
    np.testing.assert_array_equal(channel_map.index, np.tile(np.arange(5), 16))
    assert _group_of(channel_graph, "conv2d").prunable


def test_concat_then_add_splits_the_wider_producer():
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(2, 1, name="a")(inputs)
    b = keras.layers.Conv2D(3, 1, name="b")(inputs)
    c = keras.layers.Conv2D(5, 1, name="c")(inputs)
    x = keras.layers.Add()([keras.layers.Concatenate()([a, b]), c])
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    channel_graph = graph.trace(keras.Model(inputs, outputs))
    c_map = channel_graph.channels("c").outputs[0]
    group_a = _group_of(channel_graph, "a")
    group_b = _group_of(channel_graph, "b")
    assert set(group_a.producers) == {"a", "c"} and group_a.size == 2
    assert set(group_b.producers) == {"b", "c"} and group_b.size == 3
    np.testing.assert_array_equal(
        c_map.group, [group_a.id] * 2 + [group_b.id] * 3
    )
    np.testing.assert_array_equal(c_map.index, [0, 1, 0, 1, 2])


def test_broadcast_multiply_keeps_the_single_channel_whole():
    inputs = keras.Input((6, 6, 3))
    features = keras.layers.Conv2D(4, 1, name="features")(inputs)
    gate = keras.layers.Conv2D(1, 1, activation="sigmoid", name="gate")(inputs)
    x = keras.layers.Multiply()([features, gate])
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    channel_graph = graph.trace(keras.Model(inputs, outputs))
    assert _group_of(channel_graph, "features").prunable
    assert not _group_of(channel_graph, "gate").prunable


def test_shared_layer_couples_its_inputs():
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 1, name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    shared = keras.layers.Conv2D(3, 1, name="shared")
    x = keras.layers.Concatenate()([shared(a), shared(b)])
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    channel_graph = graph.trace(keras.Model(inputs, outputs))
    assert _group_of(channel_graph, "a") is _group_of(channel_graph, "b")


def test_nested_model_is_traced_inside():
    inner_inputs = keras.Input((8, 8, 6))
    y = keras.layers.Conv2D(6, 3, padding="same", name="inner_conv")(
        inner_inputs
    )
    y = keras.layers.BatchNormalization(name="inner_bn")(y)
    inner = keras.Model(inner_inputs, y, name="inner")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="outer_conv")(inputs)
    x = keras.layers.Add()([x, inner(x)])
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    channel_graph = graph.trace(keras.Model(inputs, outputs))
    group = _group_of(channel_graph, "outer_conv")
    assert set(group.producers) == {"outer_conv", "inner/inner_conv"}
    assert group.members == ("inner/inner_bn",)
    assert group.prunable


def test_sequential_model():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    channel_graph = graph.trace(model)
    assert [g.size for g in channel_graph.prunable_groups] == [4]


class _Scale(keras.layers.Layer):
    def call(self, inputs):
        return inputs * 2.0


def _model_with_custom_layer():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 1, name="before")(inputs)
    x = _Scale(name="scale")(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_unknown_layer_blocks_its_groups_with_a_warning():
    model = _model_with_custom_layer()
    with pytest.warns(UserWarning, match="'scale' \\(_Scale\\)"):
        channel_graph = graph.trace(model)
    group = _group_of(channel_graph, "before")
    assert not group.prunable
    assert "does not know" in group.reasons[0]


def test_registered_handler_makes_a_custom_layer_prunable():
    model = _model_with_custom_layer()
    graph.register_passthrough(_Scale)
    try:
        channel_graph = graph.trace(model)
    finally:
        graph.registry._REGISTRY.unregister(_Scale)
    assert _group_of(channel_graph, "before").prunable


def test_channels_first_model_is_refused_with_a_clear_error():
    inputs = keras.Input((3, 6, 6))
    x = keras.layers.Conv2D(4, 1, data_format="channels_first", name="cf")(
        inputs
    )
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    message = "channels-last model.*'cf' \\(Conv2D\\).*channels_first"
    with pytest.raises(ValueError, match=message):
        graph.trace(model)
    with pytest.raises(ValueError, match=message):
        ekg_keras.prune(model, flops=0.5)


def test_subclassed_model_is_rejected():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    net = Net()
    net(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="functional or built Sequential"):
        graph.trace(net)


def test_unbuilt_sequential_is_rejected():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="never built"):
        graph.trace(model)


def test_check_keep_rejects_bad_masks():
    channel_graph = graph.trace(models.resnet20())
    keep = channel_graph.full_keep()
    output_group = [g for g in channel_graph.groups if not g.prunable][0]
    keep[output_group.id][0] = False
    with pytest.raises(ValueError, match="not prunable"):
        channel_graph.check_keep(keep)
    keep = channel_graph.full_keep()
    keep[0][:] = False
    with pytest.raises(ValueError, match="lose all its channels"):
        channel_graph.check_keep(keep)
    with pytest.raises(ValueError, match="one keep mask per group"):
        channel_graph.check_keep(keep[:-1])


def test_softmax_producer_keeps_its_outputs_but_not_its_inputs():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, name="hidden")(inputs)
    attention = keras.layers.Dense(5, activation="softmax", name="soft")(hidden)
    outputs = keras.layers.Dense(2)(attention)
    channel_graph = graph.trace(keras.Model(inputs, outputs))
    assert _group_of(channel_graph, "hidden").prunable
    assert channel_graph.channels("soft").outputs[0].group.tolist() == [-1] * 5


def test_layers_on_group_are_the_layers_whose_channels_it_holds():
    model = models.resnet20()
    channel_graph = graph.trace(model)

    for group in channel_graph.groups:
        expected = [
            record
            for record in channel_graph.layers.values()
            if any(
                np.any(channel_map.group == group.id)
                for channel_map in record.inputs[:1] + record.outputs[:1]
            )
        ]
        assert channel_graph.layers_on_group(group.id) == expected
    assert channel_graph.layers_on_group(len(channel_graph.groups)) == []
