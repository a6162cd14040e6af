"""trainers/cifar.py end to end on the digits: an EKG run killed mid-search
and again mid-epoch of fine-tuning, each time resumed (one fresh process
each), ends exactly where an uninterrupted run of the same settings ends.

It starts from a --pretrained model (pre-training is covered in
test_imagenet.py); distributed runs are covered by test_multi_worker.py
and test_loop.py."""

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
        time.sleep(0.05)


def run_to_the_end(args, log_path):
    return finish(start_cifar(args, log_path), log_path)


def finish(process, log_path):
    """Waits for a started run to end successfully; returns its log."""
    try:
        code = process.wait(timeout=RUN_TIMEOUT)
    finally:
        process.kill()
    log = log_path.read_text()
    assert code == 0, log[-3000:]
    return log


def kill_when(args, log_path, path):
    """Runs until `path` appears, then SIGKILLs the process."""
    process = start_cifar(args, log_path)
    try:
        wait_for(path, process, KILL_TIMEOUT)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def summary_tags(log_dir):
    """The tags of every summary in the event files under `log_dir`."""
    tags = set()
    for path in log_dir.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_killed_twice_resumes_to_the_uninterrupted_result(tmp_path, request):
    pretrained = tmp_path / "pretrained.keras"
    ekg_keras.models.resnet20(input_shape=(8, 8, 3)).save(pretrained)
    common = [
        *TINY,
        "--method=ekg",
        "--flops=0.8",
        "--method_options=cache=false,val_per_class=3,subset_per_class=4",
        "--epochs=2",
        "--finetuner_options=num_teachers=2",
        f"--pretrained={pretrained}",
    ]
    straight_dir = tmp_path / "straight"
    # The uninterrupted reference runs beside the interrupted one: two
    # processes on the two cores shorten the test, not its checks.
    straight = start_cifar(
        [*common, f"--model_dir={straight_dir}"], tmp_path / "straight.log"
    )
    request.addfinalizer(straight.kill)  # Also when a check below fails.

    model_dir = tmp_path / "run"
    args = [*common, f"--model_dir={model_dir}"]
    # 1. Killed during the EKG search, after its first checkpointed step.
    kill_when(
        args,
        tmp_path / "first.log",
        model_dir / "prune" / "search" / "state.npz",
    )
    state = json.loads((model_dir / "state.json").read_text())
    assert not state["stages"]["prune"].get("completed")
    # 2. Resumed, and killed again in fine-tuning's second epoch (the
    # first epoch's backup is complete).
    backup = model_dir / "finetune" / "backup" / "finetune" / "backup.json"
    kill_when(args, tmp_path / "second.log", backup)
    second = (tmp_path / "second.log").read_text()
    assert "EKG search: resumed after step" in second
    state = json.loads((model_dir / "state.json").read_text())
    assert state["stages"]["prune"]["completed"]
    assert not state["stages"]["finetune"].get("completed")
    # 3. Resumed to the end.
    log = run_to_the_end(args, tmp_path / "third.log")
    assert "prune: done in an earlier run, skipped" in log
    finish(straight, tmp_path / "straight.log")

    stages = json.loads((model_dir / "state.json").read_text())["stages"]
    assert all(stages[s]["completed"] for s in stages)
    assert "pretrain" not in stages
    assert stages["prune"]["runs"] == 2
    assert stages["finetune"]["runs"] == 2
    assert stages["finetune"]["resumed_at_epoch"] == 1
    assert stages["export"]["runs"] == 1
    assert not (model_dir / "finetune" / "backup").exists()

    # The interrupted run ends where the uninterrupted one does: the same
    # searched masks, the same fine-tuned weights, the same accuracy.
    for stage in ("prune", "finetune"):
        straight = keras.saving.load_model(straight_dir / stage / "model.keras")
        resumed = keras.saving.load_model(model_dir / stage / "model.keras")
        masks = 0
        for a, b in zip(straight.weights, resumed.weights, strict=True):
            if a.name == "mask":
                masks += 1
                np.testing.assert_array_equal(a.numpy(), b.numpy())
            else:
                np.testing.assert_allclose(
                    a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path
                )
        assert masks > 20
    summary = json.loads((model_dir / "summary.json").read_text())
    reference = json.loads((straight_dir / "summary.json").read_text())
    assert summary["top1"] == reference["top1"]
    assert summary["macs"] == reference["macs"]

    assert 0.79 <= summary["flops_fraction"] <= 0.8
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
