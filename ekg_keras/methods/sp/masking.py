"""Running part of a network with per-layer channel masks given as tensors.

The super-net's train step runs a stage at several widths in one step.
Writing the widths into the layers' mask variables inside the step would
need cross-replica updates under `tf.distribute`; instead the stage's graph
is run again with each masked layer's output multiplied by a mask tensor
computed in the step (the layers' own masks stay all ones). Every replica
computes the same tensors from the same step counter.
"""

import inspect

import numpy as np

from ekg_keras._backend import tf
from ekg_keras._keras_private import functional_of
from ekg_keras._keras_private import is_graph_model
from ekg_keras._keras_private import run_graph
from ekg_keras.layers import is_prunable


class ChannelPositions:
    """Where the output channels of a stage's masked layers sit in their
    groups, to turn per-group keep counts into per-layer masks in-graph.

    Args:
        graph: The network's `ChannelGraph`.
        layer_ids: `id()` of the layers to mask (a stage's).
        sizes: Channels per group.
    """

    def __init__(self, graph, layer_ids, sizes):
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.layers = {}
        for record in graph.maskable_layers():
            if id(record.layer) not in layer_ids:
                continue
            if not is_prunable(record.layer):
                continue
            out = record.outputs[0]
            inside = out.group >= 0
            if not inside.any():
                continue
            group = np.where(inside, out.group, 0).astype(np.int32)
            flat = np.where(inside, offsets[group] + out.index, 0)
            self.layers[id(record.layer)] = (
                tf.constant(group),
                tf.constant(flat.astype(np.int32)),
                tf.constant(inside),
            )

    def masks(self, flat_ranks, counts, dtype="float32"):
        """Per-layer masks keeping, per group, the channels ranked below the
        group's count.

        Args:
            flat_ranks: Every group's channel ranks, concatenated (int).
            counts: Keep count per group (int).
            dtype: Mask dtype.

        Returns:
            Dict `id(layer)` -> mask over the layer's output channels.
        """
        result = {}
        for layer_id, (group, flat, inside) in self.layers.items():
            rank = tf.gather(flat_ranks, flat)
            kept = tf.logical_or(
                tf.logical_not(inside),
                tf.cast(rank, counts.dtype) < tf.gather(counts, group),
            )
            result[layer_id] = tf.cast(kept, dtype)
        return result


def run_masked(functional, inputs, masks, training):
    """Runs `functional` on `inputs` with extra output masks.

    Args:
        functional: A functional `keras.Model` (one input).
        inputs: The input tensor.
        masks: Dict `id(layer)` -> mask over its output's last axis; other
            layers run as they are.
        training: The training flag passed to layers that take one.

    Returns:
        The output tensor(s).
    """

    def operation_fn(operation):
        if is_graph_model(operation):
            return lambda *args, **kwargs: run_graph(
                functional_of(operation), list(args), operation_fn, call_fn
            )
        return operation

    def call_fn(operation, *args, **kwargs):
        if _takes_training(operation):
            kwargs["training"] = training
        outputs = operation(*args, **kwargs)
        mask = masks.get(id(operation))
        if mask is None:
            return outputs
        return outputs * tf.cast(mask, outputs.dtype)

    return run_graph(functional_of(functional), [inputs], operation_fn, call_fn)


_TAKES_TRAINING = {}


def _takes_training(operation):
    """Whether a layer's `call` accepts a `training` argument."""
    key = type(operation)
    if key not in _TAKES_TRAINING:
        call = getattr(operation, "call", None)
        try:
            parameters = inspect.signature(call).parameters
        except (TypeError, ValueError):
            parameters = {}
        _TAKES_TRAINING[key] = "training" in parameters
    return _TAKES_TRAINING[key]
