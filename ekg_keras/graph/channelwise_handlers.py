"""Layers with per-channel weights: sliced with the channels they touch.

* `ChannelwiseHandler`, the generic rule for layers no handler is
  registered for: a layer with one input and one output of the same shape
  whose weights are all vectors of the channel axis (or scalars), such as a
  layer-scale layer (`x * gamma`), a learned per-channel bias or `PReLU`
  shared over space. `keras.layers.Normalization` uses it too, whether its
  mean and variance are weights (adapted) or config lists. The first trace
  checks on random data that the layer really treats each channel alone and that
  a copy built for fewer channels (config entries equal to the channel
  count lowered, per-channel lists and weights sliced) computes the same
  on the channels it keeps; otherwise the layer is unknown.
* `LayerNormalizationHandler`: `LayerNormalization` over the channel axis.
  Normalizing over fewer channels is a different function, so it is a
  member with a mask: `PrunableLayerNormalization` normalizes over the
  channels its mask keeps, which is exactly what the slim layer computes.
"""

import copy
import weakref

import numpy as np

from ekg_keras.graph.handlers import IncompatibleChannels
from ekg_keras.graph.handlers import LayerHandler
from ekg_keras.graph.handlers import is_soft
from ekg_keras.graph.handlers import unknown_values

_PROBE_TOLERANCE = 1e-5
_PROBE_SPATIAL = 3


def per_channel_weights(layer):
    """Whether every weight of `layer` is a scalar or a channel vector
    (shape `(1, ..., 1, c)`), and at least one is a vector."""
    shapes = [tuple(w.shape) for w in layer.weights]
    if not shapes:
        return False
    vectors = [s for s in shapes if int(np.prod(s)) > 1]
    return bool(vectors) and all(
        all(d == 1 for d in s[:-1]) and s[-1] == vectors[0][-1] for s in vectors
    )


def _channel_count(layer):
    """The longest weight or numeric config list: the channel count."""
    sizes = [int(np.prod(w.shape)) for w in layer.weights]
    sizes += [
        np.shape(value)[-1]
        for value in layer.get_config().values()
        if _numeric_list(value)
    ]
    return max(sizes, default=0)


def _numeric_list(value):
    return (
        isinstance(value, (list, tuple))
        and len(np.shape(value)) >= 1
        and np.asarray(value).dtype.kind in "fiu"
    )


class ChannelwiseHandler(LayerHandler):
    """Layers whose weights are per-channel vectors (see the module)."""

    kind = "channelwise"

    def __init__(self):
        # layer -> why a slim copy disagrees with it (None: it agrees).
        self._verified = weakref.WeakKeyDictionary()

    def trace(self, ctx, layer, node, inputs):
        if len(inputs) != 1 or len(node.outputs) != 1:
            raise IncompatibleChannels("expected one input and one output")
        in_shape = tuple(node.input_tensors[0].shape)
        if tuple(node.outputs[0].shape) != in_shape:
            raise IncompatibleChannels("the output shape differs")
        if _channel_count(layer) != len(inputs[0]):
            raise IncompatibleChannels(
                "its weights are not vectors of the channel axis"
            )
        if layer not in self._verified:
            self._verified[layer] = self._verify(layer, in_shape)
        error = self._verified[layer]
        if error:
            raise IncompatibleChannels(error)
        return [inputs[0]]

    def slim_config(self, layer, config, in_keep, out_keep):
        channels = _channel_count(layer)
        keep = in_keep[0]
        for key, value in config.items():
            if isinstance(value, bool):
                continue
            if isinstance(value, (int, np.integer)) and value == channels:
                config[key] = len(keep)
            elif _numeric_list(value) and np.shape(value)[-1] == channels:
                config[key] = np.take(value, keep, axis=-1).tolist()
        return config

    def slim_weights(self, layer, weights, in_keep, out_keep):
        return {
            name: np.take(value, in_keep[0], axis=-1)
            if np.size(value) > 1
            else value
            for name, value in weights.items()
        }

    def cost(self, layer, node):
        channels = _channel_count(layer)
        terms = []
        for weight in layer.weights:
            size = int(np.prod(weight.shape))
            if size == channels and size > 1:
                terms.append(("conv", "params", 1, "in", None))
            else:
                terms.append(("conv", "params", size, None, None))
        return terms

    def _verify(self, layer, in_shape):
        """None if a slim copy of `layer` agrees with it on random data,
        else why not."""
        channels = in_shape[-1]
        if channels < 2:
            return None
        shape = (2,) + tuple(
            _PROBE_SPATIAL if d is None else d for d in in_shape[1:]
        )
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype("float32")
        keep = np.delete(np.arange(channels), channels // 2)
        try:
            expected = np.asarray(layer(x))[..., keep]
            config = self.slim_config(
                layer, copy.deepcopy(layer.get_config()), [keep], [keep]
            )
            slim = type(layer).from_config(config)
            slim(x[..., keep])
            weights = {w.path: np.asarray(w.numpy()) for w in layer.weights}
            sliced = self.slim_weights(layer, weights, [keep], [keep])
            slim.set_weights([sliced[w.path] for w in layer.weights])
            actual = np.asarray(slim(x[..., keep]))
        except Exception as error:  # noqa: BLE001 - any failure: not sliceable.
            return f"a copy for fewer channels cannot be built ({error})"
        scale = 1.0 + np.abs(expected).max()
        if actual.shape != expected.shape or not np.allclose(
            actual,
            expected,
            rtol=_PROBE_TOLERANCE,
            atol=_PROBE_TOLERANCE * scale,
        ):
            return "it does not treat each channel alone"
        return None


class LayerNormalizationHandler(LayerHandler):
    """`LayerNormalization` over the channel axis only: a member whose
    prunable form normalizes over the channels its mask keeps."""

    kind = "member"

    def trace(self, ctx, layer, node, inputs):
        rank = len(node.input_tensors[0].shape)
        axes = (
            layer.axis
            if isinstance(layer.axis, (list, tuple))
            else [layer.axis]
        )
        if [int(a) % rank for a in axes] != [rank - 1]:
            raise IncompatibleChannels(
                f"it normalizes over axes {list(axes)}, not the channels alone"
            )
        return [inputs[0]]

    def slim_weights(self, layer, weights, in_keep, out_keep):
        return {name: value[in_keep[0]] for name, value in weights.items()}

    def removed_values(self, layer, node, values):
        if is_soft(layer):
            # Soft mode normalizes over every channel: data-dependent.
            return unknown_values(node)
        return [np.zeros(len(values[0]))]

    def cost(self, layer, node):
        positions = int(np.prod(node.input_tensors[0].shape[1:-1]))
        per_channel = int(layer.gamma is not None) + int(layer.beta is not None)
        return [
            ("bn", "macs", 2 * positions, "in", None),
            ("bn", "params", per_channel, "in", None),
        ]
