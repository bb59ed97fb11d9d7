"""Reader and validator for the WSOL metadata format (Choe et al., CVPR 2020).

A split folder holds `image_ids.txt`, `class_labels.txt`, `image_sizes.txt` and
`localization.txt` (boxes ``path,x0,y0,x1,y1`` or masks ``path,mask,ignore``). A split
may also carry `localization_masks.txt` in the mask form, so one dataset (our synthetic
benchmark) can be scored with both box metrics and PxAP.

Every problem is collected with its file and line before anything is returned, so a
half-valid split is never used and a user sees all problems of a file at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

import numpy as np

from wsol.common import protocol

T = TypeVar("T")

SPLITS = tuple(protocol.SPLITS)  # the metadata folders
BOX_FILE = "localization.txt"
EXTRA_MASK_FILE = "localization_masks.txt"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a metadata file; `line` is 1-based, 0 for the whole file."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class MetadataError(ValueError):
    """Raised with every problem found in a split; nothing of that split is usable."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s) in WSOL metadata:\n{shown}{more}")


@dataclass(frozen=True)
class Box:
    """Ground-truth box in original-image pixels, inclusive corners as in the reference."""

    x0: int
    y0: int
    x1: int
    y1: int

    def resized(self, image_size: tuple[int, int], target: tuple[int, int]) -> Box:
        """Rescale as the reference does: ``int(x * W_target / W_image)`` (truncation)."""
        (w, h), (tw, th) = image_size, target
        return Box(
            int(self.x0 * tw / w),
            int(self.y0 * th / h),
            int(self.x1 * tw / w),
            int(self.y1 * th / h),
        )


def resized_boxes(
    boxes: tuple[Box, ...], image_size: tuple[int, int], target: tuple[int, int]
) -> np.ndarray:
    """Boxes of one image at the score-map size, shape (k, 4), as the evaluator uses them."""
    scaled = [b.resized(image_size, target) for b in boxes]
    return np.array([[b.x0, b.y0, b.x1, b.y1] for b in scaled], dtype=np.int64).reshape(-1, 4)


@dataclass(frozen=True)
class MaskAnnotation:
    """Instance masks of one image and its ignore mask (None: nothing ignored)."""

    mask_paths: tuple[str, ...]
    ignore_path: str | None


@dataclass(frozen=True)
class SplitMetadata:
    """A validated split. `sizes` is empty when image_sizes.txt is (read them from images)."""

    name: str
    folder: Path
    image_ids: tuple[str, ...]
    labels: dict[str, int]
    sizes: dict[str, tuple[int, int]]
    boxes: dict[str, tuple[Box, ...]] = field(default_factory=dict)
    masks: dict[str, MaskAnnotation] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(set(self.labels.values()))

    @property
    def has_boxes(self) -> bool:
        return bool(self.boxes)

    @property
    def has_masks(self) -> bool:
        return bool(self.masks)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-empty lines with 1-based numbers; tolerates a missing trailing newline and CRLF."""
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if line.strip():
                yield number, line


def check_relative_path(value: str) -> str | None:
    """Why `value` may not be used as a path under the data root, or None when it may."""
    if not value:
        return "empty path"
    if "\\" in value:
        return f"backslash in path {value!r} (use '/')"
    posix = PurePosixPath(value)
    if posix.is_absolute() or (len(value) > 1 and value[1] == ":"):
        return f"absolute path {value!r} (paths must be relative to the data root)"
    if ".." in posix.parts:
        return f"'..' in path {value!r} (paths may not leave the data root)"
    return None


class _Collector:
    """Gathers problems of one split with the file name already attached."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.problems: list[Problem] = []

    def add(self, filename: str, line: int, message: str) -> None:
        self.problems.append(Problem(str(self.folder / filename), line, message))


def _parse_int(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _read_image_ids(folder: Path, out: _Collector) -> dict[str, int]:
    name = "image_ids.txt"
    ids: dict[str, int] = {}
    for number, line in _lines(folder / name):
        if "," in line:
            out.add(name, number, f"expected one path per line, got {line!r}")
            continue
        why = check_relative_path(line)
        if why:
            out.add(name, number, why)
        elif line in ids:
            out.add(name, number, f"duplicate image id {line!r} (first on line {ids[line]})")
        else:
            ids[line] = number
    return ids


def _read_per_image(
    path: Path,
    ids: dict[str, int],
    out: _Collector,
    columns: str,
    what: str,
    parse: Callable[[list[str]], T | str],
) -> tuple[dict[str, T], dict[str, int]]:
    """One line per image id: `parse` gets the fields after the id and returns the value or
    an error message. Returns the values and the line on which each id first appeared."""
    name = path.name
    values: dict[str, T] = {}
    seen: dict[str, int] = {}
    expected = columns.count(",") + 1
    for number, line in _lines(path):
        fields = line.split(",")
        if len(fields) != expected:
            out.add(name, number, f"expected {expected} fields {columns!r}, got {len(fields)}")
            continue
        image_id = fields[0]
        parsed = parse(fields[1:])
        if isinstance(parsed, str):
            out.add(name, number, parsed)
        elif image_id in seen:
            first = seen[image_id]
            out.add(name, number, f"duplicate {what} for {image_id!r} (first on line {first})")
        elif image_id not in ids:
            out.add(name, number, f"image id {image_id!r} is not in image_ids.txt")
        else:
            values[image_id] = parsed
        seen.setdefault(image_id, number)
    return values, seen


def _report_missing(name: str, what: str, ids: dict[str, int], seen: dict[str, int],
                    out: _Collector) -> None:
    for image_id, number in ids.items():
        if image_id not in seen:
            out.add(name, 0, f"no {what} for {image_id!r} (image_ids.txt line {number})")


def _parse_label(fields: list[str]) -> int | str:
    label = _parse_int(fields[0])
    if label is None or label < 0:
        return f"label {fields[0]!r} is not a non-negative integer"
    return label


def _parse_size(fields: list[str]) -> tuple[int, int] | str:
    w, h = _parse_int(fields[0]), _parse_int(fields[1])
    if w is None or h is None or w <= 0 or h <= 0:
        return f"size {fields[0]!r} x {fields[1]!r} is not two positive integers"
    return w, h


def _read_labels(folder: Path, ids: dict[str, int], out: _Collector) -> dict[str, int]:
    path = folder / "class_labels.txt"
    labels, seen = _read_per_image(path, ids, out, "path,label", "label", _parse_label)
    _report_missing(path.name, "label", ids, seen, out)
    return labels


def _read_sizes(folder: Path, ids: dict[str, int], out: _Collector) -> dict[str, tuple[int, int]]:
    """image_sizes.txt may be absent or empty (sizes then come from the images)."""
    path = folder / "image_sizes.txt"
    if not path.exists():
        return {}
    sizes, seen = _read_per_image(path, ids, out, "path,width,height", "size", _parse_size)
    if seen:
        _report_missing(path.name, "size", ids, seen, out)
    return sizes


def _check_box(
    fields: list[str], size: tuple[int, int] | None
) -> tuple[Box | None, str | None]:
    coords = [_parse_int(v) for v in fields]
    if any(c is None for c in coords):
        return None, f"coordinates {fields!r} are not all integers"
    x0, y0, x1, y1 = (int(c) for c in coords)  # type: ignore[arg-type]
    if x0 < 0 or y0 < 0:
        return None, f"negative coordinate in box ({x0},{y0},{x1},{y1})"
    if x1 < x0 or y1 < y0:
        return None, f"box ({x0},{y0},{x1},{y1}) has x1 < x0 or y1 < y0"
    if size is not None and (x1 > size[0] or y1 > size[1]):
        return None, f"box ({x0},{y0},{x1},{y1}) lies outside the {size[0]}x{size[1]} image"
    return Box(x0, y0, x1, y1), None


def _read_localization(
    folder: Path,
    name: str,
    ids: dict[str, int],
    sizes: dict[str, tuple[int, int]],
    out: _Collector,
    masks_only: bool = False,
) -> tuple[dict[str, tuple[Box, ...]], dict[str, MaskAnnotation]]:
    boxes: dict[str, list[Box]] = {}
    mask_paths: dict[str, list[str]] = {}
    ignore: dict[str, str | None] = {}
    kind: str | None = "masks" if masks_only else None
    first_line: dict[str, int] = {}
    path = folder / name
    if not path.exists():
        return {}, {}
    for number, line in _lines(path):
        fields = line.split(",")
        if kind is None:
            kind = {5: "boxes", 3: "masks"}.get(len(fields))
            if kind is None:
                out.add(name, number, f"expected 5 fields (box) or 3 (mask), got {len(fields)}")
                continue
        expected = 5 if kind == "boxes" else 3
        if len(fields) != expected:
            layout = "path,x0,y0,x1,y1" if kind == "boxes" else "path,mask_path,ignore_path"
            out.add(name, number, f"expected {expected} fields '{layout}', got {len(fields)}")
            continue
        image_id = fields[0]
        if image_id not in ids:
            out.add(name, number, f"image id {image_id!r} is not in image_ids.txt")
            continue
        is_first = image_id not in first_line
        first_line.setdefault(image_id, number)
        if kind == "boxes":
            box, why = _check_box(fields[1:], sizes.get(image_id))
            if why:
                out.add(name, number, why)
            else:
                boxes.setdefault(image_id, []).append(box)  # type: ignore[arg-type]
            continue
        mask, ignore_path = fields[1], fields[2]
        why = check_relative_path(mask) or (ignore_path and check_relative_path(ignore_path))
        if why:
            out.add(name, number, why)
        elif not is_first and ignore_path:
            out.add(
                name,
                number,
                f"ignore path {ignore_path!r} on a later line of {image_id!r}: "
                f"it belongs on its first line ({first_line[image_id]})",
            )
        else:
            mask_paths.setdefault(image_id, []).append(mask)
            if is_first:
                ignore[image_id] = ignore_path or None
    if first_line:
        for image_id, number in ids.items():
            if image_id not in first_line:
                out.add(name, 0, f"no annotation for {image_id!r} (image_ids.txt line {number})")
    masks = {i: MaskAnnotation(tuple(p), ignore.get(i)) for i, p in mask_paths.items()}
    return {i: tuple(b) for i, b in boxes.items()}, masks


def load_split(metadata_root: str | Path, split: str) -> SplitMetadata:
    """Read and validate one split; raise MetadataError listing every problem found."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    folder = Path(metadata_root) / split
    out = _Collector(folder)
    for required in ("image_ids.txt", "class_labels.txt"):
        if not (folder / required).is_file():
            out.add(required, 0, "file is missing")
    if out.problems:
        raise MetadataError(out.problems)
    ids = _read_image_ids(folder, out)
    labels = _read_labels(folder, ids, out)
    sizes = _read_sizes(folder, ids, out)
    boxes, masks = _read_localization(folder, BOX_FILE, ids, sizes, out)
    _, extra_masks = _read_localization(
        folder, EXTRA_MASK_FILE, ids, sizes, out, masks_only=True
    )
    if extra_masks and masks:
        out.add(EXTRA_MASK_FILE, 0, f"masks are given both here and in {BOX_FILE}")
    if not ids:
        out.add("image_ids.txt", 0, "no image ids")
    if out.problems:
        raise MetadataError(out.problems)
    return SplitMetadata(
        name=split,
        folder=folder,
        image_ids=tuple(ids),
        labels=labels,
        sizes=sizes,
        boxes=boxes,
        masks=masks or extra_masks,
    )
