"""Choose the CAM normalisation and its percentile on train-fullsup without retraining.

Raw maps of one checkpoint are streamed once; every candidate is scored from one pass over
each raw map (`wsol.scoring.joint`: the candidates' foregrounds are superlevel sets of the
same raw map), so many (normalisation, percentile) choices cost about one candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wsol.common.protocol import DEFAULT_IVR_PERCENTILES, NEEDS_PERCENTILE, NORMALISATIONS
from wsol.scoring.joint import CandidateCurves
from wsol.scoring.normalize import normalize, resize


@dataclass(frozen=True)
class Normalisation:
    method: str
    percentile: float | None = None

    def __post_init__(self) -> None:
        if self.method not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {self.method!r}")
        if self.method in NEEDS_PERCENTILE and self.percentile is None:
            raise ValueError(f"{self.method} needs a percentile")

    @property
    def label(self) -> str:
        return self.method if self.percentile is None else f"{self.method}@{self.percentile:g}"

    def apply(self, raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Resize (bicubic) then normalise, as the protocol orders them."""
        return normalize(resize(raw, size), self.method, self.percentile)


def default_candidates(
    ivr_percentiles: Sequence[float] = DEFAULT_IVR_PERCENTILES,
) -> list[Normalisation]:
    return [
        Normalisation("minmax"),
        Normalisation("max"),
        Normalisation("pas", 90.0),
        *(Normalisation("ivr", float(p)) for p in ivr_percentiles),
    ]


class NormalisationSearch:
    """Scores each candidate by MaxBoxAccV2 (boxes) or PxAP (masks) on the same raw maps;
    `curves` holds every candidate's full curves of that kind."""

    def __init__(self, candidates: Sequence[Normalisation], metric: str, interval: float = 0.01,
                 workers: int | None = None):
        if metric not in ("MaxBoxAccV2", "PxAP"):
            raise ValueError(f"selection metric must be MaxBoxAccV2 or PxAP, got {metric!r}")
        self.candidates = list(candidates)
        self.metric = metric
        self.curves = CandidateCurves(self.candidates, interval, boxes=metric != "PxAP",
                                      masks=metric == "PxAP", workers=workers)

    def add(self, raw: torch.Tensor, targets: Sequence[np.ndarray], size: tuple[int, int]) -> None:
        """Raw maps (B, h, w) and per-image GT boxes (k, 4) or masks (H, W) at `size`."""
        if self.metric == "PxAP":
            self.curves.add(raw, size, gt_masks=np.stack(targets))
        else:
            self.curves.add(raw, size, gt_boxes=targets)

    def scores(self) -> dict[Normalisation, float]:
        return selection_scores(self.curves, self.candidates, self.metric)

    def best(self) -> tuple[Normalisation, float]:
        """Highest score; ties go to the earlier candidate (simpler normalisations first)."""
        scores = self.scores()
        chosen = best_candidate(self.candidates, scores)
        return chosen, scores[chosen]


def selection_scores(curves: CandidateCurves, candidates: Sequence[Normalisation],
                     metric: str) -> dict[Normalisation, float]:
    """Each candidate's MaxBoxAccV2 or PxAP, read off curves that hold it."""
    if metric == "PxAP":
        return {c: curves.precision_recall(c).pxap for c in candidates}
    return {c: curves.box_curves(c)[1].mean_max_accuracy for c in candidates}


def best_candidate(candidates: Sequence[Normalisation],
                   scores: dict[Normalisation, float]) -> Normalisation:
    """Highest score; ties go to the earlier candidate (simpler normalisations first)."""
    order = list(candidates)
    return max(order, key=lambda c: (scores[c], -order.index(c)))
