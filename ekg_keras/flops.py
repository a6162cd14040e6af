"""Multiply-accumulate (MAC) and parameter counts from shapes alone.

FLOPs here are multiply-accumulates, as in every pruning paper (nobody
doubles them). Counting never runs the model: a `FlopsCounter` turns the
traced graph into a few arrays once, and then evaluates any per-group keep
counts in microseconds, which is what searches need. A layer or operation
the channel graph does not know (a custom layer that cannot be traced
through, `keras.ops.matmul`) keeps its channels whole and is counted from
the TensorFlow graph of its call (`ekg_keras.traced_macs`). The count is that of
the model `ekg_keras.slim` builds, including the extra input channel of
ones through which it keeps removed channels that are non-zero constants
at a zero-padded convolution (see `ekg_keras.graph.constants`).
"""

import dataclasses
import warnings

import numpy as np

from ekg_keras._keras_private import is_layer
from ekg_keras._warnings import user_stacklevel
from ekg_keras.graph import trace
from ekg_keras.graph.constants import consumer_constants
from ekg_keras.graph.constants import follows_training
from ekg_keras.graph.constants import nonzero_positions
from ekg_keras.graph.expansion import expand
from ekg_keras.graph.expansion import is_custom_layer
from ekg_keras.graph.handlers import IncompatibleChannels
from ekg_keras.graph.registry import get_handler
from ekg_keras.layers import is_prunable
from ekg_keras.traced_macs import node_macs

FOLDS = ("exact", "bias")

# `keras.ops` operations that multiply and accumulate (the rest of the
# operations the graph does not know, such as transposes, count none).
_MAC_OPERATIONS = (
    "Matmul",
    "Einsum",
    "Tensordot",
    "Dot",
    "Inner",
    "Outer",
    "Conv",
    "DepthwiseConv",
    "SeparableConv",
    "ConvTranspose",
)


@dataclasses.dataclass(frozen=True)
class CostTerms:
    """A cost as an explicit function of per-group keep counts k:

    `cost(k) = sum_t on_t(k) * coef[t] * (a_weights[t] @ k + a_fixed[t])
                                       * (b_weights[t] @ k + b_fixed[t])`

    (plus `constant` for parameters outside every group). The same
    expression written with a framework's ops is differentiable in k, which
    learned methods use as a FLOPs regulariser (NPPM, LFPC).

    `on_t(k)` is 1 for a term without a condition (a row of zeros in
    `condition_groups`). A conditioned term (the extra ones channel of a
    constant fold, see `FlopsCounter`) counts only while a group marked in
    its row keeps fewer than all its channels: a step, with no gradient,
    which a learned method can treat as a constant.

    Attributes:
        coef: (T,) coefficients.
        a_weights, b_weights: (T, groups) weights of the keep counts.
        a_fixed, b_fixed: (T,) fixed channel counts.
        constant: A cost that does not depend on k.
        condition_groups: (T, groups) 0/1 rows of the groups whose loss of
            a channel switches a conditioned term on (None: no conditions).
        sizes: (groups,) group sizes, for the conditions.
    """

    coef: np.ndarray
    a_weights: np.ndarray
    a_fixed: np.ndarray
    b_weights: np.ndarray
    b_fixed: np.ndarray
    constant: float = 0.0
    condition_groups: np.ndarray = None
    sizes: np.ndarray = None

    def __call__(self, keep):
        """The cost at keep counts `keep` (NumPy), as `FlopsCounter` does."""
        keep = np.asarray(keep, np.float64)
        live_a = self.a_weights @ keep + self.a_fixed
        live_b = self.b_weights @ keep + self.b_fixed
        return float(np.sum(self.on(keep) * self.coef * live_a * live_b)) + (
            self.constant
        )

    def on(self, keep):
        """Per term, 1.0 where it counts at keep counts `keep`, else 0.0."""
        if self.condition_groups is None or not self.condition_groups.any():
            return np.ones(len(self.coef))
        return _terms_on(self.condition_groups, self.sizes, keep)


def _terms_on(condition_groups, sizes, keep):
    conditional = condition_groups.any(axis=1)
    lost = (np.asarray(keep, np.float64) < sizes - 0.5).astype(np.float64)
    return (~conditional | (condition_groups @ lost > 0)).astype(np.float64)


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

    Where removed channels reach a zero-padded convolution as non-zero
    constants, the slim model reads them through an extra input channel of
    ones (`ekg_keras.slim`, `fold="exact"`); its terms count only when
    such a channel is removed. From keep counts alone that is when its
    group loses any channel that carries, or after training may carry, a
    constant (batch normalization in soft mode counts as non-zero): an
    upper bound, so a budget met here is met by the slim model. With the
    keep masks (`count_flops`) it is exact for the current weights.

    Args:
        graph: A `ChannelGraph` from `ekg_keras.graph.trace`.
        include_bn: Count batch and layer normalization (2 MACs per element
            and their per-channel weights), as the EKG code does.
        include_fc: Count `Dense` layers. The SFP/FLOPs tables leave the
            classifier out; EKG and SP count it.
        fold: `"exact"` counts the extra ones channels that `slim` (by
            default) adds; `"bias"` counts the model of
            `slim(..., fold="bias")`, which has none.
        held_constants: Count the constants that follow training as held
            at zero where their layer can hold them
            (`ekg_keras.graph.constants.consumer_constants`): exact for a
            soft-pruned network whose removed channels' batch
            normalization is zeroed and held (`SoftFilterPruning`'s
            recovery), where the default counts them as non-zero.

    Example:

    >>> counter = FlopsCounter(ekg_keras.graph.trace(model))
    >>> counter.macs(counter.full)  # the unpruned model
    """

    def __init__(
        self,
        graph,
        include_bn=False,
        include_fc=True,
        fold="exact",
        held_constants=False,
    ):
        if fold not in FOLDS:
            raise ValueError(
                f"`fold` should be one of {FOLDS}. Received: fold={fold!r}"
            )
        self.graph = graph
        self.include_bn = include_bn
        self.include_fc = include_fc
        self.fold = fold
        self.held_constants = held_constants
        self.sizes = graph.sizes.astype(np.float64)
        self._terms = {"macs": _Terms(), "params": _Terms()}
        self._fixed_params = 0.0
        self._fixed_param_layers = {}
        self.uncounted = {}
        self._collect()
        if fold == "exact":
            self._collect_folds()
        for terms in self._terms.values():
            terms.freeze(self.sizes)

    @property
    def full(self):
        """Keep counts of the unpruned model (every group at full size)."""
        return self.sizes.copy()

    def macs(self, keep, masks=None):
        """Total MACs for per-group keep counts (array indexed by group).

        Args:
            keep: Keep counts per group.
            masks: Optional boolean keep mask per group, for the exact
                count of the extra ones channels (see the class).
        """
        return self._terms["macs"].total(np.asarray(keep, np.float64), masks)

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
            condition_groups=terms.condition_groups.copy(),
            sizes=self.sizes.copy(),
        )

    def params(self, keep, masks=None):
        """Total parameters for per-group keep counts (see `macs`)."""
        keep = np.asarray(keep, np.float64)
        return self._terms["params"].total(keep, masks) + self._fixed_params

    def report(self, keep=None, masks=None):
        """A `FlopsReport` for keep counts (default: the unpruned model)."""
        keep = self.full if keep is None else np.asarray(keep, np.float64)
        layer_params = self._terms["params"].per_layer(keep, masks)
        for path, count in self._fixed_param_layers.items():
            layer_params[path] = layer_params.get(path, 0.0) + count
        return FlopsReport(
            macs=self.macs(keep, masks),
            params=self.params(keep, masks),
            layer_macs=self._terms["macs"].per_layer(keep, masks),
            layer_params=layer_params,
        )

    def _counts(self, category):
        return (
            category in ("conv", "attention")
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
            terms = self._cost(record, call)
            has_params = any(term[1] == "params" for term in terms)
            if not has_params and first_call and record.kind != "model":
                self._add_fixed_params(record)
            self._add(record.path, terms, call, first_call)

    def _cost(self, record, call):
        layer = call.layer
        try:
            terms = get_handler(layer).cost(layer, call.node)
        except IncompatibleChannels as error:
            shape = tuple(call.node.outputs[0].shape)
            raise ValueError(
                f"Cannot count the FLOPs of layer '{record.path}': {error} "
                f"(its output shape is {shape}). A model with dynamic "
                "sizes is counted at one size: pass `input_shape=` "
                "(e.g. input_shape=(224, 224, 3)) to `ekg_keras.prune`, "
                "`count_flops` or `PruningScope`."
            ) from None
        if record.kind == "unknown" and _may_compute(layer):
            try:
                macs = node_macs(layer, call.node)
            except Exception as error:  # Whatever TF makes of the call.
                self.uncounted[record.path] = (
                    f"{type(error).__name__}: {str(error)[:200]}"
                )
            else:
                terms = terms + [("conv", "macs", macs, None, None)]
        return terms

    def _collect_folds(self):
        held = self.held_constants
        actual = consumer_constants(self.graph, held=held)
        possible = actual
        if follows_training(self.graph):
            possible = consumer_constants(
                self.graph, assume_trained=True, held=held
            )
        seen = set()
        for call in self.graph.calls:
            if id(call.layer) not in actual:
                continue
            record = self.graph.layers[id(call.layer)]
            handler = record.handler
            # Constants on channels outside every group are never removed.
            grouped = record.inputs[0].group >= 0
            now = nonzero_positions(actual[id(call.layer)]) & grouped
            later = now | nonzero_positions(possible[id(call.layer)]) & grouped
            if (
                not later.any()
                or handler.bias_fold_exact(call.layer)
                or not handler.takes_ones_channel
            ):
                continue
            first_call = id(call.layer) not in seen
            seen.add(id(call.layer))
            terms = handler.ones_fold_cost(call.layer, call.node)
            condition = (record.inputs[0], later, now)
            self._add(record.path, terms, call, first_call, condition)

    def _add(self, path, terms, call, first_call, condition=None):
        for category, quantity, coef, side_a, side_b in terms:
            if quantity == "params" and not first_call:
                continue
            if quantity == "macs" and not self._counts(category):
                continue
            self._terms[quantity].add(
                path,
                coef,
                cost_side(call, side_a),
                cost_side(call, side_b),
                condition,
            )

    def _add_fixed_params(self, record):
        weights = getattr(record.layer, "weights", None) or []
        count = sum(
            int(np.prod(w.shape))
            for w in weights
            if not (is_prunable(record.layer) and w is record.layer.filter_mask)
        )
        if count:
            self._fixed_params += count
            self._fixed_param_layers[record.path] = float(count)


def cost_side(call, side):
    """The `ChannelMap` a cost term's side names in a call.

    Args:
        call: A `CallRecord`.
        side: "in" or "out" (the first input or output), `("in", i)` or
            `("out", i)` (the i-th; an attention layer lists its heads
            after its outputs), or None (no channels: a factor of 1).
    """
    if side is None:
        return None
    kind, index = (side, 0) if isinstance(side, str) else side
    maps = call.inputs if kind == "in" else call.outputs
    return maps[index] if index < len(maps) else None


class _Terms:
    """Vectorised sum of `coef * live(a) * live(b)` terms, some of which
    count only while certain channels are removed."""

    def __init__(self):
        self._rows = []  # (path, coef, map_a, map_b, condition)

    def add(self, path, coef, map_a, map_b, condition=None):
        self._rows.append((path, float(coef), map_a, map_b, condition))

    def freeze(self, sizes):
        n = len(self._rows)
        self.paths = [row[0] for row in self._rows]
        self.coef = np.array([row[1] for row in self._rows])
        self.a_weights, self.a_fixed = live_channel_rows(
            [row[2] for row in self._rows], sizes, n
        )
        self.b_weights, self.b_fixed = live_channel_rows(
            [row[3] for row in self._rows], sizes, n
        )
        self.conditions = [row[4] for row in self._rows]
        self.conditional = np.array([c is not None for c in self.conditions])
        self.condition_groups = np.zeros((n, len(sizes)))
        for row, condition in enumerate(self.conditions):
            if condition is not None:
                channel_map, possible, _ = condition
                groups = channel_map.group[possible]
                self.condition_groups[row, groups[groups >= 0]] = 1.0
        self.sizes = sizes

    def values(self, keep, masks=None):
        live_a = self.a_weights @ keep + self.a_fixed
        live_b = self.b_weights @ keep + self.b_fixed
        values = self.coef * live_a * live_b
        if self.conditional.any():
            values = values * self._active(keep, masks)
        return values

    def _active(self, keep, masks):
        if masks is None:
            return _terms_on(self.condition_groups, self.sizes, keep)
        removed = np.array(
            [
                c is not None and bool(np.any(~c[0].keep_mask(masks)[c[2]]))
                for c in self.conditions
            ]
        )
        return ~self.conditional | removed

    def total(self, keep, masks=None):
        if not len(self.coef):
            return 0.0
        return float(np.sum(self.values(keep, masks)))

    def per_layer(self, keep, masks=None):
        result = {}
        if not len(self.coef):
            return result
        for path, value in zip(self.paths, self.values(keep, masks)):
            result[path] = result.get(path, 0.0) + float(value)
        return result


def live_channel_rows(channel_maps, sizes, n):
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


def _may_compute(operation):
    """Whether an operation the graph does not know may hold MACs: a layer
    with weights or a custom layer, or a product-like `keras.ops` op."""
    if is_layer(operation):
        return bool(operation.weights) or is_custom_layer(operation)
    return type(operation).__name__ in _MAC_OPERATIONS


def warn_uncounted(counter):
    """Warns, naming them, about layers whose MACs could not be counted."""
    if counter.uncounted:
        listed = "; ".join(f"'{k}' ({v})" for k, v in counter.uncounted.items())
        warnings.warn(
            "FLOPs leave out the MACs of layers the channel graph does not "
            f"know and whose TensorFlow graph could not be traced: {listed}",
            stacklevel=user_stacklevel(),
        )


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


def count_flops(
    model,
    include_bn=False,
    include_fc=True,
    graph=None,
    fold="exact",
    input_shape=None,
):
    """Counts the MACs and parameters of `model`, masks included.

    A masked (wrapped) model counts only live channels: the result equals the
    count of the model `ekg_keras.slim(model, fold=fold)` would produce,
    extra ones channels for constant folds included. Custom layers are
    traced through (see `ekg_keras.graph.expansion`); what the channel
    graph does not know is counted from its TensorFlow graph, and a layer
    that cannot be counted either way is named in a warning.

    Args:
        model: A functional or Sequential Keras model.
        include_bn: Count batch normalization, see `FlopsCounter`.
        include_fc: Count `Dense` layers, see `FlopsCounter`.
        graph: Its `ChannelGraph`, if already traced.
        fold: `"exact"` or `"bias"`, as for `ekg_keras.slim`.
        input_shape: The input size to count at (without the batch axis),
            for a model with dynamic sizes such as `(None, None, 3)`.

    Returns:
        A `FlopsReport`.

    Raises:
        ValueError: If a size is unknown (pass `input_shape`), or
            `input_shape` does not fit the model.
    """
    if graph is None:
        graph = trace(expand(model, input_shape).model, warn=False)
    counter = FlopsCounter(
        graph, include_bn=include_bn, include_fc=include_fc, fold=fold
    )
    warn_uncounted(counter)
    masks = group_keep_masks(graph)
    return counter.report(keep_counts(graph, masks), masks=masks)
