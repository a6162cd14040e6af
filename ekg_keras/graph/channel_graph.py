"""The result of tracing: channel groups and where each layer's channels go."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ChannelMap:
    """Where each channel along a tensor's last axis belongs.

    Attributes:
        group: Group id per channel; -1 for channels outside every group
            (model inputs, outputs of layers the graph does not know).
        index: Position of the channel within its group (-1 outside).
    """

    group: np.ndarray
    index: np.ndarray

    def __len__(self):
        return len(self.group)

    def keep_positions(self, keep):
        """Positions of the channels that survive `keep`.

        Args:
            keep: Sequence of boolean arrays, one per group id.

        Returns:
            Sorted int array of channel positions whose group keeps them
            (channels outside every group always survive).
        """
        return np.flatnonzero(self.keep_mask(keep))

    def keep_mask(self, keep):
        """Boolean array: which channels survive `keep` (see keep_positions)."""
        alive = np.ones(len(self.group), dtype=bool)
        inside = self.group >= 0
        if inside.any():
            flat, offsets = _flatten(keep)
            alive[inside] = flat[
                offsets[self.group[inside]] + self.index[inside]
            ]
        return alive

    def multiplicity(self, num_groups):
        """How often each group's channels appear here, as a float vector."""
        counts = np.zeros(num_groups)
        inside = self.group >= 0
        np.add.at(counts, self.group[inside], 1.0)
        return counts

    @property
    def num_fixed(self):
        """Number of channels outside every group."""
        return int(np.sum(self.group < 0))


@dataclasses.dataclass(eq=False)
class ChannelGroup:
    """Channels that must be kept or removed together.

    Channel `i` of a group is one coupled unit: removing it removes one
    output channel of every producer, one channel of every member and one
    input channel of every consumer.

    Attributes:
        id: Index of the group in `ChannelGraph.groups`.
        size: Number of channels.
        producers: Paths of the layers whose output channels open the group
            (convolutions, dense layers).
        members: Paths of channel-wise layers with weights on the group
            (batch normalization, depthwise convolutions).
        consumers: Paths of the layers whose weights read the group as
            input channels.
        prunable: Whether the group may lose channels.
        reasons: Why the group is not prunable (empty when it is).
    """

    id: int
    size: int
    producers: tuple = ()
    members: tuple = ()
    consumers: tuple = ()
    prunable: bool = True
    reasons: tuple = ()

    def __repr__(self):
        state = "prunable" if self.prunable else "fixed"
        return (
            f"ChannelGroup(id={self.id}, size={self.size}, {state}, "
            f"producers={list(self.producers)})"
        )


@dataclasses.dataclass(eq=False)
class LayerChannels:
    """The channel maps of one layer's first call.

    Attributes:
        layer: The Keras layer.
        path: Its name, prefixed by the names of the models nesting it.
        kind: Its handler's kind (`"source"`, `"member"`, ...).
        inputs: One `ChannelMap` per input tensor.
        outputs: One `ChannelMap` per output tensor.
        terminal: For maskable layers, whether their outputs reach the
            consumers without first reaching another maskable member (a
            batch normalization or depthwise convolution) through
            weightless layers; Taylor importance is read at terminal layers.
        handler: The handler that traced the layer (the `UnknownHandler`
            when its own could not follow the channels).
        owner: For a part of a layer with a mask of its own (an attention
            layer's heads, see `TraceContext.add_part`), the path of that
            layer; None otherwise.
    """

    layer: object
    path: str
    kind: str
    inputs: list
    outputs: list
    terminal: bool = True
    handler: object = None
    owner: str = None


@dataclasses.dataclass(eq=False)
class CallRecord:
    """One call of a layer in the graph (a shared layer has several)."""

    layer: object
    node: object
    inputs: list
    outputs: list


class ChannelGraph:
    """Channel groups of a model, traced from its functional graph.

    Build it with `ekg_keras.graph.trace(model)`.

    Attributes:
        model: The traced model.
        groups: List of `ChannelGroup`, indexed by group id.
        layers: Dict mapping `id(layer)` to its `LayerChannels`.
        calls: List of `CallRecord` in topological order, nested models
            included.
    """

    def __init__(self, model, groups, layers, calls):
        self.model = model
        self.groups = groups
        self.layers = layers
        self.calls = calls
        self._on_group = None

    @property
    def prunable_groups(self):
        """The groups that may lose channels."""
        return [group for group in self.groups if group.prunable]

    @property
    def sizes(self):
        """Number of channels per group, as an int array."""
        return np.array([group.size for group in self.groups], dtype=np.int64)

    def channels(self, layer):
        """The `LayerChannels` of `layer` (a layer object or its path)."""
        if isinstance(layer, str):
            for record in self.layers.values():
                if record.path == layer or record.layer.name == layer:
                    return record
            raise KeyError(f"No layer named {layer!r} in the traced model.")
        return self.layers[id(layer)]

    def full_keep(self):
        """Keep masks that keep every channel of every group."""
        return [np.ones(group.size, dtype=bool) for group in self.groups]

    def check_keep(self, keep):
        """Validates keep masks: one per group, right size, fixed groups full.

        Raises:
            ValueError: If `keep` does not fit this graph.
        """
        if len(keep) != len(self.groups):
            raise ValueError(
                f"Expected one keep mask per group ({len(self.groups)}). "
                f"Received: {len(keep)} masks."
            )
        for group, mask in zip(self.groups, keep):
            mask = np.asarray(mask)
            if mask.shape != (group.size,):
                raise ValueError(
                    f"Keep mask of group {group.id} should have shape "
                    f"({group.size},). Received: shape {mask.shape}."
                )
            if not group.prunable and not mask.all():
                raise ValueError(
                    f"Group {group.id} ({', '.join(group.producers)}) is not "
                    f"prunable: {'; '.join(group.reasons)}."
                )
            if not mask.any():
                raise ValueError(
                    f"Group {group.id} would lose all its channels; keep at "
                    "least one."
                )

    def freeze_layers(self, names):
        """Marks the groups touching the named layers as not prunable.

        A frozen layer keeps all its input and output channels, and its
        parts (an attention layer's heads) keep theirs.

        Args:
            names: Layer names (or nested paths like "inner/conv").

        Raises:
            ValueError: If a name matches no layer of the graph.
        """
        names = list(names)
        known = {r.path for r in self.layers.values()} | {
            r.layer.name for r in self.layers.values()
        }
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"`ignored_layers` names layers the model does not have: "
                f"{unknown}. Received: ignored_layers={names}"
            )
        owners = {r.path: r.owner for r in self.layers.values() if r.owner}

        def named(path):
            return path in names or path.split("/")[-1] in names

        for group in self.groups:
            roles = group.producers + group.members + group.consumers
            hits = [
                path
                for path in roles
                if named(path) or (path in owners and named(owners[path]))
            ]
            if hits:
                group.prunable = False
                group.reasons += (f"layer {hits[0]!r} is in ignored_layers",)

    def layers_on_group(self, group_id):
        """`LayerChannels` of the layers whose first input or output holds
        channels of the group, in `layers` order."""
        if self._on_group is None:
            self._on_group = {}
            for record in self.layers.values():
                found = set()
                for channel_map in record.inputs[:1] + record.outputs[:1]:
                    found.update(np.unique(channel_map.group).tolist())
                for group in found - {-1}:
                    self._on_group.setdefault(group, []).append(record)
        return self._on_group.get(group_id, [])

    def maskable_layers(self):
        """`LayerChannels` of the layers that carry a mask when wrapped."""
        return [
            record
            for record in self.layers.values()
            if record.kind in ("source", "member")
        ]

    def layer_masks(self, keep):
        """Per-layer output masks that realise the group keep masks.

        Args:
            keep: Boolean array per group id.

        Returns:
            Dict mapping `id(layer)` to a float32 mask over the layer's
            output channels, for every maskable layer.
        """
        return {
            id(record.layer): record.outputs[0]
            .keep_mask(keep)
            .astype("float32")
            for record in self.maskable_layers()
        }

    def summary(self):
        """A readable table of the groups, one line per group."""
        lines = [
            f"{len(self.groups)} channel groups "
            f"({len(self.prunable_groups)} prunable):"
        ]
        for group in self.groups:
            state = (
                "prunable"
                if group.prunable
                else ("fixed: " + "; ".join(group.reasons))
            )
            lines.append(
                f"  [{group.id}] size={group.size} "
                f"producers={', '.join(group.producers)} ({state})"
            )
        return "\n".join(lines)


def _flatten(keep):
    """Concatenates per-group keep masks; returns them and group offsets."""
    sizes = np.array([len(mask) for mask in keep], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return np.concatenate([np.asarray(m, dtype=bool) for m in keep]), offsets
