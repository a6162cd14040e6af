"""The "sp" method end to end: ResNet-20 on digits, resume, concurrency,
bad input, the trainer and the "scratch" fine-tuner."""

import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import ekg_keras
from ekg_keras import methods
from ekg_keras.methods import SearchCheckpoint
from ekg_keras.methods.sp import StagewisePruning
from ekg_keras.methods.sp import plot_sp
from ekg_keras.methods.sp import reinitialize
from ekg_keras.methods.sp.manager import StageSearches
from ekg_keras.training import finetuners
from trainers import cifar

SMALL = {
    "supernet_epochs": 1,
    "val_per_class": 8,
    "num_ratios": 16,
    "population": 6,
    "iterations": 2,
    "manager_population": 4,
    "manager_iterations": 2,
    "budget_units": 20,
    "batch_size": 80,
}


def _run(model, data, directory, max_generations=None, **options):
    method = methods.get("sp").create(
        model,
        0.5,
        data,
        checkpoint_dir=str(directory),
        verbose=0,
        **{**SMALL, **options},
    )
    method.run(max_generations=max_generations)
    return method


def _trained_checkpoint(directory, target):
    """A checkpoint in `target` holding only the fixture's trained
    super-net (as saved after training), so a run there only searches."""
    shutil.copy(directory / "search" / "supernet.weights.h5", target)
    SearchCheckpoint(target).save({}, {"trained": True})


@pytest.fixture(scope="module")
def sp_run(trained_resnet20, digits16, tmp_path_factory):
    directory = tmp_path_factory.mktemp("sp")
    weights = [w.copy() for w in trained_resnet20.get_weights()]
    data = (digits16.x_train, digits16.y_train)
    method = _run(trained_resnet20, data, directory / "search")
    return method, weights, directory


def test_the_result_meets_flops_within_one_point(
    sp_run, trained_resnet20, digits16
):
    method, weights, directory = sp_run
    assert isinstance(method, StagewisePruning) and method.finished
    assert 0.49 <= method.kept_fraction() <= 0.5
    assert method.result.flops_fraction == pytest.approx(method.kept_fraction())
    for old, new in zip(weights, trained_resnet20.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    # Prefix masks: each group keeps its best-ranked channels.
    ranks = method.supernet.ranks()
    for keep, rank, count in zip(
        method.setup.current_keep(), ranks, method.result.keep_counts
    ):
        np.testing.assert_array_equal(keep, rank < count)
    # Held-out samples: 8 per class, by id.
    assert len(method.split) == 80
    assert np.all(np.bincount(method.split.labels) == 8)
    history = method.history
    assert [h.generation for h in history] == [1, 2]
    for entry in history:
        assert sum(entry.budgets) == pytest.approx(0.5)
        assert len(entry.stage_losses) == 3
    assert len(method.result.stage_curves) == 3
    plot_sp(method, directory / "sp.png")
    assert os.path.getsize(directory / "sp.png") > 0
    # Adapters are dropped: slimming gives a plain model of the network.
    small = ekg_keras.slim(method.model)
    x = digits16.x_test[:16]
    np.testing.assert_allclose(
        small(x, training=False),
        method.model(x, training=False),
        rtol=1e-4,
        atol=1e-4,
    )
    assert not any("adapter" in layer.name for layer in small.layers)


def test_a_resumed_search_ends_where_a_straight_one_does(
    sp_run, trained_resnet20, digits16, tmp_path
):
    method, _, directory = sp_run
    # A run whose super-net is trained (the first run's, as saved after
    # training) stops after one manager generation; a new run resumes it.
    _trained_checkpoint(directory, tmp_path)
    data = (digits16.x_train, digits16.y_train)
    first = _run(trained_resnet20, data, tmp_path, max_generations=1)
    assert not first.finished and len(first.history) == 1
    second = _run(trained_resnet20, data, tmp_path)
    assert second.finished
    np.testing.assert_array_equal(
        second.result.keep_counts, method.result.keep_counts
    )
    assert [h.loss for h in second.history] == pytest.approx(
        [h.loss for h in method.history]
    )


def test_stage_eas_give_the_same_result_concurrent_or_sequential(sp_run):
    method, _, _ = sp_run
    fitnesses = method.searches.fitnesses
    requests = list(
        enumerate(
            np.array(method.result.budgets) * 0.9 * method.setup.full_macs
        )
    )
    results = {}
    for parallel in ("threads", "sequential"):
        for fitness in fitnesses:
            fitness.losses_by_gene.clear()
        searches = StageSearches(
            fitnesses,
            method.options.stage_settings(),
            seed=5,
            window=0.02,
            parallel=parallel,
        )
        assert searches.concurrent == (parallel == "threads")
        results[parallel] = searches.run(requests)
    assert results["threads"] == results["sequential"]


def test_bad_input_is_refused_before_training(trained_resnet20, digits16):
    sp = methods.get("sp")
    with pytest.raises(ValueError, match="learns from data"):
        sp.create(trained_resnet20, 0.5)
    for options, message in (
        ({"val_per_class": 0}, "`val_per_class` should be a positive"),
        ({"parallel": "gpus"}, "`parallel` should be one of"),
        ({"tolerance": 2}, "`tolerance` should be in"),
        ({"num_ratios": 1}, "`num_ratios` should be an integer >= 2"),
        ({"population": 0}, "`population` should be a positive"),
    ):
        with pytest.raises(ValueError, match=message):
            sp.create(
                trained_resnet20,
                0.5,
                (digits16.x_train, digits16.y_train),
                **options,
            )
    plain = tf.data.Dataset.from_tensor_slices(
        (digits16.x_train[:64], digits16.y_train[:64])
    ).batch(32)
    with pytest.raises(ValueError, match="indexed by sample id"):
        ekg_keras.prune(
            trained_resnet20, 0.5, method="sp", data=plain, verbose=0
        )
    x = digits16.x_train[:10]
    with pytest.raises(ValueError, match="every class needs at least 2"):
        sp.create(trained_resnet20, 0.5, (x, np.arange(10))).run()


@pytest.mark.slow
def test_the_trainer_runs_sp_end_to_end(tmp_path):
    keras.utils.set_random_seed(0)
    pretrained = tmp_path / "pretrained.keras"
    ekg_keras.models.resnet20(input_shape=(8, 8, 3)).save(pretrained)
    summary = cifar.main(
        [
            "cifar.py",
            "--dataset=digits",
            "--image_size=8",
            "--model=resnet20",
            "--method=sp",
            (
                "--method_options=supernet_epochs=1,val_per_class=4,"
                "population=4,iterations=2,manager_population=4,"
                "manager_iterations=1,budget_units=10"
            ),
            "--finetuner=scratch",
            "--flops=0.5",
            "--epochs=1",
            "--steps_per_epoch=2",
            "--batch_size=64",
            "--verbose=0",
            f"--pretrained={pretrained}",
            f"--model_dir={tmp_path / 'run'}",
        ]
    )
    assert summary["method"] == "sp"
    assert summary["stages"]["finetune"]["completed"]
    assert 0.49 <= summary["flops_fraction"] <= 0.5
    assert os.path.exists(
        tmp_path / "run" / "prune" / "search" / "supernet.weights.h5"
    )


def test_scratch_training_draws_fresh_weights_and_keeps_the_masks():
    keras.utils.set_random_seed(1)
    masked = ekg_keras.wrap(ekg_keras.models.resnet20(input_shape=(8, 8, 3)))
    layer = masked.get_layer("stem_conv")
    mask = np.ones(16, "float32")
    mask[5:] = 0
    layer.filter_mask.assign(mask)
    kernel = layer.kernel.numpy().copy()
    reinitialize(masked)
    np.testing.assert_array_equal(layer.filter_mask.numpy(), mask)
    assert not np.allclose(layer.kernel.numpy(), kernel)
    tuner = finetuners.get("scratch")
    phase = tuner.phase(masked, 2, fitter=None)
    assert phase.model is masked and phase.epochs == 2
    with pytest.raises(ValueError, match="takes no options"):
        tuner.phase(masked, 2, fitter=None, temperature=4)


def test_budgets_are_repaired_to_land_within_a_narrow_tolerance(
    sp_run, trained_resnet20, digits16, tmp_path
):
    _trained_checkpoint(sp_run[2], tmp_path)
    data = (digits16.x_train, digits16.y_train)
    narrow = _run(trained_resnet20, data, tmp_path, tolerance=0.002)
    result = narrow.result
    # The joined stages miss the 0.2-point window: the budgets are
    # rescaled (stage EAs rerun), and single channels close the rest.
    assert 1 <= result.repairs <= narrow.options.repair_rounds
    assert 0.498 <= result.flops_fraction <= 0.5
    counts = narrow.setup.keep_counts(narrow.setup.current_keep())
    np.testing.assert_array_equal(counts, result.keep_counts)


def test_the_budget_scale_follows_a_secant():
    from ekg_keras.methods.sp.method import _next_scale

    # Proportional after the first try, then through the last two.
    assert _next_scale([1.0], [0.4], 0.5) == pytest.approx(1.25)
    assert _next_scale([1.0, 1.25], [0.4, 0.45], 0.5) == pytest.approx(1.5)
