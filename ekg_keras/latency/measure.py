"""Measured CPU/GPU inference speed of a model."""

import dataclasses
import time

import numpy as np

from ekg_keras._backend import tf


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
    the figure is steady-state speed, not tracing time. To compare models
    (a network and its pruned form), time them together with
    `measure_latencies`: timed one after the other, a change in the
    machine's load between them reads as a speed-up or a slow-down.

    Args:
        model: A Keras model with one image-like input of static shape.
        batch_size: Samples per pass.
        runs: Timed passes.
        warmup: Untimed passes before timing.
        seed: Seed of the random input.

    Returns:
        A `Latency`.
    """
    forward = _timed_call(model, batch_size, seed)
    return _latency(batch_size, call_times(forward, runs, warmup))


def measure_latencies(
    models, batch_size=1, runs=50, warmup=5, rounds=3, seed=0
):
    """Times several models against each other, in interleaved rounds.

    Every model is warmed up, then each of `rounds` rounds times
    `runs / rounds` passes of each model in turn (the order rotating), so
    that a shift in the machine's load touches all of them alike: their
    ratios (a speed-up) hold on a busy machine where separate timings do
    not.

    Args:
        models: Keras models with one image-like input each (the same
            random batch goes to models with the same input shape).
        batch_size: Samples per pass.
        runs: Timed passes of each model, over all rounds (at least one
            per round).
        warmup: Untimed passes of each model first.
        rounds: Rounds.
        seed: Seed of the random inputs.

    Returns:
        A list of `Latency`, one per model, in order.
    """
    calls = [_timed_call(model, batch_size, seed) for model in models]
    per_round = max(1, round(runs / rounds))
    times = interleaved_times(calls, per_round, warmup, rounds)
    return [_latency(batch_size, t) for t in times]


def _timed_call(model, batch_size, seed):
    """A function that runs one compiled pass of a random batch."""
    shape = [batch_size] + [
        d if d is not None else 32 for d in model.inputs[0].shape[1:]
    ]
    x = tf.constant(
        np.random.default_rng(seed).standard_normal(shape),
        dtype=model.inputs[0].dtype,
    )
    forward = inference_function(model)
    return lambda: forward(x).numpy()


def _latency(batch_size, times):
    median = float(np.median(times))
    return Latency(
        batch_size=batch_size,
        median_ms=1e3 * median,
        p90_ms=1e3 * float(np.percentile(times, 90)),
        images_per_second=batch_size / median,
    )


def call_times(run, runs, warmup):
    """Wall times in seconds of `runs` calls of `run()` after `warmup`."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def interleaved_medians(calls, runs, warmup, rounds=3):
    """Median seconds per call of each of `calls`, timed in rounds.

    Each call is warmed up, then every round times `runs` calls of each in
    turn (the order rotating), so that a drift in the machine's load
    touches all of them alike.

    Args:
        calls: Functions without arguments.
        runs: Timed calls of each per round.
        warmup: Untimed calls of each first.
        rounds: Rounds.

    Returns:
        A list of medians in seconds, one per call.
    """
    times = interleaved_times(calls, runs, warmup, rounds)
    return [float(np.median(t)) for t in times]


def interleaved_times(calls, runs, warmup, rounds=3):
    """Seconds of every timed call of each of `calls`, in rounds (see
    `interleaved_medians`); a list of lists, one per call."""
    times = [[] for _ in calls]
    for call in calls:
        call_times(call, 0, warmup)
    for round_index in range(rounds):
        order = list(range(len(calls)))
        shift = round_index % max(1, len(calls))
        for index in order[shift:] + order[:shift]:
            times[index].extend(call_times(calls[index], runs, 0))
    return times
