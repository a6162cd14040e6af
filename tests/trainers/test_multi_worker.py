"""trainers/cifar.py with --strategy=multi_worker_mirrored: two worker
processes on localhost prune and fine-tune in lockstep."""

import json
import socket

import keras
import numpy as np
import pytest
from trainer_testing import TINY
from trainer_testing import max_weight_difference
from trainer_testing import start_cifar

import ekg_keras

# End to end in a subprocess or over many stages: left out of --quick.
pytestmark = pytest.mark.slow

TIMEOUT = 300


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_end_with_identical_masks_and_weights(tmp_path):
    pretrained = tmp_path / "pretrained.keras"
    ekg_keras.models.resnet20(input_shape=(8, 8, 3)).save(pretrained)
    model_dir = tmp_path / "run"
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
    args = [
        *TINY,
        "--method=l1",
        "--strategy=multi_worker_mirrored",
        f"--pretrained={pretrained}",
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
        codes = [worker.wait(timeout=TIMEOUT) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs[0][-2000:] + logs[1][-2000:]
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
