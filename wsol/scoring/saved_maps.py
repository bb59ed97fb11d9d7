"""Score maps saved by any WSOL code base (`<image_id>.npy`, already in [0, 1])."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from wsol.data.images import image_size, load_gt_mask, resolve
from wsol.data.metadata import SplitMetadata, resized_boxes
from wsol.scoring.boxes import BoxAccumulator
from wsol.scoring.pxap import PxAPAccumulator
from wsol.scoring.report import box_metrics, mask_metrics

BATCH = 64


def find_map_file(root: Path, image_id: str, basename_unique: bool) -> Path:
    """`<root>/<image_id>.npy`, or `<root>/<basename>.npy` as the reference evaluator writes."""
    full = resolve(root, image_id + ".npy")
    if full.exists():
        return full
    short = root / (PurePosixPath(image_id).name + ".npy")
    if basename_unique and short.exists():
        return short
    raise FileNotFoundError(f"no score map for {image_id!r}: expected {full}")


def _maps(root: Path, split: SplitMetadata) -> Iterator[tuple[str, np.ndarray]]:
    names = [PurePosixPath(i).name for i in split.image_ids]
    unique = len(set(names)) == len(names)
    for image_id in split.image_ids:
        path = find_map_file(root, image_id, unique)
        scoremap = np.load(path)
        if scoremap.ndim == 3 and scoremap.shape[0] == 1:
            scoremap = scoremap[0]
        yield str(path), scoremap


def score_saved_maps(
    scoremap_root: str | Path,
    split: SplitMetadata,
    data_root: str | Path | None = None,
    mask_root: str | Path | None = None,
    interval: float = 0.01,
) -> dict[str, float]:
    """Box metrics where the split has boxes, PxAP where it has masks; one map in memory."""
    if not split.has_boxes and not split.has_masks:
        raise ValueError(f"split {split.folder} has no boxes or masks to score against")
    masks_from = mask_root or data_root
    if split.has_masks and masks_from is None:
        raise ValueError("scoring masks needs --mask-root (or --data-root)")
    v1 = BoxAccumulator(interval, multi_contour=False)
    v2 = BoxAccumulator(interval, multi_contour=True)
    pxap = PxAPAccumulator(interval)
    batch: list[tuple[np.ndarray, np.ndarray]] = []
    for image_id, (path, scoremap) in zip(
        split.image_ids, _maps(Path(scoremap_root), split), strict=True
    ):
        height, width = scoremap.shape[-2:]
        if split.has_boxes:
            size = split.sizes.get(image_id)
            if size is None:
                if data_root is None:
                    raise ValueError(
                        f"{split.folder / 'image_sizes.txt'} has no size for {image_id!r}: "
                        "pass --data-root to read it from the image"
                    )
                size = image_size(resolve(data_root, image_id))
            boxes = resized_boxes(split.boxes[image_id], size, (width, height))
            v1.add(scoremap, boxes, path)
            batch.append((scoremap, boxes))
            if len(batch) == BATCH:
                v2.add_many(batch)
                batch = []
        if split.has_masks:
            gt = load_gt_mask(masks_from, split.masks[image_id], (width, height))  # type: ignore[arg-type]
            pxap.add(scoremap, gt)
    if batch:
        v2.add_many(batch)
    metrics: dict[str, float] = {"images": float(len(split.image_ids)), "curve_interval": interval}
    if split.has_boxes:
        metrics.update(box_metrics(v1.result(), v2.result()))
    if split.has_masks:
        metrics.update(mask_metrics(pxap.result()))
    return metrics
