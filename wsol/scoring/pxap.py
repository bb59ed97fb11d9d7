"""PxAP (pixel average precision) from streamed score-map histograms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange

from wsol.scoring.grid import threshold_grid

IGNORE = 255


@dataclass(frozen=True)
class PrecisionRecall:
    """The precision-recall curve over thresholds (descending), PxAP and the best threshold."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    pxap: float

    @property
    def best_threshold(self) -> float:
        """Threshold with the highest F1 on the curve: a selected quantity, like box tau."""
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = 2 * self.precision * self.recall / (self.precision + self.recall)
        f1 = np.nan_to_num(f1, nan=-1.0)
        return float(self.thresholds[int(np.argmax(f1))])


@njit(cache=True, parallel=True)
def _histograms(maps: np.ndarray, gt: np.ndarray, edges: np.ndarray, scale: float) -> np.ndarray:
    """Per-map counts of values in ``[edges[i], edges[i+1])`` at background (0) and fg (1).

    The bin of a value is guessed from ``value * scale`` and corrected against the float64
    edges, so every value lands where np.histogram would put it.
    """
    bins = edges.size - 1
    out = np.zeros((maps.shape[0], 2, bins), dtype=np.int64)
    flat_maps = maps.reshape(maps.shape[0], -1)
    flat_gt = gt.reshape(gt.shape[0], -1)
    for m in prange(maps.shape[0]):
        for j in range(flat_maps.shape[1]):
            label = flat_gt[m, j]
            if label == IGNORE:
                continue
            v = np.float64(flat_maps[m, j])
            i = min(max(int(v * scale), 0), bins - 1)
            while i > 0 and v < edges[i]:
                i -= 1
            while i < bins - 1 and v >= edges[i + 1]:
                i += 1
            out[m, 1 if label == 1 else 0, i] += 1
    return out


class PxAPAccumulator:
    """Histograms of map values at foreground and background pixels, ignored pixels left out.

    Bin edges ``[0, tau_1, ..., tau_{n-1}, 1, 2, 3]`` follow the reference, so a value of
    exactly 1.0 lands in the ``[1, 2)`` bin. Works on numpy arrays (numba, all cores) and
    on torch tensors on any device.
    """

    def __init__(self, interval: float = 0.01):
        self.thresholds = threshold_grid(interval)
        self.edges = np.append(self.thresholds, [1.0, 2.0, 3.0])
        self.scale = float(round(1.0 / interval))
        self.foreground = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.background = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def add(self, maps: np.ndarray | torch.Tensor, gt_masks: np.ndarray | torch.Tensor) -> None:
        """A batch (B, H, W) or one (H, W) map with ground truth 0 / 1 / 255 (ignored)."""
        if maps.shape != gt_masks.shape:
            raise ValueError(f"map shape {tuple(maps.shape)} != mask shape {tuple(gt_masks.shape)}")
        if isinstance(maps, torch.Tensor):
            self._add_torch(maps, torch.as_tensor(gt_masks, device=maps.device))
            return
        maps = np.ascontiguousarray(maps).reshape(-1, *maps.shape[-2:])
        gt = np.ascontiguousarray(gt_masks, dtype=np.uint8).reshape(maps.shape)
        counts = _histograms(maps, gt, self.edges, self.scale).sum(axis=0)
        self.background += counts[0]
        self.foreground += counts[1]

    def _add_torch(self, maps: torch.Tensor, gt: torch.Tensor) -> None:
        edges = torch.as_tensor(self.edges, dtype=torch.float64, device=maps.device)
        values = maps.reshape(-1).to(torch.float64)
        labels = gt.reshape(-1)
        keep = labels != IGNORE
        bins = torch.bucketize(values[keep], edges, right=True) - 1
        bins = bins.clamp_(0, len(self.edges) - 2)
        key = bins + (labels[keep] == 1).long() * (len(self.edges) - 1)
        counts = torch.bincount(key, minlength=2 * (len(self.edges) - 1)).cpu().numpy()
        self.background += counts[: len(self.edges) - 1]
        self.foreground += counts[len(self.edges) - 1 :]

    def result(self) -> PrecisionRecall:
        """The reference's arithmetic, in its order, so the float result is identical."""
        fg = self.foreground.astype(np.float64)
        bg = self.background.astype(np.float64)
        tp = fg[::-1].cumsum()
        fn = fg.sum() - tp
        fp = bg[::-1].cumsum()
        if ((tp + fn) <= 0).all():
            raise ValueError("no foreground pixel in the ground truth: PxAP is undefined")
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        valid = (tp + fp) != 0
        pxap = float((precision[1:] * np.diff(recall))[valid[1:]].sum() * 100)
        thresholds = self.edges[:-1][::-1]
        return PrecisionRecall(thresholds, precision, recall, pxap)
