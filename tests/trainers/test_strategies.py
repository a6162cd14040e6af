"""trainers/strategies.py: strategies from names, TF_CONFIG and TPU flags."""

import json

import pytest
import tensorflow as tf

from trainers import strategies
from trainers.strategies import StrategyError


def test_default_and_one_device():
    assert strategies.create_strategy("default") is tf.distribute.get_strategy()
    one = strategies.create_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.num_replicas_in_sync == 1
    assert strategies.is_chief(one)
    assert strategies.worker_name(one) == "chief"
    assert strategies.describe(one) == "OneDeviceStrategy, 1 replica"
    default = tf.distribute.get_strategy()
    assert strategies.describe(default) == "no distribution, 1 replica"


def test_unknown_name():
    with pytest.raises(StrategyError, match="--strategy should be one of"):
        strategies.create_strategy("horovod")


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "TF_CONFIG environment variable, which is not set"),
        ("{cluster", "TF_CONFIG should be JSON"),
        ('{"cluster": {}}', "should hold a cluster with workers"),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}',
            "this task's type and index",
        ),
    ],
)
def test_multi_worker_needs_a_valid_tf_config(monkeypatch, text, message):
    if text is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(StrategyError, match=message):
        strategies.create_strategy("multi_worker_mirrored")


def test_check_tf_config_returns_the_parsed_config():
    config = {
        "cluster": {"worker": ["host1:2222", "host2:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    assert strategies.check_tf_config(json.dumps(config)) == config


def test_tpu_needs_the_tpu_flag():
    with pytest.raises(StrategyError, match="--strategy=tpu needs --tpu"):
        strategies.create_strategy("tpu")


def test_tpu_address_goes_to_the_resolver(monkeypatch):
    seen = []

    class FakeResolver:
        def __init__(self, tpu):
            seen.append(tpu)
            raise ValueError("Could not reach grpc://10.0.0.2:8470\nmore")

    monkeypatch.setattr(
        tf.distribute.cluster_resolver, "TPUClusterResolver", FakeResolver
    )
    with pytest.raises(StrategyError) as error:
        strategies.create_strategy("tpu", tpu="grpc://10.0.0.2:8470")
    assert seen == ["grpc://10.0.0.2:8470"]
    assert str(error.value) == (
        "Cannot reach the TPU 'grpc://10.0.0.2:8470': Could not reach "
        "grpc://10.0.0.2:8470"
    )
    # "local" means the TPU attached to this machine: no address.
    with pytest.raises(StrategyError):
        strategies.create_strategy("tpu", tpu="local")
    assert seen[-1] == ""


def test_split_cpu_after_initialisation_is_an_error():
    tf.constant(1.0)  # TensorFlow is initialised (conftest split the CPU).
    with pytest.raises(StrategyError, match="after TensorFlow"):
        strategies.split_cpu(3)
    strategies.split_cpu(1)  # Nothing to split: no error.


class _FakeClusterResolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id = task_type, task_id
        self._cluster = cluster

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._cluster)


@pytest.mark.parametrize(
    "task_type, task_id, cluster, chief",
    [
        ("worker", 0, {"worker": ["a:1", "b:1"]}, True),
        ("worker", 1, {"worker": ["a:1", "b:1"]}, False),
        ("chief", 0, {"chief": ["c:1"], "worker": ["a:1"]}, True),
        ("worker", 0, {"chief": ["c:1"], "worker": ["a:1"]}, False),
    ],
)
def test_chief_of_a_multi_worker_cluster(task_type, task_id, cluster, chief):
    class Unconnected(tf.distribute.MultiWorkerMirroredStrategy):
        """The strategy's type, with a resolver but no cluster behind."""

        cluster_resolver = None

    strategy = object.__new__(Unconnected)
    strategy.cluster_resolver = _FakeClusterResolver(
        task_type, task_id, cluster
    )
    assert strategies.is_chief(strategy) is chief
    expected = "chief" if chief else f"worker_{task_id}"
    assert strategies.worker_name(strategy) == expected
