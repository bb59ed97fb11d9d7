"""Score maps of a model on an evaluation split, with the project's evaluator.

The trial runner uses `select_and_score` on train-fullsup every epoch (selecting the
normalisation, its percentile and the threshold there, every candidate scored from one pass
per raw map); the final evaluation uses `score_split` on test with those choices fixed,
streaming batch by batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsol.common import protocol
from wsol.data.datasets import EvalDataset
from wsol.methods.base import Method
from wsol.scoring.boxes import BoxCurves, BoxMetricsAccumulator
from wsol.scoring.joint import CandidateCurves
from wsol.scoring.localization import LOC_IOU, LocalizationAccuracy
from wsol.scoring.pxap import PrecisionRecall, PxAPAccumulator
from wsol.scoring.report import box_metrics, mask_metrics
from wsol.scoring.selection import (
    Normalisation,
    NormalisationSearch,
    best_candidate,
    selection_scores,
)
from wsol.trial.config import TrialConfig


@dataclass
class RawBatch:
    maps: torch.Tensor  # raw score maps (B, h, w), on the CPU
    logits: torch.Tensor | None
    labels: torch.Tensor
    indices: torch.Tensor


@dataclass
class SplitScore:
    metrics: dict[str, float]
    normalisation: Normalisation
    threshold: float
    box_curves: BoxCurves | None = None
    precision_recall: PrecisionRecall | None = None
    candidates: dict[str, float] = field(default_factory=dict)


class Targets:
    """Ground truth of an evaluation split at the map size, optionally cached across epochs."""

    def __init__(self, dataset: EvalDataset, size: int, cache: bool):
        self.dataset = dataset
        self.size = (size, size)
        self.has_boxes = bool(dataset.split.boxes)
        self.has_masks = bool(dataset.split.masks)
        self.cache = cache
        self._boxes: dict[int, np.ndarray] = {}
        self._masks: dict[int, np.ndarray] = {}

    def boxes(self, index: int) -> np.ndarray:
        return self._cached(self._boxes, index, self.dataset.gt_boxes)

    def mask(self, index: int) -> np.ndarray:
        return self._cached(self._masks, index, self.dataset.gt_mask)

    def _cached(self, store: dict[int, np.ndarray], index: int,
                load: Callable[[int, tuple[int, int]], np.ndarray]) -> np.ndarray:
        if index in store:
            return store[index]
        value = load(index, self.size)
        if self.cache:
            store[index] = value
        return value

    def selection_metric(self, requested: str) -> str:
        metric = requested
        if requested == protocol.AUTO:
            metric = protocol.MAX_BOX_ACC_V2 if self.has_boxes else protocol.PXAP
        if (metric == protocol.MAX_BOX_ACC_V2 and not self.has_boxes) or (
            metric == protocol.PXAP and not self.has_masks
        ):
            raise ValueError(f"split {self.dataset.split.name} has no ground truth for {metric}")
        return metric


def candidates(config: TrialConfig) -> list[Normalisation]:
    out = []
    for method in config.normalisations:
        if method == "pas":
            out.append(Normalisation("pas", config.pas_percentile))
        elif method == "ivr":
            out.extend(Normalisation("ivr", float(p)) for p in config.ivr_percentiles)
        else:
            out.append(Normalisation(method))
    return out


def infer(method: Method, loader: DataLoader, device: torch.device) -> Iterator[RawBatch]:
    method.model.eval()
    with torch.no_grad():
        for images, labels, indices in loader:
            maps, logits = method.scoremaps(method.inputs(images), labels.to(device))
            yield RawBatch(maps.float().cpu(), None if logits is None else logits.float().cpu(),
                           labels, indices)


def select_normalisation(batches: list[RawBatch], targets: Targets, metric: str,
                         config: TrialConfig) -> tuple[Normalisation, dict[str, float]]:
    search = NormalisationSearch(candidates(config), metric, config.curve_interval)
    for batch in batches:
        indices = batch.indices.tolist()
        if metric == protocol.PXAP:
            truth = [targets.mask(i) for i in indices]
        else:
            truth = [targets.boxes(i) for i in indices]
        search.add(batch.maps, truth, targets.size)
    chosen, _ = search.best()
    return chosen, {c.label: s for c, s in search.scores().items()}


MINMAX = Normalisation("minmax")
# min-max's numbers a trial records beside the selected normalisation's (issue 24): what the
# papers print, on train-fullsup, so without looking at test
MINMAX_RECORDED = (protocol.MAX_BOX_ACC, protocol.threshold_key(protocol.MAX_BOX_ACC),
                   protocol.MAX_BOX_ACC_V2, protocol.PXAP, protocol.threshold_key(protocol.PXAP))


def minmax_key(metric: str) -> str:
    """`minmax_MaxBoxAccV2`: a metric of the min-max normalised maps in a trial's record."""
    return f"minmax_{metric}"


@dataclass
class Selection:
    """train-fullsup's answer: the chosen normalisation's full score, every candidate's
    selection score in `scored.candidates`, and min-max's metrics under `minmax_` names."""

    scored: SplitScore
    minmax: dict[str, float]


def select_and_score(batches: Iterable[RawBatch], targets: Targets, metric: str,
                     config: TrialConfig, workers: int | None = None) -> Selection:
    """`select_normalisation` then `score_split` of the chosen one, and min-max's metrics,
    with the same numbers, from one pass over each raw map for all candidates (the split's
    boxes and / or masks, as `score_split` reads them); `batches` may stream."""
    chosen_from = candidates(config)
    scored_too = chosen_from if MINMAX in chosen_from else [*chosen_from, MINMAX]
    curves = CandidateCurves(scored_too, config.curve_interval, boxes=targets.has_boxes,
                             masks=targets.has_masks, workers=workers)
    rankings: list[tuple[int, list[int]] | None] = []
    for batch in batches:
        indices = batch.indices.tolist()
        curves.add(batch.maps, targets.size,
                   [targets.boxes(i) for i in indices] if targets.has_boxes else None,
                   np.stack([targets.mask(i) for i in indices]) if targets.has_masks else None)
        rankings.extend(_rankings(batch))
    scores = selection_scores(curves, chosen_from, metric)
    scored = _candidate_score(curves, best_candidate(chosen_from, scores), rankings)
    scored.candidates = {c.label: s for c, s in scores.items()}
    minmax = _candidate_score(curves, MINMAX, rankings).metrics
    return Selection(scored, {minmax_key(k): minmax[k] for k in MINMAX_RECORDED if k in minmax})


def _candidate_score(curves: CandidateCurves, candidate: Normalisation,
                     rankings: list[tuple[int, list[int]] | None]) -> SplitScore:
    """What `score_split` with the threshold selected gives for one candidate, read off the
    curves: the threshold MaxBoxAcc's (else PxAP's best-F1), Loc from the kept hits."""
    metrics: dict[str, float] = {}
    box_curves = precision_recall = None
    if curves.boxes:
        largest, box_curves = curves.box_curves(candidate)
        metrics.update(box_metrics(largest, box_curves))
    if curves.masks:
        precision_recall = curves.precision_recall(candidate)
        metrics.update(mask_metrics(precision_recall))
    threshold = metrics.get(protocol.threshold_key(protocol.MAX_BOX_ACC),
                            metrics.get(protocol.threshold_key(protocol.PXAP), 0.5))
    if curves.boxes:
        loc = LocalizationAccuracy(threshold)
        for located, ranking in zip(curves.located(candidate, threshold), rankings,
                                    strict=True):
            if ranking is not None:
                loc.add_located(bool(located), *ranking)
        if loc.images:
            metrics.update(loc.result())
    return SplitScore(metrics, candidate, float(threshold), box_curves, precision_recall)


def score_split(batches: Iterable[RawBatch], targets: Targets, normalisation: Normalisation,
                interval: float, threshold: float | None = None) -> SplitScore:
    """All metrics of one normalisation, from one pass over `batches` (they may stream):
    MaxBoxAcc and MaxBoxAccV2 share each map's contour pass. With `threshold` None
    (train-fullsup) the threshold is selected here (MaxBoxAcc's, or PxAP's best-F1 on mask-only
    data) and Loc is read off each map's kept hits at it; on test pass the selected one."""
    select = threshold is None
    boxes = (BoxMetricsAccumulator(interval, keep_hits_at=LOC_IOU if select else None)
             if targets.has_boxes else None)
    pxap = PxAPAccumulator(interval) if targets.has_masks else None
    loc = LocalizationAccuracy(threshold) if threshold is not None and boxes is not None else None
    rankings: list[tuple[int, list[int]] | None] = []  # per map in order, when selecting
    for batch in batches:
        maps = normalisation.apply(batch.maps, targets.size).numpy()
        indices = batch.indices.tolist()
        if boxes is not None:
            gt = [targets.boxes(i) for i in indices]
            boxes.add_many(zip(maps, gt, strict=True))
            if loc is not None:
                for scoremap, truth, ranking in zip(maps, gt, _rankings(batch), strict=True):
                    if ranking is not None:
                        loc.add(scoremap, truth, *ranking)
            else:
                rankings.extend(_rankings(batch))
        if pxap is not None:
            pxap.add(maps, np.stack([targets.mask(i) for i in indices]))
    metrics: dict[str, float] = {}
    curves = precision_recall = None
    if boxes is not None:
        largest, curves = boxes.result()
        metrics.update(box_metrics(largest, curves))
    if pxap is not None:
        precision_recall = pxap.result()
        metrics.update(mask_metrics(precision_recall))
    if threshold is None:  # select
        threshold = metrics.get(protocol.threshold_key(protocol.MAX_BOX_ACC),
                                metrics.get(protocol.threshold_key(protocol.PXAP), 0.5))
        if boxes is not None:
            loc = LocalizationAccuracy(threshold)
            column = int(np.flatnonzero(boxes.thresholds == threshold)[0])
            for hits, ranking in zip(boxes.hits, rankings, strict=True):
                if ranking is not None:
                    loc.add_located(bool(hits[column]), *ranking)
    if loc is not None and loc.images:
        metrics.update(loc.result())
    return SplitScore(metrics, normalisation, float(threshold), curves, precision_recall)


def _rankings(batch: RawBatch) -> list[tuple[int, list[int]] | None]:
    """Each image's label and the classifier's top five, or None (no classifier answer)."""
    if batch.logits is None or batch.logits.shape[1] < 2:
        return [None] * len(batch.labels)
    ranked = batch.logits.argsort(dim=1, descending=True)[:, :5].tolist()
    return list(zip(batch.labels.tolist(), ranked, strict=True))
