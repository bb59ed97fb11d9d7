"""Image and mask files under a data root, read the way the reference evaluator reads them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsol.data.metadata import MaskAnnotation, check_relative_path


def resolve(data_root: str | Path, relative: str) -> Path:
    """Join a metadata path to the data root, refusing anything that would leave the root."""
    why = check_relative_path(relative)
    if why:
        raise ValueError(why)
    return Path(data_root) / relative


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    with Image.open(path) as image:
        return image.size


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _read_gray(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise FileNotFoundError(f"cannot read mask {path}")
    return mask


def load_gt_mask(
    mask_root: str | Path, annotation: MaskAnnotation, size: tuple[int, int]
) -> np.ndarray:
    """Ground truth at `size` (width, height): 1 foreground, 255 ignored, 0 background.

    Nearest-neighbour resizing with OpenCV and the ``> 0.5`` test match the reference, so
    PxAP is computed on exactly the pixels the published numbers used.
    """
    foreground = np.zeros((size[1], size[0]), dtype=bool)
    for relative in annotation.mask_paths:
        mask = _read_gray(resolve(mask_root, relative))
        foreground |= cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST) > 0.5
    gt = foreground.astype(np.uint8)
    if annotation.ignore_path:
        ignore = _read_gray(resolve(mask_root, annotation.ignore_path))
        ignore = cv2.resize(ignore, size, interpolation=cv2.INTER_NEAREST) > 0.5
        gt[ignore & ~foreground] = 255
    return gt
