"""Soft pruning through `fit` on the backend of this process."""

import keras
import numpy as np
import pytest
from neutral_testing import numpy

import ekg_keras
from ekg_keras.methods.soft import SoftPruningCallback


def chain(size=8):
    inputs = keras.Input((size, size, 3))
    x = inputs
    for i, filters in enumerate((8, 12)):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))


def data(size=8, n=32, classes=4):
    rng = np.random.default_rng(0)
    x = rng.random((n, size, size, 3)).astype("float32")
    return x, rng.integers(0, classes, n)


class FirstBatchMasks(keras.callbacks.Callback):
    """Records the masks the step before the first epoch left."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.masks = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.masks is None:
            network = self.model.network
            self.masks = {
                n: numpy(network.get_layer(n).filter_mask) for n in self.names
            }


def test_one_epoch_of_sfp_through_fit_zeroes_the_smallest_l2_filters():
    model = chain()
    names = ("conv0", "conv1")
    initial = {n: numpy(model.get_layer(n).kernel) for n in names}
    sfp = ekg_keras.SoftFilterPruning(model, 0.25, epochs=1)
    sfp.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    record = FirstBatchMasks(names)
    x, y = data()
    sfp.fit(
        x,
        y,
        epochs=1,
        batch_size=16,
        verbose=0,
        callbacks=[SoftPruningCallback(), record],
    )
    for name in names:
        kernel = initial[name]
        norms = np.sqrt(np.square(kernel).sum(axis=(0, 1, 2)))
        count = int(np.floor(kernel.shape[-1] * 0.25 + 1e-9))
        expected = np.ones(kernel.shape[-1])
        expected[np.argsort(norms)[:count]] = 0
        np.testing.assert_array_equal(record.masks[name], expected)
        # The step after the epoch zeroed its filters in place.
        layer = sfp.network.get_layer(name)
        zeroed = numpy(layer.filter_mask) == 0
        assert zeroed.sum() == count
        assert not np.any(numpy(layer.kernel)[..., zeroed])


@pytest.mark.parametrize("method", ["sfp", "fpgm"])
def test_soft_pruning_method_meets_the_target(method):
    model = chain()
    small = ekg_keras.prune(
        model, 0.5, method=method, data=data(), epochs=2, verbose=0
    )
    macs = ekg_keras.count_flops(small).macs
    assert macs <= 0.5 * ekg_keras.count_flops(model).macs
