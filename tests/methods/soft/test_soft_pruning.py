"""Tests for ekg_keras.methods.soft: SoftFilterPruning (SFP, ASFP, FPGM)."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_testing import max_relative_difference
from model_testing import randomize_batchnorm

import ekg_keras
from ekg_keras import schedules
from ekg_keras.methods.soft import pruned_count

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _resnet8(width=8):
    return ekg_keras.models.resnet_cifar(
        8, num_classes=4, input_shape=(12, 12, 3), width=width
    )


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 12, 12, 3)).astype("float32")
    y = (x[:, :6].mean(axis=(1, 2, 3)) > 0).astype("int32") + 2 * (
        x[..., 0].mean(axis=(1, 2)) > 0
    ).astype("int32")
    return x, y


def _compiled(sfp, learning_rate=0.05, momentum=0.0, **kwargs):
    sfp.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum),
        loss=LOSS,
        **kwargs,
    )
    return sfp


def _zero_filters(layer):
    kernel = layer.kernel.numpy()
    return np.flatnonzero(np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, 0))


def _convs(sfp):
    return [
        layer
        for layer in ekg_keras.layers.prunable_layers(sfp.network)
        if isinstance(layer, keras.layers.Conv2D)
    ]


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_each_step_zeroes_floor_n_p_filters_per_layer(rate):
    sfp = ekg_keras.SoftFilterPruning(_resnet8(), rate=rate)
    step = sfp.prune_step()
    for layer in _convs(sfp):
        expected = math.floor(layer.filters * rate)
        assert len(_zero_filters(layer)) == expected, layer.name
        assert step.zeroed[layer.name] == expected
        mask = layer.filter_mask.numpy()
        np.testing.assert_array_equal(
            np.flatnonzero(mask == 0), _zero_filters(layer)
        )
    dense = (
        sfp.network.get_layer("fc")
        if "fc" in [layer.name for layer in sfp.network.layers]
        else None
    )
    assert dense is None or not np.any(dense.filter_mask.numpy() == 0)


def test_residual_groups_share_indices():
    sfp = ekg_keras.SoftFilterPruning(_resnet8(), rate=0.5)
    sfp.prune_step()
    group = [g for g in sfp.graph.prunable_groups if len(g.producers) > 1][0]
    zero_sets = {
        tuple(_zero_filters(sfp.network.get_layer(path)))
        for path in group.producers
    }
    assert len(zero_sets) == 1


def test_zeroed_filters_regrow_unless_gradients_are_masked():
    # Trained-looking BN (beta != 0): with beta = 0 a zeroed filter's
    # channel sits at the ReLU kink, where no gradient flows.
    x, y = _data()
    for mask_gradients in (False, True):
        sfp = _compiled(
            ekg_keras.SoftFilterPruning(
                randomize_batchnorm(_resnet8()),
                rate=0.5,
                mask_gradients=mask_gradients,
            )
        )
        sfp.prune_step()
        layer = _convs(sfp)[2]
        zeros = _zero_filters(layer)
        assert len(zeros) == layer.filters // 2
        sfp.train_on_batch(x, y)
        moved = np.abs(layer.kernel.numpy()[..., zeros]).max()
        if mask_gradients:
            assert moved == 0.0
        else:
            assert moved > 0.0


def test_fit_prunes_before_training_and_after_each_epoch():
    x, y = _data()
    sfp = _compiled(
        ekg_keras.SoftFilterPruning(
            _resnet8(), rate=0.4, schedule="asymptotic", epochs=4
        )
    )
    history = sfp.fit(x, y, batch_size=16, epochs=4, verbose=0)
    epochs = [step.epoch for step in sfp.history_of_steps]
    assert epochs == [0, 1, 2, 3, 4]
    expected = schedules.AsymptoticRate(0.4, 4)
    for step in sfp.history_of_steps:
        assert step.rate == pytest.approx(expected(step.epoch), abs=1e-12)
    assert sfp.history_of_steps[0].rate == 0.0
    assert sfp.history_of_steps[-1].rate == pytest.approx(0.4)
    assert history.history["pruning_rate"][-1] == pytest.approx(0.4)
    assert int(sfp.completed_epochs.numpy()) == 4
    for layer in _convs(sfp):
        assert len(_zero_filters(layer)) == math.floor(layer.filters * 0.4)


def test_interval_epochs():
    x, y = _data()
    sfp = _compiled(
        ekg_keras.SoftFilterPruning(
            _resnet8(),
            rate=0.25,
            interval_epochs=2,
            prune_before_training=False,
        )
    )
    sfp.fit(x, y, batch_size=16, epochs=3, verbose=0)
    # Epoch 2 by the interval, epoch 3 because it is the last.
    assert [step.epoch for step in sfp.history_of_steps] == [2, 3]


@pytest.mark.parametrize("residual", ["coupled", "independent"])
def test_slim_equals_the_trained_model(residual):
    x, y = _data()
    sfp = _compiled(
        ekg_keras.SoftFilterPruning(_resnet8(), rate=0.5, residual=residual)
    )
    sfp.fit(x, y, batch_size=16, epochs=2, verbose=0)
    small = sfp.slim()
    assert max_relative_difference(small(x), sfp(x, training=False)) < 1e-4
    assert ekg_keras.count_flops(sfp.network).macs == (
        ekg_keras.count_flops(small).macs
    )  # masks counted like slimming
    kept = (
        ekg_keras.count_flops(small).macs
        / ekg_keras.count_flops(_resnet8()).macs
    )
    if residual == "coupled":
        # An upper bound: it counts a ones-channel fold wherever a removed
        # channel may carry a batch-norm constant (issue 13.7b).
        assert kept <= sfp.kept_flops_fraction()
        assert small.get_layer("stem_conv").filters == 4
    else:
        # The residual stream keeps its width; only conv1 groups shrink.
        assert small.get_layer("stem_conv").filters == 8
        assert small.get_layer("stage1_block0_conv1").filters == 4
    assert kept < 1.0


def test_flops_target_picks_the_rate_then_fills_the_band():
    model = ekg_keras.models.resnet20()
    sfp = ekg_keras.SoftFilterPruning(model, flops=0.6)
    # Within half a point below the target, not a rate step below it.
    assert 0.595 <= sfp.kept_flops_fraction() <= 0.6
    # The next smaller rate of the grid would keep more than 0.6.
    smaller = max(
        r
        for r in {k / 16 for k in range(16)}
        | {k / 32 for k in range(32)}
        | {k / 64 for k in range(64)}
        if r < sfp.rate
    )
    uniform = ekg_keras.SoftFilterPruning(model, rate=smaller)
    assert uniform.kept_flops_fraction() > 0.6
    # The band is filled by zeroing fewer filters in some groups, never
    # more than floor(N * P).
    for group in sfp.graph.prunable_groups:
        assert sfp.pruned_counts[group.id] <= pruned_count(
            group.size, sfp.rate
        )


def test_fpgm_mix_selects_by_norm_then_geometric_median():
    # 8 filters: two tiny ones (pruned by norm), and among the rest the one
    # at the centre of the others (pruned by geometric median).
    inputs = keras.Input((2,))
    hidden = keras.layers.Dense(8, name="h")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    kernel = np.array(
        [
            [0.01, 0.0, 3.0, -3.0, 0.0, 0.0, 3.0, 0.1],
            [0.0, 0.02, 0.0, 0.0, 3.0, -3.0, 3.0, 0.1],
        ],
        "float32",
    )
    model.get_layer("h").kernel.assign(kernel)
    graph = ekg_keras.graph.trace(model)
    group = graph.groups[graph.channels("h").outputs[0].group[0]]
    weights = ekg_keras.criteria.group_weights(graph, group)
    mix = ekg_keras.criteria.fpgm_mix(share=1 / 3)
    np.testing.assert_array_equal(mix.pruned(weights, 3), [0, 1, 7])
    l2 = ekg_keras.criteria.get("l2")
    np.testing.assert_array_equal(l2.pruned(weights, 2), [0, 1])
    assert 7 in ekg_keras.criteria.get("fpgm").pruned(weights, 1)


def test_pruned_count_is_floor():
    assert pruned_count(16, 0.3) == 4
    assert pruned_count(10, 0.3) == 3  # not 2 from 2.9999999999999996
    assert pruned_count(64, 0.4) == 25
    assert pruned_count(4, 0.99) == 3  # one filter always survives


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device(two_cpus, mirrored):
    """With batch normalization synchronised (as the trainers run it), two
    replicas end with the masks and every weight of one device."""
    x, y = _data(n=32)

    def run(strategy):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            inputs = keras.Input((12, 12, 3))
            h = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
            h = keras.layers.BatchNormalization(synchronized=True)(h)
            h = keras.layers.ReLU()(h)
            h = keras.layers.Conv2D(8, 3, padding="same", name="c2")(h)
            h = keras.layers.GlobalAveragePooling2D()(h)
            model = keras.Model(inputs, keras.layers.Dense(4)(h))
            sfp = _compiled(
                ekg_keras.SoftFilterPruning(model, rate=0.5), learning_rate=0.1
            )
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        sfp.fit(data, epochs=2, verbose=0)
        return sfp

    single = run(tf.distribute.OneDeviceStrategy(two_cpus[0]))
    distributed = run(mirrored)
    for a, b in zip(
        ekg_keras.layers.prunable_layers(single.network),
        ekg_keras.layers.prunable_layers(distributed.network),
    ):
        np.testing.assert_array_equal(
            a.filter_mask.numpy(), b.filter_mask.numpy()
        )
    for a, b in zip(single.weights, distributed.weights, strict=True):
        np.testing.assert_allclose(
            a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path
        )


def test_jit_compile():
    x, y = _data()
    sfp = _compiled(
        ekg_keras.SoftFilterPruning(_resnet8(), rate=0.5, mask_gradients=True),
        jit_compile=True,
    )
    sfp.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for layer in _convs(sfp):
        assert len(_zero_filters(layer)) == layer.filters // 2


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


def _resume_run(tmp_path, interrupt):
    keras.utils.set_random_seed(5)
    x, y = _data()
    sfp = _compiled(
        ekg_keras.SoftFilterPruning(
            _resnet8(), rate=0.4, schedule="asymptotic", epochs=4
        ),
        momentum=0.9,
    )
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    if interrupt:
        with pytest.raises(RuntimeError, match="interrupted"):
            sfp.fit(
                x,
                y,
                batch_size=16,
                epochs=4,
                shuffle=False,
                verbose=0,
                callbacks=[backup, _Interrupt()],
            )
        keras.utils.set_random_seed(7)
        sfp = _compiled(
            ekg_keras.SoftFilterPruning(
                _resnet8(), rate=0.4, schedule="asymptotic", epochs=4
            ),
            momentum=0.9,
        )
    sfp.fit(
        x,
        y,
        batch_size=16,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=[backup],
    )
    return sfp


@pytest.mark.slow
def test_backup_and_restore_resumes_the_schedule(tmp_path):
    straight = _resume_run(tmp_path / "a", interrupt=False)
    resumed = _resume_run(tmp_path / "b", interrupt=True)
    assert int(resumed.completed_epochs.numpy()) == 4
    # The resumed run did not prune before its (restored) first epoch.
    assert [s.epoch for s in resumed.history_of_steps] == [3, 4]
    for a, b in zip(
        ekg_keras.layers.prunable_layers(straight.network),
        ekg_keras.layers.prunable_layers(resumed.network),
    ):
        np.testing.assert_array_equal(
            a.filter_mask.numpy(), b.filter_mask.numpy()
        )
        for va, vb in zip(a.weights, b.weights):
            np.testing.assert_allclose(
                va.numpy(), vb.numpy(), rtol=1e-4, atol=1e-5
            )


def test_keras_file_round_trip_keeps_masks_and_position(tmp_path):
    x, y = _data()
    sfp = _compiled(
        ekg_keras.SoftFilterPruning(
            _resnet8(),
            rate=0.4,
            criterion="l2+fpgm",
            schedule="asymptotic",
            epochs=4,
            residual="independent",
        )
    )
    sfp.fit(x, y, batch_size=16, epochs=2, verbose=0)
    path = tmp_path / "sfp.keras"
    sfp.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ekg_keras.SoftFilterPruning)
    # Tuples come back as lists from JSON, hence the JSON comparison.
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(
        sfp.get_config(), sort_keys=True
    )
    assert int(loaded.completed_epochs.numpy()) == 2
    assert int(loaded.last_pruned_epoch.numpy()) == 2
    np.testing.assert_allclose(loaded(x), sfp(x), rtol=1e-6, atol=1e-6)
    for a, b in zip(
        ekg_keras.layers.prunable_layers(sfp.network),
        ekg_keras.layers.prunable_layers(loaded.network),
    ):
        np.testing.assert_array_equal(
            a.filter_mask.numpy(), b.filter_mask.numpy()
        )
    # Training goes on from epoch 2 without a fresh pre-training step.
    loaded.fit(x, y, batch_size=16, epochs=4, initial_epoch=2, verbose=0)
    assert [s.epoch for s in loaded.history_of_steps] == [3, 4]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rate=1.0), "rate=1.0"),
        (dict(rate=-0.1), "rate=-0.1"),
        (dict(), "exactly one of `rate`"),
        (dict(rate=0.3, flops=0.5), "exactly one of `rate`"),
        (dict(rate=0.3, interval_epochs=0), "interval_epochs=0"),
        (dict(rate=0.3, criterion="taylor"), "criterion='taylor'"),
        (dict(rate=0.3, schedule="asymptotic"), "needs the total number"),
        (
            dict(rate=0.3, schedule=schedules.ConstantRate(0.2)),
            "ends at rate 0.2",
        ),
        (dict(rate=0.3, schedule="linear"), "schedule='linear'"),
        (dict(rate=0.3, residual="none"), "residual='none'"),
        (dict(flops=0.0001), "smallest reachable fraction"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ekg_keras.SoftFilterPruning(_resnet8(), **kwargs)


def test_independent_residual_producers_zero_their_own_weakest_filters():
    sfp = ekg_keras.SoftFilterPruning(
        _resnet8(), rate=0.5, residual="independent"
    )
    group = [g for g in sfp.graph.prunable_groups if len(g.producers) > 1][0]
    norms = {}
    for path in group.producers:
        kernel = sfp.network.get_layer(path).kernel.numpy()
        norms[path] = np.linalg.norm(
            kernel.reshape(-1, kernel.shape[-1]), axis=0
        )
    sfp.prune_step()
    masks = []
    for path in group.producers:
        mask = sfp.network.get_layer(path).filter_mask.numpy()
        assert mask.sum() == len(mask) // 2
        assert norms[path][mask == 0].max() <= norms[path][mask == 1].min()
        masks.append(tuple(mask))
    assert len(set(masks)) > 1  # each producer chose for itself


@pytest.mark.parametrize("recovery_epochs", [0, 1])
def test_soft_pruning_lands_on_its_flops_count(recovery_epochs):
    # With recovery the zeroed channels' batch normalization is held at
    # zero, so the budget is filled by the slim model's exact count; the
    # soft phase alone leaves constants it can only bound from above.
    model = _resnet8()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 4, 32).astype("int32")
    method = ekg_keras.methods.get("sfp").create(
        model,
        0.5,
        (x, y),
        verbose=0,
        epochs=1,
        recovery_epochs=recovery_epochs,
    )
    fitter = ekg_keras.training.Fitter((x, y), batch_size=16, verbose=0)
    masked = method.run(fitter)
    full = ekg_keras.count_flops(model).macs
    kept = ekg_keras.count_flops(ekg_keras.slim(masked)).macs / full
    predicted = method.trainer.kept_flops_fraction()
    assert kept <= 0.5
    if recovery_epochs:
        assert kept == pytest.approx(predicted, abs=1e-9)
    else:
        assert kept <= predicted + 1e-9
