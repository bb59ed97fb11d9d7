"""What `wsol data prepare` leaves beside a real dataset, and the check a search makes of it.

The manifest (`wsol-dataset.json` in the data root) carries the fingerprint of the metadata
the images were verified against: the same fingerprint every search records on its parent
run, so a search, a prepared folder and a promoted model can be matched by one value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsol.data.bundled import bundled_name
from wsol.data.metadata import SPLITS, MetadataError, load_split

MANIFEST = "wsol-dataset.json"


def dataset_fingerprint(metadata_root: str | Path) -> str:
    """sha256 over every metadata file (names and contents), so runs on other data differ."""
    digest = hashlib.sha256()
    root = Path(metadata_root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A verified dataset: which benchmark, which metadata (`bundled` or a folder relative to
    the data root), its fingerprint, the first `classes` classes only (None: all)."""

    dataset: str
    metadata: str
    fingerprint: str
    classes: int | None
    counts: dict[str, dict[str, int]]

    def write(self, data_root: Path) -> None:
        from wsol.common.durable import write_bytes_atomic

        payload = json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"
        write_bytes_atomic(data_root / MANIFEST, payload.encode())


def read_manifest(data_root: str | Path) -> Manifest | None:
    """The manifest of a prepared data root; None when there is none (prepared by hand)."""
    path = Path(data_root) / MANIFEST
    if not path.is_file():
        return None
    try:
        values: dict[str, Any] = json.loads(path.read_text())
        return Manifest(**values)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a manifest written by `wsol data prepare`: {error}") \
            from None


def how_to_prepare(dataset: str, data_root: Path) -> str:
    """The command that fills `data_root`, for the one-line errors that point to it."""
    name = bundled_name(dataset)
    if name is not None:
        return f"`wsol data prepare {name} --archives DIR --out {data_root}`"
    return f"`wsol data check --metadata-root METADATA --data-root {data_root}`"


def _missing_images(data_root: Path, metadata_root: Path) -> str | None:
    """Without a manifest: every image the metadata names must at least exist (no decoding:
    this runs before every search, `wsol data check --data-root` does the full check)."""
    for split in SPLITS:
        if not (metadata_root / split).is_dir():
            continue
        try:
            ids = load_split(metadata_root, split).image_ids
        except MetadataError as error:
            return f"{error.problems[0]} ({len(error.problems)} problem(s) in {split}/)"
        missing = [i for i in ids if not (data_root / i).is_file()]
        if missing:
            return (f"{len(missing)} of the {len(ids)} {split} images of {metadata_root} are "
                    f"not under {data_root} (first: {missing[0]})")
    return None


def data_problem(dataset: str, data_root: str | Path, metadata_root: str | Path) -> str | None:
    """Why a search on `dataset` may not start on this data: one line that says what is
    missing and how to prepare it; None when the data matches its metadata."""
    root, metadata = Path(data_root), Path(metadata_root)
    hint = how_to_prepare(dataset, root)
    if not root.is_dir():
        return f"data_root {root} does not exist: prepare it with {hint}"
    if not metadata.is_dir():
        return f"metadata_root {metadata} does not exist"
    manifest = read_manifest(root)
    if manifest is None:
        missing = _missing_images(root, metadata)
        return f"{missing}: prepare it with {hint}" if missing else None
    known = bundled_name(dataset)
    if known is not None and manifest.dataset != known:
        return f"{root} holds {manifest.dataset}, not {known}: fix data_root, or prepare " \
               f"{known} with {hint}"
    if manifest.fingerprint != dataset_fingerprint(metadata):
        where = "the bundled metadata" if manifest.metadata == "bundled" else \
            f"metadata_root: {root / manifest.metadata}"
        subset = f" (its first {manifest.classes} classes)" if manifest.classes else ""
        return (f"{root} was prepared{subset} for other metadata than {metadata}: use {where}, "
                f"or prepare this metadata's images with {hint}")
    return None
