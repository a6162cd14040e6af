"""Atomic writes and fingerprints (size and SHA-256) of files."""

import hashlib
import os

_CHUNK = 1 << 20


def fingerprint(path):
    """The size and SHA-256 of a file, or of the files of a directory.

    For a directory, `size` is the total of its files' sizes and `sha256`
    hashes each file's path (relative, `/`-separated) and contents, in
    sorted order, so renaming, adding or changing any file changes it.

    Args:
        path: A file or directory.

    Returns:
        A dict `{"size": int, "sha256": str}`.
    """
    path = str(path)
    if not os.path.isdir(path):
        digest = hashlib.sha256()
        _hash_file(path, digest)
        return {"size": os.path.getsize(path), "sha256": digest.hexdigest()}
    digest = hashlib.sha256()
    size = 0
    for relative in _files_under(path):
        full = os.path.join(path, relative)
        digest.update(relative.replace(os.sep, "/").encode() + b"\0")
        _hash_file(full, digest)
        digest.update(b"\0")
        size += os.path.getsize(full)
    return {"size": size, "sha256": digest.hexdigest()}


def temporary_path(path):
    """Where `replace_atomically` writes before renaming: beside `path`,
    hidden, with the same ending (Keras checks `.keras`, `.weights.h5`)."""
    directory, name = os.path.split(str(path))
    return os.path.join(directory, f".tmp-{name}")


def replace_atomically(path, write):
    """Writes a file through a temporary one that then replaces `path`.

    A process killed at any moment leaves either the old file (or none)
    or the new one whole, never a part of one.

    Args:
        path: The file to write.
        write: Called with the temporary path; writes the file there.
    """
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = temporary_path(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _hash_file(path, digest):
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def _files_under(directory):
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)
