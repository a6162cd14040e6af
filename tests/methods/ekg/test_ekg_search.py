"""Tests for the EKG search (ekg_keras.EKGSearch and prune(method="ekg"))."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_testing import accuracy
from model_testing import layer_classes
from model_testing import max_relative_difference
from model_testing import reference_importance

import ekg_keras

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TESTS = pathlib.Path(__file__).parents[2]


def _search(model, digits16, flops, **kwargs):
    options = dict(
        val_per_class=8, subset_per_class=16, batch_size=64, verbose=0
    )
    options.update(kwargs)
    return ekg_keras.EKGSearch(
        model, flops, (digits16.x_train, digits16.y_train), **options
    )


@pytest.fixture(scope="module")
def searched(trained_resnet20, digits16, tmp_path_factory):
    """One end-to-end search to half the FLOPs, with TensorBoard output."""
    weights = [w.copy() for w in trained_resnet20.get_weights()]
    logs = tmp_path_factory.mktemp("tensorboard")
    search = _search(trained_resnet20, digits16, 0.5, tensorboard_dir=logs)
    search.run()
    return search, weights, logs


def test_search_reaches_the_target_and_keeps_its_history(
    searched, trained_resnet20
):
    search, weights, _ = searched
    history = search.history
    assert history[0].step == 0 and history[0].group is None
    assert history[0].flops_fraction == 1.0
    assert history[-1].flops_fraction <= 0.5 < history[-2].flops_fraction
    fractions = [h.flops_fraction for h in history]
    assert fractions == sorted(fractions, reverse=True)
    for step in history:
        assert step.logits.shape == (80, 10)
        assert 0 <= step.accuracy <= 1 and step.loss > 0
        assert [m.sum() for m in step.keep_masks()] == list(step.keep_counts)
    # Each step shrinks one group and leaves the others as they were, and
    # a removed channel stays removed (masked channels score 0).
    for before, after in zip(history, history[1:]):
        changed = np.flatnonzero(before.keep_counts != after.keep_counts)
        assert list(changed) == [after.group]
        for old, new in zip(before.keep_masks(), after.keep_masks()):
            assert not (new & ~old).any()
    # The ensemble is the running mean of every chosen sub-network.
    np.testing.assert_allclose(
        search.ensemble,
        np.mean([h.logits for h in history], axis=0),
        rtol=1e-5,
        atol=1e-6,
    )
    # The masks of the returned model are the last step's.
    final = history[-1].keep_masks()
    for record in search.graph.maskable_layers():
        np.testing.assert_array_equal(
            record.layer.filter_mask.numpy() > 0,
            record.outputs[0].keep_mask(final),
        )
    # The fine search lands within one channel of the target.
    last = history[-1]
    one_more = last.keep_counts.astype(np.float64)
    one_more[last.group] += 1
    assert one_more[last.group] <= search.graph.groups[last.group].size
    full = search.setup.full_macs
    assert search.setup.counter.macs(one_more) / full > 0.5
    # The user's model is untouched.
    for old, new in zip(weights, trained_resnet20.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert all(
        name.startswith("keras.") for name in layer_classes(trained_resnet20)
    )


def test_last_step_logits_are_the_returned_models(searched):
    search, _, _ = searched
    x = search.evaluator.batch_inputs
    logits = np.concatenate([search.model(b, training=True) for b in x])
    np.testing.assert_allclose(
        logits, search.history[-1].logits, rtol=1e-4, atol=1e-4
    )


def test_batchnorm_recalibration_after_the_search(searched, digits16):
    """Issue 7: moving statistics after recalibration match batch ones."""
    search, _, _ = searched
    small = ekg_keras.slim(search.model)
    x, y = digits16.x_test, digits16.y_test
    stale = accuracy(small, x, y)
    ekg_keras.recalibrate_batchnorm(small, digits16.train)
    inference = accuracy(small, x, y)
    batch_statistics = accuracy(small, x, y, training=True)
    assert abs(inference - batch_statistics) <= 0.02
    assert inference > stale + 0.2


def test_tensorboard_and_plot(searched, tmp_path):
    search, _, logs = searched
    assert list(logs.iterdir())
    figure = ekg_keras.plotting.plot_search(search, tmp_path / "search.png")
    assert (tmp_path / "search.png").stat().st_size > 0
    assert len(figure.axes) == 3


def test_checkpoint_resumes_to_the_same_result(
    searched, trained_resnet20, digits16, tmp_path
):
    straight, _, _ = searched
    # Plain evaluation (no per-group tracing) keeps this test fast; the
    # straight run used the cache, so this also checks the two agree.
    first = _search(
        trained_resnet20, digits16, 0.5, checkpoint_dir=tmp_path, cache=False
    )
    first.run(max_steps=2)
    assert len(first.history) == 3
    # A new process would build a new search object on the same directory.
    resumed = _search(
        trained_resnet20, digits16, 0.5, checkpoint_dir=tmp_path, cache=False
    )
    resumed.run(max_steps=2)
    assert len(resumed.history) == 5
    assert [h.group for h in resumed.history] == [
        h.group for h in straight.history[:5]
    ]
    for a, b in zip(resumed.history, straight.history):
        np.testing.assert_array_equal(a.keep_counts, b.keep_counts)
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        resumed.ensemble,
        np.mean([h.logits for h in straight.history[:5]], axis=0),
        rtol=1e-4,
        atol=1e-4,
    )


def test_cached_and_plain_evaluation_choose_the_same_subnetwork(
    trained_resnet20, digits16
):
    runs = []
    for cache in (True, False):
        search = _search(
            trained_resnet20, digits16, 0.5, finetune=False, cache=cache
        )
        search.run(max_steps=2)
        runs.append(search)
    fast, plain = runs
    assert [h.group for h in fast.history] == [h.group for h in plain.history]
    assert fast.evaluator.evaluations == plain.evaluator.evaluations
    for a, b in zip(fast.history, plain.history):
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-4, atol=1e-4)


def test_poster_variant_checks_every_group(trained_resnet20, digits16):
    search = _search(
        trained_resnet20,
        digits16,
        0.5,
        finetune=False,
        variant="poster",
        cache=False,
    )
    search.run(max_steps=1)
    assert search.history[1].candidates == len(search.graph.prunable_groups)


def test_kernel_rescale_keeps_norms_and_slims_exactly(
    trained_resnet20, digits16
):
    search = _search(
        trained_resnet20,
        digits16,
        0.5,
        finetune=False,
        rescale_kernels=True,
        cache=False,
    )
    masked = search.run(max_steps=3)
    original = {layer.name: layer for layer in trained_resnet20.layers}
    keep = search.history[-1].keep_masks()
    for name in ("stage1_block1_conv1", "stage1_block1_conv2"):
        record = search.graph.channels(name)
        kernel = masked.get_layer(name).kernel.numpy()
        inputs = record.inputs[0].keep_mask(keep)
        outputs = record.outputs[0].keep_mask(keep)
        np.testing.assert_allclose(
            np.linalg.norm(kernel[:, :, inputs][..., outputs]),
            np.linalg.norm(original[name].kernel.numpy()),
            rtol=1e-5,
        )
    assert any(not m.all() for m in keep)
    small = ekg_keras.slim(masked)
    x = digits16.x_test[:16]
    assert max_relative_difference(small(x), masked(x)) < 1e-4


def test_prune_with_data_runs_the_search(trained_resnet20, digits16):
    small = ekg_keras.prune(
        trained_resnet20,
        flops=0.9,
        data=(digits16.x_train, digits16.y_train),
        val_per_class=8,
        finetune=False,
        batch_size=64,
        cache=False,
        verbose=0,
    )
    kept = (
        ekg_keras.count_flops(small).macs
        / ekg_keras.count_flops(trained_resnet20).macs
    )
    assert 0.85 < kept <= 0.9
    assert all(name.startswith("keras.") for name in layer_classes(small))


def _small_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="a")(
        inputs
    )
    x = keras.layers.Conv2D(8, 3, padding="same", name="b")(x)
    x = keras.layers.BatchNormalization(name="b_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c")(
        x
    )
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


def _small_data(n=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8, 8, 3)).astype("float32")
    return x, (np.arange(n) % 4).astype("int32")


@pytest.mark.slow
def test_mirrored_strategy_chooses_the_same_groups(mirrored):
    data = _small_data()

    def run(strategy):
        keras.utils.set_random_seed(4)
        model = _small_model()
        search = ekg_keras.EKGSearch(
            model,
            0.5,
            data,
            val_per_class=8,
            subset_per_class=8,
            batch_size=32,
            strategy=strategy,
            verbose=0,
        )
        search.run()
        return search

    single = run(None)
    distributed = run(mirrored)
    assert [h.group for h in single.history] == [
        h.group for h in distributed.history
    ]
    for a, b in zip(single.history, distributed.history):
        np.testing.assert_array_equal(a.keep_counts, b.keep_counts)
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-3, atol=1e-4)
    # The returned model's normalization is as it was.
    layer = distributed.model.get_layer("b_bn")
    assert not layer.synchronized and layer.momentum == 0.99


def test_min_channels_floor_holds():
    search = ekg_keras.EKGSearch(
        _small_model(),
        0.3,
        _small_data(),
        min_channels=0.5,
        val_per_class=8,
        subset_per_class=8,
        batch_size=32,
        verbose=0,
    )
    search.run()
    assert search.history[-1].flops_fraction <= 0.3
    assert all(count >= 4 for count in search.history[-1].keep_counts)
    with pytest.raises(ValueError, match="floor of min_channels=0.5"):
        ekg_keras.EKGSearch(
            _small_model(), 0.2, _small_data(), min_channels=0.5, verbose=0
        ).run()


@pytest.mark.parametrize(
    "data, message",
    [
        (
            tf.data.Dataset.from_tensor_slices(
                np.zeros((4, 8, 8, 3), "float32")
            ),
            "needs labels",
        ),
        ((np.zeros((0, 8, 8, 3), "float32"), np.zeros(0, "int32")), "empty"),
        (
            (np.zeros((4, 8, 8, 3), "float32"), np.array([0, 1, 2, 9])),
            "should be in \\[0, 4\\)",
        ),
    ],
)
def test_bad_data(data, message):
    with pytest.raises(ValueError, match=message):
        ekg_keras.EKGSearch(_small_model(), 0.5, data, verbose=0).run()


def test_targets_met_or_unreachable():
    model = _small_model()
    assert (
        ekg_keras.prune(model, flops=1.0, data=_small_data(), verbose=0)
        is model
    )
    with pytest.raises(ValueError, match="smallest reachable fraction"):
        ekg_keras.EKGSearch(model, 0.001, _small_data(), verbose=0).run()
    with pytest.raises(
        ValueError, match="Unknown option criterion for method 'ekg'"
    ):
        ekg_keras.prune(model, flops=0.5, data=_small_data(), criterion="l1")
    with pytest.raises(ValueError, match="prune\\(model, flops, data=data, "):
        ekg_keras.prune(
            model,
            flops=0.5,
            data=_small_data(),
            search_options={"val_per_class": 4},
        )
    with pytest.raises(ValueError, match="variant='paper'"):
        ekg_keras.EKGSearch(model, 0.5, _small_data(), variant="paper")


def test_the_search_takes_the_recorded_path(searched):
    """The search chooses the sub-network it chose when the reference was
    recorded (tests/fixtures/record_ekg_path.py), step by step.

    This holds on any x86 CPU, not just the recording one: the network is
    loaded from shipped weights (the same bits everywhere), and what the
    CPU's kernels change, the last bits of losses and scores (measured:
    1.1e-6 of an objective, 6.5e-5 of a group's largest score between
    oneDNN on and off), stays inside the tolerances under which
    `ekg_keras.ties` decides near-ties by index. The recording script
    checks the path with oneDNN on and off before it writes.
    """
    search, _, _ = searched
    path = pathlib.Path(__file__).parent / "data" / "search_path.json"
    recorded = json.loads(path.read_text())
    assert recorded["flops"] == search.target
    assert recorded["options"] == {
        name: getattr(search.options, name)
        for name in ("val_per_class", "subset_per_class", "batch_size")
    }
    assert [h.group for h in search.history] == recorded["groups"]
    assert [h.keep_counts.tolist() for h in search.history] == recorded[
        "keep_counts"
    ]
    final = [m.astype(int).tolist() for m in search.history[-1].keep_masks()]
    assert final == recorded["final_masks"]


def _tiny_search(**options):
    """A whole tiny search to 0.4 of the FLOPs (subset fine-tune on)."""
    keras.utils.set_random_seed(7)
    search = ekg_keras.EKGSearch(
        _small_model(),
        0.4,
        _small_data(),
        val_per_class=8,
        subset_per_class=8,
        batch_size=32,
        verbose=0,
        **options,
    )
    search.run()
    return search


def test_cached_and_plain_searches_agree_to_the_end():
    """A whole tiny search, subset fine-tune on: same group at every step
    and the same final masks with and without the cache."""
    runs = [_tiny_search(cache=cache) for cache in (True, False)]
    fast, plain = runs
    assert fast.finished and plain.finished
    assert len(fast.history) > 3
    assert [h.group for h in fast.history] == [h.group for h in plain.history]
    for a, b in zip(
        fast.history[-1].keep_masks(), plain.history[-1].keep_masks()
    ):
        np.testing.assert_array_equal(a, b)


def _tiny_search_groups():
    """The groups `_tiny_search` chooses."""
    return [h.group for h in _tiny_search().history]


@pytest.mark.slow
def test_the_path_is_the_same_with_onednn_on_and_off():
    """Another CPU's kernels round differently; oneDNN on and off is that
    difference on this machine. The search must not notice it: the same
    groups in this process and in one with the other oneDNN setting."""
    here = _tiny_search_groups()
    other = "1" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0" else "0"
    paths = [str(TESTS), str(pathlib.Path(__file__).parent)]
    code = (
        "import json, sys\n"
        f"sys.path[:0] = {paths!r}\n"
        "import test_ekg_search\n"
        "print(json.dumps(test_ekg_search._tiny_search_groups()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS=other),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    there = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(here) > 3
    assert there == here


def test_moving_statistics_instead_of_batch_statistics():
    """`batch_statistics=False` scores with the moving averages: the
    logits of a step are the inference-mode logits of its sub-network."""
    keras.utils.set_random_seed(8)
    search = ekg_keras.EKGSearch(
        _small_model(),
        0.6,
        _small_data(),
        val_per_class=8,
        finetune=False,
        batch_statistics=False,
        verbose=0,
    )
    masked = search.run()
    x = np.concatenate([np.asarray(b) for b in search.evaluator.batch_inputs])
    np.testing.assert_allclose(
        masked(x, training=False),
        search.history[-1].logits,
        rtol=1e-4,
        atol=1e-5,
    )
    assert not np.allclose(masked(x, training=True), search.history[-1].logits)


def test_search_summaries_have_their_tags(searched):
    _, _, logs = searched
    tags = set()
    for path in logs.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    assert tags >= {"flops_fraction", "loss", "accuracy", "objective"}


def test_round_to_moves_the_search_in_multiples(trained_resnet20, digits16):
    search = _search(
        trained_resnet20, digits16, 0.5, finetune=False, round_to=8, cache=False
    )
    search.run()
    last = search.history[-1]
    assert 0.49 <= last.flops_fraction <= 0.5
    for group, count in zip(search.graph.groups, last.keep_counts):
        assert count % 8 == 0 or count == group.size


@pytest.mark.slow
def test_a_whole_search_scores_as_before_in_both_layouts(monkeypatch):
    """Issue 21: at every step of a whole tiny search on a ResNet (groups
    spanning several layers), the importance scores equal the per-layer
    NumPy sums of the evaluator before issue 21; the stacked layout takes
    the same steps as the sequential one."""
    differences = []
    original = ekg_keras.SubnetworkEvaluator.importance

    def checked_importance(evaluator, targets=None):
        scores = original(evaluator, targets)
        batches = [np.asarray(b) for b in evaluator.batch_inputs]
        reference = reference_importance(
            evaluator.model,
            evaluator.graph,
            batches,
            evaluator.labels,
            targets,
            evaluator.objective,
        )
        for a, b in zip(scores, reference, strict=True):
            differences.append(
                np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12)
            )
        return scores

    monkeypatch.setattr(
        ekg_keras.SubnetworkEvaluator, "importance", checked_importance
    )
    data = _small_data(48)
    runs = []
    for layout in ("sequential", "stacked"):
        keras.utils.set_random_seed(9)
        model = ekg_keras.models.resnet20(input_shape=(8, 8, 3), num_classes=4)
        search = ekg_keras.EKGSearch(
            model,
            0.7,
            data,
            val_per_class=6,
            subset_per_class=4,
            batch_size=16,
            layout=layout,
            verbose=0,
        )
        search.run()
        runs.append(search)
    sequential, stacked = runs
    assert sequential.finished and len(sequential.history) > 3
    assert len(differences) >= 2 * (len(sequential.history) - 1)
    assert max(differences) < 1e-5
    assert [h.group for h in stacked.history] == [
        h.group for h in sequential.history
    ]
    for a, b in zip(stacked.history, sequential.history, strict=True):
        np.testing.assert_array_equal(a.keep_counts, b.keep_counts)
        np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-6)


def test_mixed_precision_search_reaches_the_target_in_float32_after():
    keras.utils.set_random_seed(10)
    search = ekg_keras.EKGSearch(
        _small_model(),
        0.5,
        _small_data(),
        val_per_class=8,
        subset_per_class=8,
        batch_size=32,
        precision="mixed_float16",
        verbose=0,
    )
    masked = search.run()
    assert search.finished and search.history[-1].flops_fraction <= 0.5
    assert {layer.compute_dtype for layer in masked.layers} == {"float32"}
    assert all(np.isfinite(h.loss) for h in search.history)
    with pytest.raises(ValueError, match="`precision` should be one of"):
        ekg_keras.EKGSearch(_small_model(), 0.5, precision="float16")
    with pytest.raises(ValueError, match="`layout` should be one of"):
        ekg_keras.EKGSearch(_small_model(), 0.5, layout="grid")
