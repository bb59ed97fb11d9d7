"""Split-aware datasets.

The training dataset is built from image ids and labels only: boxes and masks of
train-weaksup are never handed to it, so training code cannot reach them. Evaluation
datasets (train-fullsup, test) give ground truth at the resolution of the score maps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from wsol.common.protocol import SPLITS, TEST, TRAIN_FULLSUP, TRAIN_WEAKSUP
from wsol.data.images import image_size, load_gt_mask, load_rgb, resolve
from wsol.data.metadata import SplitMetadata, resized_boxes
from wsol.data.shards import local_root

Transform = Callable[[object], torch.Tensor]


class SplitAccessError(PermissionError):
    """Raised when code other than the final evaluation tries to open the test split."""


class TrainDataset(Dataset):
    """train-weaksup: (image, label, index). Knows nothing of boxes or masks."""

    def __init__(self, split: SplitMetadata, data_root: str | Path, transform: Transform):
        if split.name != TRAIN_WEAKSUP:
            raise ValueError(f"TrainDataset takes the {TRAIN_WEAKSUP!r} split, got {split.name!r}")
        self.image_ids: tuple[str, ...] = split.image_ids
        self.labels: tuple[int, ...] = tuple(split.labels[i] for i in split.image_ids)
        self.data_root = local_root(data_root)  # an s3:// shard prefix: this node's copy
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = load_rgb(resolve(self.data_root, self.image_ids[index]))
        return self.transform(image), self.labels[index], index


class EvalDataset(Dataset):
    """train-fullsup or test: (image, label, index), ground truth fetched by index.

    Opening 'test' needs ``allow_test=True``, which only the final evaluation passes.
    """

    def __init__(
        self,
        split: SplitMetadata,
        data_root: str | Path,
        transform: Transform,
        mask_root: str | Path | None = None,
        *,
        allow_test: bool = False,
    ):
        if split.name == TRAIN_WEAKSUP:
            raise ValueError(f"EvalDataset takes {TRAIN_FULLSUP!r} ({SPLITS[TRAIN_FULLSUP]}) or "
                             f"{TEST!r}, not {TRAIN_WEAKSUP!r}")
        if split.name == TEST and not allow_test:
            raise SplitAccessError(
                "the test split is read only by the final evaluation of a promoted model"
            )
        self.split = split
        self.data_root = local_root(data_root)  # an s3:// shard prefix: this node's copy
        self.mask_root = Path(mask_root) if mask_root is not None else self.data_root
        self.transform = transform
        self._sizes: dict[str, tuple[int, int]] = dict(split.sizes)

    def __len__(self) -> int:
        return len(self.split.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image_id = self.split.image_ids[index]
        image = load_rgb(resolve(self.data_root, image_id))
        self._sizes.setdefault(image_id, image.size)
        return self.transform(image), self.split.labels[image_id], index

    def original_size(self, image_id: str) -> tuple[int, int]:
        if image_id not in self._sizes:
            self._sizes[image_id] = image_size(resolve(self.data_root, image_id))
        return self._sizes[image_id]

    def gt_boxes(self, index: int, map_size: tuple[int, int]) -> np.ndarray:
        """Boxes rescaled to `map_size` (width, height), shape (k, 4), inclusive corners."""
        image_id = self.split.image_ids[index]
        return resized_boxes(self.split.boxes[image_id], self.original_size(image_id), map_size)

    def gt_mask(self, index: int, map_size: tuple[int, int]) -> np.ndarray:
        return load_gt_mask(self.mask_root, self.split.masks[self.split.image_ids[index]], map_size)
