"""Checkpoints of a search: arrays, a JSON record and model weights."""

import json
import os

import numpy as np


class SearchCheckpoint:
    """A directory holding one search's resumable state.

    `save` writes the state arrays (`state.npz`) and a JSON record
    (`record.json`) atomically (each goes to a temporary file that then
    replaces the old one, so a kill mid-write leaves the previous
    checkpoint), and `load` reads them back. Model weights that the search
    fixes once (e.g. after a warm-up fine-tune) go beside them with
    `save_weights` / `load_weights`.

    Args:
        directory: The checkpoint directory, or None for a search that does
            not checkpoint (every method is then a no-op).
    """

    STATE = "state.npz"
    RECORD = "record.json"

    def __init__(self, directory):
        self.directory = None if directory is None else str(directory)

    @property
    def enabled(self):
        """Whether the search checkpoints at all."""
        return self.directory is not None

    def path(self, name):
        """A path inside the directory."""
        return os.path.join(self.directory, name)

    def exists(self):
        """Whether a saved state is there to resume from."""
        return self.enabled and os.path.exists(self.path(self.STATE))

    def save(self, arrays, record):
        """Writes the state: a dict of arrays and a JSON-ready record."""
        if not self.enabled:
            return
        os.makedirs(self.directory, exist_ok=True)
        self._replace(self.STATE, lambda h: np.savez(h, **arrays), "wb")
        self._replace(self.RECORD, lambda h: json.dump(record, h), "w")

    def load(self):
        """The saved `(arrays, record)`; arrays are loaded into memory."""
        with np.load(self.path(self.STATE)) as stored:
            arrays = {key: stored[key] for key in stored.files}
        with open(self.path(self.RECORD)) as handle:
            record = json.load(handle)
        return arrays, record

    def save_weights(self, model, name):
        """Saves `model`'s weights as `<name>.weights.h5`."""
        if not self.enabled:
            return
        os.makedirs(self.directory, exist_ok=True)
        model.save_weights(self.path(f"{name}.weights.h5"))

    def load_weights(self, model, name):
        """Loads weights that `save_weights` wrote into `model`."""
        model.load_weights(self.path(f"{name}.weights.h5"))

    def _replace(self, name, write, mode):
        temporary = self.path(f".{name}.tmp")
        with open(temporary, mode) as handle:
            write(handle)
        os.replace(temporary, self.path(name))
