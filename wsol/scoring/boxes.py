"""MaxBoxAcc and MaxBoxAccV2, accumulated one map at a time (nothing kept but counts)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from wsol.scoring.contours import all_contours_best_iou, largest_contour_best_iou
from wsol.scoring.grid import (
    IOU_THRESHOLDS,
    check_scoremap,
    quantize,
    threshold_grid,
    threshold_levels,
)


@dataclass(frozen=True)
class BoxCurves:
    """Accuracy (%) per threshold for each IoU level, and what the protocol reads off them."""

    thresholds: np.ndarray
    accuracy: dict[int, np.ndarray]
    images: int

    def max_accuracy(self, iou: int) -> float:
        return float(self.accuracy[iou].max())

    def best_threshold(self, iou: int) -> float:
        """The first threshold reaching the maximum, as np.argmax picks it."""
        return float(self.thresholds[int(np.argmax(self.accuracy[iou]))])

    @property
    def mean_max_accuracy(self) -> float:
        """MaxBoxAccV2's aggregate: the mean of MaxBoxAcc over the IoU levels."""
        return float(np.mean([self.max_accuracy(d) for d in self.accuracy]))


def best_iou_curve(
    scoremap: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray, multi_contour: bool
) -> np.ndarray:
    """Best IoU of the predicted boxes against `gt_boxes` at each threshold."""
    u8 = quantize(scoremap)
    levels = threshold_levels(u8, thresholds)
    if multi_contour:
        return all_contours_best_iou(u8, gt_boxes, levels)
    return largest_contour_best_iou(u8, gt_boxes, levels)


class BoxAccumulator:
    """Counts correct images per (IoU level, threshold); `multi_contour` selects V2 or v1."""

    def __init__(
        self,
        interval: float = 0.01,
        multi_contour: bool = True,
        iou_thresholds: Sequence[int] = IOU_THRESHOLDS,
        workers: int = 2,
    ):
        self.thresholds = threshold_grid(interval)
        self.multi_contour = multi_contour
        self.iou_thresholds = tuple(iou_thresholds)
        self.correct = {d: np.zeros(len(self.thresholds), dtype=np.int64) for d in iou_thresholds}
        self.images = 0
        self.workers = workers

    def _count(self, curve: np.ndarray) -> None:
        for d in self.iou_thresholds:
            self.correct[d] += curve >= d / 100
        self.images += 1

    def add(self, scoremap: np.ndarray, gt_boxes: np.ndarray, name: str = "score map") -> None:
        self._count(self._curve(scoremap, gt_boxes, name))

    def add_many(self, items: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Maps and their boxes, scored on `workers` threads (the kernels release the GIL)."""
        pairs = list(items)
        names = [f"score map {index}" for index in range(len(pairs))]
        maps, boxes = [p[0] for p in pairs], [p[1] for p in pairs]
        if self.workers <= 1 or len(pairs) < 2:
            curves = list(map(self._curve, maps, boxes, names))
        else:
            with ThreadPoolExecutor(self.workers) as pool:
                curves = list(pool.map(self._curve, maps, boxes, names))
        for curve in curves:
            self._count(curve)

    def _curve(self, scoremap: np.ndarray, gt_boxes: np.ndarray, name: str) -> np.ndarray:
        check_scoremap(scoremap, name)
        return best_iou_curve(scoremap, gt_boxes, self.thresholds, self.multi_contour)

    def result(self) -> BoxCurves:
        if not self.images:
            raise ValueError("no score maps were accumulated")
        accuracy = {d: c * 100.0 / float(self.images) for d, c in self.correct.items()}
        return BoxCurves(self.thresholds, accuracy, self.images)
