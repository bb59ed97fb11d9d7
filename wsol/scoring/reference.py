"""The straightforward evaluator: one OpenCV pass per map and threshold.

This is how the reference evaluator (Choe et al., CVPR 2020) computes box metrics. The
fast code in `contours` must give the same numbers; tests and benchmarks compare the two.
"""

from __future__ import annotations

import cv2
import numpy as np

from wsol.common.protocol import IOU_THRESHOLDS
from wsol.scoring.grid import check_scoremap, quantize, threshold_grid


def boxes_at_threshold(u8: np.ndarray, level: int, multi_contour: bool) -> np.ndarray:
    height, width = u8.shape
    _, binary = cv2.threshold(u8, level, 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not contours:
        return np.array([[0, 0, 0, 0]])
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return np.array(boxes)


def pairwise_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    a, b = boxes_a[:, None, :], boxes_b[None, :, :]
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


def best_iou_curve(
    scoremap: np.ndarray, gt_boxes: np.ndarray, interval: float, multi_contour: bool
) -> np.ndarray:
    """Best IoU per threshold of the grid, one OpenCV call per threshold."""
    check_scoremap(scoremap)
    u8 = quantize(scoremap)
    curve = []
    for tau in threshold_grid(interval):
        boxes = boxes_at_threshold(u8, int(tau * np.max(u8)), multi_contour)
        curve.append(pairwise_iou(boxes, np.asarray(gt_boxes)).max())
    return np.array(curve)


def max_box_acc(
    scoremaps, gt_boxes, interval: float = 0.01, multi_contour: bool = True
) -> dict[int, float]:
    """MaxBoxAcc(delta) for delta in 30/50/70, in percent."""
    correct = {d: np.zeros(len(threshold_grid(interval))) for d in IOU_THRESHOLDS}
    count = 0
    for scoremap, boxes in zip(scoremaps, gt_boxes, strict=True):
        curve = best_iou_curve(scoremap, boxes, interval, multi_contour)
        for d in IOU_THRESHOLDS:
            correct[d] += curve >= d / 100
        count += 1
    return {d: float((correct[d] * 100.0 / count).max()) for d in IOU_THRESHOLDS}


def pxap(scoremaps, gt_masks, interval: float = 0.01) -> float:
    """PxAP in percent, with np.histogram per map as the reference."""
    edges = np.append(threshold_grid(interval), [1.0, 2.0, 3.0])
    fg_hist = np.zeros(len(edges) - 1)
    bg_hist = np.zeros(len(edges) - 1)
    for scoremap, gt in zip(scoremaps, gt_masks, strict=True):
        check_scoremap(scoremap)
        fg_hist += np.histogram(scoremap[gt == 1], bins=edges)[0]
        bg_hist += np.histogram(scoremap[gt == 0], bins=edges)[0]
    tp = fg_hist[::-1].cumsum()
    fp = bg_hist[::-1].cumsum()
    fn = fg_hist.sum() - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    valid = (tp + fp) != 0
    return float((precision[1:] * np.diff(recall))[valid[1:]].sum() * 100)
