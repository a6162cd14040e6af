"""Prunable `MultiHeadAttention`: whole heads and output channels.

Attention has two kinds of prunable width. Its output channels (the model
dimension of a transformer's residual stream) are a channel group like a
`Dense` layer's units: the layer's `mask` covers them. Its heads are a
second group, internal to the layer: head `h` is the `key_dim` columns of
the query and key projections, the `value_dim` columns of the value
projection (and of the gate, with `use_gate`) and the `value_dim` rows of
the output projection that belong to it. Removing a head removes all of
them, and the slim layer has fewer `num_heads`; `key_dim` and `value_dim`
stay. The head mask is a second non-trainable weight, `head_mask`, and
the channel graph sees it through `AttentionHeads`, the layer's heads as a
maskable part of their own.
"""

import weakref

import keras
from keras import ops

from ekg_keras._api import ekg_export
from ekg_keras.layers.prunable import PrunableMixin


class AttentionHeads:
    """The heads of a `MultiHeadAttention` layer, as the channel graph
    sees them: a part of the layer that opens `num_heads` channels.

    A plain layer's heads are never masked; those of a
    `PrunableMultiHeadAttention` are a `PrunableAttentionHeads`.

    Args:
        attention: The `MultiHeadAttention` layer (held by weak reference).
    """

    name = "heads"

    def __init__(self, attention):
        self._attention = weakref.ref(attention)

    @property
    def attention(self):
        """The attention layer these heads belong to."""
        return self._attention()

    @property
    def num_heads(self):
        """Number of heads of the layer."""
        return self.attention.num_heads

    def projections(self):
        """The projections whose columns are split by head: query, key,
        value (and gate), each an `EinsumDense` with a kernel of shape
        (input channels, num_heads, head size) and a bias of shape
        (num_heads, head size)."""
        layer = self.attention
        found = [layer.query_dense, layer.key_dense, layer.value_dense]
        if getattr(layer, "_use_gate", False):
            found.append(layer._gate_dense)
        return found


_PLAIN_HEADS = weakref.WeakKeyDictionary()


def heads_of(attention):
    """The `AttentionHeads` of a `MultiHeadAttention` layer (the same object
    every time)."""
    heads = getattr(attention, "heads", None)
    if isinstance(heads, AttentionHeads):
        return heads
    if attention not in _PLAIN_HEADS:
        _PLAIN_HEADS[attention] = AttentionHeads(attention)
    return _PLAIN_HEADS[attention]


class PrunableAttentionHeads(PrunableMixin, AttentionHeads):
    """The heads of a `PrunableMultiHeadAttention`, masked by its
    `head_mask`.

    Not a Keras layer: the mask is a weight of the attention layer, which
    also applies it. It offers the prunable-layer interface (`filter_mask`,
    `mode`, `masked_weight_values`, `zero_masked_weights`) so that methods
    set and read head masks like any other mask.

    Args:
        attention: The `PrunableMultiHeadAttention`.
        mode: Its mode.
    """

    def _output_weights(self):
        # A head's filters are its columns of the projections that make it.
        for projection in self.projections():
            yield projection.kernel, (1,)
            if projection.bias is not None:
                yield projection.bias, (0,)


@ekg_export
class PrunableMultiHeadAttention(
    PrunableMixin, keras.layers.MultiHeadAttention
):
    """`keras.layers.MultiHeadAttention` with masks over its output channels
    and over its heads.

    `mask` (attribute `filter_mask`) has one value per output channel, as
    for `PrunableDense`; `head_mask` (attribute `head_mask`) has one value
    per head. In hard mode the output is multiplied by `mask` and each
    head's attention output (before the output projection) by its
    `head_mask` value, so a masked head contributes nothing, which is
    exactly what the slim layer without that head computes. In soft mode
    the forward pass ignores both masks and `zero_masked_weights` zeroes
    the masked heads' query, key and value columns and the masked output
    channels' columns.

    Args:
        *args: Positional arguments of `keras.layers.MultiHeadAttention`.
        mode: `"hard"` or `"soft"`, see `PrunableConv2D`.
        **kwargs: Keyword arguments of `keras.layers.MultiHeadAttention`.

    Example:

    >>> layer = PrunableMultiHeadAttention(num_heads=4, key_dim=8)
    >>> x = np.ones((1, 10, 16))
    >>> y = layer(x, x)
    >>> layer.head_mask.shape, layer.filter_mask.shape
    ((4,), (16,))
    """

    base_layer_class = keras.layers.MultiHeadAttention

    def __init__(self, *args, mode="hard", **kwargs):
        super().__init__(*args, mode=mode, **kwargs)
        self.head_mask = None
        self.heads = PrunableAttentionHeads(self, mode=mode)

    @classmethod
    def wraps(cls, layer):
        """Whether the layer's output has one channel axis (an
        `output_shape` of one entry, or none)."""
        shape = layer.get_config().get("output_shape")
        return not shape or len(shape) == 1

    def build(self, query_shape, value_shape, key_shape=None):
        keras.layers.MultiHeadAttention.build(
            self, query_shape, value_shape, key_shape
        )
        output_shape = self._output_shape or (query_shape[-1],)
        self._build_mask(output_shape[-1])
        self.head_mask = self.add_weight(
            name="head_mask",
            shape=(self.num_heads,),
            initializer="ones",
            trainable=False,
            aggregation="mean",
        )
        self.heads.filter_mask = self.head_mask

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        outputs = super().call(
            query,
            value,
            key=key,
            query_mask=query_mask,
            value_mask=value_mask,
            key_mask=key_mask,
            attention_mask=attention_mask,
            return_attention_scores=return_attention_scores,
            training=training,
            use_causal_mask=use_causal_mask,
        )
        if return_attention_scores:
            return self._apply_mask(outputs[0]), outputs[1]
        return self._apply_mask(outputs)

    def _compute_attention(self, query, key, value, *args, **kwargs):
        output, scores = super()._compute_attention(
            query, key, value, *args, **kwargs
        )
        if self.mode == "hard":
            # (batch, ..., heads, value_dim): one value per head.
            mask = ops.cast(self.head_mask, output.dtype)
            output = output * ops.reshape(mask, (-1, 1))
        return output, scores

    def _mask_channels(self, input_shape):
        del input_shape
        return self.filter_mask.shape[0]

    def _output_weights(self):
        output = self.output_dense
        yield output.kernel, (len(output.kernel.shape) - 1,)
        if output.bias is not None:
            yield output.bias, (0,)

    def mask_weights(self):
        return [self.filter_mask, self.head_mask]

    @property
    def parts(self):
        return (self.heads,)

    def masked_weight_values(self):
        """The output and head weights with masked entries zeroed (see
        `PrunableMixin.masked_weight_values`)."""
        return super().masked_weight_values() + (
            self.heads.masked_weight_values()
        )

    def save_own_variables(self, store):
        # Both masks are the layer's own variables, saved by index; the
        # projections save theirs.
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)
