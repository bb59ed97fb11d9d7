"""Writes that survive a crash of the machine, not only of the process.

A file written under a temporary name and renamed into place is never seen half-written by
another process, but after a power loss or a kernel crash the rename can reach the disk
before the data: the name then holds an empty or truncated file that every later run trusts
(a pretrained backbone, a dataset, the record a restored search reads). So the data is
fsync'd before the rename, and the folder after it (which makes the rename itself durable).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

# What a filesystem that cannot fsync a folder (some network ones) answers: nothing to do.
_NO_FOLDER_SYNC = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flushes a file's or a folder's contents (a folder: its entries) to the disk."""
    folder = Path(path).is_dir()
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if not folder or error.errno not in _NO_FOLDER_SYNC:
            raise
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """Every file and folder under `root` (a staged folder about to be renamed into place)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(folder)


def replace_durably(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """`os.replace(source, target)` with `source` (file or folder tree) on the disk before
    the rename and the rename on the disk after it."""
    if Path(source).is_dir():
        fsync_tree(source)
    else:
        fsync_path(source)
    os.replace(source, target)
    fsync_path(Path(target).parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """`path` holds either its old contents or all of `data`, also after a crash."""
    target = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from the machine's other users
        replace_durably(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
