"""trainers/cifar.py end to end on the digits, against one uninterrupted
single-process EKG run (started once for the module, in the background):

* a run killed mid-search and again mid-epoch of fine-tuning, each time
  resumed (one fresh process each), ends exactly where it ends;
* two worker processes with --strategy=multi_worker_mirrored on localhost
  run the EKG search (its evaluator gathers every replica's results across
  workers) and EKG fine-tuning in lockstep, and search the masks it
  searches.

Both start from a --pretrained model (pre-training is covered in
test_imagenet.py); in-process distribution is covered by test_loop.py."""

import json
import signal
import socket
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from trainer_testing import TINY
from trainer_testing import max_weight_difference
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


class Uninterrupted:
    """The reference run, started in the background; `finish()` waits for
    it (once) and returns its directory."""

    def __init__(self, directory, args):
        self.directory = directory / "straight"
        self.args = args
        self.log_path = directory / "straight.log"
        self.process = start_cifar(
            [*args, f"--model_dir={self.directory}"], self.log_path
        )
        self._finished = False

    def finish(self):
        if not self._finished:
            finish(self.process, self.log_path)
            self._finished = True
        return self.directory


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    # It runs beside the first test's processes: the tests use both cores
    # and share one reference run instead of starting one each.
    directory = tmp_path_factory.mktemp("uninterrupted")
    pretrained = directory / "pretrained.keras"
    # Seeded here: a module fixture is set up before the per-test seeding,
    # and the same weights every run keep the search's path the same.
    keras.utils.set_random_seed(0)
    ekg_keras.models.resnet20(input_shape=(8, 8, 3)).save(pretrained)
    args = [
        *TINY,
        "--method=ekg",
        "--flops=0.8",
        "--method_options=cache=false,val_per_class=4,subset_per_class=4",
        "--epochs=2",
        "--finetuner_options=num_teachers=2",
        f"--pretrained={pretrained}",
    ]
    run = Uninterrupted(directory, args)
    yield run
    run.process.kill()  # Also when a check failed before it was waited for.


def test_killed_twice_resumes_to_the_uninterrupted_result(
    tmp_path, uninterrupted
):
    common = uninterrupted.args
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
    straight_dir = uninterrupted.finish()

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


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_end_with_identical_masks_and_weights(
    tmp_path, uninterrupted
):
    model_dir = tmp_path / "run"
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
    args = [
        *uninterrupted.args,
        "--strategy=multi_worker_mirrored",
        f"--model_dir={model_dir}",
    ]
    workers = [
        start_cifar(
            args,
            tmp_path / f"worker{index}.log",
            TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        )
        for index in range(2)
    ]
    try:
        codes = [p.wait(timeout=RUN_TIMEOUT) for p in workers]
    finally:
        for process in workers:
            process.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "EKG step 1:" in logs[0]
    assert "MultiWorkerMirroredStrategy, 2 replicas" in logs[0]

    # The chief (worker 0) writes the run; worker 1 only its own state.
    assert (model_dir / "export" / "saved_model").is_dir()
    assert (model_dir / "summary.json").exists()
    own = model_dir / "workers" / "worker_1"
    assert not (own / "export").exists() and not (own / "logs").exists()
    stages = json.loads((own / "state.json").read_text())["stages"]
    assert stages["finetune"]["completed"]

    chief = keras.saving.load_model(model_dir / "finetune" / "model.keras")
    other = keras.saving.load_model(own / "finetune" / "model.keras")
    pruned = keras.saving.load_model(model_dir / "prune" / "model.keras")
    masks = [w.numpy() for w in chief.weights if w.name == "mask"]
    assert masks and min(float(m.mean()) for m in masks) < 1.0
    for a, b in zip(chief.weights, other.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    # And they did train.
    assert max_weight_difference(chief, pruned) > 1e-3
    # One process searched the same masks: the search reads the same
    # subsets on every worker, splits each batch between the workers and
    # gathers their results, with batch normalization synchronised.
    # (Fine-tuning differs from one process by design: each worker reads
    # its own shard of the training data, so the global batches differ.)
    one_dir = uninterrupted.finish()
    alone = keras.saving.load_model(one_dir / "prune" / "model.keras")
    masks = 0
    for a, b in zip(pruned.weights, alone.weights, strict=True):
        if a.name == "mask":
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            masks += 1
    assert masks > 20
