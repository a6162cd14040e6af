"""Tests for ekg_keras.flops: MAC and parameter counts from shapes."""

import keras
import numpy as np
import pytest

import ekg_keras
from ekg_keras import graph
from ekg_keras import models
from ekg_keras.flops import FlopsCounter


def test_resnet56_projection_matches_spec():
    # SPEC 1.3: EKG-code counting of CIFAR ResNet-56 with 1x1 projections.
    model = models.resnet56()
    conv_fc = ekg_keras.count_flops(model)
    assert conv_fc.macs == 125_747_840  # 125.75 M conv + FC
    assert conv_fc.params == 860_026  # 0.860 M incl. BN statistics
    assert conv_fc.params == model.count_params()
    with_bn = ekg_keras.count_flops(model, include_bn=True)
    assert round(with_bn.macs / 1e6, 2) == 126.84


def test_resnet20_projection_matches_spec():
    model = models.resnet20()
    assert round(ekg_keras.count_flops(model).macs / 1e6, 2) == 40.81
    with_bn = ekg_keras.count_flops(model, include_bn=True)
    assert round(with_bn.macs / 1e6, 2) == 41.21


@pytest.mark.parametrize(
    "depth, expected",
    [(20, 40_550_400), (32, 68_861_952), (56, 125_485_056), (110, 252_887_040)],
)
def test_sfp_convention_zero_pad_conv_only(depth, expected):
    # SPEC 1.3: the SFP FLOPs script counts conv layers only, option-A
    # shortcuts, no FC.
    model = models.resnet_cifar(depth, shortcut="zero_pad")
    report = ekg_keras.count_flops(model, include_fc=False)
    assert report.macs == expected


def test_sp_convention_resnet56_includes_fc():
    # SPEC 1.3: SP's 125.49 M = conv + FC MACs with option-A shortcuts.
    model = models.resnet56(shortcut="zero_pad")
    assert ekg_keras.count_flops(model).macs == 125_485_696


def test_layer_formulas_on_a_small_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(
        3, strides=2, padding="same", depth_multiplier=2, name="dw"
    )(x)
    x = keras.layers.SeparableConv2D(5, 3, name="sep")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, outputs)
    report = ekg_keras.count_flops(model, include_bn=True)
    expected = {
        "conv": 8 * 8 * 3 * 3 * 3 * 4,
        "bn": 2 * 8 * 8 * 4,
        "dw": 4 * 4 * 3 * 3 * 8,
        "sep": 2 * 2 * 3 * 3 * 8 + 2 * 2 * 8 * 5,
        "fc": 20 * 3,
    }
    assert report.layer_macs == expected
    assert report.macs == sum(expected.values())
    assert report.params == model.count_params()
    for layer in model.layers:
        if layer.weights:
            assert report.layer_params[layer.name] == layer.count_params()


def test_keep_counts_scale_in_and_out_channels():
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(6, 3, padding="same", name="a")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="b")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, name="fc1")(x)
    outputs = keras.layers.Dense(2, name="fc2")(x)
    channel_graph = graph.trace(keras.Model(inputs, outputs))
    counter = FlopsCounter(channel_graph)
    keep = counter.full
    sizes = {g.producers[0]: g.id for g in channel_graph.groups}
    keep[sizes["a"]], keep[sizes["b"]], keep[sizes["fc1"]] = 3, 2, 4
    expected = (16 * 9 * 2 * 3) + (16 * 9 * 3 * 2) + (16 * 2 * 4) + (4 * 2)
    assert counter.macs(keep) == expected
    without_fc = FlopsCounter(channel_graph, include_fc=False)
    assert without_fc.macs(keep) == (16 * 9 * 2 * 3) + (16 * 9 * 3 * 2)


def test_masked_model_counts_live_channels_like_its_slim_model():
    model = models.resnet20()
    masked = ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)
    slim = ekg_keras.slim(masked)
    assert (
        ekg_keras.count_flops(masked).macs == ekg_keras.count_flops(slim).macs
    )
    assert ekg_keras.count_flops(masked).params == pytest.approx(
        ekg_keras.count_flops(slim).params
    )
    assert ekg_keras.count_flops(slim).params == slim.count_params()


def test_cost_terms_are_the_counter_as_an_explicit_function():
    model = models.resnet20()
    counter = FlopsCounter(graph.trace(model), include_bn=True)
    rng = np.random.default_rng(0)
    for quantity, count in (("macs", counter.macs), ("params", counter.params)):
        terms = counter.terms(quantity)
        for _ in range(5):
            keep = rng.integers(1, counter.sizes + 1).astype(float)
            assert terms(keep) == pytest.approx(count(keep), rel=1e-12)
    with pytest.raises(ValueError, match="quantity='flops'"):
        counter.terms("flops")
