"""A layer's measured time over a grid of kept channels, interpolated."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LatencyTable:
    """Milliseconds of one layer at grid points of its live channels.

    The layer's time is a function of the live channels on two sides
    `(a, b)`: its input and output channels for a convolution or a dense
    layer, its channels and 1 for a depthwise convolution. Between grid
    points the table interpolates bilinearly; outside them it extends the
    nearest segment linearly (never below 0). An axis with one point is
    constant.

    Attributes:
        a: (n,) increasing channel counts of the first side.
        b: (m,) increasing channel counts of the second side.
        ms: (n, m) milliseconds at the grid points.
    """

    a: np.ndarray
    b: np.ndarray
    ms: np.ndarray

    def __post_init__(self):
        a, b = np.asarray(self.a, float), np.asarray(self.b, float)
        ms = np.asarray(self.ms, float)
        if (
            ms.shape != (len(a), len(b))
            or np.any(np.diff(a) <= 0)
            or (np.any(np.diff(b) <= 0))
        ):
            raise ValueError(
                "A LatencyTable needs increasing grid points `a`, `b` and "
                f"`ms` of shape (len(a), len(b)). Received: a={a}, b={b}, "
                f"ms shape {ms.shape}"
            )
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "ms", ms)

    def __call__(self, a, b):
        """Interpolated milliseconds at live channels `(a, b)`."""
        return float(TableStack([self]).ms(np.array([a]), np.array([b]))[0])

    def bilinear_fit(self):
        """Least-squares `c0 + c1 a + c2 b + c3 a b` over the grid.

        Returns:
            The coefficients `(c0, c1, c2, c3)`; those of a constant axis
            are 0 (its constant goes into the others).
        """
        a, b = np.meshgrid(self.a, self.b, indexing="ij")
        columns = [np.ones(a.size)]
        columns.append(a.ravel() if len(self.a) > 1 else np.zeros(a.size))
        columns.append(b.ravel() if len(self.b) > 1 else np.zeros(a.size))
        both = len(self.a) > 1 and len(self.b) > 1
        columns.append((a * b).ravel() if both else np.zeros(a.size))
        design = np.stack(columns, axis=1)
        coefficients, *_ = np.linalg.lstsq(design, self.ms.ravel(), rcond=None)
        return tuple(float(c) for c in coefficients)

    def to_dict(self):
        """A JSON-friendly dict (`from_dict` restores it)."""
        return {
            "a": self.a.tolist(),
            "b": self.b.tolist(),
            "ms": self.ms.tolist(),
        }

    @classmethod
    def from_dict(cls, values):
        return cls(values["a"], values["b"], values["ms"])


class TableStack:
    """Many tables evaluated at once (a whole network's layers).

    Grids are padded to a common size so that one call interpolates every
    layer with array operations: searches evaluate costs thousands of times.
    """

    def __init__(self, tables):
        self.count = len(tables)
        n = max([2] + [len(t.a) for t in tables])
        m = max([2] + [len(t.b) for t in tables])
        self.a, self.a_points = _padded_axes([t.a for t in tables], n)
        self.b, self.b_points = _padded_axes([t.b for t in tables], m)
        self.grid = np.zeros((self.count, n, m))
        for row, table in enumerate(tables):
            ms = table.ms
            if len(table.a) == 1:
                ms = np.repeat(ms, 2, axis=0)
            if len(table.b) == 1:
                ms = np.repeat(ms, 2, axis=1)
            self.grid[row, : ms.shape[0], : ms.shape[1]] = ms

    def ms(self, a, b):
        """Per table, interpolated milliseconds at live channels a[i], b[i]."""
        if not self.count:
            return np.zeros(0)
        i, ta = _segments(self.a, self.a_points, a)
        j, tb = _segments(self.b, self.b_points, b)
        rows = np.arange(self.count)
        grid = self.grid
        value = (
            grid[rows, i, j] * (1 - ta) * (1 - tb)
            + grid[rows, i + 1, j] * ta * (1 - tb)
            + grid[rows, i, j + 1] * (1 - ta) * tb
            + grid[rows, i + 1, j + 1] * ta * tb
        )
        return np.maximum(value, 0.0)


def _padded_axes(axes, size):
    """Axes padded to `size` points (a single point gets a second one
    above it, so that it interpolates as a constant)."""
    padded = np.full((len(axes), size), np.inf)
    points = np.zeros(len(axes), dtype=np.int64)
    for row, axis in enumerate(axes):
        if len(axis) == 1:
            axis = np.array([axis[0], axis[0] + 1.0])
        padded[row, : len(axis)] = axis
        points[row] = len(axis)
    return padded, points


def _segments(axes, points, values):
    """Per row, the segment index holding `values` and the position in it
    (clipped to the segment: no extrapolation)."""
    values = np.asarray(values, float)
    above = np.sum(axes[:, 1:] <= values[:, None], axis=1)
    index = np.clip(above, 0, points - 2)
    rows = np.arange(len(values))
    low, high = axes[rows, index], axes[rows, index + 1]
    return index, np.clip((values - low) / (high - low), 0.0, 1.0)
