"""Warnings that point at the user's line, not at the library's.

`warnings.warn(message, stacklevel=user_stacklevel())` attributes a warning
to the first caller outside the `ekg_keras` package, however deep inside
the library it is raised (`prune` -> method set-up -> `trace` -> ...), so
that the filename and line a user sees are their own call's.
(Python 3.12's `skip_file_prefixes` does the same; this works on 3.10.)
"""

import os
import sys

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel():
    """The `stacklevel` for a `warnings.warn` called by this function's
    caller: that of the innermost frame outside the `ekg_keras` package
    (1, the caller itself, when every frame is inside)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and _inside(frame):
        frame = frame.f_back
        level += 1
    return level if frame is not None else 1


def _inside(frame):
    return os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE)
