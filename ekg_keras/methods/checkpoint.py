"""Checkpoints of a search: arrays, a JSON record and model weights."""

import json
import os
import zipfile

import numpy as np


class SearchCheckpoint:
    """A directory holding one search's resumable state.

    `save` writes the state arrays and a JSON record as one file,
    `state.npz`, atomically (it goes to a temporary file that then replaces
    the old one, so a kill at any moment leaves the previous checkpoint
    whole: arrays and record of the same step), and `load` reads them
    back. Model weights that the search
    fixes once (e.g. after a warm-up fine-tune) go beside them with
    `save_weights` / `load_weights`.

    Args:
        directory: The checkpoint directory, or None for a search that does
            not checkpoint (every method is then a no-op).
    """

    STATE = "state.npz"
    #: The record's key inside `state.npz`.
    RECORD_KEY = "__record__"
    #: Where checkpoints written before the record moved into `state.npz`
    #: kept it (read when the key is missing).
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
        if self.RECORD_KEY in arrays:
            raise ValueError(
                f"State arrays should not use the reserved key "
                f"{self.RECORD_KEY!r}. Received keys: {sorted(arrays)}"
            )
        os.makedirs(self.directory, exist_ok=True)
        # One file: two files replaced one after the other could be killed
        # in between, leaving the arrays of one step with the record of
        # the one before.
        stored = {**arrays, self.RECORD_KEY: np.array(json.dumps(record))}
        self._replace(self.STATE, lambda h: np.savez(h, **stored), "wb")

    def load(self):
        """The saved `(arrays, record)`; arrays are loaded into memory.

        Raises:
            ValueError: If the file is damaged (truncated, overwritten),
                naming it and how to start over.
        """
        path = self.path(self.STATE)
        try:
            with np.load(path) as stored:
                arrays = {key: stored[key] for key in stored.files}
            if self.RECORD_KEY in arrays:
                record = json.loads(str(arrays.pop(self.RECORD_KEY)))
            else:
                path = self.path(self.RECORD)
                with open(path) as handle:
                    record = json.load(handle)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise self._damaged(path, error) from None
        return arrays, record

    def save_weights(self, model, name):
        """Saves `model`'s weights as `<name>.weights.h5`."""
        if not self.enabled:
            return
        os.makedirs(self.directory, exist_ok=True)
        model.save_weights(self.path(f"{name}.weights.h5"))

    def load_weights(self, model, name):
        """Loads weights that `save_weights` wrote into `model`.

        Raises:
            ValueError: If the file is damaged, naming it.
        """
        path = self.path(f"{name}.weights.h5")
        try:
            model.load_weights(path)
        except (OSError, ValueError, KeyError) as error:
            raise self._damaged(path, error) from None

    def _damaged(self, path, error):
        reason = str(error).splitlines()[0] if str(error) else ""
        return ValueError(
            f"The search checkpoint {path} could not be read "
            f"({type(error).__name__}: {reason}). Delete {self.directory} "
            "to start the search over, or restore the file."
        )

    def _replace(self, name, write, mode):
        temporary = self.path(f".{name}.tmp")
        with open(temporary, mode) as handle:
            write(handle)
        os.replace(temporary, self.path(name))
