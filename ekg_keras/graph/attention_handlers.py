"""Handlers of `MultiHeadAttention` and of its heads.

An attention layer is a source twice over:

* its output projection opens the layer's output channels (in a
  transformer, they join the residual stream's group through the `Add`s);
* its query, key and value projections open its heads, which the output
  projection reads. The heads are a group of their own with one unit per
  head: unit `h` spans `key_dim` columns of the query and key kernels,
  `value_dim` columns of the value kernel and `value_dim` rows of the
  output kernel. They are produced by the layer's `AttentionHeads` part
  (`TraceContext.add_part`), which carries the head mask of a
  `PrunableMultiHeadAttention` and its filters for criteria.

The layer's channel record lists the heads' layout after its outputs
(`outputs[len(node.outputs)]`), so that slimming and cost terms see it.
The query, key and value inputs are read by the projections' kernels like
a `Dense` layer's input. Attention masks passed as tensors are kept whole.
"""

import weakref

import numpy as np

from ekg_keras.graph.handlers import IncompatibleChannels
from ekg_keras.graph.handlers import LayerHandler
from ekg_keras.graph.handlers import channels_of
from ekg_keras.graph.handlers import describe
from ekg_keras.graph.handlers import source_values
from ekg_keras.graph.handlers import unknown_values
from ekg_keras.layers.attention import heads_of

_ROLES = ("query", "value", "key")


def _input_roles(node):
    """Index in `node.input_tensors` of the query, value and key tensors
    (the key is the value when not given), and the other inputs."""
    arguments = node.arguments
    found = {}
    for position, role in enumerate(_ROLES):
        tensor = (
            arguments.args[position]
            if len(arguments.args) > position
            else arguments.kwargs.get(role)
        )
        if tensor is not None:
            found[role] = tensor
    ids = [id(t) for t in node.input_tensors]
    roles = {}
    for role, tensor in found.items():
        # The same tensor as query and value appears once per argument.
        matches = [i for i, x in enumerate(ids) if x == id(tensor)]
        free = [i for i in matches if i not in roles.values()]
        if not matches:
            raise IncompatibleChannels(f"its {role} is not a tensor")
        roles[role] = (free or matches)[0]
    if "query" not in roles or "value" not in roles:
        raise IncompatibleChannels("expected query and value tensors")
    roles.setdefault("key", roles["value"])
    others = [i for i in range(len(ids)) if i not in roles.values()]
    return roles, others


def _positions(tensor, what):
    shape = tensor.shape[1:-1]
    if None in shape:
        raise IncompatibleChannels(f"unknown {what} length")
    return int(np.prod(shape))


def _attended(layer, key):
    """Key positions each query position attends to (the product of the
    key's sizes on the attention axes)."""
    rank = len(key.shape)
    axes = layer.attention_axes
    if axes is None:
        axes = range(1, rank - 1)
    sizes = [key.shape[int(a) % (rank + 1)] for a in axes]
    if None in sizes:
        raise IncompatibleChannels("unknown key length")
    return int(np.prod(sizes))


class MultiHeadAttentionHandler(LayerHandler):
    """`MultiHeadAttention`: output channels and heads (see the module)."""

    kind = "source"

    def __init__(self):
        # layer -> (roles, other inputs) of its first call.
        self._roles = weakref.WeakKeyDictionary()

    def trace(self, ctx, layer, node, inputs):
        shape = layer.get_config().get("output_shape")
        if shape and len(shape) != 1:
            raise IncompatibleChannels(
                f"its output_shape {tuple(shape)} has several axes"
            )
        roles, others = _input_roles(node)
        self._roles.setdefault(layer, (roles, others))
        for index in others:
            ctx.block(
                inputs[index], f"it is a mask of attention '{layer.name}'"
            )
        outputs = [ctx.produce(layer, channels_of(node.outputs[0]))]
        outputs += [ctx.fixed(channels_of(t)) for t in node.outputs[1:]]
        part = heads_of(layer)
        heads = ctx.produce(part, layer.num_heads)
        ctx.add_part(layer, part, _HEADS, [heads])
        return outputs + [heads]

    def removed_values(self, layer, node, values):
        first = source_values(layer, node)
        return first + unknown_values(node)[1:]

    def slim_config(self, layer, config, in_keep, out_keep):
        roles, _ = self._roles[layer]
        config["num_heads"] = len(out_keep[-1])
        if config.get("output_shape") or len(out_keep[0]) != len(
            in_keep[roles["query"]]
        ):
            config["output_shape"] = (len(out_keep[0]),)
        return config

    def slim_weights(self, layer, weights, in_keep, out_keep):
        roles, _ = self._roles[layer]
        heads = out_keep[-1]
        reads = {
            id(layer.query_dense): in_keep[roles["query"]],
            id(layer.key_dense): in_keep[roles["key"]],
            id(layer.value_dense): in_keep[roles["value"]],
        }
        gate = getattr(layer, "_gate_dense", None)
        if gate is not None:
            reads[id(gate)] = in_keep[roles["query"]]
        values = list(weights.values())
        owners = _weight_owners(layer)
        if len(values) != len(owners):
            raise IncompatibleChannels(
                f"{describe(layer)} has {len(owners)} projection weights; "
                f"received {len(values)}"
            )
        sliced = {}
        for index, (value, (projection, is_kernel)) in enumerate(
            zip(values, owners)
        ):
            if projection is layer.output_dense:
                if is_kernel:
                    value = np.take(value[heads], out_keep[0], axis=-1)
                else:
                    value = value[out_keep[0]]
            elif is_kernel:
                value = value[reads[id(projection)]][:, heads]
            else:
                value = value[heads]
            sliced[str(index)] = value
        return sliced

    def cost(self, layer, node):
        roles, _ = _input_roles(node)
        query = node.input_tensors[roles["query"]]
        key = node.input_tensors[roles["key"]]
        queries = _positions(query, "query")
        keys = _positions(key, "key")
        attended = _attended(layer, key)
        key_dim, value_dim = layer.key_dim, layer.value_dim
        heads = ("out", len(node.outputs))
        q, k, v = (("in", roles[r]) for r in ("query", "key", "value"))
        projections = [(q, queries, key_dim), (k, keys, key_dim)]
        projections.append((v, keys, value_dim))
        if getattr(layer, "_use_gate", False):
            projections.append((q, queries, value_dim))
        terms = []
        for side, positions, width in projections:
            terms += [
                ("fc", "macs", positions * width, side, heads),
                ("fc", "params", width, side, heads),
            ]
            if layer.use_bias:
                terms.append(("fc", "params", width, heads, None))
        terms += [
            # Scores q.k and the weighted sum of values, per head.
            ("attention", "macs", queries * attended * key_dim, heads, None),
            ("attention", "macs", queries * attended * value_dim, heads, None),
            ("fc", "macs", queries * value_dim, heads, "out"),
            ("fc", "params", value_dim, heads, "out"),
        ]
        if layer.use_bias:
            terms.append(("fc", "params", 1, "out", None))
        return terms


def _weight_owners(layer):
    """Per weight of `layer` (masks excluded, in `layer.weights` order), the
    projection it belongs to and whether it is the kernel."""
    owners = {}
    projections = heads_of(layer).projections() + [layer.output_dense]
    for projection in projections:
        owners[id(projection.kernel)] = (projection, True)
        if projection.bias is not None:
            owners[id(projection.bias)] = (projection, False)
    return [owners[id(w)] for w in layer.weights if id(w) in owners]


class AttentionHeadsHandler(LayerHandler):
    """The heads of an attention layer, as a part that opens them.

    Its filters, one row per head, are the head's query, key, value (and
    gate) columns and its output-projection rows; the layer itself counts
    the cost and slims.
    """

    kind = "source"

    def trace(self, ctx, layer, node, inputs):
        raise IncompatibleChannels("attention heads are not called")

    def filters(self, layer):
        attention = layer.attention
        rows = []
        for projection in layer.projections():
            kernel = np.asarray(projection.kernel.numpy())
            rows.append(np.moveaxis(kernel, 1, 0).reshape(layer.num_heads, -1))
        output = np.asarray(attention.output_dense.kernel.numpy())
        rows.append(output.reshape(layer.num_heads, -1))
        return np.concatenate(rows, axis=1)


_HEADS = AttentionHeadsHandler()
