"""Soft pruning through `fit` on the backend of this process."""

import keras
import numpy as np
import pytest
from neutral_testing import ROOT
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


class ZeroedAtEpochEnd(keras.callbacks.Callback):
    """Before each epoch's pruning step: the largest |weight| of the
    filters the masks zero, per epoch (it runs before
    `SoftPruningCallback`, which prunes at the end of the epoch)."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        self.largest = []
        self.zeroed = []

    def on_epoch_end(self, epoch, logs=None):
        largest, zeroed = 0.0, 0
        for name in self.names:
            layer = self.model.network.get_layer(name)
            masked = numpy(layer.filter_mask) == 0
            zeroed += int(masked.sum())
            largest = max(
                largest,
                float(np.abs(numpy(layer.kernel)[..., masked]).max(initial=0)),
                float(np.abs(numpy(layer.bias)[masked]).max(initial=0)),
            )
        self.largest.append(largest)
        self.zeroed.append(zeroed)


def masked_gradient_run():
    """Three epochs of ASFP with `mask_gradients` (plain SGD, fixed weights
    and batches): the zeroed-filter record and the final weights."""
    model = chain()
    rng = np.random.default_rng(1)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype("float32"))
    names = ("conv0", "conv1")
    sfp = ekg_keras.SoftFilterPruning(
        model, 0.5, epochs=3, schedule="asymptotic", mask_gradients=True
    )
    sfp.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    record = ZeroedAtEpochEnd(names)
    x, y = data()
    sfp.fit(
        x,
        y,
        epochs=3,
        batch_size=8,
        shuffle=False,
        verbose=0,
        callbacks=[record, SoftPruningCallback()],
    )
    weights = [numpy(w) for w in sfp.network.weights]
    return record, weights


#: TensorFlow's final weights of `masked_gradient_run()`, recorded by
#: tests/fixtures/record_masked_gradients.py.
TENSORFLOW_REFERENCE = ROOT / "tests/fixtures/masked_gradients_tensorflow.npz"


def test_masked_gradients_hold_zeroed_filters_at_zero_as_on_tensorflow():
    record, weights = masked_gradient_run()
    # Masks change between epochs (the rate rises), and every filter
    # zeroed at the start of an epoch is still exactly zero at its end.
    assert record.zeroed[0] < record.zeroed[1], record.zeroed
    assert record.largest == [0.0, 0.0, 0.0]
    # The same weights as TensorFlow's (on TensorFlow: as when recorded,
    # to the last bits that another CPU's kernels change).
    with np.load(TENSORFLOW_REFERENCE) as saved:
        expected = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    for received, want in zip(weights, expected, strict=True):
        np.testing.assert_allclose(received, want, rtol=1e-4, atol=1e-5)


def test_soft_pruning_with_recovery_holds_the_zeroed_filters():
    model = chain()
    masked = ekg_keras.prune(
        model,
        0.5,
        method="sfp",
        data=data(),
        epochs=2,
        recovery_epochs=1,
        slim=False,
        verbose=0,
    )
    small = ekg_keras.slim(masked)
    assert ekg_keras.count_flops(small).macs <= 0.5 * (
        ekg_keras.count_flops(model).macs
    )
    for name in ("conv0", "conv1"):
        layer = masked.get_layer(name)
        zeroed = numpy(layer.filter_mask) == 0
        assert zeroed.any() and not np.any(numpy(layer.kernel)[..., zeroed])
