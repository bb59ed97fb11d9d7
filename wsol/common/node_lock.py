"""One process at a time on this node: trials that share a node share one download or one
build (the shard cache, the synthetic-pretrained weights) instead of racing to make it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def node_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`, released when its holder exits or dies. Without flock
    (Windows) there is no lock: callers finish with an atomic rename, so racing makers each
    make the same file and one of them wins."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
