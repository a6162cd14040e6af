"""NPPM's rules one by one: memory, re-sampling, gradient modification,
straight-through gates, FLOPs regulariser, gamma, final structure."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ekg_keras
from ekg_keras.methods import PruningSetup
from ekg_keras.methods.nppm import ChannelGates
from ekg_keras.methods.nppm import EpisodicMemory
from ekg_keras.methods.nppm import FlopsRegularizer
from ekg_keras.methods.nppm import NPPMOptions
from ekg_keras.methods.nppm import PerformancePredictor
from ekg_keras.methods.nppm import confidence
from ekg_keras.methods.nppm import final_structure
from ekg_keras.methods.nppm import modified_gradient
from ekg_keras.methods.nppm.gates import straight_through


def _fill(memory, accuracies):
    """Stores one sample per accuracy (window 1), structures = row ids."""
    for i, accuracy in enumerate(accuracies):
        structure = np.full(memory.length, float(i % 2), np.float32)
        memory.record(tf.constant(structure), tf.constant(accuracy))


def test_memory_inserts_then_replaces_the_closest_accuracy():
    memory = EpisodicMemory(length=3, capacity=3, window=1)
    _fill(memory, [0.2, 0.5, 0.9])
    assert int(memory.size.numpy()) == 3
    memory.record(tf.ones(3), tf.constant(0.56))
    np.testing.assert_allclose(memory.accuracies.numpy(), [0.2, 0.56, 0.9])
    np.testing.assert_array_equal(memory.structures.numpy()[1], [1, 1, 1])
    memory.record(tf.zeros(3), tf.constant(0.1))
    np.testing.assert_allclose(memory.accuracies.numpy(), [0.1, 0.56, 0.9])
    assert int(memory.size.numpy()) == 3


def test_memory_window_averages_c_steps_into_one_sample():
    memory = EpisodicMemory(length=4, capacity=5, window=3)
    steps = [[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]]
    for structure, accuracy in zip(steps, [0.3, 0.6, 0.9]):
        assert int(memory.size.numpy()) == 0
        stored = memory.record(tf.constant(structure, tf.float32), accuracy)
    assert bool(stored) and int(memory.size.numpy()) == 1
    # 1[mean > 1/2]: channel 2 is kept in 2 of 3 steps, channel 3 in none.
    np.testing.assert_array_equal(memory.structures.numpy()[0], [1, 1, 1, 0])
    assert memory.accuracies.numpy()[0] == pytest.approx(0.6)
    assert int(memory.window_count.numpy()) == 0


def test_resampling_is_inverse_to_bin_counts_and_sums_to_one():
    memory = EpisodicMemory(length=2, capacity=8, window=1, bins=3)
    # Range 0.2..0.8, width 0.3, bins centred on 0.2, 0.5 and 0.8:
    # {0.2, 0.25}, {0.55}, {0.79, 0.8, 0.8}.
    accuracies = [0.2, 0.8, 0.25, 0.55, 0.79, 0.8]
    _fill(memory, accuracies)
    bins = memory.bin_indices().numpy()[:6]
    np.testing.assert_array_equal(bins, [0, 2, 0, 1, 2, 2])
    probabilities = memory.sampling_probabilities().numpy()
    assert probabilities.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(probabilities[6:], 0)  # Empty slots.
    counts = np.bincount(bins)
    expected = 1 / counts[bins]
    np.testing.assert_allclose(probabilities[:6], expected / expected.sum())
    # Each bin is drawn a third of the time.
    _, drawn = memory.sample(6000, tf.constant([1, 2]))
    bin_of = {round(a, 4): b for a, b in zip(accuracies, bins)}
    drawn_bins = [bin_of[round(float(a), 4)] for a in drawn.numpy()]
    shares = np.bincount(drawn_bins, minlength=3) / len(drawn_bins)
    np.testing.assert_allclose(shares, 1 / 3, atol=0.03)


def test_empty_memory_draws_nothing_meaningful_without_failing():
    memory = EpisodicMemory(length=2, capacity=4, window=1)
    np.testing.assert_array_equal(memory.sampling_probabilities().numpy(), 0)
    structures, _ = memory.sample(3, tf.constant([0, 0]))
    assert structures.shape == (3, 2)


def test_modified_gradient_is_orthogonal_to_the_task_gradient():
    rng = np.random.default_rng(0)
    task = tf.constant(rng.standard_normal(7), tf.float32)
    performance = tf.constant(rng.standard_normal(7), tf.float32)
    regularizer = tf.constant(rng.standard_normal(7), tf.float32)
    modified = modified_gradient(task, performance, regularizer)
    added = (modified - task - regularizer).numpy()
    assert abs(np.dot(added, task.numpy())) < 1e-5
    # What remains of the performance gradient is its orthogonal part.
    t = task.numpy()
    expected = (
        performance.numpy() - np.dot(performance.numpy(), t) / (t @ t) * t
    )
    np.testing.assert_allclose(added, expected, rtol=1e-5, atol=1e-6)
    # Parallel: nothing is added beyond the task and regulariser terms.
    parallel = modified_gradient(task, -3.0 * task, regularizer)
    np.testing.assert_allclose(parallel, task + regularizer, atol=1e-6)
    # Without the modification the performance gradient is added whole.
    plain = modified_gradient(task, performance, regularizer, False)
    np.testing.assert_allclose(plain, task + performance + regularizer)
    # A zero task gradient gives no direction to remove.
    zero = modified_gradient(tf.zeros(7), performance, regularizer)
    np.testing.assert_allclose(zero, performance + regularizer)


def test_straight_through_gates_are_hard_forward_and_pass_gradients():
    relaxed = tf.constant([0.1, 0.49, 0.51, 0.9])
    weights = tf.constant([1.0, 2.0, 3.0, 4.0])
    with tf.GradientTape() as tape:
        tape.watch(relaxed)
        hard = straight_through(relaxed)
        total = tf.reduce_sum(hard * weights)
    np.testing.assert_array_equal(hard.numpy(), [0, 0, 1, 1])
    np.testing.assert_array_equal(tape.gradient(total, relaxed), weights)


def test_gates_sample_hard_structures_with_gradients_to_the_logits():
    gates = ChannelGates([3, 5], tau=0.5, initial_logit=0.0)
    seed = tf.constant([3, 4])
    with tf.GradientTape() as tape:
        structure = gates.sample(seed)
        total = tf.reduce_sum(structure * tf.range(8, dtype=tf.float32))
    values = structure.numpy()
    assert set(np.unique(values)) <= {0.0, 1.0}
    np.testing.assert_array_equal(values, gates.sample(seed).numpy())
    gradients = tape.gradient(total, gates.logits)
    assert all(np.all(np.isfinite(g)) for g in gradients)
    assert np.any(gradients[1].numpy() != 0)
    # Kept with probability sigmoid(w): logit 0 keeps about half.
    many = [gates.sample(tf.constant([i, 0])).numpy() for i in range(200)]
    assert np.mean(many) == pytest.approx(0.5, abs=0.05)
    gates.logits[0].assign([-1.0, 2.0, 0.5])
    np.testing.assert_array_equal(gates.noise_free()[0], [False, True, True])


@pytest.fixture(scope="module")
def resnet():
    """One ResNet-20 (8x8) for the tests that need a real channel graph."""
    keras.utils.set_random_seed(0)
    return ekg_keras.models.resnet20(input_shape=(8, 8, 3))


def _regularizer(setup):
    gated = [g.id for g in setup.graph.prunable_groups]
    return FlopsRegularizer(
        setup.counter.terms("macs"),
        setup.full_macs,
        setup.target,
        setup.graph.sizes,
        gated,
    ), gated


@pytest.mark.parametrize("include_bn", [False, True])
def test_regularizer_fraction_equals_count_flops_of_the_slim_model(
    resnet,
    include_bn,
):
    setup = PruningSetup(resnet, 0.5, include_bn=include_bn)
    regularizer, gated = _regularizer(setup)
    rng = np.random.default_rng(1)
    full = ekg_keras.count_flops(setup.source, include_bn=include_bn).macs
    for _ in range(2):
        keep = [np.ones(g.size, bool) for g in setup.graph.groups]
        for group in gated:
            keep[group] = rng.random(len(keep[group])) < 0.6
            keep[group][0] = True
        setup.apply(keep)
        slim = ekg_keras.slim(setup.model)
        structure = np.concatenate([keep[g] for g in gated]).astype("float32")
        fraction = float(regularizer.fraction(structure))
        expected = ekg_keras.count_flops(slim, include_bn=include_bn).macs
        assert fraction == pytest.approx(expected / full, rel=1e-5)


def test_regularizer_is_zero_at_or_below_the_target_and_log_above(resnet):
    setup = PruningSetup(resnet, 0.5)
    regularizer, gated = _regularizer(setup)
    length = sum(setup.graph.groups[g].size for g in gated)
    for keep_share in (0.2, 0.5, 0.7, 1.0):
        structure = tf.Variable(
            (np.arange(length) % 10 < keep_share * 10).astype("float32")
        )
        with tf.GradientTape() as tape:
            value = regularizer(structure)
        fraction = float(regularizer.fraction(structure))
        gradient = tape.gradient(value, structure).numpy()
        if fraction <= 0.5:
            assert float(value) == 0.0
            np.testing.assert_array_equal(gradient, 0)
        else:
            assert float(value) == pytest.approx(np.log(fraction / 0.5))
            assert np.all(gradient > 0)


def test_gamma_is_zero_until_a_quarter_of_the_memory_then_confidence():
    assert float(confidence(124, 500, 0.1)) == 0.0
    assert float(confidence(125, 500, 0.1)) == pytest.approx(0.81)
    assert float(confidence(500, 500, 0.0)) == 1.0
    assert float(confidence(500, 500, 1.0)) == 0.0


def _logits(setup, rng, low, high):
    return [
        rng.uniform(low, high, g.size) if g.prunable else None
        for g in setup.graph.groups
    ]


def _check_keeps_top_logits(logits, keep):
    for values, mask in zip(logits, keep):
        if values is not None and 0 < mask.sum() < len(mask):
            assert values[mask].min() >= values[~mask].max()


def test_final_structure_removes_lowest_logits_until_the_target(resnet):
    setup = PruningSetup(resnet, 0.4)
    rng = np.random.default_rng(2)
    logits = _logits(setup, rng, -0.2, 3.0)  # Noise-free: above target.
    keep, record = final_structure(logits, setup)
    fraction = setup.fraction(setup.keep_counts(keep))
    assert record["noise_free_fraction"] > 0.4
    assert record["removed_channels"] > 0 and record["added_channels"] == 0
    assert 0.39 <= fraction <= 0.4
    assert record["fraction"] == pytest.approx(fraction)
    _check_keeps_top_logits(logits, keep)
    # The removed channels are the lowest-logit ones overall.
    kept = np.concatenate([v[m] for v, m in zip(logits, keep) if v is not None])
    noise_free = np.concatenate([v[v > 0] for v in logits if v is not None])
    removed = np.setdiff1d(noise_free, kept)
    assert len(removed) == record["removed_channels"]
    np.testing.assert_array_equal(
        np.sort(removed), np.sort(noise_free)[: len(removed)]
    )


def test_final_structure_brings_back_channels_when_far_below_the_target(resnet):
    setup = PruningSetup(resnet, 0.6)
    rng = np.random.default_rng(3)
    logits = _logits(setup, rng, -3.0, 0.3)  # Noise-free: far below.
    keep, record = final_structure(logits, setup)
    fraction = setup.fraction(setup.keep_counts(keep))
    assert record["noise_free_fraction"] < 0.59
    assert record["added_channels"] > 0 and record["removed_channels"] == 0
    assert 0.59 <= fraction <= 0.6
    _check_keeps_top_logits(logits, keep)


def test_final_structure_keeps_a_close_learned_structure_as_it_is(resnet):
    setup = PruningSetup(resnet, 0.5)
    rng = np.random.default_rng(4)
    logits = _logits(setup, rng, 1.0, 2.0)
    sizes = setup.graph.sizes
    keep = [np.ones(s, bool) for s in sizes]
    for group in setup.graph.prunable_groups:
        # A structure at about 45%: within a point only if near 0.5.
        keep[group.id][: group.size // 3] = False
    for values, mask in zip(logits, keep):
        if values is not None:
            values[~mask] *= -1
    learned = setup.fraction(setup.keep_counts(keep))
    result, record = final_structure(logits, setup, tolerance=0.5 - learned)
    assert record["removed_channels"] == record["added_channels"] == 0
    for a, b in zip(keep, result):
        np.testing.assert_array_equal(a, b)


def test_final_structure_respects_floors_and_round_to(resnet):
    setup = PruningSetup(resnet, 0.3, round_to=4, min_channels=4)
    rng = np.random.default_rng(5)
    logits = _logits(setup, rng, -5.0, 5.0)
    keep, _ = final_structure(logits, setup)
    assert setup.fraction(setup.keep_counts(keep)) <= 0.3
    for group, mask in zip(setup.graph.groups, keep):
        if group.prunable:
            count = int(mask.sum())
            assert count >= 4 and (count % 4 == 0 or count == group.size)


def test_predictor_predicts_a_probability_per_structure():
    predictor = PerformancePredictor([3, 5], encoder_units=4)
    predictor.build((None, 8))
    predicted = predictor(np.ones((6, 8), np.float32)).numpy()
    assert predicted.shape == (6,)
    assert np.all((predicted > 0) & (predicted < 1))


@pytest.mark.parametrize(
    "layer",
    [
        lambda: ChannelGates([3, 5], tau=0.7, initial_logit=2.0),
        lambda: EpisodicMemory(length=8, capacity=6, window=2, bins=4),
        lambda: PerformancePredictor([3, 5], 8, 6),
    ],
    ids=["gates", "memory", "predictor"],
)
def test_layers_round_trip_their_config(layer):
    original = layer()
    config = keras.saving.serialize_keras_object(original)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(original)
    assert restored.get_config() == original.get_config()


def test_predictor_round_trips_through_a_keras_file(tmp_path):
    inputs = keras.Input((8,))
    model = keras.Model(inputs, PerformancePredictor([3, 5], 8, 6)(inputs))
    x = np.random.default_rng(0).integers(0, 2, (4, 8)).astype("float32")
    model.save(tmp_path / "predictor.keras")
    loaded = keras.saving.load_model(tmp_path / "predictor.keras")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"tau": 0.0}, "`tau` should be a finite number > 0"),
        ({"tau": -1.0}, "`tau` should be a finite number > 0"),
        ({"memory_size": 0}, "`memory_size` should be an integer >= 1"),
        ({"bins": 1}, "`bins` should be an integer >= 2"),
        ({"window": 2.5}, "`window` should be an integer >= 1"),
        ({"flops_weight": -1.0}, "`flops_weight` should be a finite"),
        ({"learning_rate": float("nan")}, "`learning_rate` should be"),
    ],
)
def test_bad_options_name_what_is_wrong(values, message):
    with pytest.raises(ValueError, match=message):
        NPPMOptions(**values)
