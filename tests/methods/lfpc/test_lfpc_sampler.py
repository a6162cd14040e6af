"""Tests for ekg_keras.methods.lfpc's CriteriaSampler: sampling, the
criteria feature map, the computation loss, ranks, saving."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from lfpc_testing import data
from lfpc_testing import linear_head_model
from lfpc_testing import randomize_logits
from lfpc_testing import sampler as make_sampler
from lfpc_testing import two_conv_model

import ekg_keras
from ekg_keras import criteria as criteria_lib
from ekg_keras.batchnorm import batchnorm_settings
from ekg_keras.methods import keep_top
from ekg_keras.methods.lfpc import CriteriaSampler
from ekg_keras.methods.lfpc import computation_loss

SEED = tf.constant([0, 7], tf.int64)


def _forward(sampler, x, training):
    # Momentum 1: forward passes in training mode leave the moving
    # statistics (read in inference mode) as they are.
    with batchnorm_settings(sampler.network, momentum=1.0):
        return sampler.network(x, training=training).numpy()


def test_probabilities_sum_to_one_per_group():
    sampler = make_sampler()
    randomize_logits(sampler, scale=3.0)
    rows = np.ones(len(sampler.groups))
    np.testing.assert_allclose(
        sampler.criteria_probabilities().numpy().sum(1), rows, rtol=1e-6
    )
    counts = sampler.count_probabilities().numpy()
    np.testing.assert_allclose(counts.sum(1), rows, rtol=1e-6)
    # TAS's widths 0.3..1.0 give group "a" (8 channels) the counts 3..8,
    # "b" (16) eight counts: a's padded columns are 0.
    np.testing.assert_array_equal(sampler.candidates[0, :6], [3, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(
        sampler.candidates[1], [5, 7, 8, 10, 12, 13, 15, 16]
    )
    padded = ~sampler._valid
    assert padded.any()
    np.testing.assert_array_equal(counts[padded], 0.0)
    for tau in (5.0, 1.0, 0.1):
        for weights in sampler.sample_weights(tau, SEED):
            np.testing.assert_allclose(weights.numpy().sum(1), rows, rtol=1e-5)
        np.testing.assert_array_equal(
            sampler.sample_weights(tau, SEED)[1].numpy()[padded], 0.0
        )


@pytest.mark.parametrize("training", [False, True])
def test_as_tau_vanishes_the_mixture_is_the_sampled_sub_network(training):
    sampler = make_sampler()
    randomize_logits(sampler, seed=1)
    x, _ = data(16)
    criteria_weights, count_weights = sampler.sample_weights(1e-4, SEED)
    criteria_weights = criteria_weights.numpy()
    count_weights = count_weights.numpy()
    assert criteria_weights.max(1).min() > 1 - 1e-6
    assert count_weights.max(1).min() > 1 - 1e-6
    sampler.write_masks(sampler.group_masks(criteria_weights, count_weights))
    mixture = _forward(sampler, x, training)
    chosen = criteria_weights.argmax(1)
    counts = sampler.setup.graph.sizes.astype(float)
    for p, group in enumerate(sampler.groups):
        counts[group.id] = sampler.candidates[p, count_weights[p].argmax()]
    ids = [g.id for g in sampler.groups]
    assert np.all(counts[ids] < sampler.setup.graph.sizes[ids])  # Pruned.
    sampler.setup.apply(sampler.keep_masks(counts, chosen))
    np.testing.assert_allclose(
        mixture, _forward(sampler, x, training), atol=1e-5
    )
    # At a warm temperature the masks are a real mixture, not 0/1.
    warm = sampler.group_masks(*sampler.sample_weights(1.0, SEED)).numpy()
    assert np.any((warm > 0.01) & (warm < 0.99))


@pytest.mark.parametrize("training", [False, True])
def test_criteria_feature_map_is_the_aligned_weighted_sum(training):
    # Thesis Eq. 6.11: output * sum_s p_s mask_s equals sum_s p_s Align(O_s);
    # with only linear layers after the mask, the logits mix the same way.
    sampler = make_sampler(linear_head_model())
    randomize_logits(sampler, seed=2)
    x, _ = data(16)
    criteria_weights, count_weights = sampler.sample_weights(1.0, SEED)
    sampler.write_masks(sampler.group_masks(criteria_weights, count_weights))
    mixture = _forward(sampler, x, training)
    (group,) = sampler.groups
    expected = np.zeros_like(mixture)
    for s in range(len(sampler.criteria)):
        for n, level in enumerate(sampler.candidates[0]):
            weight = criteria_weights[0, s] * count_weights[0, n]
            counts = sampler.setup.graph.sizes.copy()
            counts[group.id] = level
            sampler.setup.apply(sampler.keep_masks(counts, [s]))
            expected += weight.numpy() * _forward(sampler, x, training)
    np.testing.assert_allclose(mixture, expected, atol=1e-5)


def test_computation_loss_is_positive_above_the_target_only():
    assert float(computation_loss(tf.constant(0.6), 0.5)) > 0
    assert float(computation_loss(tf.constant(0.5), 0.5)) == 0
    assert float(computation_loss(tf.constant(0.2), 0.5)) == 0
    sampler = make_sampler(flops=0.5)
    valid = sampler._valid
    last = valid.sum(1) - 1
    rows = np.arange(len(sampler.groups))
    for level, above in ((last, True), (np.zeros_like(last), False)):
        logits = np.zeros(valid.shape, "float32")
        logits[rows, level] = 30.0
        sampler.count_logits.assign(logits)
        counts = sampler.setup.graph.sizes.astype(float)
        for p, group in enumerate(sampler.groups):
            counts[group.id] = sampler.candidates[p, level[p]]
        # The differentiable cost agrees with the FLOPs counter.
        assert float(sampler.expected_flops()) == pytest.approx(
            sampler.setup.fraction(counts), rel=1e-5
        )
        sampler.count_logits.assign(logits / 10)  # Not saturated.
        with tf.GradientTape() as tape:
            loss = computation_loss(sampler.expected_flops(), sampler.target)
        gradient = tape.gradient(loss, sampler.count_logits).numpy()
        if above:
            assert float(loss) > 0
            # Descent lowers the most probable (largest) count's logit.
            assert np.all(gradient[rows, level] > 0)
        else:
            assert float(loss) == 0
            np.testing.assert_array_equal(gradient, 0.0)


def test_candidate_counts_honour_the_allowed_levels():
    model = two_conv_model()
    every = make_sampler(model, widths=None, min_channels=2)
    np.testing.assert_array_equal(every.candidates[1], np.arange(2, 17))
    rounded = make_sampler(model, widths="0.3/0.5/1", round_to=4)
    # Widths 0.3, 0.5, 1 of 8 and 16 channels, rounded up to multiples of 4.
    np.testing.assert_array_equal(rounded.candidates, [[4, 8], [8, 16]])
    with pytest.raises(ValueError, match="`widths` should be fractions"):
        make_sampler(model, widths=(0.0, 1.0))


def test_keep_masks_follow_each_criterion_ranking():
    sampler = make_sampler()
    graph = sampler.setup.graph
    rng = np.random.default_rng(0)
    counts = graph.sizes.copy()
    for group in sampler.groups:
        counts[group.id] = rng.integers(1, group.size)
    for s, name in enumerate(sampler.criteria):
        scores = [
            criteria_lib.score(name, graph, g) if g.prunable else None
            for g in graph.groups
        ]
        expected = keep_top(scores, counts, graph.sizes)
        chosen = sampler.keep_masks(counts, [s] * len(sampler.groups))
        for a, b in zip(chosen, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_adversarial_criteria_keep_the_smallest_norms():
    sampler = make_sampler(criteria=("l1", "adv_l1", "adv_l2"))
    ranks = sampler.ranks.numpy()
    for p, group in enumerate(sampler.groups):
        l1 = ranks[p, 0, : group.size]
        np.testing.assert_array_equal(
            ranks[p, 1, : group.size], group.size - 1 - l1
        )
        weights = criteria_lib.group_weights(sampler.setup.graph, group)
        l2 = criteria_lib.l2_norm(weights)
        assert np.argmin(l2) == np.argmin(ranks[p, 2, : group.size])


def test_a_step_moves_only_the_logits_and_keeps_the_statistics():
    sampler = make_sampler()
    x, y = data(32)
    network_weights = [w.numpy().copy() for w in sampler.network.weights]
    sampler.compile(optimizer=keras.optimizers.Adam(0.1))
    sampler.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert int(sampler.step.numpy()) == 2
    assert np.abs(sampler.criteria_logits.numpy()).max() > 0
    assert np.abs(sampler.count_logits.numpy()).max() > 0
    for before, weight in zip(network_weights, sampler.network.weights):
        if weight.name != "mask":
            np.testing.assert_array_equal(before, weight.numpy(), weight.path)


def test_non_finite_logits_stop_naming_the_epoch_and_group():
    sampler = make_sampler(epochs=3)
    logits = sampler.count_logits.numpy()
    logits[1, 2] = np.nan
    sampler.count_logits.assign(logits)
    with pytest.raises(
        ekg_keras.numerics.NonFiniteError,
        match=r"count logits at epoch 2, group \d+ \(b\)",
    ):
        sampler.record_epoch(1, {"loss": 1.0})


def test_config_and_keras_file_round_trip(tmp_path):
    sampler = make_sampler(criteria=("l2", "fpgm"), epochs=3, seed=5)
    x, y = data(32)
    sampler.compile(optimizer=keras.optimizers.Adam(0.1))
    sampler.fit(x, y, batch_size=16, epochs=1, verbose=0)
    sampler.record_epoch(0, {"loss": 1.0})
    config = sampler.get_config()
    assert CriteriaSampler.from_config(config).get_config() == config
    path = str(tmp_path / "sampler.keras")
    sampler.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, CriteriaSampler)
    # As JSON (a `.keras` file turns build shapes into lists).
    assert _as_json(loaded.get_config()) == _as_json(config)
    for name in ("criteria_logits", "count_logits", "ranks", "step"):
        np.testing.assert_array_equal(
            getattr(loaded, name).numpy(), getattr(sampler, name).numpy()
        )
    assert loaded.epoch_history()[0].loss == 1.0
    assert loaded.learned_criteria() == sampler.learned_criteria()
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), sampler.predict(x, verbose=0), atol=1e-6
    )


def _as_json(config):
    return json.loads(json.dumps(config))


def test_bad_arguments_say_what_was_expected():
    masked = ekg_keras.wrap(two_conv_model())
    with pytest.raises(ValueError, match="should be a hard-masked model"):
        CriteriaSampler(two_conv_model(), 0.5)
    with pytest.raises(ValueError, match="Received: 'nope'"):
        CriteriaSampler(masked, 0.5, criteria=("l1", "nope"))
    with pytest.raises(ValueError, match="should not repeat"):
        CriteriaSampler(masked, 0.5, criteria=("l1", "l1"))
    with pytest.raises(ValueError, match="'taylor' needs data"):
        CriteriaSampler(masked, 0.5, criteria=("l1", "taylor"))
    with pytest.raises(ValueError, match="'l2\\+fpgm' selects filters"):
        CriteriaSampler(masked, 0.5, criteria=("l2+fpgm",))
    with pytest.raises(ValueError, match="`epochs` should be a positive"):
        CriteriaSampler(masked, 0.5, epochs=0)
    with pytest.raises(ValueError, match="`tau_end` should be a positive"):
        CriteriaSampler(masked, 0.5, tau_end=0.0)
    with pytest.raises(ValueError, match="`flops` should be the fraction"):
        CriteriaSampler(masked, 1.5)
