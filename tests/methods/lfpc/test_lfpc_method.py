"""Tests for the registered "lfpc" method: ResNet-20 end to end, the budget,
resume, MirroredStrategy, the trajectory, the trainer, bad input."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from lfpc_testing import data
from lfpc_testing import two_conv_model
from model_testing import accuracy

import ekg_keras
from ekg_keras import methods
from ekg_keras.methods import options as options_lib
from ekg_keras.methods.lfpc import CriteriaSampler
from ekg_keras.methods.lfpc import LFPCOptions
from ekg_keras.methods.lfpc import choose_structure
from ekg_keras.methods.lfpc import plot_criteria
from ekg_keras.training import Fitter
from ekg_keras.training import finetuners
from trainers import cifar

SMALL = {"search_epochs": 4, "batch_size": 16, "learning_rate": 0.05}


def _small_method(flops=0.5, **kwargs):
    keras.utils.set_random_seed(1)
    return methods.get("lfpc").create(
        two_conv_model(), flops, data(), verbose=0, **{**SMALL, **kwargs}
    )


def _fitter(callbacks=(), strategy=None):
    return Fitter(data(), callbacks=callbacks, strategy=strategy, verbose=0)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished LFPC run on the small model (TensorBoard on), shared by
    the tests that only read it or compare against it."""
    method = _small_method(
        tensorboard_dir=str(tmp_path_factory.mktemp("lfpc_tb")),
        trajectory_steps=3,
        trajectory_samples=24,
    )
    method.run(_fitter())
    return method


def test_prunes_resnet20_on_digits_end_to_end(trained_resnet20, digits16):
    train = (digits16.x_train, digits16.y_train)
    small = ekg_keras.prune(
        trained_resnet20,
        0.5,
        method="lfpc",
        data=train,
        search_epochs=3,
        learning_rate=0.05,
        finetune_epochs=1,
        finetune_options={"learning_rate": 0.01, "batch_size": 128},
        verbose=0,
    )
    kept = (
        ekg_keras.count_flops(small).macs
        / ekg_keras.count_flops(trained_resnet20).macs
    )
    assert 0.49 < kept <= 0.5
    assert not ekg_keras.layers.prunable_layers(small)  # Slimmed.
    before = accuracy(trained_resnet20, digits16.x_test, digits16.y_test)
    after = accuracy(small, digits16.x_test, digits16.y_test)
    assert before > 0.9
    assert after > before - 0.1


@pytest.mark.parametrize("counts", ["argmax", "expected"])
def test_the_chosen_structure_meets_flops_within_one_point(counts):
    keras.utils.set_random_seed(0)
    masked = ekg_keras.wrap(ekg_keras.models.resnet20(input_shape=(8, 8, 3)))
    rng = np.random.default_rng(3)
    for flops in (0.3, 0.5, 0.7):
        sampler = CriteriaSampler(masked, flops)
        setup = sampler.setup
        for variable in sampler.trainable_weights:
            variable.assign(rng.normal(0, 2, variable.shape))
        structure = choose_structure(sampler, setup, counts)
        assert flops - 0.01 < structure.flops_fraction <= flops
        setup.apply(structure.keep)
        kept = setup.fraction(setup.keep_counts(setup.current_keep()))
        assert kept == pytest.approx(structure.flops_fraction)
        probabilities = sampler.criteria_probabilities().numpy()
        names = [sampler.criteria[i] for i in probabilities.argmax(1)]
        assert list(structure.criteria) == names


def test_history_structure_plot_and_tensorboard(finished, tmp_path):
    method = finished
    assert method.finished
    assert len(method.history) == SMALL["search_epochs"]
    for record in method.history:
        np.testing.assert_allclose(
            record.criteria_probabilities.sum(1), 1.0, rtol=1e-6
        )
        assert set(record.chosen) <= set(method.options.criteria)
    # The history ends where the structure starts: the last probabilities.
    np.testing.assert_allclose(
        method.history[-1].criteria_probabilities,
        method.structure.probabilities,
    )
    assert method.history[-1].tau < method.history[0].tau
    assert set(method.criteria_per_group) == {"a", "b"}
    for mask, kept in zip(
        method.structure.keep, method.setup.current_keep(), strict=True
    ):
        np.testing.assert_array_equal(mask, kept)
    assert ekg_keras.layers.prunable_layers(method.model)
    figure = plot_criteria(method, str(tmp_path / "criteria.png"))
    assert os.path.getsize(tmp_path / "criteria.png") > 0
    assert len(figure.axes) == 2
    events = glob.glob(
        os.path.join(method.tensorboard_dir, "events.out.tfevents.*")
    )
    tags = {
        value.tag
        for path in events
        for event in tf.compat.v1.train.summary_iterator(path)
        for value in event.summary.value
    }
    assert "lfpc/expected_flops" in tags
    assert "lfpc/loss" in tags
    assert any(tag.startswith("criteria/a/") for tag in tags)


class _Killed(Exception):
    pass


class _KillAfter(keras.callbacks.Callback):
    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise _Killed(f"killed after epoch {epoch + 1}")


@pytest.mark.slow
def test_resumes_after_a_kill(finished, tmp_path):
    whole = finished
    killed = _small_method(checkpoint_dir=str(tmp_path))
    with pytest.raises(_Killed):
        killed.run(_fitter(callbacks=[_KillAfter(2)]))
    resumed = _small_method(checkpoint_dir=str(tmp_path))
    resumed.run(_fitter(callbacks=[_KillAfter(2)]))  # Starts at epoch 3.
    assert int(resumed.sampler.step.numpy()) == int(whole.sampler.step.numpy())
    for name in ("criteria_logits", "count_logits"):
        np.testing.assert_allclose(
            getattr(resumed.sampler, name).numpy(),
            getattr(whole.sampler, name).numpy(),
            atol=1e-6,
        )
    assert [r.loss for r in resumed.history] == pytest.approx(
        [r.loss for r in whole.history]
    )
    for a, b in zip(resumed.structure.keep, whole.structure.keep, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device(finished, mirrored):
    one = finished
    two = _small_method(strategy=mirrored)
    two.run(_fitter(strategy=mirrored))
    for name in ("criteria_logits", "count_logits"):
        np.testing.assert_allclose(
            getattr(two.sampler, name).numpy(),
            getattr(one.sampler, name).numpy(),
            atol=1e-5,
        )
    assert two.structure.criteria == one.structure.criteria
    np.testing.assert_array_equal(
        two.structure.keep_counts, one.structure.keep_counts
    )


def test_trajectory_feeds_ekg_distillation(finished):
    method = finished
    trajectory = method.trajectory()
    assert trajectory.flops_fractions[0] == 1.0
    assert trajectory.flops_fractions[-1] == pytest.approx(
        method.structure.flops_fraction
    )
    assert np.all(np.diff(trajectory.flops_fractions) < 0)
    assert np.all(np.isfinite(trajectory.losses))
    for a, b in zip(trajectory.keep_masks[-1], method.structure.keep):
        np.testing.assert_array_equal(a, b)
    keep = [m.copy() for m in method.setup.current_keep()]
    finetuners.finetune(method, 1, _fitter(), "ekg", verbose=0, num_teachers=2)
    for a, b in zip(method.setup.current_keep(), keep, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_the_trainer_runs_lfpc_end_to_end(tmp_path):
    keras.utils.set_random_seed(0)
    pretrained = tmp_path / "pretrained.keras"
    ekg_keras.models.resnet20(input_shape=(8, 8, 3)).save(pretrained)
    summary = cifar.main(
        [
            "cifar.py",
            "--dataset=digits",
            "--image_size=8",
            "--model=resnet20",
            "--method=lfpc",
            (
                "--method_options=search_epochs=1,batch_size=128,"
                "criteria=l1/l2/adv_l1"
            ),
            "--flops=0.5",
            "--epochs=1",
            "--steps_per_epoch=2",
            "--batch_size=64",
            "--verbose=0",
            f"--pretrained={pretrained}",
            f"--model_dir={tmp_path / 'run'}",
        ]
    )
    assert summary["method"] == "lfpc"
    assert summary["stages"]["finetune"]["completed"]
    assert 0.49 < summary["flops_fraction"] <= 0.5
    assert os.path.exists(tmp_path / "run" / "prune" / "trajectory.npz")


def test_options_and_bad_input():
    parsed = options_lib.parse(
        LFPCOptions,
        ["criteria=l1/adv_l2", "search_epochs=5", "widths=1/0.5"],
    )
    options = options_lib.make_options(LFPCOptions, values=parsed)
    assert options.criteria == ("l1", "adv_l2")
    assert options.search_epochs == 5
    assert options.widths == (0.5, 1.0)
    every = options_lib.parse(LFPCOptions, ["widths=all"])
    assert options_lib.make_options(LFPCOptions, values=every).widths is None
    assert LFPCOptions().criteria == ("l1", "l2", "fpgm")
    assert LFPCOptions().widths == (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert methods.get("lfpc").method_class.finetuner == "cosine"
    model = two_conv_model()
    create = methods.get("lfpc").create
    with pytest.raises(ValueError, match="learns from data"):
        create(model, 0.5)
    with pytest.raises(ValueError, match="`val_fraction` should be in"):
        create(model, 0.5, data(), val_fraction=0.0)
    with pytest.raises(ValueError, match="`counts` should be one of"):
        create(model, 0.5, data(), counts="median")
    with pytest.raises(ValueError, match="'taylor' needs data"):
        create(model, 0.5, data(), criteria="l1/taylor")
    with pytest.raises(ValueError, match="`search_epochs` should be a"):
        create(model, 0.5, data(), search_epochs=0)
    with pytest.raises(ValueError, match="Unknown option colour"):
        create(model, 0.5, data(), colour="red")
    x, y = data()
    with pytest.raises(ValueError, match="Labels in `data` should be in"):
        create(model, 0.5, (x, y + 4), verbose=0).run(_fitter())
    x[3, 0, 0, 0] = np.nan
    with pytest.raises(ekg_keras.numerics.NonFiniteError, match="sample"):
        create(model, 0.5, (x, y), val_fraction=1.0, verbose=0).run(_fitter())
