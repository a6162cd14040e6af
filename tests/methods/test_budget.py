"""Tests for the training-budget protocol (`training_budget`,
`TrainingBudget`) and the registered claims."""

import keras
import numpy as np
import pytest

import ekg_keras
from ekg_keras.methods import TrainingBudget


def test_a_budget_adds_up_and_splits():
    budget = TrainingBudget(
        12, {"epochs": 10}, (("soft_pruning", 10), ("recovery", 2))
    )
    assert budget.method_epochs == 12
    assert budget.split() == {"soft_pruning": 10, "recovery": 2}
    with pytest.raises(ValueError, match=r"add up to its 12 epochs"):
        TrainingBudget(12, phases=(("a", 3),), finetune_epochs=3)
    with pytest.raises(ValueError, match=r"epochs=0"):
        TrainingBudget(0)


@pytest.mark.parametrize("epochs", [4, 12, 30])
def test_every_method_spends_exactly_the_budget(epochs):
    for name in ekg_keras.methods.names():
        entry = ekg_keras.methods.get(name)
        options = {**entry.presets, **entry.method_class.compare_options}
        budget = entry.method_class.training_budget(epochs, options)
        assert budget.epochs == epochs
        assert sum(budget.split().values()) == epochs, name
        # Its options are options of the method.
        entry.method_class.Options(**{**options, **budget.options})


def test_the_methods_split_as_their_papers_do():
    methods = ekg_keras.methods
    assert methods.get("l1").method_class.training_budget(12).split() == {
        "finetune": 12
    }
    soft = methods.get("asfp").method_class.training_budget(12)
    # The last pruning step is followed by recovery epochs.
    assert soft.split() == {"soft_pruning": 10, "recovery": 2}
    assert soft.options == {"epochs": 10, "recovery_epochs": 2}
    assert soft.finetune_epochs == 0
    sp = methods.get("sp").method_class.training_budget(12)
    assert sp.split() == {"supernet": 6, "finetune": 6}
    ekg = methods.get("ekg").method_class
    assert ekg.training_budget(12).split() == {
        "subset_finetune": 1,
        "finetune": 11,
    }
    assert ekg.training_budget(12, {"finetune": False}).split() == {
        "finetune": 12
    }
    with pytest.raises(ValueError, match="epochs=1"):
        methods.get("sfp").method_class.training_budget(1)


def test_soft_recovery_holds_the_pruned_filters_at_zero():
    model = ekg_keras.models.resnet_cifar(
        8, num_classes=4, input_shape=(12, 12, 3), width=8
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 4, 32).astype("int32")
    method = ekg_keras.methods.get("fpgm").create(
        model, 0.5, (x, y), verbose=0, epochs=1, recovery_epochs=2
    )
    fitter = ekg_keras.training.Fitter((x, y), batch_size=16, verbose=0)
    # Snapshots the masks and zeroed filters the soft phase left.
    names, snapshots = [], []
    fit = fitter.fit

    def recording(phase):
        names.append(phase.name)
        if phase.name == "soft_recovery":
            snapshots.append(_masks_and_zeros(method))
            snapshots.append(_kept_kernels(method))
        return fit(phase)

    fitter.fit = recording
    masked = method.run(fitter)
    assert names == ["soft_pruning", "soft_recovery"]
    # No pruning step after the soft phase's last one.
    assert [s.epoch for s in method.trainer.history_of_steps] == [0, 1]
    for (mask, zeros), (mask2, zeros2) in zip(
        snapshots[0], _masks_and_zeros(method)
    ):
        assert not mask.all()
        np.testing.assert_array_equal(mask, mask2)
        np.testing.assert_array_equal(zeros, zeros2)
        np.testing.assert_array_equal(zeros, mask == 0)
    # Their batch normalization was zeroed and held at zero too.
    for mask, gamma, beta in _normalization(method):
        assert not mask.all()
        np.testing.assert_array_equal(gamma[mask == 0], 0.0)
        np.testing.assert_array_equal(beta[mask == 0], 0.0)
        assert np.all(gamma[mask == 1] != 0)
    # The recovery trained the kept filters.
    assert any(
        not np.allclose(a, b)
        for a, b in zip(snapshots[1], _kept_kernels(method))
    )
    assert masked is method.model


def _masks_and_zeros(method):
    result = []
    for layer in ekg_keras.layers.prunable_layers(method.model):
        if isinstance(layer, keras.layers.Conv2D):
            kernel = layer.kernel.numpy()
            flat = kernel.reshape(-1, kernel.shape[-1])
            result.append(
                (layer.filter_mask.numpy(), np.all(flat == 0, axis=0))
            )
    return result


def _normalization(method):
    return [
        (layer.filter_mask.numpy(), layer.gamma.numpy(), layer.beta.numpy())
        for layer in ekg_keras.layers.prunable_layers(method.model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def _kept_kernels(method):
    return [
        layer.kernel.numpy()
        for layer in ekg_keras.layers.prunable_layers(method.model)
        if isinstance(layer, keras.layers.Conv2D)
    ]


def test_every_claim_names_registered_methods():
    names = set(ekg_keras.methods.names())
    claims = ekg_keras.methods.claims()
    assert {c.name for c in claims} >= {
        "asfp_ge_sfp",
        "fpgm_ge_norm",
        "lfpc_ge_fpgm",
        "nppm_ge_uniform",
        "ekg_search_ge_uniform",
        "ekg_distillation_ge_plain",
        "sp_ge_uniform",
    }
    for claim in claims:
        assert {claim.method, claim.reference} <= names
        assert claim.source
