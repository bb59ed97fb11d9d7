"""Score maps saved by any WSOL code base (`<image_id>.npy`, already in [0, 1])."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from wsol.data.images import image_size, load_gt_mask, resolve
from wsol.data.metadata import SplitMetadata, resized_boxes
from wsol.scoring.boxes import BoxMetricsAccumulator
from wsol.scoring.grid import check_scoremap
from wsol.scoring.pxap import PxAPAccumulator
from wsol.scoring.report import box_metrics, mask_metrics


def find_map_file(root: Path, image_id: str, basename_unique: bool) -> Path:
    """`<root>/<image_id>.npy`, or `<root>/<basename>.npy` as the reference evaluator writes."""
    full = resolve(root, image_id + ".npy")
    if full.exists():
        return full
    short = root / (PurePosixPath(image_id).name + ".npy")
    if basename_unique and short.exists():
        return short
    raise FileNotFoundError(f"no score map for {image_id!r}: expected {full}")


# .npy headers seen, with the layout they describe: a split's maps usually share one
_HEADERS: dict[bytes, tuple[tuple[int, ...], bool, np.dtype]] = {}


def load_map(path: Path) -> np.ndarray:
    """`np.load`, parsing each distinct .npy header once: the array is then read in one
    call and viewed in place. Anything unusual (another header, a short file, an unaligned
    body) goes through `np.load` itself, which also gives its errors."""
    raw = np.fromfile(path, dtype=np.uint8)
    header = b""
    if raw.size >= 12 and bytes(raw[:6]) == b"\x93NUMPY":
        length = 10 + int(raw[8]) + 256 * int(raw[9])
        if raw[6] != 1:
            length = 12 + int.from_bytes(bytes(raw[8:12]), "little")
        header = bytes(raw[:length])
        layout = _HEADERS.get(header)
        if layout is not None:
            shape, fortran, dtype = layout
            body = raw[length:]
            if body.size == dtype.itemsize * int(np.prod(shape)):
                array = body.view(dtype).reshape(shape, order="F" if fortran else "C")
                if array.flags.aligned:
                    return array
    array = np.load(path)
    if header and array.dtype.kind == "f":
        _HEADERS[header] = (array.shape, not array.flags.c_contiguous, array.dtype)
    return array


def _maps(root: Path, split: SplitMetadata) -> Iterator[tuple[str, np.ndarray]]:
    names = [PurePosixPath(i).name for i in split.image_ids]
    unique = len(set(names)) == len(names)
    for image_id in split.image_ids:
        path = find_map_file(root, image_id, unique)
        scoremap = load_map(path)
        if scoremap.ndim == 3 and scoremap.shape[0] == 1:
            scoremap = scoremap[0]
        yield str(path), scoremap


def score_saved_maps(
    scoremap_root: str | Path,
    split: SplitMetadata,
    data_root: str | Path | None = None,
    mask_root: str | Path | None = None,
    interval: float = 0.01,
    workers: int | None = None,
) -> dict[str, float]:
    """Box metrics where the split has boxes, PxAP where it has masks. Maps stream: this
    thread loads the next ones while `workers` threads (default: the CPUs this process may
    use) score boxes (one pass per map for MaxBoxAcc and MaxBoxAccV2), so only a few maps
    are in memory at a time."""
    if not split.has_boxes and not split.has_masks:
        raise ValueError(f"split {split.folder} has no boxes or masks to score against")
    masks_from = mask_root or data_root
    if split.has_masks and masks_from is None:
        raise ValueError("scoring masks needs --mask-root (or --data-root)")
    boxes = BoxMetricsAccumulator(interval, workers=workers)
    pxap = PxAPAccumulator(interval)

    def box_items() -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        for image_id, (path, scoremap) in zip(
            split.image_ids, _maps(Path(scoremap_root), split), strict=True
        ):
            height, width = scoremap.shape[-2:]
            if split.has_masks:
                check_scoremap(scoremap, path)
                gt = load_gt_mask(masks_from, split.masks[image_id], (width, height))  # type: ignore[arg-type]
                pxap.add(scoremap, gt)
            if split.has_boxes:
                size = split.sizes.get(image_id)
                if size is None:
                    if data_root is None:
                        raise ValueError(
                            f"{split.folder / 'image_sizes.txt'} has no size for {image_id!r}: "
                            "pass --data-root to read it from the image"
                        )
                    size = image_size(resolve(data_root, image_id))
                yield scoremap, resized_boxes(split.boxes[image_id], size, (width, height)), path

    if split.has_boxes:
        boxes.add_stream(box_items())
    else:
        for _ in box_items():
            pass
    metrics: dict[str, float] = {"images": float(len(split.image_ids)), "curve_interval": interval}
    if split.has_boxes:
        metrics.update(box_metrics(*boxes.result()))
    if split.has_masks:
        metrics.update(mask_metrics(pxap.result()))
    return metrics
