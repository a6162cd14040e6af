"""Tests for the EKG memory bank (EKG paper, Eq. 10)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from ekg_testing import searched_bank
from ekg_testing import small_model
from ekg_testing import with_ids

import ekg_keras
from ekg_keras.methods.ekg.memory_bank import TOP_K_FILL
from ekg_keras.methods.ekg.memory_bank import HostMemoryBank
from ekg_keras.methods.ekg.memory_bank import MemoryBank
from ekg_keras.methods.ekg.memory_bank import bank_bytes
from ekg_keras.methods.ekg.memory_bank import build_memory_bank


def _logits(n=6, teachers=3, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, teachers, classes)).astype("float32")


def _filled(bank, logits):
    ids = np.arange(len(logits))
    for k in range(logits.shape[1]):
        bank.write(ids, k, logits[:, k])
    return bank


def test_write_then_read_by_ids_in_any_order():
    logits = _logits()
    bank = _filled(MemoryBank(6, 3, 5), logits)
    ids = np.array([4, 0, 5, 4])
    np.testing.assert_array_equal(bank.read(ids).numpy(), logits[ids])
    half = _filled(MemoryBank(6, 3, 5, storage="float16"), logits)
    np.testing.assert_allclose(half.read(ids).numpy(), logits[ids], atol=4e-3)
    assert half.nbytes == bank.nbytes // 2 == 6 * 3 * 5 * 2


def test_top_k_keeps_the_largest_logits():
    logits = _logits(classes=8)
    bank = _filled(MemoryBank(6, 3, 8, top_k=3), logits)
    read = bank.read(np.arange(6)).numpy()
    top = np.sort(logits, axis=-1)[..., -3:]
    np.testing.assert_allclose(np.sort(read, axis=-1)[..., -3:], top)
    assert np.all(np.sort(read, axis=-1)[..., :-3] == TOP_K_FILL)
    assert np.all((read == logits) | (read == TOP_K_FILL))
    assert bank_bytes(6, 3, 8, "float32", top_k=3) == 6 * 3 * 3 * 8


def test_ids_outside_the_bank_fail_clearly():
    bank = MemoryBank(6, 3, 5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="below 6"):
        bank.read(np.array([1, 6]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=">= 0"):
        bank.read(np.array([-1]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_samples": 0}, "num_samples=0"),
        ({"storage": "int8"}, "storage='int8'"),
        ({"top_k": 5}, "top_k=5"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {"num_samples": 6, "num_teachers": 3, "num_classes": 5}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MemoryBank(**arguments)


def test_config_and_keras_file_round_trip(tmp_path):
    logits = _logits(classes=8)
    bank = _filled(
        MemoryBank(6, 3, 8, top_k=2, storage="float16", fingerprint="x"),
        logits,
    )
    clone = MemoryBank.from_config(bank.get_config())
    assert clone.get_config() == bank.get_config()
    ids = keras.Input((), dtype="int64")
    model = keras.Model(ids, bank(ids))
    model.save(tmp_path / "bank.keras")
    loaded = keras.models.load_model(tmp_path / "bank.keras")
    query = np.array([3, 1])
    np.testing.assert_array_equal(loaded(query), bank.read(query))


@pytest.fixture(scope="module")
def searched():
    return searched_bank()


def test_bank_rows_are_the_teachers_logits(searched):
    search, bank, teachers, x, _ = searched
    assert len(teachers) == 3 and teachers[0] == int(
        np.argmin([h.loss for h in search.history[:-1]])
    )
    model = search.model
    for k, index in enumerate(teachers):
        search.apply_keep(search.history[index].keep_masks())
        expected = np.concatenate(
            [model(x[i : i + 16], training=True) for i in range(0, 48, 16)]
        )
        np.testing.assert_allclose(
            bank.read(np.arange(48))[:, k], expected, rtol=1e-5, atol=1e-5
        )
    # The student's masks are the search result again.
    search.apply_keep(search.history[-1].keep_masks())
    assert bank.fingerprint.startswith("classes=4;groups=")


def test_shuffled_samples_meet_their_own_rows(searched):
    _, bank, _, x, y = searched
    table = bank.read(np.arange(48)).numpy()
    seen = []
    for features, labels in with_ids(x, y, 10, shuffle=True):
        ids = features["id"].numpy()
        np.testing.assert_array_equal(bank.read(ids).numpy(), table[ids])
        np.testing.assert_array_equal(features["image"].numpy(), x[ids])
        np.testing.assert_array_equal(labels.numpy(), y[ids])
        seen.extend(ids)
    assert sorted(seen) == list(range(48)) and seen != list(range(48))


def test_build_needs_ids_and_a_finished_search(searched):
    search, _, _, x, y = searched
    plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match="indexed by sample id"):
        build_memory_bank(search, plain)
    fresh = ekg_keras.EKGSearch(small_model(), 0.5, (x, y))
    with pytest.raises(ValueError, match="finished search"):
        build_memory_bank(fresh, with_ids(x, y, 8))


def test_host_bank_reads_like_the_device_bank(tmp_path):
    logits = _logits(classes=8)
    for top_k in (None, 3):
        device = _filled(MemoryBank(6, 3, 8, top_k=top_k), logits)
        host = _filled(
            HostMemoryBank(6, 3, 8, tmp_path / f"k{top_k}", top_k=top_k),
            logits,
        )
        ids = np.array([5, 0, 2])
        np.testing.assert_array_equal(host.read(ids), device.read(ids))
        assert host.nbytes == device.nbytes
    host.flush()
    reopened = HostMemoryBank.from_config(host.get_config())
    np.testing.assert_array_equal(reopened.read(ids), host.read(ids))
    with pytest.raises(ValueError, match=r"in \[0, 6\)"):
        host.read(np.array([6]))


def test_host_bank_rows_travel_with_their_samples(tmp_path):
    x, y = np.zeros((10, 8, 8, 3), "float32"), np.arange(10) % 4
    host = HostMemoryBank(10, 2, 4, tmp_path)
    logits = _logits(10, 2, 4)
    for k in range(2):
        host.write(np.arange(10), k, logits[:, k])
    for features, _ in host.attach(with_ids(x, y, 4, shuffle=True)):
        ids = features["id"].numpy()
        np.testing.assert_array_equal(features["teacher_logits"], logits[ids])


def test_auto_placement_moves_large_banks_to_the_host(searched, tmp_path):
    search, device_bank, _, x, y = searched
    host_bank, _ = build_memory_bank(
        search,
        with_ids(x, y, 16),
        num_teachers=3,
        device_budget=100,
        host_directory=tmp_path,
        verbose=0,
    )
    assert isinstance(host_bank, HostMemoryBank)
    assert isinstance(device_bank, MemoryBank)
    np.testing.assert_allclose(
        host_bank.read(np.arange(48)),
        device_bank.read(np.arange(48)),
        rtol=1e-5,
        atol=1e-5,
    )
