"""trainers/cifar.py end to end on the digits, under MirroredStrategy over
two logical CPUs, killed mid-epoch and resumed (one fresh process each).

It starts from a --pretrained model: under two replicas each training stage
spends most of its time tracing, and pre-training is covered in
test_imagenet.py."""

import json
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from trainer_testing import TINY
from trainer_testing import start_cifar

import ekg_keras

# End to end in a subprocess or over many stages: left out of --quick.
pytestmark = pytest.mark.slow

KILL_TIMEOUT = 240
RUN_TIMEOUT = 300


def wait_for(path, process, timeout):
    """Waits until `path` exists (or the process ends, or time runs out)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "the run ended before it was killed"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def summary_tags(log_dir):
    """The tags of every summary in the event files under `log_dir`."""
    tags = set()
    for path in log_dir.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_killed_mid_epoch_resumes_and_exports(tmp_path):
    model_dir = tmp_path / "run"
    pretrained = tmp_path / "pretrained.keras"
    ekg_keras.models.resnet20(input_shape=(8, 8, 3)).save(pretrained)
    args = [
        *TINY,
        "--method=l1",
        "--epochs=2",
        f"--pretrained={pretrained}",
        "--strategy=mirrored",
        "--logical_cpus=2",
        f"--model_dir={model_dir}",
    ]
    first = start_cifar(args, tmp_path / "first.log")
    try:
        # The backup is complete at the end of fine-tuning's first epoch:
        # the process is then in its second epoch.
        backup = model_dir / "finetune" / "backup" / "finetune" / "backup.json"
        wait_for(backup, first, KILL_TIMEOUT)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    state = json.loads((model_dir / "state.json").read_text())
    assert state["stages"]["prune"]["completed"]
    assert not state["stages"]["finetune"].get("completed")

    second = start_cifar(args, tmp_path / "second.log")
    try:
        code = second.wait(timeout=RUN_TIMEOUT)
    finally:
        second.kill()
    log = (tmp_path / "second.log").read_text()
    assert code == 0, log[-3000:]
    assert "MirroredStrategy, 2 replicas" in log

    stages = json.loads((model_dir / "state.json").read_text())["stages"]
    assert all(stages[s]["completed"] for s in stages)
    # The killed stage ran twice and resumed at its second epoch; the
    # others ran once, and pre-training not at all (--pretrained).
    assert "pretrain" not in stages
    assert stages["finetune"]["runs"] == 2
    assert stages["finetune"]["resumed_at_epoch"] == 1
    assert stages["prune"]["runs"] == stages["export"]["runs"] == 1
    assert "prune: done in an earlier run, skipped" in log
    assert not (model_dir / "finetune" / "backup").exists()

    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["flops_fraction"] <= 0.5
    assert summary["macs"] < summary["macs_full"] / 1.9
    assert 0.0 <= summary["top5"] <= 1.0 and summary["top1"] <= summary["top5"]
    assert set(summary["seconds"]) == {"prune", "finetune", "export"}
    assert summary_tags(model_dir / "logs" / "finetune") >= {
        "epoch_loss",
        "epoch_accuracy",
        "learning_rate",
        "pruning/flops_fraction",
        "widths/stem_conv",
    }

    # The SavedModel serves the slim model's outputs.
    digits = ekg_keras.data.digits(image_size=8)
    images = digits.x_test[:16]
    served = tf.saved_model.load(str(model_dir / "export" / "saved_model"))
    slim = keras.saving.load_model(model_dir / "export" / "model.keras")
    assert not ekg_keras.layers.prunable_layers(slim)
    np.testing.assert_allclose(
        served.serve(tf.constant(images)).numpy(),
        slim.predict(images, verbose=0),
        atol=1e-4,
    )
    predictions = np.argmax(slim.predict(digits.x_test, verbose=0), axis=-1)
    accuracy = float(np.mean(predictions == digits.y_test))
    assert abs(accuracy - summary["top1"]) < 1e-6
