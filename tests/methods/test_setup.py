"""Tests for ekg_keras.methods.setup: the set-up every method shares."""

import time

from ekg_keras import models
from ekg_keras.methods.setup import PruningSetup


def test_setup_reports_the_time_of_its_phases():
    model = models.resnet20(input_shape=(8, 8, 3))

    start = time.perf_counter()
    setup = PruningSetup(model, 0.5)
    elapsed = time.perf_counter() - start

    assert set(setup.seconds) == {"trace", "wrap", "cost"}
    assert all(seconds > 0 for seconds in setup.seconds.values())
    assert sum(setup.seconds.values()) <= elapsed
