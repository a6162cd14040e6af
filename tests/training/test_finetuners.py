"""Tests for ekg_keras.training: training phases, the Fitter, fine-tuners."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ekg_keras
from ekg_keras.training import Fitter
from ekg_keras.training import TrainingPhase
from ekg_keras.training import finetuners


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))


def _data(n=40):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8, 8, 3)).astype("float32")
    return x, (np.arange(n) % 4).astype("int32")


def test_fitter_trains_a_phase_with_its_default_optimizer():
    model = _model()
    before = model.get_layer("a").kernel.numpy().copy()
    fitter = Fitter(_data(), batch_size=16, verbose=0)
    fitter.fit(
        TrainingPhase(
            "finetune",
            model,
            2,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    )
    assert not np.allclose(before, model.get_layer("a").kernel.numpy())
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.nesterov


def test_a_phase_traces_its_train_step_once(monkeypatch):
    # Variables created while tracing make a `tf.function` trace twice;
    # the fitter creates them before `fit`.
    model = _model()
    traced = []
    step = type(model).train_step

    def counting(self, data):
        traced.append(1)
        return step(self, data)

    monkeypatch.setattr(type(model), "train_step", counting)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    Fitter(_data(), batch_size=16, verbose=0).fit(
        TrainingPhase("finetune", model, 2, loss=loss)
    )
    assert len(traced) == 1
    assert model.optimizer.built and model.optimizer.iterations.numpy() > 0


def test_fitter_data_views():
    x, y = _data()
    fitter = Fitter((x, y), batch_size=16)
    ordered = list(fitter.ordered_data(with_ids=True))
    np.testing.assert_array_equal(
        np.concatenate([f["id"] for f, _ in ordered]), np.arange(40)
    )
    shuffled = list(fitter.training_data(with_ids=True))
    assert len(shuffled) == 2  # full batches only
    ids = np.concatenate([f["id"].numpy() for f, _ in shuffled])
    assert sorted(ids) != list(ids) or len(set(ids)) == 32
    for features, labels in shuffled:
        np.testing.assert_array_equal(
            features["image"].numpy(), x[features["id"].numpy()]
        )
        np.testing.assert_array_equal(labels.numpy(), y[features["id"]])
    plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match="indexed by sample id"):
        Fitter(plain).ordered_data(with_ids=True)
    with pytest.raises(ValueError, match="Training needs data"):
        Fitter(None)
    with pytest.raises(ValueError, match="at least one epoch"):
        TrainingPhase("x", _model(), 0)


def test_finetuner_registry_and_plain_finetuning():
    assert {"plain", "ekg"} <= set(finetuners.names())
    with pytest.raises(ValueError, match="Unknown fine-tuner 'x'"):
        finetuners.get("x")
    model = ekg_keras.wrap(_model())
    phase = finetuners.get("plain").phase(model, 3, Fitter(_data()))
    assert phase.model is model and phase.epochs == 3
    assert phase.loss is not None and not phase.with_ids
    with pytest.raises(ValueError, match="takes no options"):
        finetuners.get("plain").phase(model, 3, Fitter(_data()), colour=1)


def test_every_method_with_a_trajectory_can_use_ekg_finetuning():
    x, y = _data(48)
    search = ekg_keras.EKGSearch(
        _model(), 0.6, (x, y), val_per_class=4, subset_per_class=4, verbose=0
    )
    search.run()
    masked_before = [m.copy() for m in search.setup.current_keep()]
    fitter = Fitter((x, y), batch_size=16, verbose=0)
    finetuners.finetune(search, 1, fitter, num_teachers=2, verbose=0)
    for a, b in zip(masked_before, search.setup.current_keep(), strict=True):
        np.testing.assert_array_equal(a, b)
    oneshot = ekg_keras.methods.get("oneshot").create(_model(), 0.6, verbose=0)
    oneshot.run()
    with pytest.raises(ValueError, match="leaves none"):
        finetuners.finetune(oneshot, 1, fitter, finetuner="ekg")


def test_a_finetuner_declares_what_data_it_needs():
    x, y = _data()
    plain_dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    ekg = finetuners.get("ekg")
    assert ekg.needs_sample_ids and ekg.needs_trajectory
    ekg.check_data((x, y))  # Arrays get their ids from the Fitter.
    with pytest.raises(ValueError, match="indexed by sample id"):
        ekg.check_data(plain_dataset)
    plain = finetuners.get("plain")
    assert not plain.needs_sample_ids and not plain.needs_trajectory
    plain.check_data(plain_dataset)
    settings = {"verbose": 0, "views_augment": None, "epochs": 3}
    assert ekg.options_from(settings) == {"verbose": 0, "augment": None}
    assert plain.options_from(settings) == {}
    with pytest.raises(ValueError, match="'plain' is registered already"):
        finetuners.register_finetuner(finetuners.PlainFineTuning)


def test_finetune_model_takes_options_from_settings():
    seen = {}

    @finetuners.register_finetuner
    class Recording(finetuners.PlainFineTuning):
        name = "test_recording"

        def options_from(self, settings):
            return {k: v for k, v in settings.items() if k == "colour"}

        def phase(self, model, epochs, fitter, trajectory=None, **options):
            seen.clear()
            seen.update(options)
            return super().phase(model, epochs, fitter)

    model = ekg_keras.wrap(_model())
    fitter = Fitter(_data(), batch_size=16, verbose=0)
    try:
        settings = {"colour": "red", "size": 2}
        tuned = finetuners.finetune_model(
            model, 1, fitter, "test_recording", settings=settings
        )
        assert tuned is model and seen == {"apply_keep": None, "colour": "red"}
        finetuners.finetune_model(
            model, 1, fitter, Recording(), settings=settings, colour="blue"
        )
        assert seen["colour"] == "blue"
    finally:
        finetuners._FINETUNERS.unregister("test_recording")
    with pytest.raises(ValueError, match="pass their `trajectory`"):
        finetuners.finetune_model(model, 1, fitter, "ekg")
