"""Pictures and curves of a scored split, for MLflow: overlays and threshold curves."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from wsol.data.datasets import EvalDataset
from wsol.data.images import load_rgb, resolve
from wsol.trial.evaluation import RawBatch, SplitScore, Targets


def write_curves(score: SplitScore, path: Path) -> None:
    payload: dict = {"normalisation": score.normalisation.label, "threshold": score.threshold}
    if score.box_curves is not None:
        payload["thresholds"] = score.box_curves.thresholds.tolist()
        payload["box_accuracy"] = {str(k): v.tolist() for k, v in score.box_curves.accuracy.items()}
    if score.precision_recall is not None:
        payload["precision"] = score.precision_recall.precision.tolist()
        payload["recall"] = score.precision_recall.recall.tolist()
    path.write_text(json.dumps(payload))


def plot_curves(score: SplitScore, path: Path) -> None:
    panels = [score.box_curves is not None, score.precision_recall is not None]
    fig, axes = plt.subplots(1, sum(panels) or 1, figsize=(5 * (sum(panels) or 1), 4),
                             squeeze=False)
    column = 0
    if score.box_curves is not None:
        ax = axes[0][column]
        for iou, accuracy in score.box_curves.accuracy.items():
            ax.plot(score.box_curves.thresholds, accuracy, label=f"IoU {iou}")
        ax.axvline(score.threshold, color="grey", linestyle="--", label="selected tau")
        ax.set(xlabel="threshold tau", ylabel="BoxAcc (%)", title="BoxAccV2 vs threshold")
        ax.legend()
        column += 1
    if score.precision_recall is not None:
        ax = axes[0][column]
        ax.plot(score.precision_recall.recall, score.precision_recall.precision)
        ax.set(xlabel="recall", ylabel="precision",
               title=f"PxAP {score.precision_recall.pxap:.1f}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_overlays(dataset: EvalDataset, targets: Targets, score: SplitScore, batch: RawBatch,
                  path: Path, count: int = 8) -> None:
    """Overlays of the first images of a batch with the score's normalisation and threshold."""
    count = min(count, len(batch.indices))
    indices = batch.indices[:count].tolist()
    images = [np.asarray(load_rgb(resolve(dataset.data_root, dataset.split.image_ids[i]))
                         .resize(targets.size)) for i in indices]
    maps = score.normalisation.apply(batch.maps[:count], targets.size).numpy()
    boxes = [targets.boxes(i) if targets.has_boxes else np.zeros((0, 4)) for i in indices]
    plot_overlays(images, maps, boxes, score.threshold, path)


def plot_overlays(images: list[np.ndarray], maps: np.ndarray, gt_boxes: list[np.ndarray],
                  threshold: float, path: Path) -> None:
    """Each image with its map, true boxes (green) and the boxes of every contour at tau (red)."""
    count = len(images)
    columns = min(4, count)
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, scoremap, boxes in zip(axes.flat, images, maps, gt_boxes, strict=False):
        ax.imshow(image)
        ax.imshow(scoremap, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime"))
        binary = (scoremap >= threshold).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            ax.add_patch(plt.Rectangle((x, y), w - 1, h - 1, fill=False, color="red"))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
