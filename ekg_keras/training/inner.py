"""The network a training model trains: the inner-model protocol.

A method often trains the network it prunes through a `keras.Model` that
wraps it (soft pruning's `SoftFilterPruning`, EKG's `EKGFineTuning`,
LFPC's `CriteriaSampler`, NPPM's `PerformanceMaximization`, SP's
`StageSuperNet`). Such a class names the attribute that holds the wrapped
network in its class attribute `inner_model_attribute`, so callers that
look at the network (its masks, FLOPs and widths, as the trainers'
callbacks do) find it without knowing the method.
"""

import keras


def inner_model(model):
    """The network `model` trains: its inner model, or `model` itself.

    Args:
        model: A `keras.Model`; a training wrapper declares
            `inner_model_attribute`, the name of the attribute holding the
            network it trains.

    Returns:
        The wrapped network, or `model` if its class declares none.

    Raises:
        TypeError: If the declared attribute does not hold a `keras.Model`.

    Example:

    ```python
    class Wrapper(keras.Model):
        inner_model_attribute = "network"

        def __init__(self, network):
            super().__init__()
            self.network = network

    ekg_keras.training.inner_model(Wrapper(net)) is net  # True
    ```
    """
    name = getattr(type(model), "inner_model_attribute", None)
    if name is None:
        return model
    inner = getattr(model, name, None)
    if not isinstance(inner, keras.Model):
        raise TypeError(
            f"{type(model).__name__}.inner_model_attribute names {name!r}, "
            "which should hold the keras.Model it trains. Received: "
            f"{type(inner).__name__}"
        )
    return inner
