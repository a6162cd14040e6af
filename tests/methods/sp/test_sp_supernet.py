"""StageSuperNet: the sandwich step, adapters, held-out samples, moving
statistics, tf.distribute, serialization and resume."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ekg_keras
from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.methods.sp import StageSuperNet

N = 32


def _two_stages():
    """Two conv-BN-ReLU layers at 8x8, two at 4x4, a classifier."""
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for width, stride in ((8, 1), (8, 1), (16, 2), (16, 1)):
        x = keras.layers.Conv2D(width, 3, stride, padding="same")(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def _supernet(seed=0, validation_ids=(), resnet=False, **kwargs):
    keras.utils.set_random_seed(seed)
    if resnet:
        model = ekg_keras.models.resnet20(input_shape=(8, 8, 3), num_classes=4)
    else:
        model = _two_stages()
    return StageSuperNet(
        ekg_keras.wrap(model), validation_ids=validation_ids, **kwargs
    )


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 8, 8, 3)).astype("float32")
    y = (np.arange(N) % 4).astype("int32")
    return x, y


def _batches(x, y, batch=16):
    ids = np.arange(len(x), dtype="int64")
    return tf.data.Dataset.from_tensor_slices(
        ({"image": x, "id": ids}, y)
    ).batch(batch)


@pytest.fixture(scope="module")
def supernet():
    return _supernet(resnet=True)


def test_adapters_keep_shapes_and_start_as_the_identity(supernet):
    x, y = _data()
    inputs, outputs = supernet.stage_features(x)
    assert len(supernet.stages) == 3
    assert [a is None for a in supernet.adapters] == [False, False, True]
    for index, (stage_in, stage_out) in enumerate(zip(inputs, outputs)):
        full = supernet.stage_output(
            index, stage_in, supernet.full_counts()
        ).numpy()
        small = supernet.stage_output(
            index, stage_in, supernet.smallest_counts()
        ).numpy()
        assert full.shape == small.shape == stage_out.shape
        # At full width the identity adapter returns the stage's output.
        np.testing.assert_allclose(full, stage_out, rtol=1e-4, atol=1e-4)
        assert not np.allclose(small, stage_out, atol=1e-3)
    task, (full_loss, small_loss), _, _ = supernet.compute_losses(
        x, y, tf.ones(N), [supernet.full_counts(), supernet.smallest_counts()]
    )
    assert float(full_loss) == pytest.approx(0.0, abs=1e-6)
    assert float(small_loss) > 0 and float(task) > 0


def test_widths_are_prefixes_from_the_tables(supernet):
    ranks = supernet.ranks()
    counts = supernet.sample_counts(5).numpy()
    assert not np.array_equal(counts, supernet.sample_counts(6).numpy())
    np.testing.assert_array_equal(counts, supernet.sample_counts(5).numpy())
    for group, (count, table) in enumerate(zip(counts, supernet.count_tables)):
        assert count in table
        keep = supernet.keep_masks(counts)[group]
        np.testing.assert_array_equal(
            np.flatnonzero(keep), np.flatnonzero(ranks[group] < count)
        )
    # 31 ratios of a 16-channel group: 2 .. 16 channels; fixed groups whole.
    sizes = supernet.graph.sizes
    for group, table in zip(supernet.graph.groups, supernet.count_tables):
        if group.prunable:
            assert table[0] == max(1, round(0.1 * sizes[group.id]))
            assert table[-1] == sizes[group.id]
        else:
            assert list(table) == [sizes[group.id]]


def test_a_step_is_one_update_on_the_full_and_both_sub_networks():
    supernet = _supernet()
    supernet.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _data()
    step = int(supernet.sampled_steps.numpy())
    counts = [
        supernet.sample_counts(step).numpy(),
        supernet.smallest_counts(),
    ]
    variables = supernet.trainable_variables
    before = [v.numpy().copy() for v in variables]
    with tf.GradientTape(persistent=True) as tape:
        task, (random, smallest), _, _ = supernet.compute_losses(
            x, y, tf.ones(N), counts
        )
    parts = [
        tape.gradient(loss, variables) for loss in (task, random, smallest)
    ]
    supernet.train_step(({"image": x, "id": np.arange(N)}, y))
    assert int(supernet.sampled_steps.numpy()) == step + 1
    for variable, old, *grads in zip(variables, before, *parts):
        total = sum(
            np.zeros_like(old) if g is None else g.numpy() for g in grads
        )
        np.testing.assert_allclose(
            variable.numpy(), old - 0.1 * total, rtol=1e-4, atol=1e-6
        )
    norms = [
        sum(float(tf.reduce_sum(g**2)) for g in p if g is not None)
        for p in parts
    ]
    assert all(n > 0 for n in norms), norms
    # The adapters learn from the sub-networks only.
    adapter = supernet.adapters[0].kernel
    index = [id(v) for v in variables].index(id(adapter))
    assert parts[0][index] is None
    assert parts[1][index] is not None and parts[2][index] is not None


def test_held_out_samples_weigh_nothing():
    supernet = _supernet(validation_ids=np.arange(N))
    supernet.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = _data()
    before = [v.numpy().copy() for v in supernet.trainable_variables]
    logs = supernet.train_step(({"image": x, "id": np.arange(N)}, y))
    assert float(logs["loss"]) == 0.0
    for variable, old in zip(supernet.trainable_variables, before):
        np.testing.assert_array_equal(variable.numpy(), old)


def test_sub_networks_keep_the_full_networks_moving_statistics():
    supernet = _supernet()
    reference = _supernet()
    supernet.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = _data()
    supernet.train_step(({"image": x, "id": np.arange(N)}, y))
    reference.network(x, training=True)
    for a, b in zip(
        ekg_keras.batchnorm.batchnorm_layers(supernet.network),
        ekg_keras.batchnorm.batchnorm_layers(reference.network),
    ):
        np.testing.assert_allclose(a.moving_mean, b.moving_mean, atol=1e-6)
        np.testing.assert_allclose(
            a.moving_variance, b.moving_variance, atol=1e-6
        )


def _fit(strategy=None, callbacks=(), epochs=2):
    """Two epochs of two batches (the same data in the same order)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        supernet = _supernet()
        supernet.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    # Synchronized normalization, as the trainers' loop uses over replicas.
    with batchnorm_settings(supernet, synchronized=True):
        supernet.fit(
            _batches(*_data()),
            epochs=epochs,
            verbose=0,
            callbacks=list(callbacks),
        )
    return supernet


@pytest.fixture(scope="module")
def straight():
    return _fit()


@pytest.mark.slow
def test_mirrored_strategy_equals_one_device(mirrored, straight, tmp_path):
    board = keras.callbacks.TensorBoard(str(tmp_path / "logs"))
    two = _fit(mirrored, callbacks=[board])
    for a, b in zip(straight.get_weights(), two.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert int(two.sampled_steps.numpy()) == 2 * N // 16
    assert list((tmp_path / "logs" / "train").iterdir())


def test_config_and_keras_round_trip(tmp_path):
    supernet = _supernet(validation_ids=[3, 1, 2], seed=4, criterion="l2")
    supernet.compile(optimizer=keras.optimizers.SGD(0.05))
    x, y = _data()
    supernet.fit(_batches(x, y), epochs=1, verbose=0)
    config = supernet.get_config()
    clone = StageSuperNet.from_config(config)
    assert clone.get_config() == config
    assert config["validation_ids"] == [1, 2, 3]
    path = tmp_path / "supernet.keras"
    supernet.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, StageSuperNet)
    for a, b in zip(supernet.ranks(), loaded.ranks(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(loaded.sampled_steps.numpy()) == 2
    np.testing.assert_array_equal(
        loaded.sample_counts(loaded.sampled_steps).numpy(),
        supernet.sample_counts(supernet.sampled_steps).numpy(),
    )
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), supernet.predict(x, verbose=0), atol=1e-5
    )


class _Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise RuntimeError("crash")


@pytest.mark.slow
def test_a_crashed_and_resumed_training_ends_where_a_straight_one_does(
    tmp_path, straight
):
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="crash"):
        _fit(callbacks=[backup, _Crash()])
    resumed = _fit(callbacks=[backup])
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
