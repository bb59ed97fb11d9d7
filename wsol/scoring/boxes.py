"""MaxBoxAcc and MaxBoxAccV2, accumulated one map at a time (nothing kept but counts)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from wsol.common.protocol import IOU_THRESHOLDS
from wsol.scoring.contours import contour_curves
from wsol.scoring.grid import (
    checked_levels,
    quantize,
    threshold_grid,
    threshold_levels,
)
from wsol.scoring.threads import available_cpus


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


def best_iou_curves(
    scoremap: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU per threshold of the largest contour's box (MaxBoxAcc) and over all contour
    boxes (MaxBoxAccV2), from one pass over the map."""
    u8 = quantize(scoremap)
    largest, every = contour_curves(u8, gt_boxes, threshold_levels(u8, thresholds))[::-1]
    return largest, every  # type: ignore[return-value]


def best_iou_curve(
    scoremap: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray, multi_contour: bool
) -> np.ndarray:
    """Best IoU of the predicted boxes against `gt_boxes` at each threshold."""
    u8 = quantize(scoremap)
    levels = threshold_levels(u8, thresholds)
    every, largest = contour_curves(
        u8, gt_boxes, levels, all_contours=multi_contour, largest=not multi_contour
    )
    return every if multi_contour else largest  # type: ignore[return-value]


# maps in flight at once when streaming, per worker thread
IN_FLIGHT = 4


def _scored(
    curves: Callable[[np.ndarray, np.ndarray, str], tuple[np.ndarray, ...]],
    items: Iterable[tuple[np.ndarray, np.ndarray, str]],
    workers: int,
) -> Iterator[tuple[np.ndarray, ...]]:
    """`curves` of each (map, boxes, name), in order, on `workers` threads (the kernels
    release the GIL) while the caller's iterator produces the next maps. An error surfaces
    as it would one map at a time: that of the first map in order that fails, whether
    in producing it or in scoring it."""
    if workers <= 1:
        for scoremap, boxes, name in items:
            yield curves(scoremap, boxes, name)
        return
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(workers) as pool:
        source = iter(items)
        while True:
            try:
                item = next(source, None)
            except BaseException:
                while pending:  # earlier maps' errors first
                    pending.popleft().result()
                raise
            if item is None:
                break
            pending.append(pool.submit(curves, *item))
            if len(pending) >= IN_FLIGHT * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _Streamed:
    """Adding maps one at a time, in batches or as a stream; subclasses score and count."""

    workers: int

    def _curves(self, scoremap: np.ndarray, gt_boxes: np.ndarray, name: str) -> tuple:
        raise NotImplementedError

    def _count_all(self, curves: tuple) -> None:
        raise NotImplementedError

    def add(self, scoremap: np.ndarray, gt_boxes: np.ndarray, name: str = "score map") -> None:
        self._count_all(self._curves(scoremap, gt_boxes, name))

    def add_many(self, items: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Maps and their boxes, scored on `workers` threads; nothing is counted if one of
        them is invalid (the error names the first such map by its position)."""
        named = [(m, b, f"score map {i}") for i, (m, b) in enumerate(items)]
        workers = self.workers if len(named) > 1 else 1
        for curves in list(_scored(self._curves, named, workers)):
            self._count_all(curves)

    def add_stream(self, items: Iterable[tuple[np.ndarray, np.ndarray, str]]) -> None:
        """(map, boxes, name) as the iterator yields them, scored on `workers` threads while
        it produces the next ones; counted as they come, so an error stops the counting
        there."""
        for curves in _scored(self._curves, items, self.workers):
            self._count_all(curves)


class BoxAccumulator(_Streamed):
    """Counts correct images per (IoU level, threshold); `multi_contour` selects V2 or v1."""

    def __init__(
        self,
        interval: float = 0.01,
        multi_contour: bool = True,
        iou_thresholds: Sequence[int] = IOU_THRESHOLDS,
        workers: int | None = None,
    ):
        self.thresholds = threshold_grid(interval)
        self.multi_contour = multi_contour
        self.iou_thresholds = tuple(iou_thresholds)
        self._bounds = np.array([d / 100 for d in self.iou_thresholds])[:, None]
        self._correct = np.zeros((len(self.iou_thresholds), len(self.thresholds)), np.int64)
        self.correct = dict(zip(self.iou_thresholds, self._correct, strict=True))  # views
        self.images = 0
        # None: the trial's CPUs (Ray's assignment inside a Ray worker)
        self.workers = available_cpus() if workers is None else workers

    def _count(self, curve: np.ndarray) -> None:
        self._correct += curve >= self._bounds
        self.images += 1

    def _curves(self, scoremap: np.ndarray, gt_boxes: np.ndarray, name: str) -> tuple:
        u8, levels = checked_levels(scoremap, self.thresholds, name)
        every, largest = contour_curves(
            u8, gt_boxes, levels, all_contours=self.multi_contour,
            largest=not self.multi_contour,
        )
        return (every if self.multi_contour else largest,)

    def _count_all(self, curves: tuple) -> None:
        self._count(curves[0])

    def result(self) -> BoxCurves:
        if not self.images:
            raise ValueError("no score maps were accumulated")
        accuracy = {d: c * 100.0 / float(self.images) for d, c in self.correct.items()}
        return BoxCurves(self.thresholds, accuracy, self.images)


class BoxMetricsAccumulator(_Streamed):
    """MaxBoxAcc (largest contour, counted in `v1`) and MaxBoxAccV2 (all contours, in `v2`)
    together, from one pass over each map: what `wsol score` and a trial's evaluation report.

    With `keep_hits_at` (an IoU, e.g. 0.5) each map's largest-contour hits per threshold
    (IoU >= it) are kept in `hits`, in the order added: the Loc metrics at a threshold
    selected from the curves then need no second pass over the maps.
    """

    def __init__(
        self,
        interval: float = 0.01,
        iou_thresholds: Sequence[int] = IOU_THRESHOLDS,
        workers: int | None = None,
        keep_hits_at: float | None = None,
    ):
        self.thresholds = threshold_grid(interval)
        self.v1 = BoxAccumulator(interval, False, iou_thresholds, workers)
        self.v2 = BoxAccumulator(interval, True, iou_thresholds, workers)
        self.workers = self.v2.workers
        self.keep_hits_at = keep_hits_at
        self.hits: list[np.ndarray] = []

    @property
    def images(self) -> int:
        return self.v2.images

    def _curves(self, scoremap: np.ndarray, gt_boxes: np.ndarray, name: str) -> tuple:
        u8, levels = checked_levels(scoremap, self.thresholds, name)
        every, largest = contour_curves(u8, gt_boxes, levels)
        return largest, every

    def _count_all(self, curves: tuple) -> None:
        self.v1._count(curves[0])
        self.v2._count(curves[1])
        if self.keep_hits_at is not None:
            self.hits.append(curves[0] >= self.keep_hits_at)

    def result(self) -> tuple[BoxCurves, BoxCurves]:
        """(MaxBoxAcc's curves, MaxBoxAccV2's curves)."""
        return self.v1.result(), self.v2.result()
