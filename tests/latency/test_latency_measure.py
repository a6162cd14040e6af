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
