"""A run's progress, kept in a JSON file (`state.json`)."""

import json
import os


class RunState:
    """Which stages are done, how often each ran, their results.

    Args:
        path: The JSON file; read if it exists.
    """

    def __init__(self, path):
        self.path = path
        self.data = {"stages": {}}
        if os.path.exists(path):
            with open(path) as handle:
                self.data = json.load(handle)

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

    def save(self):
        """Writes the file atomically."""
        temporary = f"{self.path}.tmp"
        with open(temporary, "w") as handle:
            json.dump(self.data, handle, indent=2)
        os.replace(temporary, self.path)
