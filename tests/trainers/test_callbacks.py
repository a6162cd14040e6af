"""trainers/callbacks.py: backups and TensorBoard summaries."""

import json

import keras
import numpy as np
import tensorflow as tf
from trainer_testing import conv_bn_model

import ekg_keras
from trainers import callbacks


def small_model():
    return conv_bn_model(8, 8, 4)


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    return x, rng.integers(0, 4, 32)


def test_backup_restores_weights_optimizer_and_epoch(tmp_path):
    x, y = data()
    model = small_model()
    backup = callbacks.Backup(str(tmp_path / "backup"))
    backup.set_model(model)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    backup.on_epoch_end(1)
    state = json.loads((tmp_path / "backup" / "backup.json").read_text())
    assert state["epoch"] == 2
    saved = [w.numpy() for w in model.weights]
    momentum = [v.numpy() for v in model.optimizer.variables]

    restored = small_model()
    restored.optimizer.build(restored.trainable_variables)
    again = callbacks.Backup(str(tmp_path / "backup"))
    again.set_model(restored)
    again.on_train_begin()
    assert restored._initial_epoch == 2
    for a, b in zip(saved, restored.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    for a, b in zip(momentum, restored.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    again.on_train_end()
    assert not (tmp_path / "backup").exists()


def test_an_interrupted_write_leaves_the_last_complete_backup(tmp_path):
    model = small_model()
    backup = callbacks.Backup(str(tmp_path / "backup"))
    backup.set_model(model)
    backup.on_epoch_end(0)
    kept = [w.numpy() for w in model.weights]
    # A write killed half-way: a truncated newer file, state not updated.
    (tmp_path / "backup" / "backup-2.weights.h5").write_bytes(b"\x89HDF")
    for weight in model.trainable_weights:
        weight.assign(weight + 1.0)
    restored = small_model()
    again = callbacks.Backup(str(tmp_path / "backup"))
    again.set_model(restored)
    again.on_train_begin()
    assert restored._initial_epoch == 1
    for a, b in zip(kept, restored.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


def test_pruning_summaries_write_rate_flops_and_widths(tmp_path):
    model = small_model()
    full = ekg_keras.count_flops(model).macs
    masked = ekg_keras.prune(model, flops=0.5, slim=False, verbose=0)
    masked.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    summaries = callbacks.PruningSummaries(str(tmp_path), full, epoch_offset=3)
    summaries.set_model(masked)
    summaries.on_train_begin()
    summaries.on_epoch_end(0)
    summaries.on_train_end()
    values = {}
    for path in tmp_path.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                values[value.tag] = (
                    event.step,
                    float(tf.make_ndarray(value.tensor)),
                )
    assert values["learning_rate"] == (3, np.float32(0.05))
    step, fraction = values["pruning/flops_fraction"]
    assert step == 3 and fraction == ekg_keras.count_flops(masked).macs / full
    assert fraction <= 0.5
    assert values["widths/conv"][1] < 8
    assert "widths/bn" not in values
