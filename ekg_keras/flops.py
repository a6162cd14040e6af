"""Multiply-accumulate (MAC) and parameter counts from shapes alone.

FLOPs here are multiply-accumulates, as in every pruning paper (nobody
doubles them). Counting never runs the model: a `FlopsCounter` turns the
traced graph into a few arrays once, and then evaluates any per-group keep
counts in microseconds, which is what searches need.
"""

import dataclasses

import numpy as np

from ekg_keras.graph import trace
from ekg_keras.graph.registry import get_handler
from ekg_keras.layers import is_prunable


@dataclasses.dataclass(frozen=True)
class CostTerms:
    """A cost as an explicit function of per-group keep counts k:

    `cost(k) = sum_t coef[t] * (a_weights[t] @ k + a_fixed[t])
                             * (b_weights[t] @ k + b_fixed[t])`

    (plus `constant` for parameters outside every group). The same
    expression written with a framework's ops is differentiable in k, which
    learned methods use as a FLOPs regulariser (NPPM, LFPC).

    Attributes:
        coef: (T,) coefficients.
        a_weights, b_weights: (T, groups) weights of the keep counts.
        a_fixed, b_fixed: (T,) fixed channel counts.
        constant: A cost that does not depend on k.
    """

    coef: np.ndarray
    a_weights: np.ndarray
    a_fixed: np.ndarray
    b_weights: np.ndarray
    b_fixed: np.ndarray
    constant: float = 0.0

    def __call__(self, keep):
        """The cost at keep counts `keep` (NumPy), as `FlopsCounter` does."""
        keep = np.asarray(keep, np.float64)
        live_a = self.a_weights @ keep + self.a_fixed
        live_b = self.b_weights @ keep + self.b_fixed
        return float(np.sum(self.coef * live_a * live_b)) + self.constant


@dataclasses.dataclass(frozen=True)
class FlopsReport:
    """MACs and parameters of a model, in total and per layer.

    Attributes:
        macs: Total multiply-accumulates of one forward pass of one sample.
        params: Total parameter count (masks excluded).
        layer_macs: Dict mapping layer path to its MACs (all its calls).
        layer_params: Dict mapping layer path to its parameters.
    """

    macs: float
    params: float
    layer_macs: dict
    layer_params: dict


class FlopsCounter:
    """Counts MACs and parameters of a traced model for any keep counts.

    Each layer's cost is a sum of terms `c * live(a) * live(b)`, where
    `live` of a side (the layer's input or output channels) is linear in the
    per-group keep counts: `fixed + sum_g multiplicity_g * keep_g / size_g`.

    Args:
        graph: A `ChannelGraph` from `ekg_keras.graph.trace`.
        include_bn: Count batch normalization (2 MACs per element and its
            four per-channel weights), as the EKG code does.
        include_fc: Count `Dense` layers. The SFP/FPGM tables leave the
            classifier out; EKG and SP count it.

    Example:

    >>> counter = FlopsCounter(ekg_keras.graph.trace(model))
    >>> counter.macs(counter.full)  # the unpruned model
    """

    def __init__(self, graph, include_bn=False, include_fc=True):
        self.graph = graph
        self.include_bn = include_bn
        self.include_fc = include_fc
        self.sizes = graph.sizes.astype(np.float64)
        self._terms = {"macs": _Terms(), "params": _Terms()}
        self._fixed_params = 0.0
        self._fixed_param_layers = {}
        self._collect()
        for terms in self._terms.values():
            terms.freeze(self.sizes)

    @property
    def full(self):
        """Keep counts of the unpruned model (every group at full size)."""
        return self.sizes.copy()

    def macs(self, keep):
        """Total MACs for per-group keep counts (array indexed by group)."""
        return self._terms["macs"].total(np.asarray(keep, np.float64))

    def terms(self, quantity="macs"):
        """The cost as `CostTerms`, an explicit function of keep counts.

        Args:
            quantity: "macs" or "params".
        """
        if quantity not in self._terms:
            raise ValueError(
                "`quantity` should be 'macs' or 'params'. Received: "
                f"quantity={quantity!r}"
            )
        terms = self._terms[quantity]
        n = len(self.sizes)
        if not len(terms.coef):
            empty = np.zeros((0, n))
            return CostTerms(
                np.zeros(0), empty, np.zeros(0), empty, np.zeros(0)
            )
        return CostTerms(
            terms.coef.copy(),
            terms.a_weights.copy(),
            terms.a_fixed.copy(),
            terms.b_weights.copy(),
            terms.b_fixed.copy(),
            self._fixed_params if quantity == "params" else 0.0,
        )

    def params(self, keep):
        """Total parameters for per-group keep counts."""
        total = self._terms["params"].total(np.asarray(keep, np.float64))
        return total + self._fixed_params

    def report(self, keep=None):
        """A `FlopsReport` for keep counts (default: the unpruned model)."""
        keep = self.full if keep is None else np.asarray(keep, np.float64)
        layer_params = self._terms["params"].per_layer(keep)
        for path, count in self._fixed_param_layers.items():
            layer_params[path] = layer_params.get(path, 0.0) + count
        return FlopsReport(
            macs=self.macs(keep),
            params=self.params(keep),
            layer_macs=self._terms["macs"].per_layer(keep),
            layer_params=layer_params,
        )

    def _counts(self, category):
        return (
            category == "conv"
            or (category == "bn" and self.include_bn)
            or (category == "fc" and self.include_fc)
        )

    def _collect(self):
        seen = set()
        for call in self.graph.calls:
            layer = call.layer
            record = self.graph.layers[id(layer)]
            first_call = id(layer) not in seen
            seen.add(id(layer))
            terms = get_handler(layer).cost(layer, call.node)
            if not terms and first_call and record.kind != "model":
                self._add_fixed_params(record)
            sides = {
                "in": call.inputs[0] if call.inputs else None,
                "out": call.outputs[0] if call.outputs else None,
                None: None,
            }
            for category, quantity, coef, side_a, side_b in terms:
                if quantity == "params" and not first_call:
                    continue
                if quantity == "macs" and not self._counts(category):
                    continue
                self._terms[quantity].add(
                    record.path, coef, sides[side_a], sides[side_b]
                )

    def _add_fixed_params(self, record):
        count = sum(
            int(np.prod(w.shape))
            for w in record.layer.weights
            if not (is_prunable(record.layer) and w is record.layer.filter_mask)
        )
        if count:
            self._fixed_params += count
            self._fixed_param_layers[record.path] = float(count)


class _Terms:
    """Vectorised sum of `coef * live(a) * live(b)` terms."""

    def __init__(self):
        self._rows = []  # (path, coef, map_a, map_b)

    def add(self, path, coef, map_a, map_b):
        self._rows.append((path, float(coef), map_a, map_b))

    def freeze(self, sizes):
        n = len(self._rows)
        self.paths = [row[0] for row in self._rows]
        self.coef = np.array([row[1] for row in self._rows])
        self.a_weights, self.a_fixed = _side(
            [row[2] for row in self._rows], sizes, n
        )
        self.b_weights, self.b_fixed = _side(
            [row[3] for row in self._rows], sizes, n
        )

    def values(self, keep):
        live_a = self.a_weights @ keep + self.a_fixed
        live_b = self.b_weights @ keep + self.b_fixed
        return self.coef * live_a * live_b

    def total(self, keep):
        if not len(self.coef):
            return 0.0
        return float(np.sum(self.values(keep)))

    def per_layer(self, keep):
        result = {}
        if not len(self.coef):
            return result
        for path, value in zip(self.paths, self.values(keep)):
            result[path] = result.get(path, 0.0) + float(value)
        return result


def _side(channel_maps, sizes, n):
    """Rows of `live = weights @ keep + fixed`, one per term.

    A side that holds each of group g's channels r times has weight
    `r = multiplicity / size` on `keep_g`.
    """
    weights = np.zeros((n, len(sizes)))
    fixed = np.ones(n)
    for row, channel_map in enumerate(channel_maps):
        if channel_map is None:
            continue
        fixed[row] = channel_map.num_fixed
        weights[row] = channel_map.multiplicity(len(sizes)) / np.maximum(
            sizes, 1
        )
    return weights, fixed


def keep_counts(graph, masks=None):
    """Per-group keep counts from a wrapped model's masks (or full sizes).

    A channel counts as kept when any maskable layer of its group keeps it,
    which is what `slim` keeps.
    """
    keep = group_keep_masks(graph) if masks is None else masks
    return np.array([np.sum(mask) for mask in keep], dtype=np.float64)


def group_keep_masks(graph):
    """Boolean keep mask per group, read from the model's prunable layers.

    A channel is kept when any prunable layer carrying it has mask 1; plain
    (unwrapped) layers keep everything.
    """
    keep = [np.zeros(group.size, dtype=bool) for group in graph.groups]
    covered = [np.zeros(group.size, dtype=bool) for group in graph.groups]
    for record in graph.maskable_layers():
        out = record.outputs[0]
        if is_prunable(record.layer):
            values = np.asarray(record.layer.filter_mask.numpy()) > 0.5
        else:
            values = np.ones(len(out), dtype=bool)
        for group_id in np.unique(out.group[out.group >= 0]):
            rows = out.group == group_id
            np.logical_or.at(keep[group_id], out.index[rows], values[rows])
            covered[group_id][out.index[rows]] = True
    for mask, seen in zip(keep, covered):
        mask[~seen] = True
    return keep


def check_flops_fraction(flops):
    """Returns `flops` if it is a fraction of FLOPs to keep in (0, 1].

    Raises:
        ValueError: Otherwise, saying what was received.
    """
    if (
        isinstance(flops, bool)
        or not isinstance(flops, (int, float))
        or not (0 < flops <= 1)
    ):
        raise ValueError(
            "`flops` should be the fraction of FLOPs to keep, in (0, 1] "
            f"(0.45 keeps 45%). Received: flops={flops!r}"
        )
    return flops


def count_flops(model, include_bn=False, include_fc=True, graph=None):
    """Counts the MACs and parameters of `model`, masks included.

    A masked (wrapped) model counts only live channels: the result equals the
    count of the model `ekg_keras.slim` would produce.

    Args:
        model: A functional or Sequential Keras model.
        include_bn: Count batch normalization, see `FlopsCounter`.
        include_fc: Count `Dense` layers, see `FlopsCounter`.
        graph: Its `ChannelGraph`, if already traced.

    Returns:
        A `FlopsReport`.
    """
    graph = trace(model, warn=False) if graph is None else graph
    counter = FlopsCounter(graph, include_bn=include_bn, include_fc=include_fc)
    return counter.report(keep_counts(graph))
