"""A latency cost with the interface of the FLOPs counter."""

import hashlib
import json
import time

import numpy as np

from ekg_keras import _logging as log
from ekg_keras.flops import CostTerms
from ekg_keras.latency.cache import LatencyCache
from ekg_keras.latency.cache import default_cache_path
from ekg_keras.latency.layers import GRID
from ekg_keras.latency.layers import measure_table
from ekg_keras.latency.layers import timed_layers
from ekg_keras.latency.measure import interleaved_medians
from ekg_keras.latency.runners import device_id
from ekg_keras.latency.runners import make_runner
from ekg_keras.latency.runners import runtime_id
from ekg_keras.latency.table import LatencyTable
from ekg_keras.latency.table import TableStack

#: Kept fractions of every group in the whole networks that calibrate the
#: sum of layer times against the network's measured time.
CALIBRATION = (1.0, 0.75, 0.5, 0.3)


class LatencyCounter:
    """Predicted latency (milliseconds) of a model for any keep counts.

    Each timed layer (convolutions and dense layers, `timed_layers`) has a
    `LatencyTable` of its median time over a small grid of kept input and
    output channels, measured on this device in `runtime` at
    `batch_size`, interpolated between grid points. The network's time is
    `intercept + scale * sum(layer times) + per_element * elements`, where
    `elements` counts the timed layers' output values per sample (what
    activations, adds and layer-to-layer memory traffic scale with). The
    three coefficients are fitted by least squares to the measured time of
    whole networks (the deployed form, `network(keep_counts)`) with every
    group kept at each fraction of `CALIBRATION`; they absorb what the
    isolated layer timings miss (the call's overhead, the layers between
    them, caches shared along the network).
    Tables and calibration are cached in a file keyed by what was measured
    and valid for one device and runtime (`LatencyCache`), so a model is
    measured once per device.

    It has the interface methods use on `PruningSetup.counter`: `full`,
    `macs(keep)` (here: predicted milliseconds), `terms("macs")` (a
    differentiable surrogate, per layer the least-squares bilinear fit of
    its table), `params` and `report` (from the FLOPs counter).

    Args:
        graph: The masked model's `ChannelGraph`.
        flops_counter: Its `FlopsCounter` (parameters, reports).
        network: Function from keep counts to the deployed Keras model at
            those counts (for the calibration), or None to skip it
            (intercept 0, scale 1).
        batch_size: Samples per timed call.
        runtime: "tf", "litert", "onnx" or "openvino".
        cache: A `LatencyCache`, a file path, or None for the default file
            (`default_cache_path()`).
        grid: Kept fractions at which each layer is timed.
        runs: Timed calls per measurement and round (3 interleaved
            rounds; the median is kept).
        warmup: Untimed calls before them.
        attempts: How often a method under this budget may prune: after
            each pruning the pruned network and the original are timed
            (`measured_fraction`), and while the measured fraction is
            above the budget, a method that needs no data prunes again
            to a predicted budget lowered by that error. 1 measures once
            and only reports; 0 never measures.
        verbose: 1 for progress lines.
    """

    def __init__(
        self,
        graph,
        flops_counter,
        network=None,
        *,
        batch_size=1,
        runtime="tf",
        cache=None,
        grid=GRID,
        runs=10,
        warmup=3,
        attempts=3,
        verbose=1,
    ):
        attempts = _integer_at_least(
            attempts,
            0,
            "attempts",
            "a non-negative integer (0 never measures the pruned network)",
        )
        self.graph = graph
        self.flops_counter = flops_counter
        self.sizes = graph.sizes.astype(np.float64)
        self.batch_size = check_batch_size(batch_size)
        self.runtime = runtime
        self.runs = runs
        self.warmup = warmup
        self.attempts = attempts if network is not None else 0
        self.network = network
        self.verbose = verbose
        if not isinstance(cache, LatencyCache):
            path = default_cache_path() if cache is None else cache
            cache = LatencyCache(
                path, device_id(), runtime_id(runtime), verbose=verbose
            )
        self.cache = cache
        self.fractions = tuple(grid)
        self.layers = timed_layers(graph)
        self.tables = self._measure_tables(self.fractions)
        self._stack = TableStack(self.tables)
        self._a_weights = np.stack([t.a_weights for t in self.layers])
        self._a_fixed = np.array([t.a_fixed for t in self.layers])
        self._b_weights = np.stack([t.b_weights for t in self.layers])
        self._b_fixed = np.array([t.b_fixed for t in self.layers])
        positions = np.array([t.positions for t in self.layers])
        self._element_weights = positions @ np.stack(
            [t.out_weights for t in self.layers]
        )
        self._element_fixed = float(
            positions @ np.array([t.out_fixed for t in self.layers])
        )
        self.intercept, self.scale, self.per_element = 0.0, 1.0, 0.0
        self.calibration = []
        if network is not None:
            self._calibrate(network)

    @property
    def full(self):
        """Keep counts of the unpruned model (every group at full size)."""
        return self.sizes.copy()

    def layer_ms(self, keep):
        """Per timed layer, its interpolated milliseconds at `keep`."""
        keep = np.asarray(keep, np.float64)
        a = self._a_weights @ keep + self._a_fixed
        b = self._b_weights @ keep + self._b_fixed
        return self._stack.ms(a, b)

    def elements(self, keep):
        """Output values of the timed layers per sample at `keep`."""
        keep = np.asarray(keep, np.float64)
        return float(self._element_weights @ keep + self._element_fixed)

    def milliseconds(self, keep):
        """Predicted milliseconds of one call at keep counts `keep`."""
        return (
            self.intercept
            + self.scale * float(np.sum(self.layer_ms(keep)))
            + self.per_element * self.elements(keep)
        )

    def macs(self, keep, masks=None):
        """The cost methods budget: predicted milliseconds (`masks`, for
        the FLOPs counter's interface, do not change it)."""
        del masks
        return self.milliseconds(keep)

    def params(self, keep, masks=None):
        """Parameters at keep counts (the FLOPs counter's count)."""
        return self.flops_counter.params(keep, masks)

    def report(self, keep=None, masks=None):
        """The FLOPs counter's `FlopsReport`."""
        return self.flops_counter.report(keep, masks)

    def terms(self, quantity="macs"):
        """The cost as `CostTerms` (a differentiable surrogate).

        For "macs", each layer's table is replaced by its least-squares
        bilinear fit `c0 + c1 a + c2 b + c3 a b` in its live channels,
        scaled and offset like the prediction; "params" are the FLOPs
        counter's.
        """
        if quantity == "params":
            return self.flops_counter.terms("params")
        if quantity != "macs":
            raise ValueError(
                "`quantity` should be 'macs' or 'params'. Received: "
                f"quantity={quantity!r}"
            )
        n = len(self.sizes)
        coef, a_w, a_0, b_w, b_0 = [self.per_element], [], [], [], []
        a_w.append(self._element_weights)
        a_0.append(self._element_fixed)
        b_w.append(np.zeros(n))
        b_0.append(1.0)
        constant = self.intercept
        for timed, table in zip(self.layers, self.tables):
            c0, c1, c2, c3 = table.bilinear_fit()
            constant += self.scale * c0
            one = (np.zeros(n), 1.0)
            a_side = (timed.a_weights, timed.a_fixed)
            b_side = (timed.b_weights, timed.b_fixed)
            for c, first, second in (
                (c3, a_side, b_side),
                (c1, a_side, one),
                (c2, b_side, one),
            ):
                coef.append(self.scale * c)
                a_w.append(first[0])
                a_0.append(first[1])
                b_w.append(second[0])
                b_0.append(second[1])
        rows = len(coef)
        return CostTerms(
            np.array(coef),
            np.reshape(a_w, (rows, n)),
            np.array(a_0),
            np.reshape(b_w, (rows, n)),
            np.array(b_0),
            constant,
            condition_groups=np.zeros((rows, n)),
            sizes=self.sizes.copy(),
        )

    def measure(self, models):
        """Median milliseconds of each of `models` (deployed forms) on this
        device and runtime, timed in interleaved rounds."""
        calls = []
        for model in models:
            run = make_runner(model, self.runtime, self.batch_size)
            shape = (self.batch_size, *model.input_shape[1:])
            x = np.random.default_rng(0).standard_normal(shape)
            x = x.astype("float32")
            calls.append(lambda run=run, x=x: run(x))
        medians = interleaved_medians(calls, self.runs, self.warmup)
        return [1e3 * seconds for seconds in medians]

    def measured_fraction(self, keep_counts):
        """Measured time of the deployed network at `keep_counts` over the
        unpruned one's (both built by `network` and timed in interleaved
        rounds), the figure a latency budget promises."""
        if self.network is None:
            raise ValueError(
                "Measuring a pruned network needs the `network` function "
                "(keep counts -> deployed model). Received: network=None"
            )
        pruned, full = self.measure(
            [self.network(keep_counts), self.network(self.full)]
        )
        return pruned / full

    def _measure_tables(self, fractions):
        tables, todo = [], []
        for timed in self.layers:
            key = timed.key(timed.grid(fractions), self.batch_size)
            stored = self.cache.get(key)
            tables.append(
                None if stored is None else LatencyTable.from_dict(stored)
            )
            if stored is None and key not in [k for k, _ in todo]:
                todo.append((key, timed))
        if todo and self.verbose:
            log.info(
                f"ekg_keras: measuring {len(todo)} layer configurations "
                f"({self.runtime}, batch {self.batch_size}) for the latency "
                "model; cached for the next time"
            )
        start = time.perf_counter()
        measured = {}
        for number, (key, timed) in enumerate(todo, 1):
            table = measure_table(
                timed,
                timed.grid(fractions),
                self.batch_size,
                self.runtime,
                self.runs,
                self.warmup,
            )
            self.cache.put(key, table.to_dict())
            measured[key] = table
            if self.verbose:
                log.info(
                    f"  {number}/{len(todo)} {timed.path}: "
                    f"{table.ms.max():.3f} ms at full width "
                    f"({time.perf_counter() - start:.0f} s)"
                )
        return [
            table
            if table is not None
            else measured[timed.key(timed.grid(fractions), self.batch_size)]
            for table, timed in zip(tables, self.layers)
        ]

    def _calibrate(self, network):
        levels = [
            _uniform_counts(self.sizes, self.graph, f) for f in CALIBRATION
        ]
        key = self._calibration_key(levels)
        stored = self.cache.get(key)
        if stored is None:
            if self.verbose:
                log.info(
                    f"ekg_keras: timing {len(levels)} whole networks to "
                    "calibrate the latency model"
                )
            stored = {"measured_ms": self.measure([network(k) for k in levels])}
            self.cache.put(key, stored)
        measured = np.array(stored["measured_ms"])
        sums = np.array([np.sum(self.layer_ms(k)) for k in levels])
        elements = np.array([self.elements(k) for k in levels])
        self.intercept, self.scale, self.per_element = _fit(
            sums, elements, measured
        )
        self.calibration = [
            {
                "fraction": f,
                "measured_ms": float(m),
                "predicted_ms": self.milliseconds(k),
            }
            for f, m, k in zip(CALIBRATION, measured, levels)
        ]

    def _calibration_key(self, levels):
        digest = hashlib.sha256()
        for timed in self.layers:
            digest.update(
                timed.key(timed.grid(self.fractions), self.batch_size).encode()
            )
            digest.update(np.asarray(timed.a_weights).tobytes())
            digest.update(np.asarray(timed.b_weights).tobytes())
        digest.update(json.dumps([k.tolist() for k in levels]).encode())
        return f"network {digest.hexdigest()} batch {self.batch_size}"


def _uniform_counts(sizes, graph, fraction):
    """Every prunable group keeps `fraction` of its channels (at least 1)."""
    counts = sizes.copy()
    for index, group in enumerate(graph.groups):
        if group.prunable:
            counts[index] = max(1.0, float(np.ceil(fraction * sizes[index])))
    return counts


def _fit(sums, elements, measured):
    """`(intercept, scale, per_element)` of measured ~ intercept + scale *
    sums + per_element * elements by least squares, with scale > 0 and
    per_element >= 0; fewer terms when the points (noise) do not give
    that, down to a plain ratio."""
    ones = np.ones(len(sums))
    for columns in ([ones, sums, elements], [ones, sums]):
        if len(sums) <= len(columns):
            continue
        design = np.stack(columns, axis=1)
        solution, *_ = np.linalg.lstsq(design, measured, rcond=None)
        solution = list(solution) + [0.0] * (3 - len(solution))
        if solution[1] > 0 and solution[2] >= 0:
            return tuple(float(v) for v in solution)
    return 0.0, float(np.sum(measured) / max(np.sum(sums), 1e-12)), 0.0


def check_batch_size(batch_size):
    """Returns `batch_size` if it is a positive integer, else raises."""
    return _integer_at_least(
        batch_size, 1, "latency_batch_size", "a positive integer"
    )


def _integer_at_least(value, minimum, name, expected):
    """`value` as an int if it is an integer >= `minimum` (not a bool);
    else a ValueError saying `expected` and what was received."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        raise ValueError(
            f"`{name}` should be {expected}. Received: {name}={value!r}"
        )
    return int(value)
