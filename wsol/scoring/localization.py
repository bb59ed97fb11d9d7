"""Top-1 / Top-5 / GT-known Loc at one fixed threshold (the tau selected on train-fullsup)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsol.scoring.boxes import best_iou_curve
from wsol.scoring.grid import check_scoremap

# The IoU a box needs for Top-1 / Top-5 / GT-known Loc.
LOC_IOU = 0.5


class LocalizationAccuracy:
    """Older papers' numbers: IoU >= 0.5 with the GT-class map, with or without the class.

    Top-1 Loc needs the top-1 class right, Top-5 Loc the GT class among the top five,
    GT-known Loc ignores the classifier. The box is the largest contour's unless
    `multi_contour` is set.
    """

    def __init__(self, threshold: float, iou: float = LOC_IOU, multi_contour: bool = False):
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.threshold = np.array([threshold])
        self.iou = iou
        self.multi_contour = multi_contour
        self.counts = {"top1_loc": 0, "top5_loc": 0, "gt_known_loc": 0}
        self.images = 0

    def add(self, scoremap: np.ndarray, gt_boxes: np.ndarray, label: int,
            ranked_classes: Sequence[int]) -> None:
        """`ranked_classes`: the classifier's classes, most likely first (at least five)."""
        check_scoremap(scoremap)
        iou = best_iou_curve(scoremap, gt_boxes, self.threshold, self.multi_contour)[0]
        self.add_located(bool(iou >= self.iou), label, ranked_classes)

    def add_located(self, located: bool, label: int, ranked_classes: Sequence[int]) -> None:
        """An image whose box at the threshold is known to hit (IoU >= `iou`) or not, e.g.
        read off the curves that selected the threshold (`BoxMetricsAccumulator.hits`)."""
        self.images += 1
        self.counts["gt_known_loc"] += int(located)
        self.counts["top1_loc"] += int(located and ranked_classes[0] == label)
        self.counts["top5_loc"] += int(located and label in list(ranked_classes[:5]))

    def result(self) -> dict[str, float]:
        if not self.images:
            raise ValueError("no score maps were accumulated")
        return {k: v * 100.0 / self.images for k, v in self.counts.items()}
