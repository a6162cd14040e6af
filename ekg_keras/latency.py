"""Measured CPU/GPU inference speed of a model."""

import dataclasses
import time

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Latency:
    """Timing of repeated forward passes of one batch.

    Attributes:
        batch_size: Samples per forward pass.
        median_ms: Median wall time of one pass, in milliseconds.
        p90_ms: 90th percentile, in milliseconds.
        images_per_second: `batch_size / median`.
    """

    batch_size: int
    median_ms: float
    p90_ms: float
    images_per_second: float


def inference_function(model):
    """A compiled `model(x, training=False)`, traced once per input shape."""
    return tf.function(
        lambda x: model(x, training=False), reduce_retracing=True
    )


def measure_latency(model, batch_size=1, runs=50, warmup=5, seed=0):
    """Times `runs` inference passes of a random batch through `model`.

    The forward pass is compiled with `tf.function` and warmed up first, so
    the figure is steady-state speed, not tracing time.

    Args:
        model: A Keras model with one image-like input of static shape.
        batch_size: Samples per pass.
        runs: Timed passes.
        warmup: Untimed passes before timing.
        seed: Seed of the random input.

    Returns:
        A `Latency`.
    """
    shape = [batch_size] + [
        d if d is not None else 32 for d in model.inputs[0].shape[1:]
    ]
    x = tf.constant(
        np.random.default_rng(seed).standard_normal(shape),
        dtype=model.inputs[0].dtype,
    )
    forward = inference_function(model)
    for _ in range(warmup):
        forward(x).numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        forward(x).numpy()
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return Latency(
        batch_size=batch_size,
        median_ms=1e3 * median,
        p90_ms=1e3 * float(np.percentile(times, 90)),
        images_per_second=batch_size / median,
    )
