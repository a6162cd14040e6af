"""A run's record, kept in a JSON file (`state.json`) and its copy."""

import os

from trainers import files


class RunState:
    """Which stages are done, how often each ran, their results and files.

    The record is written atomically with its own checksum, twice: to
    `state.json`, then to its copy `state.copy.json` beside it. When one of
    them is damaged (truncated, overwritten, missing while the other is
    there), the other is read, `repaired` says so, and the next `save`
    writes both again.

    Each file a stage writes is recorded with its size and SHA-256
    (`record_file`), so a later run can check it before it trusts it.

    Args:
        path: The JSON file; read if it (or its copy) exists.

    Raises:
        DamagedFileError: If both the file and its copy are damaged (the
            run cannot tell which of its files to trust).
    """

    def __init__(self, path):
        self.path = path
        self.copy_path = copy_path(path)
        self.data = {"stages": {}}
        #: A `DamagedFileError` for the file found damaged and read from
        #: the other, whose recovery says so; None if none was.
        self.repaired = None
        if os.path.exists(path) or os.path.exists(self.copy_path):
            self._read()

    def _read(self):
        data, damaged = _load(self.path)
        copy, copy_damaged = _load(self.copy_path)
        if damaged is not None and copy_damaged is not None:
            copy = (
                "it has no copy"
                if copy_damaged.reason == "missing"
                else f"so is its copy {self.copy_path} ({copy_damaged.reason})"
            )
            raise damaged.with_recovery(
                f"{copy}; the files of this run cannot be checked without "
                f"it: move or delete {os.path.dirname(self.path) or '.'} to "
                "start over, or pass another --model_dir"
            )
        if damaged is not None:
            self.data = copy
            self.repaired = damaged.with_recovery(
                f"read from its copy {self.copy_path}, which rewrites it"
            )
            return
        self.data = data
        # A copy missing (written before copies were) or older (killed
        # between the two writes) is rewritten without a word.
        if copy_damaged is not None and copy_damaged.reason != "missing":
            self.repaired = copy_damaged.with_recovery(
                f"rewritten from {self.path}"
            )

    def stage(self, name):
        """The record of stage `name` (a dict, empty if never started)."""
        return self.data["stages"].setdefault(name, {})

    def done(self, name):
        """Whether stage `name` completed in this or an earlier run."""
        return bool(self.data["stages"].get(name, {}).get("completed"))

    def begin(self, name):
        """Counts one more run of stage `name`."""
        record = self.stage(name)
        record["runs"] = record.get("runs", 0) + 1
        self.save()

    def complete(self, name, seconds, **results):
        """Marks stage `name` done with its wall time and results."""
        record = self.stage(name)
        record.update(results)
        record["seconds"] = seconds
        record["completed"] = True
        self.save()

    def reopen(self, name):
        """Marks stage `name` not done and forgets its files (to redo it)."""
        self.stage(name).pop("completed", None)
        for path in self.files(name):
            del self.data["files"][path]
        self.save()

    def files(self, stage=None):
        """The recorded files: `{path in model_dir: record}` where a record
        is `{"stage", "size", "sha256"}`; only `stage`'s if given."""
        recorded = self.data.get("files", {})
        return {
            path: record
            for path, record in recorded.items()
            if stage is None or record["stage"] == stage
        }

    def record_file(self, path, stage, fingerprint):
        """Records a written file (saved with the next `save`).

        Args:
            path: Its path relative to the run's directory.
            stage: The stage that wrote it (or "summary").
            fingerprint: Its `{"size", "sha256"}`.
        """
        self.data.setdefault("files", {})[path] = {
            "stage": stage,
            **fingerprint,
        }

    def save(self):
        """Writes the file and then its copy, each atomically."""
        files.dump_json(self.path, self.data)
        files.dump_json(self.copy_path, self.data)


def _load(path):
    """`(data, None)` from a record file, or `(None, DamagedFileError)`."""
    try:
        return files.load_json(path), None
    except files.DamagedFileError as error:
        return None, error


def copy_path(path):
    """Where the copy of the record at `path` is kept."""
    root, extension = os.path.splitext(path)
    return f"{root}.copy{extension}"
