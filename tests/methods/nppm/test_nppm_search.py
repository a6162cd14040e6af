"""The NPPM search model: Algorithm 1 as a compiled train step, frozen
network, tf.distribute, resume, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from nppm_testing import OPTIONS
from nppm_testing import data
from nppm_testing import residual_model

from ekg_keras.methods.nppm import PerformanceMaximization
from ekg_keras.methods.nppm.search_model import METRICS


def _search(strategy=None, seed=0, **options):
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(seed)
    model = residual_model()
    with strategy.scope():
        search = PerformanceMaximization(model, 0.5, **{**OPTIONS, **options})
        search.compile(optimizer=keras.optimizers.Adam(0.05))
    return search


def _fit(search, epochs, callbacks=()):
    x, y = data()
    return search.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=list(callbacks),
    )


def _state(search):
    """Everything the search learns or keeps, by name."""
    variables = [
        *search.gates.weights,
        *search.memory.weights,
        *search.predictor.weights,
        search.steps,
        search.last_predictor_loss,
    ]
    return {
        f"{i}:{v.name}": np.asarray(v.numpy()) for i, v in enumerate(variables)
    }


def _assert_same_state(a, b, rtol=1e-5, atol=1e-6):
    first, second = _state(a), _state(b)
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_allclose(
            first[key], second[key], rtol=rtol, atol=atol, err_msg=key
        )


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


@pytest.fixture(scope="module")
def straight():
    """Four epochs on one device, uninterrupted."""
    search = _search()
    history = _fit(search, epochs=4)
    return search, history


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The same run killed after two epochs, and its backup directory."""
    backup = tmp_path_factory.mktemp("backup") / "run"
    search = _search()
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(
            search,
            epochs=4,
            callbacks=[
                keras.callbacks.BackupAndRestore(str(backup)),
                _Interrupt(),
            ],
        )
    return search, backup


def test_residual_groups_share_one_gate_vector():
    search = _search()
    producers = [search.graph.groups[g].producers for g in search.gated_groups]
    assert sorted(len(p) for p in producers) == [1, 2]
    assert search.gates.sizes == [
        search.graph.groups[g].size for g in search.gated_groups
    ]


def test_steps_train_gates_and_predictor_and_freeze_the_network(straight):
    search, history = straight
    assert set(history.history) == set(METRICS)
    source = search.setup.source
    for layer in source.layers:
        masked = search.network.get_layer(layer.name)
        mask = getattr(masked, "filter_mask", None)
        values = [w for w in masked.weights if w is not mask]
        for before, after in zip(layer.weights, values, strict=True):
            np.testing.assert_array_equal(before.numpy(), after.numpy())
    for logits in search.gates.logit_values():
        assert np.all(logits != 1.0)  # All moved from the initial logit.
    assert int(search.steps.numpy()) == 16
    assert int(search.memory.size.numpy()) == 8  # Full: K_max = 8.
    # The predictor trains once K > b_P, from the third step on.
    assert int(search.predictor_optimizer.iterations.numpy()) == 14
    assert int(search.optimizer.iterations.numpy()) == 16
    assert history.history["gamma"][-1] > 0
    assert 0 < history.history["flops_fraction"][-1] <= 1


@pytest.mark.slow
def test_mirrored_strategy_gives_the_same_search_as_one_device(
    mirrored, straight
):
    two = _search(mirrored)
    _fit(two, epochs=4)
    _assert_same_state(straight[0], two)


@pytest.mark.slow
def test_backup_and_restore_resumes_with_the_same_memory_and_gates(
    straight, interrupted
):
    _, backup = interrupted
    # A fresh process: other random initial predictor weights.
    resumed = _search(seed=9)
    _fit(
        resumed,
        epochs=4,
        callbacks=[keras.callbacks.BackupAndRestore(str(backup))],
    )
    assert int(resumed.steps.numpy()) == 16
    _assert_same_state(straight[0], resumed)


def test_config_and_keras_file_round_trip(tmp_path, straight, interrupted):
    search, _ = interrupted
    config = search.get_config()
    restored = PerformanceMaximization.from_config(config)
    assert restored.get_config() == config
    search.save(tmp_path / "search.keras")
    loaded = keras.saving.load_model(tmp_path / "search.keras")
    assert isinstance(loaded, PerformanceMaximization)
    assert loaded.options == search.options
    _assert_same_state(search, loaded, rtol=0, atol=0)
    # The loaded search goes on as the uninterrupted one did (memory,
    # gates, predictor and both optimizers' state were in the file).
    _fit(loaded, epochs=2)
    _assert_same_state(straight[0], loaded)


@pytest.mark.slow
def test_xla_compiles_on_one_replica_and_is_refused_on_several(mirrored):
    search = _search()
    search.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=True)
    history = _fit(search, epochs=1)
    assert int(search.steps.numpy()) == 4
    assert np.isfinite(history.history["loss"][-1])
    with pytest.raises(ValueError, match="cannot be compiled with XLA over 2"):
        _search(mirrored).compile(optimizer="adam", jit_compile=True)
