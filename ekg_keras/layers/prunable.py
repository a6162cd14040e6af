"""The filter mask shared by every prunable layer.

A prunable layer is a subclass of a built-in Keras layer that owns one extra
non-trainable weight, `mask`, with one value per output channel. It behaves
like its base layer in every other way (same config keys, same weights, same
`isinstance` checks), so code written for `Conv2D` keeps working.

Two modes:

* ``"hard"``: the forward pass multiplies the layer's output by the mask, so a
  masked channel is an exact zero and every weight that feeds only that
  channel receives a zero gradient.
* ``"soft"``: the forward pass ignores the mask. The pruner zeroes the masked
  filters in place (`zero_masked_weights`) at each pruning step and lets
  training regrow them (SFP, ASFP, FPGM).
"""

import numpy as np
from keras import ops

MODES = ("hard", "soft")


def check_mode(mode):
    """Returns `mode` if it is a known pruning mode, else raises ValueError."""
    if mode not in MODES:
        raise ValueError(
            f"`mode` should be one of {MODES}. Received: mode={mode!r}"
        )
    return mode


class PrunableMixin:
    """Adds the `mask` weight and its use to a built-in Keras layer.

    Subclasses set `base_layer_class` to the built-in class they extend,
    implement `_mask_channels(input_shape)` and `_output_weights()`, and
    pass their output through `_apply_mask` in `call` (each keeps its base
    class's `call` signature, which Keras inspects for `training`).

    Args:
        *args: Positional arguments of the base layer.
        mode: `"hard"` or `"soft"`.
        **kwargs: Keyword arguments of the base layer.
    """

    base_layer_class = None

    def __init__(self, *args, mode="hard", **kwargs):
        super().__init__(*args, **kwargs)
        self._mode = check_mode(mode)
        self.filter_mask = None

    def build(self, input_shape):
        super().build(input_shape)
        self._build_mask(self._mask_channels(input_shape))

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}

    @classmethod
    def wraps(cls, layer):
        """Whether `wrap` turns `layer` (a `base_layer_class`) into this
        class; some settings of a base layer cannot carry a mask."""
        del layer
        return True

    def _mask_channels(self, input_shape):
        """Number of output channels the mask covers."""
        raise NotImplementedError

    @property
    def mode(self):
        """`"hard"` or `"soft"`; fixed for the layer's life.

        Compiled train and predict functions bake the mode in, so it cannot
        change in place: use `ekg_keras.wrap(model, mode=...)` for a clone
        in the other mode.
        """
        return self._mode

    def _build_mask(self, num_channels):
        # The weight is named `mask`; the attribute is not, because Keras
        # layers already use `mask` for sequence masking in `call`.
        self.filter_mask = self.add_weight(
            name="mask",
            shape=(num_channels,),
            initializer="ones",
            trainable=False,
            aggregation="mean",
        )

    @property
    def channel_axis(self):
        """The axis of the output that the mask indexes."""
        data_format = getattr(self, "data_format", "channels_last")
        return 1 if data_format == "channels_first" else -1

    def _apply_mask(self, outputs):
        if self.mode != "hard":
            return outputs
        mask = ops.cast(self.filter_mask, outputs.dtype)
        if self.channel_axis != -1:
            shape = [1] * len(outputs.shape)
            shape[self.channel_axis] = -1
            mask = ops.reshape(mask, shape)
        return outputs * mask

    def mask_weights(self):
        """The layer's mask weights (`filter_mask`, and any other mask a
        layer has, like an attention layer's `head_mask`)."""
        return [self.filter_mask]

    @property
    def parts(self):
        """Prunable parts of the layer that carry a mask of their own (an
        attention layer's heads); `prunable_layers` lists them after it."""
        return ()

    def _output_weights(self):
        """Yields `(variable, axes)` for the weights indexed by channel.

        The mask, reshaped to the variable's dimensions on `axes`, selects
        the entries that feed each output channel. Zeroing them makes the
        layer output zero (or its activation of zero) for that channel.
        """
        raise NotImplementedError

    def masked_weight_values(self):
        """The output weights with the entries of masked channels zeroed.

        Returns:
            A list of `(variable, new numpy value)` pairs, one per weight
            indexed by channel. The variables themselves are not changed.
        """
        if self.filter_mask is None:
            raise ValueError(
                f"Layer '{self.name}' is not built yet, so it has no mask "
                "or weights: call it on data (or build the model) first."
            )
        mask = np.asarray(self.filter_mask.numpy(), dtype="float32")
        values = []
        for variable, axes in self._output_weights():
            value = np.asarray(variable.numpy())
            shape = [1] * value.ndim
            for axis in axes:
                shape[axis] = value.shape[axis]
            values.append((variable, value * mask.reshape(shape)))
        return values

    def zero_masked_weights(self):
        """Zeroes, in place, the weights of the channels whose mask is 0.

        This is the soft-pruning step: the weights stay trainable, so later
        updates may regrow them.
        """
        for variable, value in self.masked_weight_values():
            variable.assign(value)

    def save_own_variables(self, store):
        super().save_own_variables(store)
        # Conv and Dense save only their kernel and bias by index; the mask
        # goes under its own key so that loading stays index-compatible.
        if self.built and len(store.keys()) < len(self.variables):
            store["mask"] = self.filter_mask

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if "mask" in store.keys():
            self.filter_mask.assign(store["mask"])
