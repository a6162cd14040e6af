"""A JSON file of measured latency tables for one device and runtime."""

import json
import os

from ekg_keras import _logging as log

#: Where tables go by default; `EKG_KERAS_CACHE` overrides the folder.
DEFAULT_FOLDER = os.path.join("~", ".cache", "ekg_keras")


def default_cache_path():
    """`$EKG_KERAS_CACHE/latency.json`, else `~/.cache/ekg_keras/...`."""
    folder = os.environ.get("EKG_KERAS_CACHE", DEFAULT_FOLDER)
    return os.path.join(os.path.expanduser(folder), "latency.json")


class LatencyCache:
    """Measured tables in a file, valid for one device and one runtime.

    Entries are keyed by a string describing what was measured (layer
    configuration, input shape, grid and batch size). The file records the
    device and runtime it was measured on: opened for another device or
    runtime it is invalid, its entries are dropped (with a message) and
    the file is rewritten with the new ones at the next `put`.

    Args:
        path: The JSON file (created with its folder when first written),
            or None for an in-memory cache.
        device: The device's description (`device_id()`).
        runtime: The runtime's description (`runtime_id(...)`).
        verbose: 1 to say when a file is invalidated.
    """

    def __init__(self, path, device, runtime, verbose=1):
        self.path = None if path is None else os.fspath(path)
        self.device = device
        self.runtime = runtime
        self.invalidated = False
        self.entries = {}
        stored = self._read()
        if stored is None:
            return
        if stored.get("device") == device and stored.get("runtime") == runtime:
            self.entries = dict(stored.get("entries", {}))
            return
        self.invalidated = True
        if verbose:
            log.info(
                f"ekg_keras: latency cache {self.path} was measured on "
                f"{stored.get('device')!r} with {stored.get('runtime')!r}, "
                f"not {device!r} with {runtime!r}: measuring again."
            )

    def get(self, key):
        """The stored value of `key`, or None."""
        return self.entries.get(key)

    def put(self, key, value):
        """Stores `value` (JSON-friendly) under `key` and writes the file."""
        self.entries[key] = value
        if self.path is None:
            return
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        content = {
            "device": self.device,
            "runtime": self.runtime,
            "entries": self.entries,
        }
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w") as out:
            json.dump(content, out, indent=0, sort_keys=True)
        os.replace(temporary, self.path)  # Readers never see half a file.

    def _read(self):
        if self.path is None or not os.path.exists(self.path):
            return None
        try:
            with open(self.path) as source:
                return json.load(source)
        except (OSError, json.JSONDecodeError):
            return None
