"""Bad input is refused before any work (issue 30): every registered method
through `prune`, `recalibrate_batchnorm` and the `Fitter`, then a
property test over malformed data and options."""

import fractions
import functools
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import event
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from model_testing import kept_fraction
from model_testing import random_classification
from model_testing import two_conv_net

import ekg_keras
from ekg_keras import methods
from ekg_keras import validation
from ekg_keras.numerics import NonFiniteError
from ekg_keras.training import Fitter

N = 32


def _data():
    return random_classification(N, size=8)


def _with(array, index, value):
    array = array.astype("float32")
    array[index] = value
    return array


def _bad_inputs():
    """name -> (data, expected error, message pattern)."""
    x, y = _data()
    return {
        "nan_image": (
            (_with(x, (5, 3, 3, 0), np.nan), y),
            NonFiniteError,
            r"`data` should hold finite numbers; sample 5 holds NaN",
        ),
        "inf_image": (
            (_with(x, (7, 0, 0, 1), np.inf), y),
            NonFiniteError,
            r"sample 7 holds NaN or infinity",
        ),
        "nan_label": (
            (x, _with(y, 3, np.nan)),
            NonFiniteError,
            r"Labels in `data` should hold finite numbers; sample 3",
        ),
        "fractional_label": (
            (x, _with(y, 4, 1.5)),
            ValueError,
            r"integer class ids. Received 1.5 for sample 4",
        ),
        "lengths": (
            (x, y[:20]),
            ValueError,
            rf"one label per image. Received {N} images and 20 labels",
        ),
        "label_too_high": (
            (x, np.where(np.arange(N) == 9, 4, y)),
            ValueError,
            r"should be in \[0, 4\) for a model with 4 outputs. Received 4 "
            r"for sample 9",
        ),
        "negative_label": (
            (x, np.where(np.arange(N) == 2, -1, y)),
            ValueError,
            r"should be in \[0, 4\).*Received -1 for sample 2",
        ),
        "image_shape": (
            (x[:, :6, :6], y),
            ValueError,
            r"input shape \(8, 8, 3\) \(without the batch axis\). Received "
            r"\(6, 6, 3\)",
        ),
        "one_hot_labels": (
            (x, np.eye(4, dtype="float32")[y]),
            ValueError,
            r"integer class ids, one per sample. Received labels of shape",
        ),
        "string_images": (
            (np.full((N, 8, 8, 3), "a"), y),
            TypeError,
            r"should hold numbers. Received dtype <U1",
        ),
        "unbatched_dataset": (
            tf.data.Dataset.from_tensor_slices((x, y)),
            ValueError,
            r"batches of images of shape \(8, 8, 3\).*Received elements of "
            r"shape \(8, 8, 3\); batch the dataset",
        ),
        "nan_in_first_batch": (
            tf.data.Dataset.from_tensor_slices(
                (_with(x, (1, 0, 0, 0), np.nan), y)
            ).batch(8),
            NonFiniteError,
            r"sample 1 of the first batch holds NaN",
        ),
        "unlabelled_dataset": (
            tf.data.Dataset.from_tensor_slices(x).batch(8),
            ValueError,
            r"should yield \(inputs, labels\) batches",
        ),
        "not_data": ("x.npy", TypeError, r"Received: str"),
    }


BAD = _bad_inputs()


@pytest.fixture
def no_search(monkeypatch):
    """Makes every method's search fail loudly: a refusal must come first."""

    def search(self, fitter):
        raise AssertionError(f"{self.name}: the search started")

    for name in methods.names():
        monkeypatch.setattr(methods.get(name).method_class, "search", search)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def _assert_untouched(model, before):
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def _prune(model, name, **kwargs):
    options = methods.get(name).method_class.smoke_options
    return ekg_keras.prune(
        model,
        method=name,
        **{"flops": 0.5, "verbose": 0, **options, **kwargs},
    )


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("name", methods.names())
def test_every_method_refuses_bad_data_before_its_search(
    name, case, no_search
):
    data, error, message = BAD[case]
    model = two_conv_net(size=8)
    before = _weights(model)
    with pytest.raises(error, match=message) as raised:
        _prune(model, name, data=data)
    assert "\n" not in str(raised.value)
    assert isinstance(raised.value, (ValueError, TypeError))
    _assert_untouched(model, before)


@pytest.mark.parametrize("name", methods.names())
def test_a_bad_batch_after_the_first_is_refused_as_it_is_read(name):
    """A dataset is checked batch by batch as the method reads it: the
    error names the batch and sample, in one line, and the model is
    untouched."""
    x, y = _data()
    x = _with(x, (8 * 2 + 3, 1, 1, 2), np.nan)
    if methods.get(name).method_class.needs_sample_ids:
        x = {"image": x, "id": np.arange(N)}
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model = two_conv_net(size=8)
    before = _weights(model)
    with pytest.raises(NonFiniteError, match="sample 3 of batch 2") as raised:
        _prune(model, name, data=data)
    assert "\n" not in str(raised.value)
    assert isinstance(raised.value, ValueError)
    _assert_untouched(model, before)


def test_every_real_scalar_is_a_number():
    for value in (np.float32(0.5), np.array(0.5), tf.constant(0.5)):
        assert validation.real_number(value) == 0.5
        assert type(validation.real_number(value)) is float
    assert validation.real_number(fractions.Fraction(1, 2)) == 0.5
    assert type(validation.real_number(np.int64(3))) is int
    assert validation.real_number(np.bool_(True)) is np.bool_(True)
    assert validation.real_number("0.5") == "0.5"
    scope = ekg_keras.PruningScope(flops=np.array(0.25), latency=None)
    assert scope.flops == 0.25 and type(scope.flops) is float
    with pytest.raises(ValueError, match=r"\(0, 1\].*Received: flops=True"):
        ekg_keras.PruningScope(flops=True)


def test_a_method_needing_sample_ids_refuses_a_dataset_without_them(
    no_search,
):
    x, y = _data()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match="indexed by sample id"):
        _prune(two_conv_net(size=8), "sp", data=data)


@pytest.mark.parametrize("name", methods.names())
def test_runtime_under_a_flops_budget_warns(name, no_search):
    model = two_conv_net(size=8)
    with pytest.warns(UserWarning, match="runtime='onnx' has no effect"):
        with pytest.raises(AssertionError, match="the search started"):
            _prune(model, name, data=_data(), runtime="onnx")


@pytest.mark.parametrize("name", methods.names())
def test_a_masked_model_is_pruned_again_with_numpy_scalars(name):
    """Re-pruning a masked model (`slim=False`) prunes what it computes
    now, instead of silently returning it; NumPy scalars and 0-d arrays
    are numbers wherever a number is (scope, options, `prune`'s own)."""
    model = two_conv_net(size=8)
    masked = ekg_keras.prune(model, 0.7, slim=False, verbose=0)
    before = _weights(masked)
    again = _prune(
        masked,
        name,
        flops=np.float32(0.5),
        data=_data(),
        round_to=np.int64(2),
        min_channels=np.array(2),
        recalibrate_steps=np.int32(1),
    )
    _assert_untouched(masked, before)
    assert not ekg_keras.layers.prunable_layers(again)
    assert kept_fraction(masked, again) <= 0.5 + 1e-6
    assert kept_fraction(model, again) <= 0.7 * 0.5 + 1e-6
    assert all(np.isfinite(w).all() for w in again.get_weights())


def test_unused_prune_arguments_warn():
    model = two_conv_net(size=8)
    with pytest.warns(UserWarning, match="recalibrate_steps=2. has no"):
        ekg_keras.prune(model, 0.5, recalibrate_steps=2, verbose=0)
    with pytest.warns(UserWarning, match="finetune_options=.*no effect"):
        ekg_keras.prune(
            model, 0.5, data=_data(), finetune_options={"batch_size": 8},
            method="oneshot", verbose=0,
        )
    with pytest.raises(ValueError, match="finetune_epochs` should be a non"):
        ekg_keras.prune(model, 0.5, finetune_epochs=-1, verbose=0)


def test_data_free_pruning_warns_that_batchnorm_is_stale(capsys):
    model = two_conv_net(size=8)
    with pytest.warns(UserWarning, match="recalibrate_batchnorm") as caught:
        pruned = ekg_keras.prune(model, 0.5, verbose=1)
    stale = [w for w in caught if "batch-normalization" in str(w.message)]
    assert len(stale) == 1
    line = capsys.readouterr().out.splitlines()[-1]
    measured = ekg_keras.count_flops(pruned).macs
    assert f"{measured / 1e6:.2f}M MACs" in line
    assert "returned a slim model" in line
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ekg_keras.prune(model, 0.5, data=_data(), method="oneshot", verbose=0)


def test_recalibration_refuses_non_finite_images_and_keeps_statistics():
    model = two_conv_net(size=8)
    x, _ = _data()
    before = _weights(model)
    with pytest.raises(NonFiniteError, match="sample 5 holds NaN"):
        ekg_keras.recalibrate_batchnorm(model, _with(x, (5, 0, 0, 0), np.nan))
    dataset = tf.data.Dataset.from_tensor_slices(
        _with(x, (20, 0, 0, 0), np.inf)
    ).batch(8)
    with pytest.raises(NonFiniteError, match="sample 4 of batch 2") as err:
        ekg_keras.recalibrate_batchnorm(model, dataset)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"input shape \(8, 8, 3\)"):
        ekg_keras.recalibrate_batchnorm(model, x[:, :4])
    _assert_untouched(model, before)


def test_the_fitter_refuses_bad_labels_as_read():
    x, y = _data()
    with pytest.raises(NonFiniteError, match="Labels in `data`"):
        Fitter((x, _with(y, 0, np.inf)))
    labels = _with(y, 17, np.nan)
    stream = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8)
    fitter = Fitter(stream, verbose=0)
    model = two_conv_net(size=8)
    phase = ekg_keras.training.finetuners.get("plain").phase(model, 1, fitter)
    with pytest.raises(ValueError, match="Received nan for sample 1 of batch"):
        fitter.fit(phase)


def test_dynamic_models_check_images_at_input_shape():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(8, 3, padding="same")(keras.layers.ReLU()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    x, y = _data()
    pruned = ekg_keras.prune(
        model, 0.6, data=(x, y), input_shape=(8, 8, 3), verbose=0
    )
    assert pruned.input_shape == (None, None, None, 3)
    with pytest.raises(ValueError, match=r"\(6, 6, 3\) \(without the batch"):
        ekg_keras.prune(
            model, 0.6, data=(x, y), input_shape=(6, 6, 3), verbose=0
        )
    with pytest.raises(ValueError, match=r"\(None, None, 3\).*\(8, 8, 1\)"):
        ekg_keras.prune(model, 0.6, data=(x[..., :1], y), verbose=0)


# "Refused clearly or pruned correctly": malformed data and options.

VALID_FLOPS = [np.float32(0.4), np.float64(0.6), np.array(0.5), 1]
VALID_FLOPS += [fractions.Fraction(1, 2), tf.constant(0.45)]
INVALID_FLOPS = [-0.5, 0.0, 1.5, float("nan"), 1e-9, True, "0.5", None]
INVALID_FLOPS += [np.array([0.5, 0.5])]


@st.composite
def flops_values(draw):
    """Mostly valid fractions (floats, NumPy and other real scalars)."""
    kind = draw(st.sampled_from(["float"] * 3 + ["scalar", "invalid"]))
    if kind == "float":
        return draw(st.floats(0.4, 0.95))
    values = VALID_FLOPS if kind == "scalar" else INVALID_FLOPS
    return draw(st.sampled_from(values))


DAMAGES = (
    "image_nan",
    "image_inf",
    "image_huge",
    "label_high",
    "label_negative",
    "label_nan",
    "label_fraction",
    "labels_short",
    "image_size",
    "image_channels",
)


@st.composite
def calls(draw):
    """A `prune` call on `two_conv_net(8)`: data with none, one or two
    damages, as arrays or a dataset or absent, and numbers of any kind."""
    n = draw(st.integers(2, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    damages = draw(st.lists(st.sampled_from(DAMAGES), max_size=2))
    size = 6 if "image_size" in damages else 8
    channels = 1 if "image_channels" in damages else 3
    x = rng.standard_normal((n, size, size, channels)).astype("float32")
    y = rng.integers(0, 4, n)
    sample = rng.integers(n)
    for damage, value in (
        ("image_nan", np.nan),
        ("image_inf", -np.inf),
        ("image_huge", 1e30),
    ):
        if damage in damages:
            x[sample, 0, 0, 0] = value
    if {"label_nan", "label_fraction"} & set(damages):
        y = y.astype("float32")
    for damage, value in (
        ("label_high", 4),
        ("label_negative", -1),
        ("label_nan", np.nan),
        ("label_fraction", 0.5),
    ):
        if damage in damages:
            y[rng.integers(n)] = value
    if "labels_short" in damages:
        y = y[: n - draw(st.integers(1, 2))]
    data = (x, y)
    form = draw(st.sampled_from(["arrays", "dataset", "none"]))
    if form == "dataset" and len(x) == len(y):
        batch = draw(st.integers(1, 8))
        data = tf.data.Dataset.from_tensor_slices(data).batch(batch)
    return {
        "flops": draw(flops_values()),
        "data": None if form == "none" else data,
        "method": draw(st.sampled_from(["oneshot", "l1", "l2"])),
        "criterion": draw(st.sampled_from([None, "taylor"])),
        "round_to": draw(st.sampled_from([1] * 4 + [2, np.int64(2), 0, 2.5])),
    }


@functools.cache
def _smallest_fraction(round_to):
    setup = methods.PruningSetup(two_conv_net(size=8), None, round_to=round_to)
    return setup.smallest_fraction()


def _expected(call):
    """"prune" if `call` must prune, "refuse" if it must be refused, or
    "either" (finite data too large for float32 in the network may be
    refused when batch normalization overflows)."""
    flops = validation.real_number(call["flops"])
    if isinstance(flops, bool) or not isinstance(flops, (int, float)):
        return "refuse"
    if not 0 < flops <= 1:
        return "refuse"
    round_to = validation.real_number(call["round_to"])
    if not isinstance(round_to, int) or round_to < 1:
        return "refuse"
    if flops == 1:
        return "prune"  # Met by the unpruned model, returned as it is.
    if call["criterion"] == "taylor" and call["data"] is None:
        return "refuse"
    if flops < _smallest_fraction(round_to):
        return "refuse"
    data = call["data"]
    if data is None:
        return "prune"
    if isinstance(data, tf.data.Dataset):
        data = tuple(np.concatenate(p) for p in zip(*data.as_numpy_iterator()))
    x, y = data
    valid = (
        len(x) == len(y)
        and x.shape[1:] == (8, 8, 3)
        and np.isfinite(x).all()
        and np.isin(y, [0, 1, 2, 3]).all()
    )
    if not valid:
        return "refuse"
    return "prune" if np.abs(x).max() < 1e6 else "either"


@pytest.mark.slow
@settings(max_examples=40, derandomize=True, deadline=None, database=None)
@given(calls())
def test_malformed_calls_are_refused_clearly_or_pruned_correctly(call):
    keras.utils.set_random_seed(0)
    model = two_conv_net(size=8)
    before = _weights(model)
    options = {"criterion": call["criterion"]} if call["criterion"] else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruned = ekg_keras.prune(
                model,
                call["flops"],
                data=call["data"],
                method=call["method"],
                round_to=call["round_to"],
                verbose=0,
                **options,
            )
    except (ValueError, TypeError) as error:
        event(f"refused: {str(error)[:40]}")
        assert "\n" not in str(error), str(error)
        assert _expected(call) != "prune", str(error)
    else:
        event("pruned" if pruned is not model else "returned unchanged")
        assert _expected(call) != "refuse"
        flops = float(validation.real_number(call["flops"]))
        assert kept_fraction(model, pruned) <= flops + 1e-6
        assert all(np.isfinite(w).all() for w in pruned.get_weights())
        x, _ = _data()
        assert np.isfinite(np.asarray(pruned(x[:4]))).all()
    _assert_untouched(model, before)
