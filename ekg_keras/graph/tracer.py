"""Trace a functional or Sequential model into channel groups."""

import collections
import warnings

import numpy as np

from ekg_keras._keras_private import functional_of
from ekg_keras._keras_private import graph_nodes
from ekg_keras._warnings import user_stacklevel
from ekg_keras.graph import handlers as H
from ekg_keras.graph.channel_graph import CallRecord
from ekg_keras.graph.channel_graph import ChannelGraph
from ekg_keras.graph.channel_graph import ChannelGroup
from ekg_keras.graph.channel_graph import ChannelMap
from ekg_keras.graph.channel_graph import LayerChannels
from ekg_keras.graph.registry import get_handler
from ekg_keras.graph.union_find import UnionFind

_FIXED = -1


def trace(model, warn=True):
    """Traces `model`'s functional graph into groups of coupled channels.

    A convolution's or dense layer's output opens a group; batch and layer
    normalization, activations, pooling, padding, dropout, depthwise and
    grouped convolutions and layers with per-channel weights pass it
    through; element-wise merges (`Add`, `Multiply`, ..., and `keras.ops`
    operations such as `x * y`) join their inputs' groups; `Concatenate`
    on the channel axis lays groups side by side; `Flatten` maps each
    channel to its rows of the next `Dense`. Channels that reach a model
    output, a model input, or a layer or operation the graph does not know
    stay whole. Nested models are traced inside.

    Args:
        model: A functional or built Sequential Keras model.
        warn: Whether to warn about groups that unknown layers make
            unprunable.

    Returns:
        A `ChannelGraph`.

    Raises:
        ValueError: If `model` has no functional graph (a subclassed model,
            or a Sequential model that was never built), or uses the
            channels-first data format.
    """
    graph = functional_of(model)
    if graph is None:
        raise ValueError(
            "Expected a functional or built Sequential Keras model, whose "
            "graph of layer calls can be traced. Received: "
            f"{type(model).__name__} '{model.name}' without a functional "
            "graph (a subclassed model, or a Sequential model that was "
            "never built: give it an `Input` first)."
        )
    tracer = _Tracer()
    inputs = [tracer.fixed(H.channels_of(x)) for x in graph.inputs]
    outputs = tracer.trace_model(model, inputs, top_level=True)
    for layout in outputs:
        tracer.block(layout, "it reaches a model output")
    result = tracer.build(model)
    if warn:
        _warn_unknown(result, tracer.unfollowed_sources)
    return result


class _Tracer:
    """The `TraceContext` handlers see: creates and joins channel ids."""

    def __init__(self):
        self._sets = UnionFind()
        self._producer = []  # per channel id: producing layer id or _FIXED
        self._blocked = collections.defaultdict(set)  # id -> reasons
        self._produced = {}  # id(layer) -> its channel ids
        self._first_inputs = {}  # id(layer) -> layouts of its first call
        self._records = {}  # id(layer) -> LayerChannels (with layouts)
        self._calls = []
        self._maskable_sources = {}  # id(tensor) -> set of records
        self._prefix = []
        self.unfollowed_sources = []

    # Public part of the context, used by handlers.

    def produce(self, layer, channels):
        """The channel ids opened by `layer` (the same on every call)."""
        if id(layer) not in self._produced:
            ids = self._sets.add(channels)
            self._producer.extend([id(layer)] * channels)
            self._produced[id(layer)] = ids
        return self._produced[id(layer)]

    def fixed(self, channels):
        """New channel ids that belong to no group."""
        ids = self._sets.add(channels)
        self._producer.extend([_FIXED] * channels)
        return ids

    def reads_fixed(self, layout):
        """Whether some of these channels are never pruned (model inputs)."""
        return any(self._producer[c] == _FIXED for c in np.asarray(layout))

    def warn(self, message):
        """Records a warning that `trace(..., warn=True)` emits."""
        self.unfollowed_sources.append(message)

    def unify(self, a, b):
        """Joins channel a[i] with b[i] for every i."""
        if len(a) != len(b):
            raise H.IncompatibleChannels(
                f"cannot join {len(a)} channels with {len(b)}"
            )
        self._sets.union(a, b)

    def block(self, layout, reason):
        """Marks the groups of these channels as not prunable."""
        for channel in np.asarray(layout).tolist():
            self._blocked[channel].add(reason)

    def add_part(self, owner, part, handler, outputs):
        """Records `part`, a piece of layer `owner` with a mask of its own
        (an attention layer's heads), as a layer of the graph.

        The part opens its channels with `produce(part, ...)`; it has no
        inputs, and its path is the owner's path followed by `part.name`.
        Freezing the owner (`ignored_layers`) freezes the part.

        Args:
            owner: The layer being traced.
            part: A stable object (the same on every trace) with a `name`.
            handler: The part's handler (its kind, filters and slicing).
            outputs: The layouts of the part's channels.
        """
        if id(part) not in self._records:
            owner_path = "/".join(self._prefix + [owner.name])
            self._records[id(part)] = LayerChannels(
                part,
                f"{owner_path}/{part.name}",
                handler.kind,
                [],
                outputs,
                handler=handler,
                owner=owner_path,
            )

    def trace_model(self, model, inputs, node=None, top_level=False):
        """Traces a (nested) model called on channels `inputs`.

        Args:
            model: The model.
            inputs: One layout per model input.
            node: The outer node calling the model, if nested.
            top_level: Whether `model` is the traced model itself.

        Returns:
            One layout per model output.
        """
        graph = functional_of(model)
        if not top_level:
            self._prefix.append(model.name)
        layouts = {id(x): layout for x, layout in zip(graph.inputs, inputs)}
        if node is not None:
            for inner, outer in zip(graph.inputs, node.input_tensors):
                self._maskable_sources[id(inner)] = self._maskable_sources.get(
                    id(outer), frozenset()
                )
        for inner_node in graph_nodes(graph):
            self._trace_node(inner_node, layouts)
        if node is not None:
            for inner, outer in zip(graph.outputs, node.outputs):
                self._maskable_sources[id(outer)] = self._maskable_sources.get(
                    id(inner), frozenset()
                )
        if not top_level:
            self._prefix.pop()
        return [layouts[id(x)] for x in graph.outputs]

    # Internals.

    def _trace_node(self, node, layouts):
        layer = node.operation
        _refuse_channels_first(layer)
        inputs = [layouts[id(x)] for x in node.input_tensors]
        handler = get_handler(layer)
        try:
            outputs = handler.trace(self, layer, node, inputs)
        except H.IncompatibleChannels as error:
            if handler.kind == "source":
                self.warn(f"{H.describe(layer)} is not pruned: {error}")
            handler = H.UnknownHandler()
            outputs = self._trace_unknown(layer, node, inputs, str(error))
        self._share_weights(layer, inputs)
        record = self._record(layer, handler, inputs, outputs)
        self._track_terminal(node, record, handler)
        self._calls.append(CallRecord(layer, node, inputs, outputs))
        for tensor, layout in zip(node.outputs, outputs):
            layouts[id(tensor)] = layout

    def _trace_unknown(self, layer, node, inputs, why):
        reason = f"{H.describe(layer)} cannot be followed: {why}"
        for layout in inputs:
            self.block(layout, reason)
        return [self.fixed(H.channels_of(t)) for t in node.outputs]

    def _share_weights(self, layer, inputs):
        # A layer with weights called twice reads channel i of both inputs
        # with the same weights, so those channels are coupled.
        if not getattr(layer, "weights", None):
            return
        first = self._first_inputs.setdefault(id(layer), inputs)
        if first is inputs:
            return
        for a, b in zip(first, inputs):
            try:
                self.unify(a, b)
            except H.IncompatibleChannels:
                self.block(a, f"shared layer '{layer.name}'")
                self.block(b, f"shared layer '{layer.name}'")

    def _record(self, layer, handler, inputs, outputs):
        if id(layer) not in self._records:
            path = "/".join(self._prefix + [layer.name])
            self._records[id(layer)] = LayerChannels(
                layer, path, handler.kind, inputs, outputs, handler=handler
            )
        return self._records[id(layer)]

    def _track_terminal(self, node, record, handler):
        # Remember, per tensor, the maskable layers whose outputs reach it
        # through weightless layers only. A member (batch norm, depthwise)
        # reached that way is where those channels really leave, so the
        # layers upstream of it are not terminal (conv -> BN: the BN is).
        upstream = frozenset().union(
            *(
                self._maskable_sources.get(id(t), frozenset())
                for t in node.input_tensors
            )
        )
        if handler.kind == "member":
            for earlier in upstream:
                earlier.terminal = False
        if handler.kind in ("source", "member"):
            current = frozenset([record])
        elif handler.kind in ("passthrough", "channelwise", "merge", "reshape"):
            current = upstream
        elif handler.kind == "model":
            return  # trace_model carried the sources through the model.
        else:
            current = frozenset()
        for tensor in node.outputs:
            self._maskable_sources[id(tensor)] = current

    def build(self, model):
        """Forms the groups and converts layouts into `ChannelMap`s."""
        roots = self._sets.roots()
        producer = np.array(self._producer, dtype=np.int64)
        group_of, index_of, groups = self._form_groups(roots, producer)
        to_map = _Converter(roots, group_of, index_of)
        layers = {}
        for key, record in self._records.items():
            record.inputs = [to_map(x) for x in record.inputs]
            record.outputs = [to_map(x) for x in record.outputs]
            layers[key] = record
        calls = [
            CallRecord(
                c.layer,
                c.node,
                [to_map(x) for x in c.inputs],
                [to_map(x) for x in c.outputs],
            )
            for c in self._calls
        ]
        _block_irregular(groups, layers.values())
        _fill_roles(groups, layers.values())
        return ChannelGraph(model, groups, layers, calls)

    def _form_groups(self, roots, producer):
        """Groups units (sets of coupled channels, named by their root) by
        the set of layers producing them.

        Groups are ordered by their smallest root, units within a group by
        root.

        Returns:
            Per root id, its group id and its index in the group (-1 for
            ids that are no root, or whose unit no layer produces), and the
            `ChannelGroup`s.
        """
        made = producer >= 0
        group_of = np.full(len(roots), -1, dtype=np.int64)
        index_of = np.full(len(roots), -1, dtype=np.int64)
        if not made.any():
            return group_of, index_of, []
        layer_ids, makers = np.unique(producer[made], return_inverse=True)
        # Distinct (root, producer) pairs, sorted by root then producer.
        pairs = np.unique(roots[made] * len(layer_ids) + makers)
        pair_roots, pair_makers = np.divmod(pairs, len(layer_ids))
        unit_roots, starts, counts = np.unique(
            pair_roots, return_index=True, return_counts=True
        )
        # One row per unit: its producers (dense indices), padded with -1.
        table = np.full((len(unit_roots), counts.max()), -1)
        rows = np.repeat(np.arange(len(unit_roots)), counts)
        table[rows, np.arange(len(pairs)) - starts[rows]] = pair_makers
        group_makers, group_of_unit, index_of_unit = _rank_units(table)
        group_of[unit_roots] = group_of_unit
        index_of[unit_roots] = index_of_unit
        groups = self._groups(
            group_makers,
            layer_ids,
            np.bincount(group_of_unit, minlength=len(group_makers)),
            self._group_reasons(group_of[roots], producer),
        )
        return group_of, index_of, groups

    def _group_reasons(self, group_of_channel, producer):
        """Why each group is not prunable, per group id."""
        reasons = collections.defaultdict(set)
        for group_id in np.unique(group_of_channel[producer < 0]):
            if group_id >= 0:
                reasons[int(group_id)].add("it is joined with a model input")
        for channel, why in self._blocked.items():
            group_id = int(group_of_channel[channel])
            if group_id >= 0:
                reasons[group_id].update(why)
        return reasons

    def _groups(self, maker_sets, layer_ids, sizes, reasons):
        paths = {k: r.path for k, r in self._records.items()}
        groups = []
        for group_id, (makers, size) in enumerate(zip(maker_sets, sizes)):
            producers = [paths[int(layer_ids[m])] for m in makers if m >= 0]
            why = reasons.get(group_id, ())
            groups.append(
                ChannelGroup(
                    id=group_id,
                    size=int(size),
                    producers=tuple(sorted(producers)),
                    prunable=not why,
                    reasons=tuple(sorted(why)),
                )
            )
        return groups


def _rank_units(table):
    """Units with equal rows of `table` (their producers) form a group;
    groups are numbered in the order of their first unit, and units in a
    group in table order.

    Returns:
        The producer row of each group, and per unit its group id and its
        index in the group.
    """
    units = np.arange(len(table))
    maker_sets, set_of_unit = np.unique(table, axis=0, return_inverse=True)
    set_of_unit = set_of_unit.reshape(-1)
    first_unit = np.full(len(maker_sets), len(table))
    np.minimum.at(first_unit, set_of_unit, units)
    set_order = np.argsort(first_unit)
    group_of_set = np.empty(len(maker_sets), dtype=np.int64)
    group_of_set[set_order] = np.arange(len(maker_sets))
    group_of_unit = group_of_set[set_of_unit]
    sizes = np.bincount(group_of_unit, minlength=len(maker_sets))
    index_of_unit = np.empty(len(table), dtype=np.int64)
    index_of_unit[np.argsort(group_of_unit, kind="stable")] = units - np.repeat(
        np.cumsum(sizes) - sizes, sizes
    )
    return maker_sets[set_order], group_of_unit, index_of_unit


def _refuse_channels_first(layer):
    if getattr(layer, "data_format", None) == "channels_first":
        raise ValueError(
            "Expected a channels-last model (channels on the last axis, the "
            "Keras default): the channel graph follows the last axis only. "
            f"Received: {H.describe(layer)} with "
            "data_format='channels_first'. Build the model with "
            "data_format='channels_last' (or "
            "`keras.config.set_image_data_format('channels_last')`)."
        )


class _Converter:
    """Turns a layout of channel ids into a `ChannelMap`."""

    def __init__(self, roots, group_of, index_of):
        self._group = group_of[roots]
        self._index = index_of[roots]

    def __call__(self, layout):
        layout = np.asarray(layout, dtype=np.int64)
        return ChannelMap(self._group[layout], self._index[layout])


def _block_irregular(groups, records):
    """Blocks groups whose channels appear unevenly in some layer's map.

    FLOPs from keep counts and per-group criteria assume that every tensor
    holds each channel of a group equally often (once for a plain tensor,
    h*w times after `Flatten`).
    """
    sizes = np.array([g.size for g in groups], dtype=np.int64)
    for record in records:
        for channel_map in record.inputs + record.outputs:
            inside = channel_map.group >= 0
            if not inside.any():
                continue
            for group_id in np.unique(channel_map.group[inside]):
                rows = channel_map.group == group_id
                counts = np.bincount(
                    channel_map.index[rows], minlength=sizes[group_id]
                )
                if counts.min() != counts.max():
                    group = groups[group_id]
                    group.prunable = False
                    group.reasons += (
                        f"its channels are coupled unevenly at layer "
                        f"'{record.path}'",
                    )


def _fill_roles(groups, records):
    roles = collections.defaultdict(lambda: collections.defaultdict(list))
    for record in records:
        if record.kind == "source":
            for group_id in _groups_in(record.inputs):
                roles[group_id]["consumers"].append(record.path)
        elif record.kind in ("member", "channelwise"):
            for group_id in _groups_in(record.inputs):
                roles[group_id]["members"].append(record.path)
    for group in groups:
        group.members = tuple(roles[group.id]["members"])
        group.consumers = tuple(roles[group.id]["consumers"])


def _groups_in(channel_maps):
    found = set()
    for channel_map in channel_maps:
        found.update(int(g) for g in np.unique(channel_map.group) if g >= 0)
    return sorted(found)


def _warn_unknown(graph, unfollowed_sources):
    for message in unfollowed_sources:
        warnings.warn(message, stacklevel=user_stacklevel())
    culprits = collections.defaultdict(list)
    for group in graph.groups:
        for reason in group.reasons:
            if "does not know" in reason or "cannot be followed" in reason:
                culprits[reason].append(group.id)
    for reason, group_ids in culprits.items():
        warnings.warn(
            f"{len(group_ids)} channel group(s) are not prunable because "
            f"{reason}. Register a handler with "
            "`ekg_keras.graph.register_handler` to prune through it.",
            stacklevel=user_stacklevel(),
        )
