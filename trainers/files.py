"""The files of a run: written atomically, recorded, read back verified.

Every file a run writes goes through `write`: to a temporary name beside
it, then renamed over the target, so a kill at any moment leaves the old
file or the new one, never a part of one. `write` returns the file's size
and SHA-256, which the run records (`state.json`, see `trainers.state`).
Every file the run reads back goes through `read`, which compares it with
its record first: a file missing, of another size or checksum, or that its
reader cannot parse raises `DamagedFileError`, whose one-line message
names the file and what to do.

JSON files that are records themselves (`state.json`, a backup's
`backup.json`) carry their own checksum inside (`dump_json`,
`load_json`).
"""

import hashlib
import json
import os
import zipfile

from ekg_keras import _files
from trainers.config import ConfigError
from trainers.config import first_line

#: The key of a JSON record's own checksum.
CHECKSUM_KEY = "checksum"

#: What readers raise on a damaged file: h5py's OSError, zipfile's
#: BadZipFile, JSONDecodeError and NumPy's errors (ValueErrors), EOFError,
#: KeyError (a part the reader looks for is not there).
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)

fingerprint = _files.fingerprint


class DamagedFileError(ConfigError):
    """A file of the run is missing, damaged or unreadable.

    A `ConfigError`, so the trainers print it as one line.

    Args:
        path: The file.
        reason: What is wrong with it, in a few words.
        recovery: What the run does, or what the user should do.
    """

    def __init__(self, path, reason, recovery=None):
        self.path = str(path)
        self.reason = reason
        self.recovery = recovery
        message = f"{self.path} is damaged ({reason})"
        if recovery:
            message += f": {recovery}"
        super().__init__(message)

    def with_recovery(self, recovery):
        """The same error with another recovery."""
        return DamagedFileError(self.path, self.reason, recovery)


def write(path, write_to):
    """Writes a file atomically; returns its fingerprint for the record.

    Args:
        path: The file to write (its directory is created).
        write_to: Called with a temporary path beside `path` that keeps
            its ending; writes the file there.

    Returns:
        `{"size": ..., "sha256": ...}` of the written file.
    """
    _files.replace_atomically(path, write_to)
    return fingerprint(path)


def check(path, record):
    """What is wrong with `path` compared with its `record`, or None.

    Args:
        path: A file or directory.
        record: Its recorded fingerprint, or None (then only its presence
            is checked).

    Returns:
        None if it is there (and matches `record`), else the reason.
    """
    if not os.path.exists(path):
        return "missing"
    if record is None:
        return None
    actual = fingerprint(path)
    if actual["size"] != record["size"]:
        return f"{actual['size']} bytes, {record['size']} recorded"
    if actual["sha256"] != record["sha256"]:
        return "its SHA-256 differs from the one recorded"
    return None


def read(path, reader, record=None):
    """Reads a file back after checking it against its record.

    Args:
        path: The file.
        reader: Called with `path`; returns what the file holds.
        record: The file's recorded fingerprint, or None (not checked).

    Returns:
        What `reader` returns.

    Raises:
        DamagedFileError: If the file is missing, does not match its
            record, or `reader` fails on it (no recovery set: the caller
            adds what to do).
    """
    reason = check(path, record)
    if reason is not None:
        raise DamagedFileError(path, reason)
    try:
        return reader(path)
    except READ_ERRORS as error:
        raise DamagedFileError(
            path, f"{type(error).__name__}: {first_line(error)}"
        ) from None


def dump_json(path, data):
    """Writes `data` (a dict) as JSON atomically, with its own checksum."""
    content = {**data, CHECKSUM_KEY: _checksum(data)}

    def write_to(temporary):
        with open(temporary, "w") as handle:
            json.dump(content, handle, indent=2)

    _files.replace_atomically(path, write_to)


def load_json(path):
    """Reads a file that `dump_json` wrote, checking its checksum.

    A file without a checksum (written before they were) is accepted.

    Raises:
        DamagedFileError: If it is missing, not JSON, or its checksum does
            not match its contents.
    """

    def parse(name):
        with open(name) as handle:
            return json.load(handle)

    data = read(path, parse)
    if not isinstance(data, dict):
        raise DamagedFileError(path, "not a JSON object")
    recorded = data.pop(CHECKSUM_KEY, None)
    if recorded is not None and recorded != _checksum(data):
        raise DamagedFileError(
            path, "its contents differ from its recorded checksum"
        )
    return data


def _checksum(data):
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
