"""The layers whose time a latency model measures, and measuring them."""

import dataclasses
import json

import keras
import numpy as np

from ekg_keras.flops import cost_side
from ekg_keras.flops import live_channel_rows
from ekg_keras.graph.registry import get_handler
from ekg_keras.latency.measure import interleaved_medians
from ekg_keras.latency.runners import make_runner
from ekg_keras.latency.table import LatencyTable

#: Kept fractions of a side's channels at which a layer is timed.
GRID = (0.25, 0.5, 0.75, 1.0)
_TIMED = ("conv", "fc")


@dataclasses.dataclass(frozen=True)
class TimedLayer:
    """One call of a layer whose time depends on kept channels.

    Its time is a function of the live channels on two sides `(a, b)`,
    each linear in the per-group keep counts k: `a = a_weights @ k +
    a_fixed` (likewise b), the sides of the layer's MAC term.

    Attributes:
        path: The layer's path in the model.
        kind: "grid" (a layer rebuilt with `a` input and `b` output
            channels: convolutions, dense layers), "depthwise" (a depthwise
            convolution of `a` channels) or "proportional" (timed whole,
            scaled by its MACs: grouped convolutions and others).
        layer_class: The plain Keras class.
        config: Its configuration.
        input_shape: The call's input shape without batch.
        a_weights, a_fixed, b_weights, b_fixed: The sides' live rows.
        a_full, b_full: The sides' channels in the unpruned model.
        out_weights, out_fixed: The live row of its output channels.
        positions: Output positions per sample (the product of the
            output's spatial sizes; 1 for a dense layer on vectors).
    """

    path: str
    kind: str
    layer_class: type
    config: dict
    input_shape: tuple
    a_weights: np.ndarray
    a_fixed: float
    b_weights: np.ndarray
    b_fixed: float
    a_full: float
    b_full: float
    out_weights: np.ndarray
    out_fixed: float
    positions: float

    def live(self, keep):
        """Live channels `(a, b)` at keep counts `keep`."""
        return (
            float(self.a_weights @ keep + self.a_fixed),
            float(self.b_weights @ keep + self.b_fixed),
        )

    def grid(self, fractions=GRID):
        """Channel counts `(a, b)` at which the layer is timed."""
        if self.kind == "proportional":
            return (
                _points(self.a_full, self.a_weights, (0.0, 1.0)),
                _points(self.b_full, self.b_weights, (0.0, 1.0)),
            )
        return (
            _points(self.a_full, self.a_weights, fractions),
            _points(self.b_full, self.b_weights, fractions),
        )

    def key(self, grid, batch_size):
        """What identifies a measurement, for the cache."""
        config = {
            k: v
            for k, v in self.config.items()
            if k not in ("name", "trainable")
        }
        return json.dumps(
            {
                "class": self.layer_class.__name__,
                "kind": self.kind,
                "config": config,
                "input_shape": list(self.input_shape),
                "a": list(grid[0]),
                "b": list(grid[1]),
                "batch_size": batch_size,
            },
            sort_keys=True,
            default=str,
        )

    def build(self, a, b):
        """A plain model of this layer with `a`/`b` live channels."""
        config = dict(self.config, name=None)
        channels = self.input_shape[-1]
        if self.kind == "grid":
            width = "units" if "units" in config else "filters"
            config[width] = int(b)
            channels = int(a)
        elif self.kind == "depthwise":
            channels = int(a)
        inputs = keras.Input((*self.input_shape[:-1], channels))
        outputs = self.layer_class.from_config(config)(inputs)
        return keras.Model(inputs, outputs)


def _points(full, weights, fractions):
    """Grid counts of one side: a single point if no group reaches it."""
    if not np.any(weights):
        return (float(full),)
    counts = {float(max(1, round(f * full))) for f in fractions if f > 0}
    if 0.0 in fractions:
        counts.add(0.0)
    return tuple(sorted(counts))


def timed_layers(graph):
    """The `TimedLayer` of every call whose MACs the FLOPs counter counts
    as convolution or dense work (batch norm is folded when deployed)."""
    sizes = graph.sizes.astype(np.float64)
    timed = []
    for call in graph.calls:
        layer = call.layer
        terms = [
            term
            for term in get_handler(layer).cost(layer, call.node)
            if term[1] == "macs" and term[0] in _TIMED
        ]
        if not terms:
            continue
        _, _, _, side_a, side_b = terms[0]
        weights, fixed = live_channel_rows(
            [cost_side(call, side_a), cost_side(call, side_b), call.outputs[0]],
            sizes,
            3,
        )
        output_shape = call.node.output_tensors[0].shape[1:-1]
        config = dict(layer.get_config())
        config.pop("mode", None)
        layer_class = getattr(layer, "base_layer_class", type(layer))
        timed.append(
            TimedLayer(
                path=graph.layers[id(layer)].path,
                kind=_kind(layer_class, config, side_a, side_b),
                layer_class=layer_class,
                config=config,
                input_shape=tuple(call.node.input_tensors[0].shape[1:]),
                a_weights=weights[0],
                a_fixed=float(fixed[0]),
                b_weights=weights[1],
                b_fixed=float(fixed[1]),
                a_full=float(weights[0] @ sizes + fixed[0]),
                b_full=float(weights[1] @ sizes + fixed[1]),
                out_weights=weights[2],
                out_fixed=float(fixed[2]),
                positions=float(np.prod(output_shape)),
            )
        )
    return timed


def _kind(layer_class, config, side_a, side_b):
    if (
        (side_a, side_b) == ("in", "out")
        and config.get("groups", 1) == 1
        and ("units" in config or "filters" in config)
    ):
        return "grid"
    if (
        (side_a, side_b) == ("out", None)
        and "Depthwise" in layer_class.__name__
        and config.get("depth_multiplier", 1) == 1
    ):
        return "depthwise"
    return "proportional"


def measure_table(timed, grid, batch_size, runtime, runs=10, warmup=3):
    """Times `timed` at every grid point: median milliseconds.

    The grid points are timed in interleaved rounds (`interleaved_medians`),
    and the table is made non-decreasing along both axes (more channels at
    these grid points never take less time; a dip is timing noise, which
    would otherwise let a search "save" time by keeping more channels).
    A "proportional" layer is timed whole; its table is 0 at no channels,
    so that interpolation scales its time by its MACs.
    """
    a_points, b_points = grid
    ms = np.zeros((len(a_points), len(b_points)))
    rng = np.random.default_rng(0)
    cells, calls = [], []
    for i, a in enumerate(a_points):
        for j, b in enumerate(b_points):
            if min(a, b) <= 0:
                continue  # No channels: no work.
            if timed.kind == "proportional" and (
                a != a_points[-1] or b != b_points[-1]
            ):
                continue
            model = timed.build(a, b)
            shape = (batch_size, *model.input_shape[1:])
            x = rng.standard_normal(shape).astype(np.float32)
            run = make_runner(model, runtime, batch_size)
            cells.append((i, j))
            calls.append(lambda run=run, x=x: run(x))
    for (i, j), seconds in zip(cells, interleaved_medians(calls, runs, warmup)):
        ms[i, j] = 1e3 * seconds
    ms = np.maximum.accumulate(np.maximum.accumulate(ms, axis=0), axis=1)
    return LatencyTable(a_points, b_points, ms)
