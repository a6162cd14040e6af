"""Tests for ekg_keras.latency (structure only; speed lives in benchmarks)."""

import keras
import pytest

import ekg_keras


def test_measure_latency_reports_consistent_figures():
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(inputs))
    latency = ekg_keras.measure_latency(
        keras.Model(inputs, outputs), batch_size=4, runs=5, warmup=1
    )
    assert latency.batch_size == 4
    assert 0 < latency.median_ms <= latency.p90_ms
    assert latency.images_per_second == pytest.approx(
        4 / (latency.median_ms / 1e3)
    )


def test_measure_latencies_times_each_model_in_order():
    inputs = keras.Input((8, 8, 3))
    flat = keras.layers.Flatten()(inputs)
    small = keras.Model(inputs, keras.layers.Dense(2)(flat))
    large = keras.Model(inputs, keras.layers.Dense(4096)(flat))
    latencies = ekg_keras.measure_latencies(
        [small, large], batch_size=4, runs=6, warmup=1, rounds=3
    )
    assert [latency.batch_size for latency in latencies] == [4, 4]
    for latency in latencies:
        assert 0 < latency.median_ms <= latency.p90_ms


def test_interleaved_times_rotate_the_order_each_round():
    from ekg_keras.latency.measure import interleaved_times

    calls_made = []
    calls = [lambda i=i: calls_made.append(i) for i in range(3)]
    times = interleaved_times(calls, runs=2, warmup=1, rounds=3)
    assert [len(t) for t in times] == [6, 6, 6]
    warmup, timed = calls_made[:3], calls_made[3:]
    assert warmup == [0, 1, 2]
    # Round 1: 0 0 1 1 2 2; round 2 starts at 1; round 3 at 2.
    assert timed == [0, 0, 1, 1, 2, 2, 1, 1, 2, 2, 0, 0, 2, 2, 0, 0, 1, 1]
