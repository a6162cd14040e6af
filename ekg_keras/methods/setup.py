"""The set-up every pruning method shares, done once for all of them."""

import time

import numpy as np

from ekg_keras import _backend as backend
from ekg_keras.allocation.levels import KeepLevels
from ekg_keras.flops import FlopsCounter
from ekg_keras.flops import group_keep_masks
from ekg_keras.flops import warn_uncounted
from ekg_keras.fold import fold_batchnorm
from ekg_keras.graph import trace
from ekg_keras.graph.expansion import expand
from ekg_keras.graph.expansion import model_input_shapes
from ekg_keras.graph.expansion import with_input_shapes
from ekg_keras.latency import LatencyCounter
from ekg_keras.latency.reachability import time_floor
from ekg_keras.layers import prunable_layers
from ekg_keras.layers import wrap
from ekg_keras.scope import PruningScope
from ekg_keras.slim import slim


class PruningSetup:
    """A model made ready for pruning, with its cost and budget.

    Rebuilds `model` with its custom layers traced through and at the
    scope's `input_shape` (see `ekg_keras.graph.expansion`), traces it
    (validating it and warning about layers the channel graph does not
    know), clones it into prunable layers (`mode`), traces
    the clone, keeps the scope's `ignored_layers` whole, builds the cost
    (FLOPs under the scope's convention, or with a latency budget the
    measured-latency model), derives the keep counts each group may take
    (channel floors and `round_to`) and checks that the target is
    reachable (under a latency budget below the predicted floor, by
    timing the floor network: see `check_reachable`). The user's model
    is never modified.

    Methods see one cost whichever budget it is: `counter.macs(keep)` (MACs
    or predicted milliseconds), `counter.terms("macs")`, `target_macs`,
    `fraction(keep)` and `target` (the fraction to keep, of FLOPs or of
    latency; `budget` says which).

    Args:
        model: A functional or Sequential Keras model.
        scope: The `PruningScope` (budget, FLOPs convention, ignored
            layers, floors, `round_to`, latency measurement), or a FLOPs
            fraction or None for a default scope with that budget.
        mode: "hard" or "soft" masks (see `ekg_keras.wrap`).
        strategy: `tf.distribute` strategy to create the clone under.
        masked: An already wrapped model to use as it is instead of a clone
            of `model` (e.g. a method's inner training model built on the
            method's masked model, or a network being deserialized).
        cost: The cost of an outer set-up on the same masked model, to
            share instead of building another (an inner model of a method
            under a latency budget must budget by the method's latency
            model, not time the network again).

    Attributes:
        source: The user's model.
        source_input_shapes: Its input batch shapes (dynamic ones
            included), which `restore_inputs` gives the result back.
        scope: The `PruningScope`.
        model: The wrapped clone, whose masks methods set.
        graph: Its `ChannelGraph`, ignored layers frozen.
        counter: Its cost: a `FlopsCounter`, or a `LatencyCounter` with
            a latency budget.
        flops_counter: Its `FlopsCounter` (also with a latency budget).
        budget: "flops" or "latency" (None without a target).
        target: The fraction of the budget's cost to keep (None without):
            the scope's, except for a latency budget below the predicted
            floor that the measured floor reaches, where it is the
            predicted fraction budgeted instead (`check_reachable`).
        floor_timing: The floor network's `FloorTiming` if it was timed
            (a latency budget below the predicted floor), else None.
        levels: The `KeepLevels` (floors, `round_to`).
        full_macs: Cost of the unpruned model (MACs, or milliseconds).
        seconds: Wall time of the set-up's phases: "trace" (both traces),
            "wrap" (the clone) and "cost" (the FLOPs or latency counter,
            keep levels, reachability).

    Raises:
        ValueError: For a model without a functional graph, nothing
            prunable, unknown `ignored_layers`, a bad floor, or a target
            below the smallest reachable fraction (for latency: measured;
            the scope validated its own fields when it was made).
    """

    def __init__(
        self,
        model,
        scope,
        *,
        mode="hard",
        strategy=None,
        masked=None,
        cost=None,
        check_target=True,
        **scope_fields,
    ):
        self.scope = scope = PruningScope.of(scope, **scope_fields)
        self.source = model
        self.source_input_shapes = model_input_shapes(model)
        lap = _Laps()
        if masked is None:
            model = expand(model, scope.input_shape).model
            trace(model)  # Validates the model, warns about unknown layers.
            lap("trace")
            strategy = backend.check_strategy(strategy, "PruningSetup")
            with backend.scope(strategy):
                masked = wrap(model, mode=mode)
            lap("wrap")
        self.model = masked
        self.graph = trace(masked, warn=False)
        lap("trace")
        self.graph.freeze_layers(list(scope.ignored_layers))
        if not self.graph.prunable_groups:
            raise ValueError(
                f"Model '{model.name}' has nothing prunable: every channel "
                "group reaches a model output, an input, an ignored layer or "
                "a layer the channel graph does not know.\n"
                + self.graph.summary()
            )
        self.flops_counter = FlopsCounter(
            self.graph,
            include_bn=scope.include_bn,
            include_fc=scope.include_fc,
        )
        warn_uncounted(self.flops_counter)
        self.counter = cost or self._cost()
        self.levels = KeepLevels(
            self.graph.sizes,
            [group.prunable for group in self.graph.groups],
            scope.min_channels,
            scope.round_to,
        )
        self.full_macs = self.counter.macs(self.counter.full)
        self.floor_timing = None
        if check_target and self.target is not None:
            reachable = self.check_reachable(self.target)
            if reachable != self.target:
                self.scope = scope.with_fraction(reachable)
        lap("cost")
        self.seconds = lap.seconds

    def _cost(self):
        if self.scope.budget != "latency":
            return self.flops_counter
        return LatencyCounter(
            self.graph,
            self.flops_counter,
            self.deployed_network,
            batch_size=self.scope.latency_batch_size,
            runtime=self.scope.runtime,
            cache=self.scope.latency_cache,
            **(self.scope.latency_options or {}),
        )

    @property
    def budget(self):
        """"flops", "latency", or None without a target."""
        return self.scope.budget

    @property
    def target(self):
        """The fraction of the budget's cost (FLOPs or latency) to keep."""
        return self.scope.fraction

    @property
    def target_macs(self):
        """The cost budget: `target` times the unpruned model's cost."""
        return self.target * self.full_macs

    @property
    def floors(self):
        """Fewest channels each group may keep (full size if fixed)."""
        return self.levels.lowest

    @property
    def budget_name(self):
        """What the target is a fraction of, for messages."""
        return "latency" if self.budget == "latency" else "FLOPs"

    def fraction(self, keep_counts):
        """Cost (FLOPs, or predicted latency) of per-group keep counts as a
        fraction of the original's."""
        return self.counter.macs(keep_counts) / self.full_macs

    def smallest_fraction(self):
        """The fraction with every prunable group at its floor."""
        return self.fraction(self.levels.lowest)

    def check_reachable(self, fraction):
        """Checks that `fraction` is reachable; returns what to budget by.

        A FLOPs budget (or a latency budget at or above the predicted
        floor) is reachable if the floor network, every prunable group at
        its floor, keeps at most `fraction`: then it is returned as it
        is. Below the predicted floor, a latency budget is decided by
        measurement (`ekg_keras.latency.reachability`): the floor network
        is timed against the original in interleaved rounds (again, up
        to `reachability.TIMINGS` times, while it measures above); if it
        measures within `fraction`, the predicted fraction the method
        budgets by instead is returned (at least the predicted floor,
        `FloorTiming.predicted_budget`) and the timing is kept in
        `floor_timing`. A latency counter that may not measure
        (`latency_options={"attempts": 0}`, or no network to time)
        decides on the prediction.

        Returns:
            The fraction the set-up budgets by.

        Raises:
            ValueError: If `fraction` is below the smallest reachable
                fraction: in one line, the floor's fraction (for latency,
                measured, with the load it was measured under), the floor
                settings and the fraction received.
        """
        smallest = self.smallest_fraction()
        if fraction >= smallest:
            return fraction
        floor = (
            f"with every prunable group at its floor of min_channels="
            f"{self.scope.min_channels!r} (round_to={self.scope.round_to!r})"
        )
        received = f"Received: {self.budget}={fraction}"
        if self.budget != "latency" or not self.counter.attempts:
            how = "predicted" if self.budget == "latency" else "counted"
            raise ValueError(
                f"{self.budget}={fraction} is below the smallest reachable "
                f"fraction {smallest:.4f} ({how}, {floor}). {received}"
            )
        timing = time_floor(
            self.counter,
            self.levels.lowest,
            goal=fraction,
            verbose=self.counter.verbose,
        )
        if not timing.reaches(fraction):
            raise ValueError(
                f"{self.budget}={fraction} is below the smallest reachable "
                f"fraction {timing.measured:.4f}, measured: the network "
                f"{floor} ran at {timing.measured:.1%} of the original's "
                f"time (predicted {timing.predicted:.1%}), timed in "
                f"interleaved rounds in {timing.conditions()}. Ask for at "
                f"least {timing.measured:.4f} or lower the floors. {received}"
            )
        self.floor_timing = timing
        return timing.predicted_budget(fraction)

    def restore_inputs(self, model):
        """`model` (the masked or slim result) on the user's model's input
        shapes, e.g. dynamic again after counting at `input_shape`; the
        layers are shared, not copied."""
        return with_input_shapes(model, self.source_input_shapes)

    def keep_counts(self, keep):
        """Channels kept per group by boolean keep masks, as floats."""
        return np.array([np.sum(mask) for mask in keep], dtype=np.float64)

    def current_keep(self):
        """The keep masks the model's layers hold now."""
        return group_keep_masks(self.graph)

    def apply(self, keep):
        """Writes per-group keep masks into the model's layer masks.

        Raises:
            ValueError: If `keep` does not fit the graph (wrong sizes, a
                fixed group pruned, a group emptied).
        """
        apply_keep(self.model, self.graph, keep)

    def deployed_network(self, keep_counts):
        """The slim model, batch norm folded, keeping the first
        `keep_counts[g]` channels of each group (what is timed for the
        latency model; the masks are restored afterwards)."""
        before = self.current_keep()
        keep = [
            np.arange(group.size) < count
            for group, count in zip(self.graph.groups, keep_counts)
        ]
        self.apply(keep)
        try:
            return fold_batchnorm(slim(self.model, self.graph))
        finally:
            self.apply(before)


class _Laps:
    """Adds the wall time since the last call to a named phase."""

    def __init__(self):
        self.seconds = {}
        self._last = time.perf_counter()

    def __call__(self, phase):
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now


def apply_keep(model, graph, keep):
    """Writes group keep masks into the masks of the model's layers."""
    graph.check_keep(keep)
    masks = graph.layer_masks(keep)
    for layer in prunable_layers(model):
        if id(layer) in masks:
            layer.filter_mask.assign(masks[id(layer)])
