"""Every normalisation candidate's box and mask curves from one pass over each raw map.

Why one pass is exact. Each candidate maps a raw value F of a map to
``min(max(F - s, 0) / d, 1)`` (the clip for PaS only) with per-map float32 constants and
d > 0, or the whole map to zeros (`Normaliser.affine`: min-max, max, PaS and IVR are
shifts, ReLUs, clips and divisions by positive constants). Under IEEE rounding each of
these steps is non-decreasing, and so is the protocol's uint8 truncation of 255 times the
result. So the foreground of candidate c at threshold tau, ``u8_c > int(tau * max(u8_c))``,
is the set of pixels whose raw value is at least the first raw value whose u8_c exceeds
that level: a suffix of the pixels sorted by raw value, found by binary search with c's own
float32 arithmetic on a few sorted values. Likewise c's PxAP bin [tau_i, tau_i+1) is a run
of that order. Ties are safe: equal raw values give equal normalised values, so a cut never
falls inside a run of ties; raw values that rounding maps to one normalised value merely
have no cut between them. Per map: one argsort, each candidate's cuts, and one contour pass
(`ranked_contour_curves`) read at the union of all candidates' cuts, which gives the
MaxBoxAcc and MaxBoxAccV2 curves of every candidate; one count of foreground and background
pixels along the same order gives every candidate's PxAP histogram. Maps this does not
cover (not float32, or holding an infinity) are scored candidate by candidate as before.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from numba import njit

from wsol.common.protocol import IOU_THRESHOLDS
from wsol.scoring.boxes import BoxCurves
from wsol.scoring.contours import contour_curves, empty_box_iou
from wsol.scoring.grid import checked_levels, threshold_grid
from wsol.scoring.localization import LOC_IOU
from wsol.scoring.normalize import Normaliser, resize
from wsol.scoring.pxap import IGNORE, PrecisionRecall, PxAPAccumulator
from wsol.scoring.threads import available_cpus

if TYPE_CHECKING:
    from wsol.scoring.selection import Normalisation

# grid cells per cut value when classing pixels by value (`_rank_classes`)
CELLS_PER_CUT = 16
# The per-candidate path's PxAP histogram is a parallel numba kernel, called from the pool's
# threads: numba's fallback threading layer aborts on concurrent launches.
_PARALLEL_KERNEL = threading.Lock()


@njit(cache=True, nogil=True, inline="always")
def _value(x: np.float32, shift: np.float32, divisor: np.float32, clip: bool) -> np.float32:
    """One raw value normalised with float32 steps in `Normaliser`'s order."""
    y = x - shift
    if y < np.float32(0):
        y = np.float32(0)
    v = y / divisor
    if clip and v > np.float32(1):
        v = np.float32(1)
    return v


@njit(cache=True, nogil=True, inline="always")
def _u8(x: np.float32, shift: np.float32, divisor: np.float32, clip: bool) -> np.int64:
    """The protocol's uint8 of a normalised value: ``uint8(v * 255)`` in float32."""
    return np.int64(np.uint8(_value(x, shift, divisor, clip) * np.float32(255)))


@njit(cache=True, nogil=True)
def _cuts(
    values: np.ndarray, shift: np.ndarray, divisor: np.ndarray, clip: np.ndarray,
    zero: np.ndarray, thresholds: np.ndarray, edges: np.ndarray, box_cuts: np.ndarray,
    pxap_cuts: np.ndarray,
) -> None:
    """Per candidate, from the map's values in ascending order: the first position whose
    uint8 exceeds each threshold's level ``int(tau * max uint8)`` (the size where none
    does: no foreground), and the first position whose normalised value reaches each PxAP
    bin edge. Binary searches; both sequences are non-decreasing, so each search starts at
    the previous answer."""
    n = values.size
    for c in range(shift.size):
        s, d, k = shift[c], divisor[c], clip[c]
        if zero[c]:  # the map normalises to zeros
            box_cuts[c, :] = n
            for e in range(edges.size):
                pxap_cuts[c, e] = 0 if edges[e] <= 0 else n
            continue
        top = np.float64(_u8(values[n - 1], s, d, k))
        lo, last = 0, -1
        for i in range(thresholds.size):
            level = np.int64(thresholds[i] * top)
            if level != last:
                hi = n
                while lo < hi:
                    mid = (lo + hi) // 2
                    if _u8(values[mid], s, d, k) > level:
                        hi = mid
                    else:
                        lo = mid + 1
                last = level
            box_cuts[c, i] = lo
        lo = 0
        for e in range(edges.size):
            hi = n
            while lo < hi:
                mid = (lo + hi) // 2
                if np.float64(_value(values[mid], s, d, k)) >= edges[e]:
                    hi = mid
                else:
                    lo = mid + 1
            pxap_cuts[c, e] = lo


@dataclass
class _MapCurves:
    """One map's answer for every candidate: IoU curves (C, T) of the largest contour and of
    all contours, and PxAP bin counts (C, bins) at foreground and background pixels."""

    largest: np.ndarray | None = None
    every: np.ndarray | None = None
    foreground: np.ndarray | None = None
    background: np.ndarray | None = None


@dataclass(frozen=True)
class _Params:
    """Each candidate's per-map constants (`Normaliser.affine`), arrays (maps, candidates)."""

    shift: np.ndarray
    divisor: np.ndarray
    clip: np.ndarray
    zero: np.ndarray

    @classmethod
    def of(cls, normaliser: Normaliser, candidates: Sequence[Normalisation]) -> _Params:
        parts = [normaliser.affine(c.method, c.percentile) for c in candidates]
        maps = normaliser.maps.shape[0]

        def column(i: int, dtype: type) -> np.ndarray:
            values = [np.broadcast_to(np.asarray(p[i]).reshape(-1), (maps,)) for p in parts]
            return np.ascontiguousarray(np.stack(values, axis=1), dtype=dtype)

        return cls(column(0, np.float32), column(1, np.float32), column(2, np.bool_),
                   column(3, np.bool_))


class CandidateCurves:
    """Every candidate's MaxBoxAcc / MaxBoxAccV2 counts (with each map's largest-contour
    hits at IoU 0.5, for the Loc metrics) and PxAP histograms, on `workers` threads."""

    def __init__(self, candidates: Sequence[Normalisation], interval: float = 0.01,
                 boxes: bool = True, masks: bool = False, workers: int | None = None,
                 iou_thresholds: Sequence[int] = IOU_THRESHOLDS):
        self.candidates = list(candidates)
        self.thresholds = threshold_grid(interval)
        self.interval = interval
        self.boxes, self.masks = boxes, masks
        self.workers = available_cpus() if workers is None else max(1, workers)
        self.iou_thresholds = tuple(iou_thresholds)
        self._bounds = np.array([d / 100 for d in self.iou_thresholds])[None, :, None]
        shape = (len(self.candidates), len(self.iou_thresholds), len(self.thresholds))
        self._v1 = np.zeros(shape, np.int64)
        self._v2 = np.zeros(shape, np.int64)
        self._hits: list[np.ndarray] = []
        self._edges = np.append(self.thresholds, [1.0, 2.0, 3.0])
        bins = (len(self.candidates), self._edges.size - 1)
        self._foreground = np.zeros(bins, np.int64)
        self._background = np.zeros(bins, np.int64)
        self.images = 0

    def add(self, raw: torch.Tensor, size: tuple[int, int],
            gt_boxes: Sequence[np.ndarray] | None = None,
            gt_masks: np.ndarray | None = None) -> None:
        """Raw maps (B, h, w), resized to `size` here, and their GT boxes (k, 4 each) and / or
        masks (B, H, W) at `size`, as the split has them."""
        if self.boxes and (gt_boxes is None or len(gt_boxes) != raw.shape[0]):
            raise ValueError(f"{raw.shape[0]} maps need as many GT box arrays")
        if self.masks and (gt_masks is None or tuple(gt_masks.shape) != (raw.shape[0], *size)):
            raise ValueError(f"{raw.shape[0]} maps at {size} need masks of that shape, got "
                             f"{None if gt_masks is None else tuple(gt_masks.shape)}")
        maps = resize(raw.detach().cpu(), size)
        flat = maps.flatten(-2).contiguous().numpy()
        with ThreadPoolExecutor(self.workers) as pool:
            values = torch.from_numpy(np.stack(list(pool.map(np.sort, flat))))
            normaliser = Normaliser.presorted(maps, values)
            params = _Params.of(normaliser, self.candidates)
            jobs = [(i, normaliser, params, gt_boxes, gt_masks) for i in range(flat.shape[0])]
            answers = list(pool.map(lambda job: self._one(*job), jobs))
        for answer in answers:
            self._count(answer)

    def _one(self, i: int, normaliser: Normaliser, params: _Params,
             gt_boxes: Sequence[np.ndarray] | None, gt_masks: np.ndarray | None) -> _MapCurves:
        scoremap = normaliser.maps[i].numpy()
        boxes = None if gt_boxes is None or not self.boxes else gt_boxes[i]
        mask = None if gt_masks is None or not self.masks else gt_masks[i]
        values = normaliser.sorted_values[i].numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            spread = values[-1] - values[0]
        if values.dtype != np.float32 or not np.isfinite(spread):
            # infinities, NaN ends, or a range beyond float32: the per-candidate path raises
            # or scores exactly as score_split does
            return self._alone(normaliser.maps[i], boxes, mask, f"score map {i}")
        box_cuts = np.empty((len(self.candidates), self.thresholds.size if self.boxes else 0),
                            np.int64)
        pxap_cuts = np.empty((len(self.candidates), self._edges.size if self.masks else 0),
                             np.int64)
        _cuts(values, params.shift[i], params.divisor[i], params.clip[i], params.zero[i],
              self.thresholds if self.boxes else self.thresholds[:0],
              self._edges if self.masks else self._edges[:0], box_cuts, pxap_cuts)
        union = _union(box_cuts, pxap_cuts, values.size)
        classes = np.zeros(scoremap.shape, np.int32)
        if union.size:
            _rank_classes(scoremap, values[union], classes)
        out = _MapCurves()
        if boxes is not None:
            out.largest, out.every = _box_curves(classes, union, box_cuts, boxes)
        if mask is not None:
            out.foreground, out.background = _bin_counts(classes, union, pxap_cuts, mask)
        return out

    def _alone(self, scoremap: torch.Tensor, boxes: np.ndarray | None, mask: np.ndarray | None,
               name: str) -> _MapCurves:
        """Each candidate normalised and scored on its own, as `score_split` does."""
        one = Normaliser(scoremap[None])
        largest, every, foreground, background = [], [], [], []
        for c in self.candidates:
            normalised = one(c.method, c.percentile)[0].numpy()
            if boxes is not None:
                u8, levels = checked_levels(normalised, self.thresholds, name)
                all_boxes, largest_box = contour_curves(u8, boxes, levels)
                assert all_boxes is not None and largest_box is not None  # both asked for
                largest.append(largest_box)
                every.append(all_boxes)
            if mask is not None:
                pxap = PxAPAccumulator(self.interval)
                with _PARALLEL_KERNEL:  # numba's parallel kernels: one launch at a time
                    pxap.add(normalised, mask)
                foreground.append(pxap.foreground)
                background.append(pxap.background)
        return _MapCurves(_stacked(largest), _stacked(every), _stacked(foreground),
                          _stacked(background))

    def _count(self, curves: _MapCurves) -> None:
        if curves.largest is not None and curves.every is not None:
            self._v1 += curves.largest[:, None, :] >= self._bounds
            self._v2 += curves.every[:, None, :] >= self._bounds
            self._hits.append(curves.largest >= LOC_IOU)
        if curves.foreground is not None and curves.background is not None:
            self._foreground += curves.foreground
            self._background += curves.background
        self.images += 1

    def box_curves(self, candidate: Normalisation) -> tuple[BoxCurves, BoxCurves]:
        """(MaxBoxAcc's curves, MaxBoxAccV2's curves) of one candidate."""
        if not self.boxes or not self.images:
            raise ValueError("no boxes were scored")
        c = self.candidates.index(candidate)
        return (self._curves(self._v1[c]), self._curves(self._v2[c]))

    def _curves(self, correct: np.ndarray) -> BoxCurves:
        accuracy = {d: row * 100.0 / float(self.images)
                    for d, row in zip(self.iou_thresholds, correct, strict=True)}
        return BoxCurves(self.thresholds, accuracy, self.images)

    def located(self, candidate: Normalisation, threshold: float) -> np.ndarray:
        """Per map in the order added: whether the largest contour's box of `candidate` at
        `threshold` (a value of the grid) has IoU >= 0.5 with a GT box."""
        column = int(np.flatnonzero(self.thresholds == threshold)[0])
        c = self.candidates.index(candidate)
        return np.array([hits[c, column] for hits in self._hits], dtype=bool)

    def precision_recall(self, candidate: Normalisation) -> PrecisionRecall:
        if not self.masks:
            raise ValueError("no masks were scored")
        c = self.candidates.index(candidate)
        pxap = PxAPAccumulator(self.interval)
        pxap.foreground += self._foreground[c]
        pxap.background += self._background[c]
        return pxap.result()


def _stacked(rows: list[np.ndarray]) -> np.ndarray | None:
    return np.stack(rows) if rows else None


@njit(cache=True, nogil=True)
def _union(box_cuts: np.ndarray, pxap_cuts: np.ndarray, size: int) -> np.ndarray:
    """The distinct cuts below `size` (those with a foreground), ascending: np.unique's
    answer at a tenth of its cost on a thousand cuts."""
    cuts = np.sort(np.concatenate((box_cuts.ravel(), pxap_cuts.ravel())))
    out = np.empty(cuts.size, dtype=np.int64)
    kept = 0
    for c in cuts:
        if c < size and (kept == 0 or out[kept - 1] != c):
            out[kept] = c
            kept += 1
    return out[:kept]


@njit(cache=True, nogil=True)
def _rank_classes(scoremap: np.ndarray, cut_values: np.ndarray, classes: np.ndarray) -> None:
    """Each pixel's class: how many of the (strictly increasing, at least one) cut values
    it reaches, so that the pixels of class > k are those at or above cut k. A grid of
    `CELLS_PER_CUT` cells per cut over the cuts' range guesses the class, exact float32
    comparisons settle it."""
    k_cuts = cut_values.size
    values = scoremap.reshape(-1)
    out = classes.reshape(-1)
    low, high = np.float64(cut_values[0]), np.float64(cut_values[k_cuts - 1])
    cells = CELLS_PER_CUT * k_cuts
    width = (high - low) / cells
    scale = 1.0 / width if width > 0 else 0.0
    guess = np.empty(cells + 1, dtype=np.int32)
    k = 0
    for g in range(cells + 1):
        while k < k_cuts and np.float64(cut_values[k]) < low + g * width:
            k += 1
        guess[g] = k
    for p in range(values.size):
        v = values[p]
        at = (np.float64(v) - low) * scale
        if v < cut_values[0]:
            k = 0
        elif at >= cells:
            k = k_cuts
        else:
            k = guess[np.uint32(at)]
        while k > 0 and cut_values[np.uint32(k - 1)] > v:
            k -= 1
        while k < k_cuts and cut_values[np.uint32(k)] <= v:
            k += 1
        out[p] = k


def _box_curves(classes: np.ndarray, union: np.ndarray, cuts: np.ndarray, gt: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Largest-contour and all-contour IoU curves (C, T) of every candidate, from one
    contour pass over the rank classes; the foreground at cut `union[k]` is class > k (a
    cut at the pixel count: no foreground)."""
    nothing = empty_box_iou(gt)
    largest = np.full(cuts.shape, nothing)
    every = np.full(cuts.shape, nothing)
    present = cuts < classes.size
    if present.any():
        level = np.searchsorted(union, cuts[present])
        every_level, largest_level = contour_curves(classes, gt, level,
                                                    n_levels=union.size + 1)
        assert every_level is not None and largest_level is not None  # both asked for
        largest[present] = largest_level
        every[present] = every_level
    return largest, every


def _bin_counts(classes: np.ndarray, union: np.ndarray, cuts: np.ndarray, mask: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """PxAP bin counts (C, bins) at foreground and background pixels (ignored pixels left
    out, any label but 1 counted as background, as `PxAPAccumulator` does), from the
    pixels of each class: a bin holds the pixels from one bin edge's cut to the next."""
    labels = np.ascontiguousarray(mask, dtype=np.uint8).reshape(-1)
    flat = classes.reshape(-1)
    out = []
    for chosen in (labels == 1, (labels != 1) & (labels != IGNORE)):
        per_class = np.bincount(flat[chosen], minlength=union.size + 1)
        # pixels at or above cut k: classes k + 1 and up; none above a cut at the pixel count
        above = np.append(np.cumsum(per_class[::-1])[::-1], 0)
        at_or_above = np.zeros(cuts.shape, np.int64)
        present = cuts < classes.size
        at_or_above[present] = above[np.searchsorted(union, cuts[present]) + 1]
        # values below the first edge and from the last one on stay in the end bins,
        # as np.histogram's clamp puts them
        at_or_above[:, 0] = chosen.sum()
        at_or_above[:, -1] = 0
        out.append(-np.diff(at_or_above, axis=1))
    return out[0], out[1]
