"""The real WSOL benchmark metadata shipped inside the package (no images).

The split files of CUB, ILSVRC and OpenImages from the reference evaluator (MIT, see
`benchmark_metadata/LICENSE` and `NOTICE`) travel as package data, so `wsol data check --dataset
cub` and the tests work from a plain clone or a wheel, without any folder beside the repo.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

PACKAGE_FOLDER = "benchmark_metadata"
# CLI / API name -> folder name of the reference layout.
DATASETS = {"cub": "CUB", "ilsvrc": "ILSVRC", "openimages": "OpenImages"}
# Other names an experiment's `dataset` may give a bundled benchmark.
ALIASES = {"imagenet": "ilsvrc"}

_extracted: Path | None = None


def _copy_tree(source: Traversable, target: Path) -> None:
    """Copy a resource folder to disk, for installs where it is not a real folder (zip)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir():
            _copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())


def bundled_root() -> Path:
    """Folder holding CUB/, ILSVRC/ and OpenImages/ as a real path (the reader needs one)."""
    global _extracted
    resource = files("wsol.data") / PACKAGE_FOLDER
    if isinstance(resource, Path):
        return resource
    if _extracted is None:
        temporary = Path(tempfile.mkdtemp(prefix="wsol-metadata-"))
        atexit.register(shutil.rmtree, temporary, ignore_errors=True)
        _copy_tree(resource, temporary / PACKAGE_FOLDER)
        _extracted = temporary / PACKAGE_FOLDER
    return _extracted


def bundled_name(dataset: str) -> str | None:
    """The bundled benchmark a dataset name means (case-insensitive, aliases too), or None."""
    name = ALIASES.get(dataset.lower(), dataset.lower())
    return name if name in DATASETS else None


def bundled_metadata(dataset: str) -> Path:
    """Metadata root (train/ val/ test/) of one bundled dataset; the name is case-insensitive."""
    folder = DATASETS.get(dataset.lower())
    if folder is None:
        known = ", ".join(DATASETS)
        raise ValueError(f"unknown bundled dataset {dataset!r}; known: {known}")
    path = bundled_root() / folder
    if not path.is_dir():
        raise FileNotFoundError(f"bundled metadata {path} is missing: a broken install?")
    return path
