"""Stages of SP: found where the feature-map resolution changes."""

import keras
import numpy as np
import pytest

import ekg_keras
from ekg_keras.flops import FlopsCounter
from ekg_keras.graph import trace
from ekg_keras.methods import PruningSetup
from ekg_keras.methods.sp import find_stages


def _stages(model):
    setup = PruningSetup(model, None)
    return setup, find_stages(setup.model, setup.graph)


def _check_partition(setup, stages):
    """Every prunable group in exactly one stage; costs add up."""
    groups = sorted(g for s in stages for g in s.groups)
    assert groups == [g.id for g in setup.graph.prunable_groups]
    total = 0.0
    for stage in stages:
        counter = FlopsCounter(trace(stage.functional, warn=False))
        total += counter.macs(counter.full)
    assert total == pytest.approx(setup.full_macs)
    layers = [i for s in stages for i in s.layer_ids]
    assert len(layers) == len(set(layers))


@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_resnets_have_three_stages(depth):
    model = ekg_keras.models.resnet_cifar(depth, input_shape=(16, 16, 3))
    setup, stages = _stages(model)
    assert [s.output.shape for s in stages] == [
        (None, 16, 16, 16),
        (None, 8, 8, 32),
        (None, 10),
    ]
    assert [s.last for s in stages] == [False, False, True]
    blocks = (depth - 2) // 6
    # The residual group of a stage and one group per block's first conv.
    assert [len(s.groups) for s in stages] == [blocks + 1] * 3
    assert stages[0].input is setup.model.inputs[0]
    assert stages[1].input is stages[0].output
    _check_partition(setup, stages)


def test_an_application_splits_at_each_resolution():
    model = ekg_keras.models.mobilenet_v2(
        weights=None, input_shape=(32, 32, 3), num_classes=10
    )
    setup, stages = _stages(model)
    # 16, 8, 4, 2 and 1 pixels (with the head): MobileNet's five stages.
    # The padding before each strided depthwise convolution ends no stage.
    assert [s.resolution for s in stages] == [
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
        None,
    ]
    _check_partition(setup, stages)


def _strided_stem(blocks_per_stage=2):
    """ResNet-50's layout in small: a padded stride-2 stem, a padded
    max-pooling, then two resolutions of residual blocks."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    for stage, width in enumerate((8, 16)):
        if stage:
            x = keras.layers.Conv2D(width, 1, strides=2)(x)
        for _ in range(blocks_per_stage):
            y = keras.layers.Conv2D(width, 3, padding="same")(x)
            y = keras.layers.Conv2D(width, 3, padding="same")(y)
            x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_a_lone_stem_joins_the_next_stage():
    # Resolutions 16 (input), 18 and 10 (paddings: skipped), 8 (the stem,
    # alone: it joins the next stage), 4 and 2: ResNet-50's four stages in
    # small, here two.
    setup, stages = _stages(_strided_stem())
    assert [s.output.shape for s in stages] == [(None, 4, 4, 8), (None, 3)]
    stem = setup.graph.channels("stem").outputs[0].group[0]
    assert stem in stages[0].groups
    assert stages[0].input is setup.model.inputs[0]
    _check_partition(setup, stages)


def test_a_network_without_a_change_of_resolution_is_one_stage():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    setup, stages = _stages(keras.Model(inputs, keras.layers.Dense(2)(x)))
    assert len(stages) == 1 and stages[0].last
    assert stages[0].output is setup.model.outputs[0]
    _check_partition(setup, stages)


def test_models_with_several_inputs_are_refused():
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.Conv2D(4, 3)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model([a, b], keras.layers.Dense(2)(x))
    setup = PruningSetup(model, None)
    with pytest.raises(ValueError, match="one input and one output"):
        find_stages(setup.model, setup.graph)
    assert np.all(setup.graph.sizes > 0)
