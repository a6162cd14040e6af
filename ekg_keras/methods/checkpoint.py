"""Checkpoints of a search: arrays, a JSON record and model weights."""

import json
import os
import zipfile

import numpy as np

from ekg_keras import _files

#: What reading a damaged file raises: h5py's OSError, zipfile's
#: BadZipFile (also for a wrong CRC), JSON's or NumPy's ValueError,
#: EOFError, and KeyError for a file without a part looked for.
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


class CheckpointError(ValueError):
    """A file of a search checkpoint is missing, damaged or unreadable.

    The message (one line) names the file and how to start over.

    Attributes:
        path: The file.
        reason: What is wrong with it, in a few words.
        directory: The checkpoint directory.
    """

    def __init__(self, path, reason, directory):
        self.path = path
        self.reason = reason
        self.directory = directory
        super().__init__(
            f"The search checkpoint {path} could not be read ({reason}). "
            f"Delete {directory} to start the search over, or restore the "
            "file."
        )


class SearchCheckpoint:
    """A directory holding one search's resumable state.

    `save` writes the state arrays and a JSON record as one file,
    `state.npz`, atomically (it goes to a temporary file that then replaces
    the old one, so a kill at any moment leaves the previous checkpoint
    whole: arrays and record of the same step), and `load` reads them
    back; the ZIP format's CRC-32 of each array tells a damaged file. Model
    weights that the search fixes once (e.g. after a warm-up fine-tune) go
    beside them with `save_weights` / `load_weights`, also atomically; their
    size and SHA-256 are recorded in `state.npz` and checked before they
    are loaded (`verify` checks everything without loading into a model).

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
    #: The key of the weights files' sizes and checksums inside `state.npz`.
    FILES_KEY = "__files__"

    def __init__(self, directory):
        self.directory = None if directory is None else str(directory)
        # Fingerprints of the weights files written or verified so far.
        self._files = {}

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
        reserved = {self.RECORD_KEY, self.FILES_KEY} & set(arrays)
        if reserved:
            raise ValueError(
                f"State arrays should not use the reserved key "
                f"{sorted(reserved)[0]!r}. Received keys: {sorted(arrays)}"
            )
        os.makedirs(self.directory, exist_ok=True)
        # One file: two files replaced one after the other could be killed
        # in between, leaving the arrays of one step with the record of
        # the one before.
        stored = {**arrays, self.RECORD_KEY: np.array(json.dumps(record))}
        if self._files:
            stored[self.FILES_KEY] = np.array(json.dumps(self._files))

        def write(path):
            with open(path, "wb") as handle:
                np.savez(handle, **stored)

        _files.replace_atomically(self.path(self.STATE), write)

    def load(self):
        """The saved `(arrays, record)`; arrays are loaded into memory.

        Raises:
            CheckpointError: If the file is missing or damaged (truncated,
                overwritten), naming it and how to start over.
        """
        path = self.path(self.STATE)
        try:
            with np.load(path) as stored:
                arrays = {key: stored[key] for key in stored.files}
            files = arrays.pop(self.FILES_KEY, None)
            if files is not None:
                self._files = json.loads(str(files))
            if self.RECORD_KEY in arrays:
                record = json.loads(str(arrays.pop(self.RECORD_KEY)))
            else:
                path = self.path(self.RECORD)
                with open(path) as handle:
                    record = json.load(handle)
        except _READ_ERRORS as error:
            raise self._damaged(path, error) from None
        return arrays, record

    def verify(self):
        """Reads the whole saved state and checks every recorded weights
        file's size and checksum, loading nothing into a model.

        Raises:
            CheckpointError: For the first file missing or damaged.
        """
        self.load()
        for name in self._files:
            self._check_weights(name)

    def save_weights(self, model, name):
        """Saves `model`'s weights as `<name>.weights.h5`."""
        if not self.enabled:
            return
        filename = f"{name}.weights.h5"
        path = self.path(filename)
        _files.replace_atomically(path, model.save_weights)
        self._files[filename] = _files.fingerprint(path)

    def load_weights(self, model, name):
        """Loads weights that `save_weights` wrote into `model`, after
        checking them against the size and checksum `state.npz` records.

        Raises:
            CheckpointError: If the file is missing or damaged, naming it.
        """
        filename = f"{name}.weights.h5"
        if filename not in self._files and self.exists():
            self._files = self._recorded_files()
        self._check_weights(filename)
        path = self.path(filename)
        try:
            model.load_weights(path)
        except _READ_ERRORS as error:
            raise self._damaged(path, error) from None

    def _recorded_files(self):
        """The weights files' fingerprints recorded in `state.npz`."""
        path = self.path(self.STATE)
        try:
            with np.load(path) as stored:
                if self.FILES_KEY not in stored.files:
                    return {}
                return json.loads(str(stored[self.FILES_KEY]))
        except _READ_ERRORS as error:
            raise self._damaged(path, error) from None

    def _check_weights(self, filename):
        path = self.path(filename)
        if not os.path.exists(path):
            raise CheckpointError(path, "missing", self.directory)
        record = self._files.get(filename)
        if record is None:  # Written before checksums were recorded.
            return
        actual = _files.fingerprint(path)
        if actual["size"] != record["size"]:
            reason = f"{actual['size']} bytes, {record['size']} recorded"
        elif actual["sha256"] != record["sha256"]:
            reason = "its SHA-256 differs from the one recorded"
        else:
            return
        raise CheckpointError(path, reason, self.directory)

    def _damaged(self, path, error):
        reason = str(error).splitlines()[0] if str(error) else ""
        return CheckpointError(
            path, f"{type(error).__name__}: {reason}", self.directory
        )
