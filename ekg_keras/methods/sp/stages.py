"""Stages of a network: the stretches between changes of resolution.

SP (Zhang and Ou, Sec. 3.2-3.3 and 4.1) splits a network into stages by
the spatial resolution of its feature maps and trains and searches each
stage on its own. Stages are found from the functional graph, never from
layer names:

1. The *cut tensors* are the tensors every path from the input to the
   output passes through (block outputs, not the inside of a residual
   block): walking the nodes in topological order, a tensor is a cut when
   it is the only one still needed by later nodes.
2. A cut whose spatial size is larger than both neighbouring cuts is the
   padding before a strided layer (`ZeroPadding2D` in `keras.applications`)
   and is skipped.
3. A stage ends at the last cut of each resolution; the last stage runs to
   the model's output (pooling and classifier included).
4. A stage that holds fewer than `MIN_GROUPS` prunable channel groups (a
   lone stem convolution) joins the next stage, or the previous one if it
   is last. So ResNet-50 has the paper's 4 stages (its stem joins the
   first), MobileNet V2 its 5 and the CIFAR ResNets 3; a network whose
   resolution never changes is one stage.
"""

import collections
import dataclasses
import itertools

import keras
import numpy as np

from ekg_keras._keras_private import functional_of
from ekg_keras._keras_private import graph_nodes

#: Fewest prunable groups a stage holds before it joins a neighbour.
MIN_GROUPS = 2


@dataclasses.dataclass(frozen=True, eq=False)
class Stage:
    """One stage of a network.

    Attributes:
        index: Position of the stage, from 0.
        input: The symbolic tensor entering the stage (the model input for
            the first stage).
        output: The symbolic tensor leaving it (the model output for the
            last stage).
        functional: A `keras.Model` from `input` to `output` that shares the
            network's layers.
        layer_ids: `id()` of every operation inside the stage.
        groups: Ids of the network's prunable channel groups whose
            producers lie in the stage.
        last: Whether the stage ends at the model's output.
    """

    index: int
    input: object
    output: object
    functional: object
    layer_ids: frozenset
    groups: tuple
    last: bool

    @property
    def resolution(self):
        """Spatial size of the stage's output, or None past pooling."""
        return spatial_size(self.output)


def find_stages(model, graph):
    """Splits a model into stages where its resolution changes.

    Args:
        model: A functional model with one input and one output (the masked
            network).
        graph: Its `ChannelGraph`.

    Returns:
        A list of `Stage`, in order; they partition the model's operations.

    Raises:
        ValueError: For a model with several inputs or outputs, or without
            a functional graph.
    """
    functional = functional_of(model)
    if functional is None:
        raise ValueError(
            "SP splits a functional model into stages. Received: "
            f"{type(model).__name__} '{model.name}' without a functional "
            "graph."
        )
    if len(functional.inputs) != 1 or len(functional.outputs) != 1:
        raise ValueError(
            "SP's stage-wise search needs a model with one input and one "
            f"output. Received: '{model.name}' with "
            f"{len(functional.inputs)} input(s) and "
            f"{len(functional.outputs)} output(s)."
        )
    source, sink = functional.inputs[0], functional.outputs[0]
    boundaries = [
        t
        for t in resolution_boundaries(cut_tensors(functional))
        if t is not source
    ]
    stages = _build(source, sink, boundaries, graph)
    while len(stages) > 1:
        small = [s for s in stages if len(s.groups) < MIN_GROUPS]
        if not small:
            break
        # Drop the boundary that closes (or, for the last, opens) it.
        position = small[0].index
        drop = position if position < len(stages) - 1 else position - 1
        boundaries = boundaries[:drop] + boundaries[drop + 1 :]
        stages = _build(source, sink, boundaries, graph)
    return stages


def cut_tensors(functional):
    """Tensors that every path from the input to the output goes through.

    Returns:
        The cut tensors in topological order, the input first and the
        output last.
    """
    nodes = list(graph_nodes(functional))
    remaining = collections.Counter(
        id(t) for node in nodes for t in node.input_tensors
    )
    outputs = {id(t) for t in functional.outputs}
    live = {id(t): t for t in functional.inputs}
    cuts = list(functional.inputs)
    for node in nodes:
        for tensor in node.input_tensors:
            remaining[id(tensor)] -= 1
            if remaining[id(tensor)] <= 0 and id(tensor) not in outputs:
                live.pop(id(tensor), None)
        for tensor in node.outputs:
            if remaining[id(tensor)] > 0 or id(tensor) in outputs:
                live[id(tensor)] = tensor
        if len(live) == 1 and len(node.outputs) == 1:
            (only,) = live.values()
            if only is node.outputs[0]:
                cuts.append(only)
    return cuts


def resolution_boundaries(cuts):
    """The last cut tensor of each resolution, before it changes.

    Padding cuts (larger than both neighbours) are skipped; cuts without
    spatial axes (after global pooling) end no stage.
    """
    sizes = [_area(t) for t in cuts]
    kept = [
        t
        for i, t in enumerate(cuts)
        if sizes[i] is None
        or not (
            sizes[i] > (_or_zero(sizes[i - 1]) if i else 0)
            and sizes[i] > (_or_zero(sizes[i + 1]) if i + 1 < len(cuts) else 0)
        )
    ]
    spatial = [t for t in kept if spatial_size(t) is not None]
    return [
        a
        for a, b in itertools.pairwise(spatial)
        if spatial_size(a) != spatial_size(b)
    ]


def spatial_size(tensor):
    """`(height, width, ...)` of a channels-last feature map, or None for a
    tensor without spatial axes."""
    if len(tensor.shape) < 3:
        return None
    return tuple(tensor.shape[1:-1])


def _area(tensor):
    size = spatial_size(tensor)
    if size is None or any(d is None for d in size):
        return None
    return int(np.prod(size))


def _or_zero(value):
    return 0 if value is None else value


def _build(source, sink, boundaries, graph):
    ends = [source, *boundaries, sink]
    producers = _groups_by_producer(graph)
    stages = []
    for index, (start, end) in enumerate(itertools.pairwise(ends)):
        functional = keras.Model(start, end, name=f"sp_stage_{index}")
        layer_ids = frozenset(
            id(node.operation) for node in graph_nodes(functional)
        )
        groups = sorted(
            {
                g
                for layer, gs in producers.items()
                if layer in layer_ids
                for g in gs
            }
        )
        stages.append(
            Stage(
                index,
                start,
                end,
                functional,
                layer_ids,
                tuple(groups),
                last=end is sink,
            )
        )
    return _first_claims(stages)


def _groups_by_producer(graph):
    """`id(layer)` -> the prunable groups the layer's outputs open."""
    result = {}
    for record in graph.layers.values():
        if record.kind != "source" or not record.outputs:
            continue
        out = record.outputs[0].group
        ids = {
            int(g) for g in np.unique(out[out >= 0]) if graph.groups[g].prunable
        }
        if ids:
            result[id(record.layer)] = ids
    return result


def _first_claims(stages):
    """A group produced in several stages belongs to the first."""
    claimed = set()
    result = []
    for stage in stages:
        own = tuple(g for g in stage.groups if g not in claimed)
        claimed.update(own)
        result.append(dataclasses.replace(stage, groups=own))
    return result
