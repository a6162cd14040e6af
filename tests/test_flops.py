"""Tests for ekg_keras.flops: MAC and parameter counts from shapes."""

import keras
import numpy as np
import pytest
from model_testing import max_relative_difference
from model_testing import mix_ffn_net
from model_testing import randomize_batchnorm
from model_testing import tf_graph_macs
from model_testing import vit

import ekg_keras
from ekg_keras import graph
from ekg_keras import models
from ekg_keras.flops import FlopsCounter


def test_resnet56_projection_matches_spec():
    # Counted as the EKG reference code counts: CIFAR ResNet-56 with 1x1
    # projections.
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
    # The FLOPs script of the official SFP code (he-y/soft-filter-pruning),
    # behind the thesis' CIFAR tables, counts conv layers only (thesis
    # Sec. 3.3.3), option-A shortcuts, no FC.
    model = models.resnet_cifar(depth, shortcut="zero_pad")
    report = ekg_keras.count_flops(model, include_fc=False)
    assert report.macs == expected


def test_sp_convention_resnet56_includes_fc():
    # The SP paper's 125.49 M (Table 1) = conv + FC MACs with option-A
    # shortcuts.
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


def _squeeze_excite_model():
    """Masked channels become sigmoid(0) = 0.5 before a padded convolution
    (folded through an extra channel of ones), then a squeeze-excite."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(24, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("sigmoid")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", name="padded")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("swish")(x)
    se = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = keras.layers.Conv2D(8, 1, activation="relu", name="se_reduce")(se)
    se = keras.layers.Conv2D(32, 1, activation="sigmoid", name="se_expand")(se)
    x = keras.layers.Multiply()([x, se])
    x = keras.layers.Conv2D(32, 3, padding="same", name="head_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, name="head")(x)
    return randomize_batchnorm(keras.Model(inputs, outputs))


def test_ones_channel_folds_count_against_the_budget():
    # Issue 13.7(b): the slim model kept 41.6% of the FLOPs for flops=0.4
    # because the extra ones-channel convolution was not counted.
    model = _squeeze_excite_model()
    masked = ekg_keras.prune(model, flops=0.4, slim=False, verbose=0)
    slim = ekg_keras.slim(masked)
    assert slim.get_layer("padded_ones") is not None
    full = ekg_keras.count_flops(model).macs
    assert ekg_keras.count_flops(masked).macs == pytest.approx(
        ekg_keras.count_flops(slim).macs
    )
    assert ekg_keras.count_flops(slim).params == slim.count_params()
    assert 0.39 <= ekg_keras.count_flops(slim).macs / full <= 0.4
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3))
    assert max_relative_difference(slim(x), masked(x)) < 1e-4
    # Without the ones channel (fold="bias") it is not counted either.
    assert ekg_keras.count_flops(masked, fold="bias").macs == pytest.approx(
        ekg_keras.count_flops(slim).macs
        - ekg_keras.count_flops(slim).layer_macs["padded_ones"]
        - 16 * 16 * 9 * slim.get_layer("padded").filters
    )


def test_counter_terms_switch_folds_on_with_removed_channels():
    model = _squeeze_excite_model()
    counter = FlopsCounter(graph.trace(ekg_keras.wrap(model), warn=False))
    terms = counter.terms()
    keep = counter.full
    assert terms(keep) == pytest.approx(counter.macs(keep))
    stem = next(g.id for g in counter.graph.groups if "stem" in g.producers)
    keep[stem] -= 1
    # One channel of the stem group less: cheaper stem and padded conv,
    # but the fold costs 16*16*(23 + 9*32) more.
    assert terms(keep) == pytest.approx(counter.macs(keep))
    without = FlopsCounter(counter.graph, fold="bias")
    assert counter.macs(keep) - without.macs(keep) == 16 * 16 * (23 + 9 * 32)
    assert counter.macs(counter.full) == without.macs(without.full)


def test_soft_pruning_counts_batchnorm_constants_like_slim():
    # Issue 13.7(b): after an SFP step with non-trivial batch-norm
    # statistics, count_flops and kept_flops_fraction said 0.529 while the
    # slim model kept 0.560 (15 ones-channel convolutions).
    model = randomize_batchnorm(models.resnet20(input_shape=(16, 16, 3)))
    sfp = ekg_keras.SoftFilterPruning(model, flops=0.55)
    sfp.prune_step()
    slim = sfp.slim()
    folds = [layer for layer in slim.layers if layer.name.endswith("_ones")]
    assert folds
    full = ekg_keras.count_flops(model).macs
    kept = ekg_keras.count_flops(slim).macs / full
    assert ekg_keras.count_flops(sfp.network).macs / full == pytest.approx(kept)
    assert kept <= sfp.kept_flops_fraction() <= 0.55


@pytest.mark.parametrize(
    "build, input_shape",
    [(vit, (16, 16, 3)), (mix_ffn_net, (16, 16))],
    ids=["vit", "mix_ffn"],
)
def test_transformer_macs_match_the_tensorflow_graph(build, input_shape):
    # Independent count: every MatMul / BatchMatMulV2 / Einsum / Conv2D of
    # the traced TF graph, from its shapes. Dense layers on tokens count
    # the sequence length; attention counts scores and weighted sums.
    model = build()

    counted = ekg_keras.count_flops(model).macs
    reference = sum(tf_graph_macs(model, input_shape).values())
    if build is mix_ffn_net:
        # The depthwise convolution runs as DepthwiseConv2dNative.
        reference += 4 * 4 * 64 * 9

    assert counted == reference  # Exact, well within the 1 % asked.


def test_pruned_vit_counts_like_its_tensorflow_graph():
    model = vit()
    masked = ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)
    slim = ekg_keras.slim(masked)

    reference = sum(tf_graph_macs(slim, (16, 16, 3)).values())

    assert ekg_keras.count_flops(masked).macs == reference
    assert ekg_keras.count_flops(slim).macs == reference
    assert ekg_keras.count_flops(slim).params == slim.count_params()
