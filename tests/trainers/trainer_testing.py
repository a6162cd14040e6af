"""Helpers of the trainer tests: tiny settings and subprocess runs."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
CIFAR = ROOT / "trainers" / "cifar.py"

# The smallest run that still exercises every stage.
TINY = [
    "--dataset=digits",
    "--image_size=8",
    "--model=resnet20",
    "--flops=0.5",
    "--pretrain_epochs=2",
    "--epochs=1",
    "--steps_per_epoch=2",
    "--batch_size=64",
    "--eval_batch_size=256",
    "--verbose=2",
]


def trainer_env(**extra):
    """The environment of a trainer subprocess (quiet, TensorFlow Keras)."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def start_cifar(args, log_path, **env):
    """Starts `trainers/cifar.py args` in a new process, output to a file."""
    log = open(log_path, "w")
    return subprocess.Popen(
        [sys.executable, str(CIFAR), *args],
        cwd=ROOT,
        env=trainer_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def max_weight_difference(a, b):
    """Largest absolute difference between two models' weights."""
    return max(
        float(np.max(np.abs(x - y)))
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True)
    )


def conv_bn_model(size, filters, classes, metrics=()):
    """Conv (named "conv") - BN ("bn") - ReLU - pool - Dense ("fc"), compiled
    with SGD (momentum 0.9) on logits."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(filters, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, name="fc")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=list(metrics),
    )
    return model
