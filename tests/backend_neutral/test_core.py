"""The data-free core on the backend of this process (KERAS_BACKEND):
tests/test_backends.py runs this module under jax and torch too."""

import keras
import numpy as np
import pytest
from neutral_testing import BACKENDS
from neutral_testing import images
from neutral_testing import max_relative_difference
from neutral_testing import numpy
from neutral_testing import outputs
from neutral_testing import randomize_batchnorm
from neutral_testing import run_on
from pruning_testing import kept_fraction
from pruning_testing import prune_masked_and_slim

import ekg_keras
from ekg_keras.batchnorm import batchnorm_layers
from ekg_keras.methods.oneshot import OneShot

BACKEND = keras.backend.backend()
OTHERS = tuple(b for b in BACKENDS if b != BACKEND)
TENSORFLOW_ONLY = ("ekg", "lfpc", "nppm", "sp")


IMPORT_AND_PRUNE = """
import sys
from keras.src.utils import module_utils
# Keras itself imports TensorFlow to serialize a config when it is
# installed (`tf.available` in serialization_lib); hide it from Keras to
# see what ekg_keras needs.
module_utils.tensorflow._available = False
import ekg_keras
print("import", "tensorflow" in sys.modules)
model = ekg_keras.models.resnet20(input_shape=(16, 16, 3))
ekg_keras.prune(model, flops=0.5, verbose=0)
print("prune", "tensorflow" in sys.modules)
"""


# In a fresh process (another backend, or nothing imported yet).
@pytest.mark.slow
def test_import_and_data_free_pruning_load_tensorflow_only_on_it():
    out = run_on(BACKEND, IMPORT_AND_PRUNE).split("\n")
    loaded = str(BACKEND == "tensorflow")
    assert f"import {loaded}" in out and f"prune {loaded}" in out, out


def test_resnet56_meets_the_target_and_masked_equals_slim():
    """The issue's "done when": CIFAR's ResNet-56 at 32x32."""
    model = randomize_batchnorm(
        ekg_keras.models.resnet56(input_shape=(32, 32, 3))
    )
    masked, small = prune_masked_and_slim(model, 0.5)
    assert 0.45 < kept_fraction(model, small) <= 0.5
    x = images(4, 32)
    assert max_relative_difference(outputs(small, x), outputs(masked, x)) < 1e-5


@pytest.mark.parametrize(
    "criterion", ["l1", "l2", "fpgm", "bn_scale", "random"]
)
def test_each_weight_criterion_prunes_to_the_target(criterion):
    model = randomize_batchnorm(
        ekg_keras.models.resnet20(input_shape=(16, 16, 3))
    )
    masked, small = prune_masked_and_slim(model, 0.5, criterion=criterion)
    assert kept_fraction(model, small) <= 0.5
    x = images(2, 16)
    assert max_relative_difference(outputs(small, x), outputs(masked, x)) < 1e-5


def test_l1_keeps_the_filters_of_largest_l1_norm():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    small = ekg_keras.prune(model, 0.5, method="l1", verbose=0)
    kernel = numpy(model.get_layer("conv").kernel)
    norms = np.abs(kernel).sum(axis=(0, 1, 2))
    kept = small.get_layer("conv").filters
    expected = np.sort(np.argsort(-norms)[:kept])
    np.testing.assert_allclose(
        numpy(small.get_layer("conv").kernel), kernel[..., expected]
    )


def test_taylor_scores_are_the_backends_gradient_of_the_loss():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(4, 1, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    masked = ekg_keras.wrap(model)
    graph = ekg_keras.graph.trace(masked)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4, 4, 3)).astype("float32")
    y = rng.integers(0, 3, 8)
    from ekg_keras.taylor import default_loss
    from ekg_keras.taylor import taylor_scores

    scores = taylor_scores(masked, graph, (x, y))
    group = graph.channels("conv").outputs[0].group[0]
    mask = masked.get_layer("conv").filter_mask
    loss = default_loss(model)

    def loss_at(values):
        mask.assign(values)
        return float(numpy(loss(y, masked(x))))

    step = 1e-2
    for c in range(4):
        up, down = np.ones(4, "float32"), np.ones(4, "float32")
        up[c], down[c] = 1 + step, 1 - step
        derivative = (loss_at(up) - loss_at(down)) / (2 * step)
        np.testing.assert_allclose(
            scores[group][c], abs(derivative), rtol=1e-2, atol=1e-5
        )
    mask.assign(np.ones(4, "float32"))


def test_fold_batchnorm_is_exact():
    model = randomize_batchnorm(
        ekg_keras.models.resnet20(input_shape=(16, 16, 3))
    )
    folded = ekg_keras.fold_batchnorm(model)
    assert batchnorm_layers(model) and not batchnorm_layers(folded)
    x = images(4, 16)
    assert max_relative_difference(outputs(folded, x), outputs(model, x)) < 1e-5


def test_recalibrate_batchnorm_gives_the_batch_statistics():
    """The statistics TensorFlow's path computes (the mean over batches of
    each batch's mean and biased variance), checked against NumPy."""
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(5, 1, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 1, name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    randomize_batchnorm(model)
    rng = np.random.default_rng(1)
    data = rng.standard_normal((150, 4, 4, 3)).astype("float32")
    assert ekg_keras.recalibrate_batchnorm(model, data) == 3

    def weights(name):
        return [
            numpy(w).astype(np.float64) for w in model.get_layer(name).weights
        ]

    (w1, b1), (w2, b2) = weights("conv1"), weights("conv2")
    gamma, beta = weights("bn1")[:2]
    epsilon = model.get_layer("bn1").epsilon
    sums = np.zeros((4, 6))
    for start in range(0, 150, 64):
        batch = data[start : start + 64].astype(np.float64)
        h1 = batch @ w1[0, 0] + b1
        m1, v1 = h1.mean(axis=(0, 1, 2)), h1.var(axis=(0, 1, 2))
        y1 = np.maximum(gamma * (h1 - m1) / np.sqrt(v1 + epsilon) + beta, 0)
        h2 = y1 @ w2[0, 0] + b2
        sums[0, :5] += m1
        sums[1, :5] += v1
        sums[2] += h2.mean(axis=(0, 1, 2))
        sums[3] += h2.var(axis=(0, 1, 2))
    expected = sums / 3
    bn1, bn2 = model.get_layer("bn1"), model.get_layer("bn2")
    for got, want in [
        (bn1.moving_mean, expected[0, :5]),
        (bn1.moving_variance, expected[1, :5]),
        (bn2.moving_mean, expected[2]),
        (bn2.moving_variance, expected[3]),
    ]:
        np.testing.assert_allclose(numpy(got), want, rtol=1e-4, atol=1e-5)


def test_mobilenetv2_prunes_to_half_its_flops():
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10
    )
    masked, small = prune_masked_and_slim(model, 0.5)
    assert kept_fraction(model, small) <= 0.5
    x = images(2, 32)
    assert max_relative_difference(outputs(small, x), outputs(masked, x)) < 1e-4


def test_plain_finetuning_trains_through_fit():
    model = ekg_keras.models.resnet20(input_shape=(8, 8, 3))
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 10, 32)
    options = dict(method="oneshot", data=(x, y), recalibrate=False)
    options.update(verbose=0, finetune_options={"batch_size": 16})
    untuned = ekg_keras.prune(model, 0.5, **options)
    tuned = ekg_keras.prune(model, 0.5, finetune_epochs=1, **options)
    assert kept_fraction(model, tuned) <= 0.5
    moved = [
        not np.allclose(numpy(a), numpy(b))
        for a, b in zip(untuned.trainable_weights, tuned.trainable_weights)
    ]
    assert all(moved)
    assert np.isfinite(numpy(tuned(x[:4]))).all()


def test_methods_for_other_backends_are_refused_in_one_line():
    elsewhere = OTHERS[0]

    class Elsewhere(OneShot):
        backends = (elsewhere,)

    model = ekg_keras.models.resnet20(input_shape=(16, 16, 3))
    with pytest.raises(NotImplementedError) as raised:
        Elsewhere(model, 0.5)
    message = str(raised.value)
    assert "\n" not in message
    assert f"KERAS_BACKEND={elsewhere}" in message
    assert f"Received: KERAS_BACKEND={BACKEND}" in message
    refused = []
    for name in ekg_keras.methods.names():
        method_class = ekg_keras.methods.get(name).method_class
        if method_class.backends and BACKEND not in method_class.backends:
            refused.append(name)
            x = images(8, 16)
            with pytest.raises(NotImplementedError, match=BACKEND):
                ekg_keras.prune(
                    model, 0.5, method=name, data=(x, np.zeros(8, "int32"))
                )
    expected = () if BACKEND == "tensorflow" else TENSORFLOW_ONLY
    assert tuple(sorted(refused)) == expected


LOAD_AND_COMPARE = """
import sys
import keras
import numpy as np
model = keras.saving.load_model(sys.argv[1])
saved = np.load(sys.argv[2])
y = model.predict(saved["x"], batch_size=len(saved["x"]), verbose=0)
print(float(np.abs(y - saved["y"]).max() / np.abs(saved["y"]).max()))
"""


# In a fresh process (another backend, or nothing imported yet).
@pytest.mark.slow
def test_a_slim_keras_file_loads_on_the_other_backends(tmp_path):
    model = randomize_batchnorm(
        ekg_keras.models.resnet20(input_shape=(16, 16, 3))
    )
    small = ekg_keras.prune(model, 0.5, verbose=0)
    path = tmp_path / f"slim_{BACKEND}.keras"
    small.save(path)
    x = images(4, 16)
    np.savez(tmp_path / "outputs.npz", x=x, y=outputs(small, x))
    for backend in OTHERS:
        out = run_on(backend, LOAD_AND_COMPARE, path, tmp_path / "outputs.npz")
        assert float(out.split()[-1]) < 1e-5, (backend, out)


class _Mix(keras.layers.Layer):
    """A layer the FLOPs table does not know (its MACs are traced)."""

    def call(self, x):
        return keras.ops.matmul(x, keras.ops.ones((x.shape[-1],) * 2))


def test_traced_macs_count_on_tensorflow_and_are_named_elsewhere():
    inputs = keras.Input((4, 4, 3))
    x = _Mix(name="mix")(keras.layers.Conv2D(8, 3, name="conv")(inputs))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(x))
    if BACKEND == "tensorflow":
        assert ekg_keras.count_flops(model).layer_macs["mix/matmul"] == 256
        return
    with pytest.warns(UserWarning, match="'mix/matmul'.*needs TensorFlow"):
        report = ekg_keras.count_flops(model)
    assert "mix/matmul" not in report.layer_macs
