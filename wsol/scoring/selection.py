"""Choose the CAM normalisation and its percentile on train-fullsup without retraining.

Raw maps of one checkpoint are streamed once; every candidate normalises them and feeds
its own accumulator, so many (normalisation, percentile) choices cost one inference pass.
Each batch is resized once and prepared once for all candidates (`Normaliser`: one sort
serves every percentile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wsol.common.protocol import DEFAULT_IVR_PERCENTILES, NEEDS_PERCENTILE, NORMALISATIONS
from wsol.scoring.boxes import BoxAccumulator
from wsol.scoring.normalize import Normaliser, normalize, resize
from wsol.scoring.pxap import PxAPAccumulator


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
    """Scores each candidate by MaxBoxAccV2 (boxes) or PxAP (masks) on the same raw maps."""

    def __init__(self, candidates: Sequence[Normalisation], metric: str, interval: float = 0.01):
        if metric not in ("MaxBoxAccV2", "PxAP"):
            raise ValueError(f"selection metric must be MaxBoxAccV2 or PxAP, got {metric!r}")
        self.candidates = list(candidates)
        self.metric = metric
        self.boxes = {c: BoxAccumulator(interval) for c in self.candidates}
        self.masks = {c: PxAPAccumulator(interval) for c in self.candidates}

    def add(self, raw: torch.Tensor, targets: Sequence[np.ndarray], size: tuple[int, int]) -> None:
        """Raw maps (B, h, w) and per-image GT boxes (k, 4) or masks (H, W) at `size`."""
        normaliser = Normaliser(resize(raw, size))
        for candidate in self.candidates:
            maps = normaliser(candidate.method, candidate.percentile).cpu().numpy()
            if self.metric == "PxAP":
                self.masks[candidate].add(maps, np.stack(targets))
            else:
                self.boxes[candidate].add_many(zip(maps, targets, strict=True))

    def scores(self) -> dict[Normalisation, float]:
        if self.metric == "PxAP":
            return {c: a.result().pxap for c, a in self.masks.items()}
        return {c: a.result().mean_max_accuracy for c, a in self.boxes.items()}

    def best(self) -> tuple[Normalisation, float]:
        """Highest score; ties go to the earlier candidate (simpler normalisations first)."""
        scores = self.scores()
        chosen = max(self.candidates, key=lambda c: (scores[c], -self.candidates.index(c)))
        return chosen, scores[chosen]
