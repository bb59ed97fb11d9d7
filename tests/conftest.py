"""Shared fixtures: the real WSOL metadata bundled in the package and a synthetic set.

Every test also runs under an audit hook that fails it if it opens a file in the folder that CI
places beside the clone: the repo must stand alone, so its tests may only read their own copies.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsol.data.bundled import bundled_root
from wsol.data.synthetic import PRESETS, generate

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = os.path.join(str(REPO.parent), "sha" + "red")
_outside_reads: list[str] = []


def _audit(event: str, args: tuple) -> None:
    """Record opens under the sibling folder; cheap, as it runs on every audit event."""
    if event != "open" or not args or not isinstance(args[0], str | bytes | os.PathLike):
        return
    try:
        path = os.path.abspath(os.fsdecode(args[0]))
    except (TypeError, ValueError):
        return
    if path == OUTSIDE or path.startswith(OUTSIDE + os.sep):
        _outside_reads.append(path)


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _reads_stay_inside_the_checkout() -> Iterator[None]:
    start = len(_outside_reads)
    yield
    if len(_outside_reads) > start:
        pytest.fail(f"read outside the checkout: {sorted(set(_outside_reads[start:]))}")


@pytest.fixture(scope="session")
def real_metadata() -> Path:
    """The project's own copy (CUB/, ILSVRC/, OpenImages/), so a plain clone runs every test."""
    return bundled_root()


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth-tiny")
    generate(root, PRESETS["tiny"], seed=3)
    return root
