"""A metadata folder of its own for a prepared dataset: a subset of classes, or ILSVRC with
the train list that the bundled metadata leaves out (too large to ship)."""

from __future__ import annotations

from pathlib import Path

from wsol.common.durable import write_bytes_atomic
from wsol.data.metadata import SplitMetadata


def _kept_lines(path: Path, ids: set[str]) -> str:
    """The lines of a metadata file about the kept images, unchanged (first field: the id)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return "".join(f"{line}\n" for line in lines if line.split(",", 1)[0] in ids)


def _generated(split: SplitMetadata) -> dict[str, str]:
    """A split listed from the images themselves: no sizes (read from the files), no boxes,
    as the reference's own ILSVRC train folder."""
    return {"image_ids.txt": "".join(f"{i}\n" for i in split.image_ids),
            "class_labels.txt": "".join(f"{i},{split.labels[i]}\n" for i in split.image_ids),
            "image_sizes.txt": "", "localization.txt": ""}


def write_metadata(source: Path, target: Path, splits: dict[str, SplitMetadata]) -> None:
    """`target/<split>/` for every split: the source's files cut to the split's images, or
    the files of a split the source does not list."""
    for name, split in splits.items():
        folder = source / name
        if (folder / "image_ids.txt").is_file():
            ids = set(split.image_ids)
            files = {p.name: _kept_lines(p, ids) for p in sorted(folder.glob("*.txt"))}
        else:
            files = _generated(split)
        (target / name).mkdir(parents=True, exist_ok=True)
        for filename, text in files.items():
            write_bytes_atomic(target / name / filename, text.encode())
