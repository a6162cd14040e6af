"""Tests for ekg_keras.latency.cache: keyed entries, invalidation."""

import json

from ekg_keras.latency import LatencyCache


def test_entries_persist_for_the_same_device_and_runtime(tmp_path):
    path = tmp_path / "sub" / "latency.json"
    cache = LatencyCache(path, "cpu A", "tf 2.0")
    assert cache.get("k") is None
    cache.put("k", {"ms": [[1.0]]})
    cache.put("other", 3)
    reopened = LatencyCache(path, "cpu A", "tf 2.0")
    assert reopened.get("k") == {"ms": [[1.0]]}
    assert reopened.get("other") == 3
    assert not reopened.invalidated
    stored = json.loads(path.read_text())
    assert stored["device"] == "cpu A" and stored["runtime"] == "tf 2.0"


def test_another_device_or_runtime_invalidates_the_file(tmp_path, capsys):
    path = tmp_path / "latency.json"
    LatencyCache(path, "cpu A", "tf 2.0").put("k", 1)
    for device, runtime in [("cpu B", "tf 2.0"), ("cpu A", "onnx 1.0")]:
        cache = LatencyCache(path, device, runtime)
        assert cache.invalidated
        assert cache.get("k") is None
    assert "measuring again" in capsys.readouterr().out
    # The next write replaces the file for the new device.
    LatencyCache(path, "cpu B", "tf 2.0").put("j", 2)
    assert LatencyCache(path, "cpu A", "tf 2.0").get("k") is None
    assert LatencyCache(path, "cpu B", "tf 2.0", verbose=0).get("j") == 2


def test_in_memory_cache_and_unreadable_file(tmp_path):
    memory = LatencyCache(None, "cpu", "tf")
    memory.put("k", 1)
    assert memory.get("k") == 1
    broken = tmp_path / "latency.json"
    broken.write_text("{not json")
    cache = LatencyCache(broken, "cpu", "tf")
    assert cache.get("k") is None and not cache.invalidated
