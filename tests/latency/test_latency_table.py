"""Tests for ekg_keras.latency.table: interpolation and the bilinear fit."""

import numpy as np
import pytest

from ekg_keras.latency import LatencyTable
from ekg_keras.latency.table import TableStack


def _bilinear(a, b):
    return 0.2 + 0.01 * a + 0.03 * b + 0.002 * a * b


def _table(function=_bilinear, a=(4.0, 8.0, 16.0), b=(8.0, 32.0)):
    grid_a, grid_b = np.meshgrid(a, b, indexing="ij")
    return LatencyTable(a, b, function(grid_a, grid_b))


def test_interpolation_hits_grid_points_and_is_bilinear_between():
    table = _table()
    for a in table.a:
        for b in table.b:
            assert table(a, b) == pytest.approx(_bilinear(a, b))
    # Inside each cell a bilinear function is reproduced exactly.
    for a, b in [(5.0, 9.0), (12.5, 20.0), (15.0, 31.0)]:
        assert table(a, b) == pytest.approx(_bilinear(a, b))


def test_below_the_grid_the_first_point_holds_and_one_point_is_constant():
    table = _table()
    assert table(1.0, 2.0) == pytest.approx(_bilinear(4.0, 8.0))
    single = LatencyTable([3.0], [8.0, 16.0], [[1.0, 3.0]])
    assert single(3.0, 12.0) == pytest.approx(2.0)
    assert single(100.0, 12.0) == pytest.approx(2.0)


def test_piecewise_interpolation_follows_a_non_bilinear_table():
    table = _table(lambda a, b: a**2 * b, a=(2.0, 4.0, 8.0), b=(1.0, 2.0))
    # Halfway along a between 4 and 8: mean of 16 and 64, times b.
    assert table(6.0, 2.0) == pytest.approx((16 + 64) / 2 * 2)
    assert table(3.0, 1.0) == pytest.approx((4 + 16) / 2)


def test_stack_matches_each_table():
    tables = [
        _table(),
        _table(lambda a, b: a * b, a=(1.0, 2.0), b=(1.0,)),
        LatencyTable([8.0], [8.0], [[0.7]]),
    ]
    a = np.array([10.0, 1.5, 3.0])
    b = np.array([20.0, 1.0, 99.0])
    stacked = TableStack(tables).ms(a, b)
    expected = [t(x, y) for t, x, y in zip(tables, a, b, strict=True)]
    np.testing.assert_allclose(stacked, expected)


def test_bilinear_fit_recovers_a_bilinear_table():
    c0, c1, c2, c3 = _table().bilinear_fit()
    np.testing.assert_allclose(
        [c0, c1, c2, c3], [0.2, 0.01, 0.03, 0.002], atol=1e-9
    )


def test_dict_round_trip_and_bad_shapes():
    table = _table()
    restored = LatencyTable.from_dict(table.to_dict())
    np.testing.assert_array_equal(restored.ms, table.ms)
    np.testing.assert_array_equal(restored.a, table.a)
    with pytest.raises(ValueError, match="increasing grid points"):
        LatencyTable([2.0, 1.0], [1.0], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="shape"):
        LatencyTable([1.0, 2.0], [1.0], [[1.0, 2.0]])
