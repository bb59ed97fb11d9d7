"""Contour boxes of thresholded score maps, for every threshold of a map in one pass.

The reference thresholds the uint8 map at `int(tau * max)` and asks OpenCV's
`findContours(RETR_TREE)` for every contour. Its contours are exactly
- one outer border per 8-connected foreground component, whose bounding rectangle is the
  component's bounding box, and
- one hole border per 4-connected background component that does not reach the image
  edge, whose bounding rectangle is the hole's bounding box grown by one pixel each side
(checked against OpenCV itself in the tests). Components over all 256 uint8 levels form
two trees, which one union-find pass over the pixels sorted by value builds; so the best
IoU at every level costs about one OpenCV call instead of one per threshold.

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


@njit(cache=True)
def _counting_order(flat: np.ndarray, descending: bool, order: np.ndarray) -> None:
    """Pixel indices sorted by uint8 value in O(n) into `order`."""
    counts = np.zeros(LEVELS + 1, dtype=np.int64)
    for v in flat:
        counts[v + 1] += 1
    for v in range(LEVELS):
        counts[v + 1] += counts[v]
    last = flat.size - 1
    for i in range(flat.size):
        v = flat[i]
        order[last - counts[v] if descending else counts[v]] = i
        counts[v] += 1


@njit(cache=True, nogil=True)
def _component_best(
    u8: np.ndarray,
    gt: np.ndarray,
    needed: np.ndarray,
    holes: bool,
    parent: np.ndarray,
    bounds: np.ndarray,
    order: np.ndarray,
    roots: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU per level t over the contours of one kind of ``u8 > t``.

    holes=False: outer borders, 8-connected foreground, pixels added from high to low value.
    holes=True: hole borders, 4-connected background, pixels added from low to high value;
    the one-pixel frame around the image is one component from the start, as OpenCV pads
    the image with zeros. Work arrays come from the caller (fresh pages are slow to touch);
    `parent` holds -2 for pixels not yet added, then union-find links with path halving.
    Returns (best IoU per level, -1 where no such contour; how many such contours).
    """
    h, w = u8.shape
    pw = w + 2
    n = (h + 2) * pw
    flat = u8.ravel()
    _counting_order(flat, not holes, order)
    frame = 0
    for i in range(n):
        parent[i] = -2
    if holes:
        for y in range(h + 2):
            for x in range(pw):
                if y == 0 or x == 0 or y == h + 1 or x == w + 1:
                    parent[y * pw + x] = frame
    n_offsets = 4 if holes else 8
    offsets = np.empty(8, dtype=np.int64)
    if holes:
        offsets[:4] = (-pw, -1, 1, pw)
    else:
        offsets[:] = (-pw - 1, -pw, -pw + 1, -1, 1, pw - 1, pw, pw + 1)
    n_roots = 0
    best = np.full(LEVELS, -1.0)
    counts = np.zeros(LEVELS, dtype=np.int64)
    k = 0
    total = h * w
    for step in range(LEVELS):
        t = step if holes else LEVELS - 1 - step
        while k < total:
            i = order[k]
            v = np.int64(flat[i])
            if (holes and v > t) or (not holes and v <= t):
                break
            k += 1
            y = i // w
            x = i - y * w
            p = (y + 1) * pw + x + 1
            parent[p] = p
            rp = -1
            for o in range(n_offsets):
                r = p + offsets[o]
                if parent[r] == -2:
                    continue
                while parent[r] != r:
                    parent[r] = parent[parent[r]]
                    r = parent[r]
                if rp == -1:
                    parent[p] = r
                    rp = r
                    bounds[r, 0] = min(bounds[r, 0], x)
                    bounds[r, 1] = min(bounds[r, 1], y)
                    bounds[r, 2] = max(bounds[r, 2], x)
                    bounds[r, 3] = max(bounds[r, 3], y)
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
            if holes:
                iou = _box_iou(
                    bounds[r, 0] - 1,
                    bounds[r, 1] - 1,
                    min(bounds[r, 2] + 2, w - 1),
                    min(bounds[r, 3] + 2, h - 1),
                    gt,
                )
            else:
                iou = _box_iou(
                    bounds[r, 0],
                    bounds[r, 1],
                    min(bounds[r, 2] + 1, w - 1),
                    min(bounds[r, 3] + 1, h - 1),
                    gt,
                )
            top = max(top, iou)
        n_roots = kept
        best[t] = top
        counts[t] = kept
    return best, counts


@njit(cache=True, nogil=True)
def _euler_numbers(u8: np.ndarray) -> np.ndarray:
    """Euler number (components - holes, 8-connected) of ``u8 > t`` for every level t.

    Gray's bit-quad count 4E = n1 - n3 - 2 nD over the 2x2 windows of the zero-padded
    map: each window changes pattern at only its four values, so one raster pass fills a
    difference array over levels. It lets the hole pass be skipped when no level has holes.
    """
    h, w = u8.shape
    diff = np.zeros(LEVELS + 1, dtype=np.int64)
    value = np.empty(4, dtype=np.int64)
    slot = np.empty(4, dtype=np.int64)
    for y in range(-1, h):
        for x in range(-1, w):
            value[0] = u8[y, x] if y >= 0 and x >= 0 else -1
            value[1] = u8[y, x + 1] if y >= 0 and x + 1 < w else -1
            value[2] = u8[y + 1, x] if y + 1 < h and x >= 0 else -1
            value[3] = u8[y + 1, x + 1] if y + 1 < h and x + 1 < w else -1
            for i in range(4):
                slot[i] = i
            for i in range(1, 4):
                j = i
                while j > 0 and value[slot[j - 1]] < value[slot[j]]:
                    slot[j - 1], slot[j] = slot[j], slot[j - 1]
                    j -= 1
            s1, s2, s3, s4 = value[slot[0]], value[slot[1]], value[slot[2]], value[slot[3]]
            if s1 < 0:
                continue
            # one foreground pixel (value > t) for t in [s2, s1): n1
            diff[max(s2, 0)] += 1
            diff[s1] -= 1
            # two, on a diagonal (slots 0+3 or 1+2), for t in [s3, s2): nD counts twice
            if s3 < s2 and slot[0] + slot[1] == 3:
                diff[max(s3, 0)] -= 2
                diff[s2] += 2
            # three for t in [s4, s3): n3
            if s4 < s3:
                diff[max(s4, 0)] -= 1
                diff[s3] += 1
    return np.cumsum(diff[:LEVELS]) // 4


_scratch = threading.local()


def _workspace(h: int, w: int) -> tuple[np.ndarray, ...]:
    """Per-thread work arrays for maps of up to h x w pixels, grown when a larger map comes."""
    n = (h + 2) * (w + 2)
    arrays = getattr(_scratch, "arrays", None)
    if arrays is None or arrays[0].size < n:
        arrays = (
            np.empty(n, dtype=np.int64),
            np.empty((n, 4), dtype=np.int64),
            np.empty(n, dtype=np.int64),
            np.empty(n, dtype=np.int64),
        )
        _scratch.arrays = arrays
    return arrays


def empty_box_iou(gt_boxes: np.ndarray) -> float:
    """IoU the reference gives a threshold with no contour: its box is [0, 0, 0, 0]."""
    return float(_box_iou(0, 0, 0, 0, gt_boxes))


def all_contours_best_iou(u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Best IoU over all contour boxes of ``u8 > t`` for each t in `levels` (MaxBoxAccV2)."""
    needed = np.zeros(LEVELS, dtype=np.bool_)
    needed[levels] = True
    gt = np.ascontiguousarray(gt_boxes, dtype=np.int64)
    u8 = np.ascontiguousarray(u8)
    work = _workspace(*u8.shape)
    outer, components = _component_best(u8, gt, needed, False, *work)
    with_holes = needed & (components != _euler_numbers(u8))
    if with_holes.any():
        holes, _ = _component_best(u8, gt, with_holes, True, *work)
        outer = np.maximum(outer, holes)
    per_level = np.where(components > 0, outer, empty_box_iou(gt))
    return per_level[levels]


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
