"""TensorFlow's start-up lines kept off a trainer's stderr.

Importing TensorFlow prints INFO lines from C++ (oneDNN, CUDA stubs, CPU
features) before its logging reads `TF_CPP_MIN_LOG_LEVEL`, so no setting
silences them; a trainer whose one-line error follows them would print
seven lines instead of one. `import_tensorflow()` imports it with stderr
captured and writes back every line that is not such start-up INFO
(warnings and errors still show). This module imports nothing heavy.
"""

import os
import re
import sys
import tempfile

_STARTUP = re.compile(
    r"^(I\d{4} |WARNING: All log messages before absl::InitializeLog|"
    r"To enable the following instructions)"
)


def import_tensorflow():
    """Imports TensorFlow, dropping its C++ start-up INFO lines."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if line and not _STARTUP.match(line):
                    sys.stderr.write(line + "\n")
            sys.stderr.flush()
