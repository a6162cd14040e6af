"""Tests for ekg_keras.methods.Trajectory and SearchCheckpoint."""

import numpy as np
import pytest

from ekg_keras.methods import CheckpointError
from ekg_keras.methods import SearchCheckpoint
from ekg_keras.methods import Trajectory


def test_trajectory_round_trips_through_a_file(tmp_path):
    rng = np.random.default_rng(0)
    keep = [[rng.random(n) < 0.6 for n in (3, 17, 64)] for _ in range(4)]
    trajectory = Trajectory(keep, np.arange(4.0), np.linspace(1, 0.5, 4))
    path = tmp_path / "sub" / "trajectory.npz"
    trajectory.save(path)
    loaded = Trajectory.load(path)
    assert len(loaded) == 4
    for a, b in zip(trajectory.keep_masks, loaded.keep_masks, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(loaded.losses, trajectory.losses)
    np.testing.assert_array_equal(
        loaded.flops_fractions, trajectory.flops_fractions
    )
    with pytest.raises(ValueError, match="one loss and one FLOPs fraction"):
        Trajectory(keep, np.arange(3.0), np.ones(4))


def test_search_checkpoint_saves_atomically_and_loads(tmp_path):
    checkpoint = SearchCheckpoint(tmp_path / "search")
    assert checkpoint.enabled and not checkpoint.exists()
    checkpoint.save({"a": np.arange(3)}, {"steps": [1, 2]})
    checkpoint.save({"a": np.arange(5)}, {"steps": [1, 2, 3]})
    arrays, record = checkpoint.load()
    np.testing.assert_array_equal(arrays["a"], np.arange(5))
    assert record == {"steps": [1, 2, 3]}
    # One file: a kill between two replaced files could not pair the
    # arrays of one step with the record of another.
    assert sorted(p.name for p in (tmp_path / "search").iterdir()) == [
        "state.npz",
    ]
    with pytest.raises(ValueError, match="reserved key '__record__'"):
        checkpoint.save({"__record__": np.arange(2)}, {})
    off = SearchCheckpoint(None)
    off.save({"a": np.arange(2)}, {})
    assert not off.enabled and not off.exists()


def test_a_checkpoint_with_its_record_beside_it_still_loads(tmp_path):
    # The layout before the record moved into state.npz.
    directory = tmp_path / "search"
    directory.mkdir()
    np.savez(directory / "state.npz", a=np.arange(4))
    (directory / "record.json").write_text('{"steps": [7]}')
    arrays, record = SearchCheckpoint(directory).load()
    assert list(arrays) == ["a"]
    np.testing.assert_array_equal(arrays["a"], np.arange(4))
    assert record == {"steps": [7]}


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_checkpoint_is_named_with_the_way_out(tmp_path, damage):
    checkpoint = SearchCheckpoint(tmp_path / "search")
    checkpoint.save({"a": np.arange(1000)}, {"steps": [1]})
    path = tmp_path / "search" / "state.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"x")
    with pytest.raises(ValueError) as error:
        checkpoint.load()
    message = str(error.value)
    assert "\n" not in message
    assert f"checkpoint {path} could not be read" in message
    assert f"Delete {tmp_path / 'search'} to start the search over" in message


def test_damaged_checkpoint_weights_are_named(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    checkpoint = SearchCheckpoint(tmp_path / "search")
    checkpoint.save_weights(model, "finetuned")
    path = tmp_path / "search" / "finetuned.weights.h5"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="finetuned.weights.h5 could not be"):
        checkpoint.load_weights(model, "finetuned")


def _saved_checkpoint(directory):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(64)])
    checkpoint = SearchCheckpoint(directory)
    checkpoint.save_weights(model, "finetuned")
    checkpoint.save({"a": np.arange(1000)}, {"steps": [1]})
    return model, checkpoint


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
@pytest.mark.parametrize("name", ["state.npz", "finetuned.weights.h5"])
def test_verify_finds_each_damaged_file(tmp_path, name, damage):
    # Corrupted bytes inside the data leave an HDF5 file readable with
    # other weights: only the recorded checksum tells.
    directory = tmp_path / "search"
    model, _ = _saved_checkpoint(directory)
    path = directory / name
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-200] ^= 0xFF
    path.write_bytes(bytes(data))
    fresh = SearchCheckpoint(directory)
    with pytest.raises(CheckpointError) as error:
        fresh.verify()
    assert error.value.path == str(path)
    assert "\n" not in str(error.value)
    assert f"Delete {directory} to start the search over" in str(error.value)
    if name.endswith(".h5"):
        with pytest.raises(CheckpointError):
            SearchCheckpoint(directory).load_weights(model, "finetuned")


def test_an_intact_checkpoint_verifies_and_its_weights_load(tmp_path):
    directory = tmp_path / "search"
    model, _ = _saved_checkpoint(directory)
    expected = [w.numpy() for w in model.weights]
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape))
    resumed = SearchCheckpoint(directory)
    resumed.verify()
    resumed.load_weights(model, "finetuned")
    for a, b in zip(expected, model.weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    # A resumed search's next save keeps the weights' record.
    resumed.save({"a": np.arange(3)}, {"steps": [1, 2]})
    (directory / "finetuned.weights.h5").write_bytes(b"x" * 10)
    with pytest.raises(CheckpointError, match="10 bytes"):
        SearchCheckpoint(directory).verify()
    assert sorted(p.name for p in directory.iterdir()) == [
        "finetuned.weights.h5",
        "state.npz",
    ]
