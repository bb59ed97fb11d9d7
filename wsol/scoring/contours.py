"""Contour boxes of thresholded score maps, for every threshold of a map in one pass.

The reference thresholds the uint8 map at `int(tau * max)` and asks OpenCV's
`findContours(RETR_TREE)` for every contour. Its contours are exactly
- one outer border per 8-connected foreground component, whose bounding rectangle is the
  component's bounding box, and
- one hole border per 4-connected background component that does not reach the image
  edge, whose bounding rectangle is the hole's bounding box grown by one pixel each side
(checked against OpenCV itself in the tests). Components over all 256 uint8 levels form
two trees, which union-find passes over the pixels sorted by value build; so the best IoU
at every level costs about a tenth of OpenCV's calls at interval 0.01. The hole pass runs
only up to the last level that has holes, which the outer pass counts through the Euler
number.

MaxBoxAcc (v1) keeps only the contour of largest polygon area, which depends on the traced
contour itself, so it goes through OpenCV, once per distinct uint8 level.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
from numba import njit

LEVELS = 256


@njit(cache=True)
def _box_iou(x0: int, y0: int, x1: int, y1: int, gt: np.ndarray) -> float:
    """Best IoU of one box against all GT boxes, inclusive-pixel areas as the reference."""
    best = -1.0
    area_a = (x1 - x0 + 1) * (y1 - y0 + 1)
    for g in range(gt.shape[0]):
        iw = min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1
        ih = min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1
        inter = max(0, iw) * max(0, ih)
        area_b = (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1)
        iou = inter / (area_a + area_b - inter)
        best = max(best, iou)
    return best


def _ring_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pattern of the 8 ring neighbours already added (bit i = ring position i, ring
    order NW N NE E SE S SW W), the neighbours whose roots must be looked up: one per run of
    neighbours that are already one component. 8-connected foreground: ring neighbours next
    to each other are adjacent. 4-connected background: only N E S W count, and two of them
    are joined through the corner between them. Also 4 x the change of the foreground's
    Euler number (Gray's bit-quads: one set pixel +1, three -1, a diagonal pair -2) when the
    pixel joins, so holes are counted without a pass of their own."""
    outer = np.zeros((256, 5), dtype=np.int64)
    holes = np.zeros((256, 5), dtype=np.int64)
    euler = np.zeros(256, dtype=np.int64)
    # the 2x2 windows holding the pixel (-1), cells as (top-left, top-right, bottom-left,
    # bottom-right) in ring positions
    windows = ((0, 1, 7, -1), (1, 2, -1, 3), (7, -1, 6, 5), (-1, 3, 5, 4))

    def quad(cells: tuple[bool, ...]) -> int:
        count = sum(cells)
        diagonal = count == 2 and cells[0] == cells[3]
        return {1: 1, 3: -1}.get(count, -2 if diagonal else 0)

    for pattern in range(256):
        present = [bool(pattern >> i & 1) for i in range(8)]
        starts = [i for i in range(8) if present[i] and not present[i - 1]]
        if pattern == 255:
            starts = [0]
        outer[pattern, 0] = len(starts)
        outer[pattern, 1 : 1 + len(starts)] = starts
        sides = [i for i in (1, 3, 5, 7) if present[i]]
        joined = [i for i in sides if present[i - 1] and present[i - 2]]
        starts = [i for i in sides if i not in joined] or sides[:1]
        holes[pattern, 0] = len(starts)
        holes[pattern, 1 : 1 + len(starts)] = starts
        for cells in windows:
            before = tuple(c != -1 and present[c] for c in cells)
            after = tuple(c == -1 or present[c] for c in cells)
            euler[pattern] += quad(after) - quad(before)
    return outer, holes, euler


OUTER_RUNS, HOLE_RUNS, EULER_DELTA4 = _ring_tables()


@njit(cache=True, nogil=True)
def _padded_order(u8: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Padded pixel indices sorted by uint8 value in O(n) into `order`; returns where each
    value's run starts (value v fills ``order[starts[v]:starts[v + 1]]``)."""
    h, w = u8.shape
    pw = w + 2
    starts = np.zeros(LEVELS + 1, dtype=np.int64)
    for y in range(h):
        for x in range(w):
            starts[u8[y, x] + 1] += 1
    for v in range(LEVELS):
        starts[v + 1] += starts[v]
    fill = starts[:LEVELS].copy()
    for y in range(h):
        for x in range(w):
            v = u8[y, x]
            order[fill[v]] = (y + 1) * pw + x + 1
            fill[v] += 1
    return starts


@njit(cache=True, nogil=True)
def _component_best(
    shape: tuple[int, int],
    gt: np.ndarray,
    needed: np.ndarray,
    holes: bool,
    order: np.ndarray,
    starts: np.ndarray,
    parent: np.ndarray,
    bounds: np.ndarray,
    roots: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    runs: np.ndarray,
    euler_delta4: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best IoU per level t over the contours of one kind of ``u8 > t``.

    holes=False: outer borders, 8-connected foreground, pixels added from high to low value.
    holes=True: hole borders, 4-connected background, pixels added from low to high value;
    the one-pixel frame around the image is one component from the start, as OpenCV pads
    the image with zeros. Indices are into the padded (h + 2) x (w + 2) grid, whose `rows`
    and `cols` spare a division per pixel; `added` marks the pixels added so far (a byte map
    stays in cache), `parent` holds their union-find links, with path halving. Work arrays
    come from the caller (fresh pages are slow to touch). Levels past the last needed one
    are never visited.
    Returns (best IoU per level, -1 where no such contour; how many such contours; the
    foreground's Euler number, outer pass only).
    """
    h, w = shape
    pw = w + 2
    frame = 0
    added = np.zeros((h + 2) * pw, dtype=np.uint8)
    if holes:
        for y in range(h + 2):
            parent[y * pw] = frame
            parent[y * pw + w + 1] = frame
            added[y * pw] = 1
            added[y * pw + w + 1] = 1
        for x in range(pw):
            parent[x] = frame
            parent[(h + 1) * pw + x] = frame
            added[x] = 1
            added[(h + 1) * pw + x] = 1
    offsets = np.array((-pw - 1, -pw, -pw + 1, 1, pw + 1, pw, pw - 1, -1))
    grow = 1 if holes else 0
    n_roots = 0
    euler4 = 0
    best = np.full(LEVELS, -1.0)
    counts = np.zeros(LEVELS, dtype=np.int64)
    euler = np.zeros(LEVELS, dtype=np.int64)
    wanted = np.nonzero(needed)[0]
    last_step = wanted[-1] if holes else LEVELS - 1 - wanted[0]
    for step in range(last_step + 1):
        t = step if holes else LEVELS - 1 - step
        # background u8 <= t gains value t; foreground u8 > t gains value t + 1
        value = t if holes else t + 1
        if value < LEVELS:
            for k in range(starts[value], starts[value + 1]):
                p = order[k]
                pattern = 0
                for o in range(8):
                    pattern |= added[p + offsets[o]] << o
                added[p] = 1
                parent[p] = p
                x = cols[p]
                y = rows[p]
                rp = -1
                for j in range(runs[pattern, 0]):
                    r = p + offsets[runs[pattern, 1 + j]]
                    while parent[r] != r:
                        parent[r] = parent[parent[r]]
                        r = parent[r]
                    if rp == -1:
                        parent[p] = r
                        rp = r
                        if x < bounds[r, 0]:
                            bounds[r, 0] = x
                        elif x > bounds[r, 2]:
                            bounds[r, 2] = x
                        if y < bounds[r, 1]:
                            bounds[r, 1] = y
                        elif y > bounds[r, 3]:
                            bounds[r, 3] = y
                    elif r != rp:
                        parent[r] = rp
                        bounds[rp, 0] = min(bounds[rp, 0], bounds[r, 0])
                        bounds[rp, 1] = min(bounds[rp, 1], bounds[r, 1])
                        bounds[rp, 2] = max(bounds[rp, 2], bounds[r, 2])
                        bounds[rp, 3] = max(bounds[rp, 3], bounds[r, 3])
                if rp == -1:
                    bounds[p, 0], bounds[p, 1], bounds[p, 2], bounds[p, 3] = x, y, x, y
                    roots[n_roots] = p
                    n_roots += 1
                if not holes:
                    euler4 += euler_delta4[pattern]
        if not needed[t]:
            continue
        frame_root = frame
        while holes and parent[frame_root] != frame_root:
            frame_root = parent[frame_root]
        kept = 0
        top = -1.0
        for j in range(n_roots):
            r = roots[j]
            if parent[r] != r or (holes and r == frame_root):
                continue
            roots[kept] = r
            kept += 1
            iou = _box_iou(
                bounds[r, 0] - grow,
                bounds[r, 1] - grow,
                min(bounds[r, 2] + 1 + grow, w - 1),
                min(bounds[r, 3] + 1 + grow, h - 1),
                gt,
            )
            top = max(top, iou)
        n_roots = kept
        best[t] = top
        counts[t] = kept
        euler[t] = euler4 // 4
    return best, counts, euler


_scratch = threading.local()


def _workspace(h: int, w: int) -> tuple[np.ndarray, ...]:
    """Per-thread work arrays for h x w maps: order, parent, bounds, roots, and the row and
    column of every padded index."""
    shape = (h + 2, w + 2)
    cached = getattr(_scratch, "arrays", None)
    if cached is None or cached[0] != shape:
        n = shape[0] * shape[1]
        rows, cols = np.indices(shape, dtype=np.int32) - 1
        arrays = (
            np.empty(n, dtype=np.int32),
            np.empty(n, dtype=np.int32),
            np.empty((n, 4), dtype=np.int32),
            np.empty(n, dtype=np.int32),
            rows.ravel(),
            cols.ravel(),
        )
        _scratch.arrays = cached = (shape, arrays)
    return cached[1]


def empty_box_iou(gt_boxes: np.ndarray) -> float:
    """IoU the reference gives a threshold with no contour: its box is [0, 0, 0, 0]."""
    return float(_box_iou(0, 0, 0, 0, gt_boxes))


@njit(cache=True, nogil=True)
def _all_contours_best(
    u8: np.ndarray,
    gt: np.ndarray,
    levels: np.ndarray,
    order: np.ndarray,
    parent: np.ndarray,
    bounds: np.ndarray,
    roots: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
) -> np.ndarray:
    """The whole of `all_contours_best_iou` outside the GIL, so that threads scale."""
    needed = np.zeros(LEVELS, dtype=np.bool_)
    needed[levels] = True
    starts = _padded_order(u8, order)
    work = (parent, bounds, roots, rows, cols)
    best, components, euler = _component_best(
        u8.shape, gt, needed, False, order, starts, *work, OUTER_RUNS, EULER_DELTA4
    )
    with_holes = needed & (components != euler)
    if with_holes.any():
        holes = _component_best(
            u8.shape, gt, with_holes, True, order, starts, *work, HOLE_RUNS, EULER_DELTA4
        )[0]
        best = np.maximum(best, holes)
    nothing = _box_iou(0, 0, 0, 0, gt)
    out = np.empty(levels.size)
    for i in range(levels.size):
        out[i] = best[levels[i]] if components[levels[i]] > 0 else nothing
    return out


def all_contours_best_iou(u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Best IoU over all contour boxes of ``u8 > t`` for each t in `levels` (MaxBoxAccV2)."""
    gt = np.ascontiguousarray(gt_boxes, dtype=np.int64)
    u8 = np.ascontiguousarray(u8)
    return _all_contours_best(u8, gt, levels, *_workspace(*u8.shape))


def _largest_contour_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding rectangle (x, y, w, h) of the largest-area contour, first one on ties."""
    contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if not contours:
        return None
    if len(contours) == 1:
        return cv2.boundingRect(contours[0])
    lengths = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    points = np.concatenate(contours).reshape(-1, 2).astype(np.float64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    following = np.arange(1, len(points) + 1)
    following[np.cumsum(lengths) - 1] = starts
    cross = points[:, 0] * points[following, 1] - points[following, 0] * points[:, 1]
    areas = np.abs(np.add.reduceat(cross, starts)) * 0.5
    chosen = int(np.argmax(areas))
    return cv2.boundingRect(contours[chosen])


def largest_contour_best_iou(
    u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray
) -> np.ndarray:
    """Best IoU of the largest contour's box for each t in `levels` (MaxBoxAcc)."""
    h, w = u8.shape
    gt = np.ascontiguousarray(gt_boxes, dtype=np.int64)
    by_level: dict[int, float] = {}
    for t in np.unique(levels):
        rect = _largest_contour_box(((u8 > t) * np.uint8(255)).astype(np.uint8))
        if rect is None:
            by_level[int(t)] = empty_box_iou(gt)
            continue
        x, y, bw, bh = rect
        by_level[int(t)] = float(_box_iou(x, y, min(x + bw, w - 1), min(y + bh, h - 1), gt))
    return np.array([by_level[int(t)] for t in levels])
