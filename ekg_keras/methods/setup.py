"""The set-up every pruning method shares, done once for all of them."""

import time
import weakref

import numpy as np
import tensorflow as tf

from ekg_keras.allocation.levels import KeepLevels
from ekg_keras.flops import FlopsCounter
from ekg_keras.flops import group_keep_masks
from ekg_keras.fold import fold_batchnorm
from ekg_keras.graph import trace
from ekg_keras.latency import LatencyCounter
from ekg_keras.latency import check_budget
from ekg_keras.latency import check_runtime
from ekg_keras.latency.counter import check_batch_size
from ekg_keras.layers import prunable_layers
from ekg_keras.layers import wrap
from ekg_keras.slim import slim

# Masked models of latency-budgeted set-ups, by id: a method's inner model
# (a search model, a sampler) builds its own set-up on the method's masked
# model and must budget by the same latency cost.
_LATENCY_SETUPS = weakref.WeakValueDictionary()


class PruningSetup:
    """A model made ready for pruning, with its cost and budget.

    Traces `model` (validating it and warning about layers the channel
    graph does not know), clones it into prunable layers (`mode`), traces
    the clone, keeps `ignored_layers` whole, builds the cost (FLOPs under
    the chosen convention, or with `latency` the measured-latency model),
    derives the keep counts each group may take (channel floors and
    `round_to`) and checks that the target is reachable. The user's model
    is never modified.

    Methods see one cost whichever budget it is: `counter.macs(keep)` (MACs
    or predicted milliseconds), `counter.terms("macs")`, `target_macs`,
    `fraction(keep)` and `flops` (the fraction to keep, of FLOPs or of
    latency; `budget` says which).

    Args:
        model: A functional or Sequential Keras model.
        flops: Fraction of the FLOPs to keep, in (0, 1], or None for a
            method that is not driven by a FLOPs target (or with
            `latency`).
        latency: Fraction of the original model's measured latency to
            keep, in (0, 1], instead of `flops` (see
            `ekg_keras.latency.LatencyCounter`).
        latency_batch_size: Batch size at which latency is measured.
        runtime: Where latency is measured: "tf" (default), "litert",
            "onnx" or "openvino" (their packages must be installed).
        latency_cache: The latency tables' cache file (default
            `ekg_keras.latency.default_cache_path()`).
        latency_options: Options of the `LatencyCounter` (`grid`, `runs`,
            `warmup`, `verbose`).

    A set-up built on the masked model of a latency-budgeted set-up
    (`masked=outer.model`, as methods' inner training models do) shares
    its latency cost, `flops` then being the fraction of latency.
        mode: "hard" or "soft" masks (see `ekg_keras.wrap`).
        ignored_layers: Names of layers to keep whole.
        round_to: Keep counts are multiples of this (or a group's full
            size).
        min_channels: Fewest channels a group keeps, or a fraction in
            (0, 1) of each group's width.
        include_bn: Count batch normalization in FLOPs (EKG convention).
        include_fc: Count dense layers in FLOPs.
        strategy: `tf.distribute` strategy to create the clone under.
        masked: An already wrapped model to use as it is instead of a clone
            of `model` (e.g. a soft-pruning network being deserialized).

    Attributes:
        source: The user's model.
        model: The wrapped clone, whose masks methods set.
        graph: Its `ChannelGraph`, ignored layers frozen.
        counter: Its cost: a `FlopsCounter`, or a `LatencyCounter` with
            `latency`.
        flops_counter: Its `FlopsCounter` (also with `latency`).
        budget: "flops" or "latency" (None without a target).
        levels: The `KeepLevels` (floors, `round_to`).
        full_macs: MACs of the unpruned model.
        seconds: Wall time of the set-up's phases: "trace" (both traces),
            "wrap" (the clone) and "cost" (the FLOPs or latency counter,
            keep levels).

    Raises:
        ValueError: For `flops` or `latency` outside (0, 1], both given, a
            bad `latency_batch_size` or unknown `runtime`, a model without
            a functional graph, nothing prunable, unknown `ignored_layers`,
            a bad floor or `round_to`, or a target below the smallest
            reachable fraction.
        ImportError: If `runtime`'s package is not installed.
    """

    def __init__(
        self,
        model,
        flops,
        *,
        mode="hard",
        ignored_layers=None,
        round_to=1,
        min_channels=1,
        include_bn=False,
        include_fc=True,
        strategy=None,
        masked=None,
        latency=None,
        latency_batch_size=1,
        runtime="tf",
        latency_cache=None,
        latency_options=None,
    ):
        self.budget, self.flops = check_budget(flops, latency, required=False)
        if self.budget == "flops" and _LATENCY_SETUPS.get(id(masked)):
            self.budget = None  # Decided below: the outer set-up's cost.
        if self.budget == "latency":
            check_runtime(runtime)
            check_batch_size(latency_batch_size)
        self.source = model
        self.ignored_layers = list(ignored_layers or ())
        self.round_to = round_to
        self.min_channels = min_channels
        self.include_bn = include_bn
        self.include_fc = include_fc
        lap = _Laps()
        if masked is None:
            trace(model)  # Validates the model, warns about unknown layers.
            lap("trace")
            strategy = strategy or tf.distribute.get_strategy()
            with strategy.scope():
                masked = wrap(model, mode=mode)
            lap("wrap")
        self.model = masked
        self.graph = trace(masked, warn=False)
        lap("trace")
        self.graph.freeze_layers(self.ignored_layers)
        if not self.graph.prunable_groups:
            raise ValueError(
                f"Model '{model.name}' has nothing prunable: every channel "
                "group reaches a model output, an input, an ignored layer or "
                "a layer the channel graph does not know.\n"
                + self.graph.summary()
            )
        self.flops_counter = FlopsCounter(
            self.graph, include_bn=include_bn, include_fc=include_fc
        )
        self.counter = self.flops_counter
        outer = _LATENCY_SETUPS.get(id(masked))
        if self.budget is None and outer is not None and outer.model is masked:
            self.counter = outer.counter  # Same model, same cost.
            self.budget = "latency" if self.flops is not None else None
        elif self.budget == "latency":
            self.counter = LatencyCounter(
                self.graph,
                self.flops_counter,
                self.deployed_network,
                batch_size=latency_batch_size,
                runtime=runtime,
                cache=latency_cache,
                **(latency_options or {}),
            )
            _LATENCY_SETUPS[id(self.model)] = self
        self.levels = KeepLevels(
            self.graph.sizes,
            [group.prunable for group in self.graph.groups],
            min_channels,
            round_to,
        )
        self.full_macs = self.counter.macs(self.counter.full)
        lap("cost")
        self.seconds = lap.seconds
        if self.flops is not None:
            self.check_reachable(self.flops)

    @property
    def target_macs(self):
        """The MAC budget: `flops` times the unpruned model's MACs."""
        return self.flops * self.full_macs

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

    def check_reachable(self, flops):
        """Raises if `flops` is below the smallest reachable fraction."""
        smallest = self.smallest_fraction()
        if flops < smallest:
            raise ValueError(
                f"{self.budget}={flops} is below the smallest reachable "
                "fraction "
                f"{smallest:.4f}: with every prunable group at its floor of "
                f"min_channels={self.min_channels!r} (round_to="
                f"{self.round_to!r}) the network keeps that much. Received: "
                f"{self.budget}={flops}"
            )

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
