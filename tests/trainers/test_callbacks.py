"""trainers/callbacks.py: backups and TensorBoard summaries."""

import json
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from trainer_testing import ROOT
from trainer_testing import conv_bn_model
from trainer_testing import trainer_env

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


def _backups_of_epochs(directory, epochs):
    """Backups after each of `epochs` epochs of a model whose weights are
    the epoch number; returns a fresh model and its Backup to restore."""
    model = small_model()
    backup = callbacks.Backup(str(directory))
    backup.set_model(model)
    for epoch in range(1, epochs + 1):
        model.set_weights(
            [np.full(w.shape, epoch, "float32") for w in model.weights]
        )
        backup.on_epoch_end(epoch - 1)
    restored = small_model()
    said = []
    again = callbacks.Backup(str(directory), say=said.append)
    again.set_model(restored)
    return restored, again, said


def _flip_middle(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_backup_keeps_the_one_before_and_records_checksums(tmp_path):
    _backups_of_epochs(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "backup-2.weights.h5",
        "backup-3.weights.h5",
        "backup.json",
    ]
    state = json.loads((tmp_path / "backup.json").read_text())
    assert state["epoch"] == 3 and state["previous"]["epoch"] == 2
    assert len(state["sha256"]) == 64 and len(state["checksum"]) == 64


def test_a_damaged_newest_backup_resumes_from_the_one_before(tmp_path):
    restored, again, said = _backups_of_epochs(tmp_path, 3)
    _flip_middle(tmp_path / "backup-3.weights.h5")
    again.on_train_begin()
    assert restored._initial_epoch == 2
    for weight in restored.weights:
        np.testing.assert_array_equal(weight.numpy(), 2)
    (line,) = said
    assert f"{tmp_path / 'backup-3.weights.h5'} is damaged (its SHA-256" in line
    assert line.endswith(
        f"resumed from the backup before it, {tmp_path / 'backup-2.weights.h5'}"
        " (epoch 2)"
    )
    # The next backup keeps the one resumed from, not the damaged one.
    again.on_epoch_end(2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "backup-2.weights.h5",
        "backup-4.weights.h5",
        "backup.json",
    ]


@pytest.mark.parametrize("damaged", ["both", "record"])
def test_no_intact_backup_starts_the_training_over(tmp_path, damaged):
    restored, again, said = _backups_of_epochs(tmp_path, 2)
    before = [w.numpy() for w in restored.weights]
    if damaged == "both":
        for name in ("backup-1.weights.h5", "backup-2.weights.h5"):
            (tmp_path / name).write_bytes(b"")
        named = tmp_path / "backup-2.weights.h5"
    else:
        text = (tmp_path / "backup.json").read_text()
        (tmp_path / "backup.json").write_text(
            text.replace('"epoch": 2', '"epoch": 5')
        )
        named = tmp_path / "backup.json"
    again.on_train_begin()
    assert not getattr(restored, "_initial_epoch", None)
    for a, b in zip(before, restored.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    (line,) = said
    assert line.startswith(f"{named} is damaged (")
    assert line.endswith("this training starts again from its first epoch")
    assert not tmp_path.exists()


_WRITER = """
import sys
import keras
import numpy as np
from trainers import callbacks

inputs = keras.Input((1500,))
model = keras.Model(inputs, keras.layers.Dense(1500)(inputs))
backup = callbacks.Backup(sys.argv[1])
backup.set_model(model)
for epoch in range(1, 10_000):
    model.set_weights([np.full(w.shape, epoch, "float32") for w in model.weights])
    backup.on_epoch_end(epoch - 1)
"""


def _kill_while_writing(directory, seed):
    """Starts the writer, kills it (SIGKILL) during a later write."""
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory)],
        cwd=ROOT,
        env=trainer_env(),
    )
    try:
        state = directory / "backup.json"
        deadline = time.monotonic() + 120
        while not (
            state.exists() and json.loads(state.read_text())["epoch"] >= 2
        ):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        # Writes follow each other without a pause: kill in a next one.
        time.sleep(random.Random(seed).uniform(0.01, 0.2))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.mark.slow
def test_a_process_killed_while_writing_leaves_a_complete_backup(tmp_path):
    """A real kill (SIGKILL) of a process that writes backups back to back:
    the backup it leaves restores a consistent state (the weights of the
    epoch that backup.json names), also when the kill tore a newer file."""
    torn = False
    # A kill lands between two writes or inside one, by timing: up to 12
    # tries for one inside (a loaded machine times them differently).
    for seed in range(12):
        directory = tmp_path / f"backup{seed}"
        _kill_while_writing(directory, seed)
        state = json.loads((directory / "backup.json").read_text())
        inputs = keras.Input((1500,))
        restored = keras.Model(inputs, keras.layers.Dense(1500)(inputs))
        again = callbacks.Backup(str(directory))
        again.set_model(restored)
        again.on_train_begin()
        assert state["epoch"] >= 2
        assert restored._initial_epoch == state["epoch"]
        for weight in restored.weights:
            np.testing.assert_array_equal(weight.numpy(), state["epoch"])
        # A newer weights file than the one backup.json names: killed
        # while writing it.
        newer = f"backup-{state['writes'] + 1}.weights.h5"
        torn = (directory / newer).exists()
        if torn:
            break
    assert torn, "no kill landed during a write"


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
