"""trainers/cifar.py with --strategy=multi_worker_mirrored: two worker
processes on localhost run the EKG search (its evaluator gathers every
replica's results across workers) and EKG fine-tuning in lockstep, and end
where one worker on the same global batch ends."""

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

TIMEOUT = 600


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
    common = [
        *TINY,
        "--method=ekg",
        "--flops=0.8",
        "--method_options=cache=false,val_per_class=4,subset_per_class=4",
        "--finetuner_options=num_teachers=2",
        f"--pretrained={pretrained}",
    ]
    args = [
        *common,
        "--strategy=multi_worker_mirrored",
        f"--model_dir={model_dir}",
    ]
    one_dir = tmp_path / "one"
    one = start_cifar([*common, f"--model_dir={one_dir}"], tmp_path / "one.log")
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
        codes = [p.wait(timeout=TIMEOUT) for p in (*workers, one)]
    finally:
        for process in (*workers, one):
            process.kill()
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0, 0], logs[0][-2000:] + logs[1][-2000:]
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
    alone = keras.saving.load_model(one_dir / "prune" / "model.keras")
    masks = 0
    for a, b in zip(pruned.weights, alone.weights, strict=True):
        if a.name == "mask":
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            masks += 1
    assert masks > 20
