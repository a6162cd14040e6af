"""The set-up every pruning method shares, done once for all of them."""

import time

import numpy as np
import tensorflow as tf

from ekg_keras.allocation.levels import KeepLevels
from ekg_keras.flops import FlopsCounter
from ekg_keras.flops import check_flops_fraction
from ekg_keras.flops import group_keep_masks
from ekg_keras.graph import trace
from ekg_keras.layers import prunable_layers
from ekg_keras.layers import wrap


class PruningSetup:
    """A model made ready for pruning, with its cost and budget.

    Traces `model` (validating it and warning about layers the channel
    graph does not know), clones it into prunable layers (`mode`), traces
    the clone, keeps `ignored_layers` whole, counts FLOPs under the chosen
    convention, derives the keep counts each group may take (channel floors
    and `round_to`) and checks that the target is reachable. The user's
    model is never modified.

    Args:
        model: A functional or Sequential Keras model.
        flops: Fraction of the FLOPs to keep, in (0, 1], or None for a
            method that is not driven by a FLOPs target.
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
        counter: Its `FlopsCounter`.
        levels: The `KeepLevels` (floors, `round_to`).
        full_macs: MACs of the unpruned model.
        seconds: Wall time of the set-up's phases: "trace" (both traces),
            "wrap" (the clone) and "cost" (FLOPs counter and keep levels).

    Raises:
        ValueError: For `flops` outside (0, 1], a model without a functional
            graph, nothing prunable, unknown `ignored_layers`, a bad floor or
            `round_to`, or a target below the smallest reachable fraction.
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
    ):
        self.flops = None if flops is None else check_flops_fraction(flops)
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
        self.counter = FlopsCounter(
            self.graph, include_bn=include_bn, include_fc=include_fc
        )
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

    def fraction(self, keep_counts):
        """FLOPs of per-group keep counts as a fraction of the original."""
        return self.counter.macs(keep_counts) / self.full_macs

    def smallest_fraction(self):
        """The fraction with every prunable group at its floor."""
        return self.fraction(self.levels.lowest)

    def check_reachable(self, flops):
        """Raises if `flops` is below the smallest reachable fraction."""
        smallest = self.smallest_fraction()
        if flops < smallest:
            raise ValueError(
                f"flops={flops} is below the smallest reachable fraction "
                f"{smallest:.4f}: with every prunable group at its floor of "
                f"min_channels={self.min_channels!r} (round_to="
                f"{self.round_to!r}) the network keeps that much. Received: "
                f"flops={flops}"
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
