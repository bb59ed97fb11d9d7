"""`wsol data check`: validate a dataset before anyone spends GPU hours on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2

from wsol.data.images import image_size, resolve
from wsol.data.metadata import SPLITS, MetadataError, Problem, SplitMetadata, load_split


@dataclass
class SplitReport:
    name: str
    images: int = 0
    classes: int = 0
    boxes: int = 0
    masks: int = 0
    problems: list[str] = field(default_factory=list)


def _check_files(split: SplitMetadata, data_root: Path, report: SplitReport) -> None:
    """Every image and mask the split names exists, decodes, and matches its stated size."""
    for image_id in split.image_ids:
        path = resolve(data_root, image_id)
        where = f"{split.folder / 'image_ids.txt'}: {image_id}"
        if not path.is_file():
            report.problems.append(f"{where}: image file {path} is missing")
            continue
        try:
            size = image_size(path)
        except OSError as error:
            report.problems.append(f"{where}: cannot read image {path}: {error}")
            continue
        stated = split.sizes.get(image_id)
        if stated and stated != size:
            report.problems.append(
                f"{split.folder / 'image_sizes.txt'}: {image_id}: "
                f"size {stated} but the image is {size}"
            )
        for box in split.boxes.get(image_id, ()):
            if box.x1 > size[0] or box.y1 > size[1]:
                report.problems.append(
                    f"{split.folder / 'localization.txt'}: {image_id}: box "
                    f"({box.x0},{box.y0},{box.x1},{box.y1}) outside the {size[0]}x{size[1]} image"
                )
    for image_id, annotation in split.masks.items():
        for relative in (*annotation.mask_paths, annotation.ignore_path):
            if relative is None:
                continue
            path = resolve(data_root, relative)
            if cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) is None:
                report.problems.append(
                    f"{split.folder}: {image_id}: mask {path} is missing or unreadable"
                )


def check_dataset(
    metadata_root: str | Path, data_root: str | Path | None = None
) -> list[SplitReport]:
    """One report per split folder present under `metadata_root`."""
    reports = []
    root = Path(metadata_root)
    if not root.is_dir():
        raise FileNotFoundError(f"metadata root {root} is not a folder")
    for name in SPLITS:
        if not (root / name).is_dir():
            continue
        report = SplitReport(name)
        try:
            split = load_split(root, name)
        except MetadataError as error:
            report.problems.extend(str(p) for p in error.problems)
            reports.append(report)
            continue
        report.images = len(split.image_ids)
        report.classes = split.num_classes
        report.boxes = sum(len(b) for b in split.boxes.values())
        report.masks = sum(len(m.mask_paths) for m in split.masks.values())
        if data_root is not None:
            _check_files(split, Path(data_root), report)
        reports.append(report)
    if not reports:
        missing = Problem(str(root), 0, f"no split folder ({', '.join(SPLITS)}) found")
        reports.append(SplitReport("-", problems=[str(missing)]))
    return reports
