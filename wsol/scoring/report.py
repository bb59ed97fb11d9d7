"""The protocol's numbers under the names every tool of this project reports them with."""

from __future__ import annotations

from wsol.scoring.boxes import BoxCurves
from wsol.scoring.pxap import PrecisionRecall


def box_metrics(v1: BoxCurves | None, v2: BoxCurves) -> dict[str, float]:
    """MaxBoxAcc (largest contour, IoU 0.5), MaxBoxAccV2 and its per-IoU parts, in percent."""
    out: dict[str, float] = {}
    if v1 is not None:
        out["MaxBoxAcc"] = v1.max_accuracy(50)
        out["MaxBoxAcc_threshold"] = v1.best_threshold(50)
    out["MaxBoxAccV2"] = v2.mean_max_accuracy
    for iou in v2.accuracy:
        out[f"BoxAccV2@{iou}"] = v2.max_accuracy(iou)
        out[f"BoxAccV2@{iou}_threshold"] = v2.best_threshold(iou)
    return out


def mask_metrics(curve: PrecisionRecall) -> dict[str, float]:
    return {"PxAP": curve.pxap, "PxAP_threshold": curve.best_threshold}
