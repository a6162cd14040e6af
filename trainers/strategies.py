"""`tf.distribute` strategies from a name, as the `--strategy` flag gives.

Everything here takes plain arguments; the scripts read the flags.
"""

import json
import os

import tensorflow as tf

from trainers.config import first_line

STRATEGIES = (
    "default",
    "one_device",
    "mirrored",
    "multi_worker_mirrored",
    "tpu",
)

TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


class StrategyError(ValueError):
    """A strategy that cannot be built from the given arguments."""


def split_cpu(count):
    """Splits the first CPU into `count` logical devices.

    Lets `mirrored` run several replicas on a machine without GPUs (for
    trying distribution out, and for tests). It must run before TensorFlow
    initialises its devices.

    Args:
        count: Number of logical CPU devices; 0 or 1 leaves the CPU whole.

    Raises:
        StrategyError: If TensorFlow is already initialised.
    """
    if count <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError as error:
        raise StrategyError(
            f"Cannot split the CPU into {count} devices after TensorFlow "
            f"has initialised: {error}"
        ) from error


def create_strategy(name, tpu=None):
    """Builds the `tf.distribute.Strategy` called `name`.

    * `default`: no distribution (`tf.distribute.get_strategy()`).
    * `one_device`: the first GPU, or the CPU.
    * `mirrored`: every local GPU; without GPUs, every logical CPU device
      (see `split_cpu`).
    * `multi_worker_mirrored`: synchronous training on the machines listed
      in the `TF_CONFIG` environment variable, e.g.
      `TF_CONFIG_EXAMPLE` on the first machine and `"index": 1` on the
      second; every machine runs the same command.
    * `tpu`: a `TPUStrategy` on the TPU that `tpu` names (a gRPC address
      such as `grpc://10.0.0.2:8470`, a Cloud TPU name, or `"local"`).

    Args:
        name: One of `STRATEGIES`.
        tpu: The TPU for `name="tpu"`.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        StrategyError: For an unknown name, `multi_worker_mirrored` without
            a valid `TF_CONFIG`, or `tpu` without a TPU or one that cannot
            be reached.
    """
    if name not in STRATEGIES:
        raise StrategyError(
            f"--strategy should be one of {', '.join(STRATEGIES)}. "
            f"Received: {name!r}"
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(
            gpus[0].name if gpus else "/cpu:0"
        )
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or (
            tf.config.list_logical_devices("CPU")
        )
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker_mirrored":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu)


def check_tf_config(text):
    """Checks a `TF_CONFIG` value for multi-worker training.

    Args:
        text: The environment variable's value, or None.

    Returns:
        The parsed dict.

    Raises:
        StrategyError: If it is missing, not JSON, or lacks a cluster with
            workers or a task with a type and an index.
    """
    how = f"Set it on every machine, e.g. {TF_CONFIG_EXAMPLE}."
    if not text:
        raise StrategyError(
            "--strategy=multi_worker_mirrored reads the cluster from the "
            f"TF_CONFIG environment variable, which is not set. {how}"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise StrategyError(
            f"TF_CONFIG should be JSON. {error}. Received: {text!r}"
        ) from error
    cluster = config.get("cluster", {}) if isinstance(config, dict) else {}
    task = config.get("task", {}) if isinstance(config, dict) else {}
    if not (cluster.get("worker") or cluster.get("chief")) or not (
        isinstance(task, dict) and "type" in task and "index" in task
    ):
        raise StrategyError(
            "TF_CONFIG should hold a cluster with workers and this task's "
            f"type and index. {how} Received: {text!r}"
        )
    return config


def _tpu_strategy(tpu):
    if not tpu:
        raise StrategyError(
            "--strategy=tpu needs --tpu: the TPU's gRPC address "
            "(grpc://10.0.0.2:8470), its Cloud TPU name, or 'local'."
        )
    resolver_class = tf.distribute.cluster_resolver.TPUClusterResolver
    try:
        resolver = resolver_class(tpu="" if tpu == "local" else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise StrategyError(
            f"Cannot reach the TPU {tpu!r}: {first_line(error)}"
        ) from error
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """Whether this process writes checkpoints, summaries and exports.

    In multi-worker training that is the `chief` task, or worker 0 when the
    cluster has no chief; otherwise always.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (
        not has_chief and task_type == "worker" and task_id == 0
    )


def describe(strategy):
    """E.g. "MirroredStrategy, 2 replicas" or "no distribution, 1 replica"."""
    names = {
        "_DefaultDistributionStrategy": "no distribution",
        "CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy",
    }
    name = type(strategy).__name__
    replicas = strategy.num_replicas_in_sync
    plural = "replica" if replicas == 1 else "replicas"
    return f"{names.get(name, name)}, {replicas} {plural}"


def worker_name(strategy):
    """`"chief"`, or `"worker_<index>"` for the other multi-worker tasks."""
    if is_chief(strategy):
        return "chief"
    return f"worker_{strategy.cluster_resolver.task_id}"
