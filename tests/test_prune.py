"""Tests for ekg_keras.prune: one-shot pruning to a FLOPs budget."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_testing import accuracy
from model_testing import images
from model_testing import layer_classes
from model_testing import max_relative_difference
from model_testing import randomize_batchnorm
from model_testing import vit

import ekg_keras
from ekg_keras import models


@pytest.fixture(scope="module")
def resnet20():
    keras.utils.set_random_seed(1)
    return randomize_batchnorm(models.resnet20())


def _kept_fraction(original, pruned):
    return (
        ekg_keras.count_flops(pruned).macs
        / ekg_keras.count_flops(original).macs
    )


def test_prune_returns_a_slim_plain_model_within_one_point(resnet20):
    before = [w.copy() for w in resnet20.get_weights()]
    pruned = ekg_keras.prune(resnet20, flops=0.5, verbose=0)
    assert 0.49 <= _kept_fraction(resnet20, pruned) <= 0.5
    assert all(name.startswith("keras.") for name in layer_classes(pruned))
    assert pruned.count_params() < resnet20.count_params()
    # The user's model is untouched.
    assert all(name.startswith("keras.") for name in layer_classes(resnet20))
    for old, new in zip(before, resnet20.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_masked_result_slims_to_the_same_outputs(resnet20):
    masked = ekg_keras.prune(resnet20, flops=0.45, slim=False, verbose=0)
    assert ekg_keras.layers.prunable_layers(masked)
    slim = ekg_keras.slim(masked)
    x = images(8)
    assert max_relative_difference(slim(x), masked(x)) < 1e-4
    assert 0.44 <= _kept_fraction(resnet20, slim) <= 0.45


@pytest.mark.parametrize(
    "criterion", ["l1", "l2", "fpgm", "bn_scale", "random"]
)
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_criteria_and_allocations(resnet20, criterion, allocation):
    masked = ekg_keras.prune(
        resnet20,
        flops=0.6,
        criterion=criterion,
        allocation=allocation,
        slim=False,
        verbose=0,
    )
    assert 0.59 <= _kept_fraction(resnet20, masked) <= 0.6


def test_l2_keeps_the_largest_filters(resnet20):
    masked = ekg_keras.prune(resnet20, flops=0.5, slim=False, verbose=0)
    layer = masked.get_layer("stage1_block1_conv1")
    norms = np.linalg.norm(
        resnet20.get_layer("stage1_block1_conv1")
        .kernel.numpy()
        .reshape(-1, layer.filters),
        axis=0,
    )
    mask = layer.filter_mask.numpy() > 0
    assert 0 < mask.sum() < len(mask)
    assert norms[mask].min() >= norms[~mask].max()


def test_taylor_criterion_uses_data(resnet20):
    x = images(16)
    y = np.arange(16) % 10
    masked = ekg_keras.prune(
        resnet20,
        flops=0.5,
        method="oneshot",
        criterion="taylor",
        data=(x, y),
        slim=False,
        verbose=0,
    )
    assert 0.49 <= _kept_fraction(resnet20, masked) <= 0.5
    with pytest.raises(ValueError, match="Labels .* should be in \\[0, 10\\)"):
        ekg_keras.prune(
            resnet20,
            flops=0.5,
            method="oneshot",
            criterion="taylor",
            data=(x, y + 5),
            verbose=0,
        )


def test_data_driven_pruning_recalibrates_batchnorm(trained_resnet20, digits16):
    """Issue 7: the pruned model is usable in inference mode at once.

    Recalibrated statistics are those of `data`: with `data` as one batch,
    inference mode reproduces training mode (batch statistics) on that
    batch exactly. (Accuracy with batch statistics of *other* batches is no
    reference: on this pruned, not fine-tuned network the test accuracy
    moves by ~5 points between recalibrating on 512 and on 1347 images,
    which is why an earlier accuracy-gap tolerance of 3 points held by 0.1.)
    """
    x, y = digits16.x_test, digits16.y_test
    x_data, y_data = digits16.x_train[:512], digits16.y_train[:512]
    options = dict(
        flops=0.5,
        method="oneshot",
        criterion="taylor",
        data=tf.data.Dataset.from_tensor_slices((x_data, y_data)).batch(512),
        verbose=0,
    )
    stale = ekg_keras.prune(trained_resnet20, recalibrate=False, **options)
    recalibrated = ekg_keras.prune(trained_resnet20, **options)
    inference = np.asarray(recalibrated(x_data, training=False))
    weights = recalibrated.get_weights()
    batch_statistics = np.asarray(recalibrated(x_data, training=True))
    recalibrated.set_weights(weights)
    assert max_relative_difference(inference, batch_statistics) < 1e-4
    stale_accuracy = accuracy(stale, x, y)
    test_accuracy = accuracy(recalibrated, x, y)
    assert test_accuracy >= 0.6
    assert test_accuracy > stale_accuracy + 0.2
    # Only the moving statistics differ.
    for a, b in zip(stale.weights, recalibrated.weights):
        if "moving" not in a.path:
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_ignored_layers_stay_whole(resnet20):
    pruned = ekg_keras.prune(
        resnet20, flops=0.6, ignored_layers=["stage3_block0_conv1"], verbose=0
    )
    assert pruned.get_layer("stage3_block0_conv1").filters == 64
    assert pruned.get_layer("stage3_block1_conv1").filters < 64
    # Its input channels stay whole too: the stage-2 stream is not pruned.
    assert pruned.get_layer("stage2_block0_conv2").filters == 32
    with pytest.raises(ValueError, match="does not have.*'nope'"):
        ekg_keras.prune(resnet20, flops=0.6, ignored_layers=["nope"])


def test_round_to_keeps_channel_counts_multiples(resnet20):
    pruned = ekg_keras.prune(resnet20, flops=0.6, round_to=8, verbose=0)
    for layer in pruned.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.filters % 8 == 0, layer.name


@pytest.mark.parametrize("flops", [0, 1.5, -0.2, True, "0.5", None])
def test_flops_out_of_range(resnet20, flops):
    with pytest.raises(ValueError, match="in \\(0, 1\\].*Received: flops="):
        ekg_keras.prune(resnet20, flops=flops)


def test_unreachable_target_names_the_smallest_fraction(resnet20):
    with pytest.raises(ValueError, match="smallest reachable fraction 0.0"):
        ekg_keras.prune(resnet20, flops=0.001)


def test_unknown_criterion_or_allocation(resnet20):
    with pytest.raises(ValueError, match="criterion='l7'"):
        ekg_keras.prune(resnet20, flops=0.5, criterion="l7")
    with pytest.raises(ValueError, match="allocation='best'"):
        ekg_keras.prune(resnet20, flops=0.5, allocation="best")


def test_method_ekg_needs_data(resnet20):
    with pytest.raises(ValueError, match="Method 'ekg' learns from data"):
        ekg_keras.prune(resnet20, flops=0.5, method="ekg")
    with pytest.raises(
        ValueError, match="Unknown method 'greedy'. Registered: .*oneshot"
    ):
        ekg_keras.prune(resnet20, flops=0.5, method="greedy")


def test_subclassed_model_is_rejected():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, inputs):
            return self.conv(inputs)

    net = Net()
    net(images(1))
    with pytest.raises(ValueError, match="functional or built Sequential"):
        ekg_keras.prune(net, flops=0.5)


def test_nothing_prunable():
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(4, 3)(inputs)
    with pytest.raises(ValueError, match="nothing prunable"):
        ekg_keras.prune(keras.Model(inputs, outputs), flops=0.5)


def _lambda_model():
    """Convolutions with `Lambda` layers between them: a Python lambda
    and a function defined here, neither of which a config can rebuild
    (the lambda is refused in safe mode, `double` cannot be located)."""

    def double(x):
        return x * 2.0

    def conv(x):
        return keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)

    inputs = keras.Input((8, 8, 3))
    x = conv(inputs)
    x = keras.layers.Lambda(lambda t: t * 0.5 + 1.0, name="affine")(x)
    x = conv(conv(x))
    x = keras.layers.Lambda(double, name="double")(x)
    x = conv(conv(x))
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_lambda_layers_prune_and_slim_with_their_own_functions():
    model = _lambda_model()
    with pytest.warns(UserWarning) as record:
        masked = ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)
    messages = " ".join(str(w.message) for w in record)
    # The channel graph does not know `Lambda`: what reaches one stays
    # whole, and the warning names it.
    for name in ("affine", "double"):
        assert f"layer '{name}' (Lambda), which the channel graph" in messages
    graph = ekg_keras.graph.trace(masked, warn=False)
    whole = [g for g in graph.groups if "Lambda" in " ".join(g.reasons)]
    assert len(whole) == 2
    keep = ekg_keras.flops.keep_counts(graph)
    np.testing.assert_array_equal(keep[[g.id for g in whole]], 16)
    slim = ekg_keras.slim(masked)
    x = images(2, size=8)
    assert max_relative_difference(slim(x), masked(x)) < 1e-4
    assert 0.45 <= _kept_fraction(model, slim) <= 0.5
    for name in ("affine", "double"):
        # The same function object, not one rebuilt from the config.
        assert slim.get_layer(name).function is model.get_layer(name).function
    with pytest.warns(UserWarning, match="Lambda") as record:
        small = ekg_keras.prune(model, flops=0.5, verbose=0)
    assert len(record) == 2
    assert max_relative_difference(small(x), slim(x)) < 1e-4


# Every keras.applications family (ResNet50, DenseNet121, EfficientNetB0,
# VGG16 among them) prunes and slims exactly in test_prune_applications.py,
# an end-to-end module left out of --quick; MobileNetV2 at full width
# (that module's is at alpha 0.35) keeps a keras.applications network in
# the quick subset.
def test_a_keras_application_prunes_and_slims_exactly():
    model = keras.applications.MobileNetV2(
        weights=None,
        input_shape=(32, 32, 3),
        classes=10,
        classifier_activation=None,
    )
    randomize_batchnorm(model)
    masked = ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)
    slim = ekg_keras.slim(masked)
    x = images(2) * 50 + 120
    assert max_relative_difference(slim(x), masked(x)) < 1e-4
    assert np.std(np.asarray(masked(x))) > 0
    assert 0.49 <= _kept_fraction(model, slim) <= 0.5
    assert slim.count_params() < model.count_params()


def test_vit_prunes_heads_mlp_and_residual_width_to_half_the_flops(tmp_path):
    model = vit(heads=4, width=32, depth=2)
    x = images(batch=4, size=16)

    masked = ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)
    slim = ekg_keras.slim(masked)

    kept = ekg_keras.count_flops(slim).macs / ekg_keras.count_flops(model).macs
    assert 0.4 < kept <= 0.5
    assert max_relative_difference(slim(x), masked(x)) < 1e-4
    for i in range(2):
        attention = slim.get_layer(f"attention{i}")
        assert type(attention) is keras.layers.MultiHeadAttention
        assert attention.num_heads < 4
        assert attention.key_dim == 8
        assert slim.get_layer(f"mlp{i}_in").units < 128
    assert slim.get_layer("patch").filters < 32
    assert layer_classes(slim) <= layer_classes(model)
    slim.save(tmp_path / "slim.keras")
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(slim(x)))
    masked.save(tmp_path / "masked.keras")
    reloaded = keras.saving.load_model(tmp_path / "masked.keras")
    np.testing.assert_array_equal(
        np.asarray(reloaded(x)), np.asarray(masked(x))
    )
