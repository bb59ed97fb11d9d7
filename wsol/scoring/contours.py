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

MaxBoxAcc (v1) keeps only the contour of largest polygon area: `cv2.contourArea`, the first
maximal one in OpenCV's order, as `max(contours, key=cv2.contourArea)` picks it. Its box is
the bounding box of a component whenever that component's outer border is the unique
largest contour, and the area comes from quantities the passes keep per component:
- Material: the polygon through the pixel centres of a set without holes has the area of
  its 2 x 2 windows fully inside it plus half of those with three pixels inside. Pixels
  join one at a time, so a table over the 8 neighbours gives the change, as for the Euler
  number; a component's own Euler number says whether it has holes.
- A component's outer border area is its material plus the areas of its hole borders, a
  hole border's area is at most its component's (equal only without material), and a hole
  with nothing inside has the area of its share of the plane: per 2 x 2 window, the whole
  window when its background pixels are joined inside it, half of it per pixel otherwise.
- On a level without holes OpenCV lists the outer borders by their first pixel in raster
  order, last first.
The outer pass decides a level when the component of largest material (exact without holes,
a lower bound with them) beats the upper bound of every other one (its exact area, or the
pixel-centre area of its bounding box when it has holes), or when exact areas tie on a level
without holes: about 97% of the levels of CAM-like maps. At the levels left the hole pass
(which runs there anyway for MaxBoxAccV2) adds up the areas of all holes; when that total is
below the margin between the largest material and the next one of a component with holes,
the level is decided too. It also records every hole's area and the pixel above its first
one, which lies in the component the hole belongs to; for what is still open a second outer
pass, down to those levels only, adds the holes to their components and decides with exact
areas (a fifth of CAM-like maps need it). What remains (a tie on a level with holes, a hole
holding a component, a largest component with holes but no material) goes to OpenCV, on the
foreground's bounding box only: about one level in ten thousand on CAM-like maps. Each
claim is checked against OpenCV in the tests.

Nothing here needs the values to be uint8: any integer map with `n_levels` values works the
same way, which `wsol.scoring.joint` uses to score every normalisation of a raw map at once
(its pixels classed by rank, one level per threshold of any candidate).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import cv2
import numpy as np
from numba import njit

LEVELS = 256
# array indices in the kernels are unsigned, which spares numba's negative-index wraparound
# on every access (about a third of a pass)
U = np.uint32
# per-component statistics, one row of int64 per union-find root: bounding box, its shape
# (2 x area, of the material or the share of the plane, << 32, plus 4 x Euler number: both
# additive, so one table lookup and one addition per pixel), first pixel, 2 x area of holes
X0, Y0, X1, Y1, SHAPE, FIRST, HOLES2 = range(7)
STATS = 8
# up to this many distinct levels, MaxBoxAcc alone asks OpenCV at each (cheaper than a pass)
FEW_LEVELS = 3


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


def _ring_tables() -> tuple[np.ndarray, ...]:
    """Per pattern of the 8 ring neighbours already added (bit i = ring position i, ring
    order NW N NE E SE S SW W), the neighbours whose roots must be looked up: one per run of
    neighbours that are already one component. 8-connected foreground: ring neighbours next
    to each other are adjacent. 4-connected background: only N E S W count, and two of them
    are joined through the corner between them. Also, when the pixel joins, 4 x the change
    of the foreground's Euler number (Gray's bit-quads: one set pixel +1, three -1, a
    diagonal pair -2), so holes are counted without a pass of their own, and 2 x the change
    of its material (2 x 2 windows: four set pixels 1, three 1/2), the polygon area.
    For the background, per 2 x 2 window, the change for the pixel's component only (the
    window's background pixels joined to it inside the window): 4 x the change of its own
    Euler number as a 4-connected set (one pixel +1, three -1, a diagonal pair +2) and 2 x
    the change of its share of the plane (a window's background part: 1/2 for a lone
    pixel, each pixel of a diagonal pair included, the whole window otherwise)."""
    outer = np.zeros((256, 5), dtype=np.int64)
    holes = np.zeros((256, 5), dtype=np.int64)
    euler = np.zeros(256, dtype=np.int64)
    material = np.zeros(256, dtype=np.int64)
    hole_euler = np.zeros(256, dtype=np.int64)
    hole_area = np.zeros(256, dtype=np.int64)
    # the 2x2 windows holding the pixel (-1), cells as (top-left, top-right, bottom-left,
    # bottom-right) in ring positions
    windows = ((0, 1, 7, -1), (1, 2, -1, 3), (7, -1, 6, 5), (-1, 3, 5, 4))

    def quad(cells: tuple[bool, ...]) -> int:
        count = sum(cells)
        diagonal = count == 2 and cells[0] == cells[3]
        return {1: 1, 3: -1}.get(count, -2 if diagonal else 0)

    def area2(cells: tuple[bool, ...]) -> int:
        return {4: 2, 3: 1}.get(sum(cells), 0)

    def quad4(cells: tuple[bool, ...]) -> int:
        count = sum(cells)
        diagonal = count == 2 and cells[0] == cells[3]
        return {1: 1, 3: -1}.get(count, 2 if diagonal else 0)

    def share2(cells: tuple[bool, ...]) -> int:
        return min(sum(cells), 2)

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
            material[pattern] += area2(after) - area2(before)
            me = cells.index(-1)
            opposite = 3 - me
            sides = [k for k in range(4) if k not in (me, opposite)]
            joined = [k for k in sides if before[k]]
            if joined and before[opposite]:
                joined.append(opposite)
            part = tuple(k in joined for k in range(4))
            with_me = tuple(k in joined or k == me for k in range(4))
            hole_euler[pattern] += quad4(with_me) - quad4(part)
            hole_area[pattern] += share2(with_me) - share2(part)
    return outer, holes, euler, material, hole_euler, hole_area


(
    OUTER_RUNS, HOLE_RUNS, EULER_DELTA4, AREA_DELTA2, HOLE_EULER_DELTA4, HOLE_AREA_DELTA2
) = _ring_tables()
SHAPE_DELTA = (AREA_DELTA2 << 32) + EULER_DELTA4
HOLE_SHAPE_DELTA = (HOLE_AREA_DELTA2 << 32) + HOLE_EULER_DELTA4


@njit(cache=True, nogil=True, inline="always")
def _euler4(shape: int) -> int:
    """4 x Euler number from a `stats` SHAPE value (its low 32 bits, signed)."""
    return np.int64(np.int32(shape & 0xFFFFFFFF))


@njit(cache=True, nogil=True, inline="always")
def _area2(shape: int) -> int:
    """2 x area from a `stats` SHAPE value."""
    return (shape - _euler4(shape)) >> 32


@njit(cache=True, nogil=True)
def _padded_order(u8: np.ndarray, order: np.ndarray, n_levels: int = LEVELS) -> np.ndarray:
    """Pixels sorted by (uint8, or any integer below `n_levels`) value in O(n) into
    `order`, each as ``y << 16 | x`` (the kernels derive its padded index and keep its
    coordinates without tables); returns where each value's run starts (value v fills
    ``order[starts[v]:starts[v + 1]]``)."""
    h, w = u8.shape
    starts = np.zeros(n_levels + 1, dtype=np.int64)
    for y in range(h):
        for x in range(w):
            starts[U(u8[U(y), U(x)]) + U(1)] += 1
    for v in range(n_levels):
        starts[v + 1] += starts[v]
    fill = starts[:n_levels].copy()
    for y in range(h):
        for x in range(w):
            v = u8[U(y), U(x)]
            order[U(fill[v])] = (y << 16) | x
            fill[v] += 1
    return starts


@njit(cache=True, nogil=True, inline="always")
def _find(parent: np.ndarray, r: np.uint32) -> np.uint32:
    """Root of `r`, halving the path on the way."""
    while parent[r] != r:
        parent[r] = parent[U(parent[r])]
        r = U(parent[r])
    return r


@njit(cache=True, nogil=True, inline="always")
def _join(
    code: int,
    pw: int,
    runs: np.ndarray,
    offsets: np.ndarray,
    added: np.ndarray,
    parent: np.ndarray,
    stats: np.ndarray,
    track: bool,
) -> tuple[np.uint32, np.uint32, bool]:
    """Adds the pixel ``y << 16 | x`` to the union-find, at its padded index p: links it
    to the components of its neighbours already added (one lookup per run of `runs`),
    merging their `stats` rows: bounding box, and with `track` the additive columns and the
    first pixel. Returns the root, the 8-neighbour pattern and whether the pixel started a
    component of its own (whose row the caller fills)."""
    y = code >> 16
    x = code & 0xFFFF
    p = U((y + 1) * pw + x + 1)
    pattern = 0
    for o in range(8):
        pattern |= added[U(p + offsets[o])] << o
    pattern = U(pattern)
    added[p] = 1
    parent[p] = p
    rp = p
    joined = False
    for j in range(runs[pattern, 0]):
        r = _find(parent, U(p + offsets[runs[pattern, 1 + j]]))
        if not joined:
            parent[p] = r
            rp = r
            joined = True
        elif r != rp:
            parent[r] = rp
            stats[rp, X0] = min(stats[rp, X0], stats[r, X0])
            stats[rp, Y0] = min(stats[rp, Y0], stats[r, Y0])
            stats[rp, X1] = max(stats[rp, X1], stats[r, X1])
            stats[rp, Y1] = max(stats[rp, Y1], stats[r, Y1])
            if track:
                stats[rp, SHAPE] += stats[r, SHAPE]
                stats[rp, FIRST] = min(stats[rp, FIRST], stats[r, FIRST])
    if not joined:
        stats[p, X0], stats[p, Y0], stats[p, X1], stats[p, Y1] = x, y, x, y
        if track:
            stats[p, SHAPE] = 0
            stats[p, FIRST] = p
        return p, pattern, True
    if x < stats[rp, X0]:
        stats[rp, X0] = x
    elif x > stats[rp, X1]:
        stats[rp, X1] = x
    if y < stats[rp, Y0]:
        stats[rp, Y0] = y
    elif y > stats[rp, Y1]:
        stats[rp, Y1] = y
    if track and p < stats[rp, FIRST]:
        stats[rp, FIRST] = p
    return rp, pattern, False


@njit(cache=True, nogil=True, inline="always")
def _grid(shape: tuple[int, int]) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """The padded (h + 2) x (w + 2) grid of a pass: h, w, its row length, the byte map of
    pixels added (none yet) and the padded-index offsets of the 8 ring neighbours (ring
    order NW N NE E SE S SW W)."""
    h, w = shape
    pw = w + 2
    added = np.zeros((h + 2) * pw, dtype=np.uint8)
    offsets = np.array((-pw - 1, -pw, -pw + 1, 1, pw + 1, pw, pw - 1, -1))
    return h, w, pw, added, offsets


@njit(cache=True, nogil=True, inline="always")
def _add_pixels(
    order: np.ndarray,
    start: int,
    stop: int,
    pw: int,
    runs: np.ndarray,
    shape_delta: np.ndarray,
    offsets: np.ndarray,
    added: np.ndarray,
    parent: np.ndarray,
    stats: np.ndarray,
    track: bool,
    roots: np.ndarray,
    n_roots: int,
) -> tuple[int, int]:
    """Adds the pixels ``order[start:stop]`` (`_join` with `runs`), appending the roots of
    the components they start to `roots`, and with `track` adds each pixel's change of
    shape (`shape_delta` of its pattern) to its component's row. Returns the new number of
    roots and 4 x the change of the Euler number of all added pixels together."""
    euler4 = 0
    for k in range(start, stop):
        r, pattern, new = _join(order[k], pw, runs, offsets, added, parent, stats, track)
        if new:
            roots[n_roots] = r
            n_roots += 1
        change = shape_delta[pattern]
        if track:
            stats[r, SHAPE] += change
        euler4 += _euler4(change)
    return n_roots, euler4


@njit(cache=True, nogil=True)
def _outer_box_iou(stats: np.ndarray, r: int, h: int, w: int, gt: np.ndarray) -> float:
    """IoU of a component's contour box: (x, y, x + w, y + h) of its bounding rectangle,
    the far corner clipped to the map."""
    return _box_iou(
        stats[r, X0], stats[r, Y0], min(stats[r, X1] + 1, w - 1), min(stats[r, Y1] + 1, h - 1),
        gt,
    )


@njit(cache=True, nogil=True)
def _outer_pass(
    shape: tuple[int, int],
    gt: np.ndarray,
    needed: np.ndarray,
    all_contours: bool,
    largest: bool,
    *work: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Outer borders of ``u8 > t`` at each needed level t: 8-connected foreground
    components, pixels added from high to low value.

    Indices are into the padded (h + 2) x (w + 2) grid; `added` marks the pixels added so
    far (a byte map stays in cache), `parent` holds their union-find links. A root's
    `stats` row holds its bounding box and, with `largest`, 2 x its material, 4 x its Euler
    number and its first pixel in raster order (its smallest padded index). `work` is the
    pixels in value order and where each value's run starts (`_padded_order`), then the
    work arrays `parent`, `stats` and `roots`, which come from the caller (fresh pages are
    slow to touch). Levels below the lowest needed one are never visited.
    Returns, per level: with all_contours, the best IoU over the outer borders' boxes (-1
    where none); the number of components and the foreground's Euler number; with
    `largest`, the IoU of the largest contour's box where the bounds decide it, NaN where
    they do not, -1 where there is no contour; where they do not, the IoU of the component
    of largest material when that would be the answer if its material exceeded every other
    component's by more than the holes' total area, and by how much it does (2 x area).
    """
    order, starts, parent, stats, roots = work
    n_levels = starts.size - 1
    h, w, pw, added, offsets = _grid(shape)
    n_roots = 0
    euler4 = 0
    best = np.full(n_levels, -1.0)
    counts = np.zeros(n_levels, dtype=np.int64)
    euler = np.zeros(n_levels, dtype=np.int64)
    largest_iou = np.full(n_levels, -1.0)
    candidate = np.full(n_levels, np.nan)
    margin = np.zeros(n_levels, dtype=np.int64)
    wanted = np.nonzero(needed)[0]
    for step in range(n_levels - wanted[0]):
        t = n_levels - 1 - step
        # foreground u8 > t gains value t + 1
        if t + 1 < n_levels:
            n_roots, change = _add_pixels(
                order, starts[t + 1], starts[t + 2], pw, OUTER_RUNS, SHAPE_DELTA, offsets,
                added, parent, stats, largest, roots, n_roots,
            )
            euler4 += change
        if not needed[t]:
            continue
        kept = 0
        top = -1.0
        # largest contour: the component of largest lower bound (ties: the first OpenCV
        # lists, the latest first pixel) and the two largest upper bounds
        low_best, low_root, low_ties = -1, -1, 0
        up_first, up_first_root, up_second = -1, -1, -1
        holed_first, holed_first_root, holed_second = -1, -1, -1
        for j in range(n_roots):
            r = U(roots[j])
            if parent[r] != r:
                continue
            roots[kept] = r
            kept += 1
            if all_contours:
                top = max(top, _outer_box_iou(stats, r, h, w, gt))
            if largest:
                low = _area2(stats[r, SHAPE])
                if _euler4(stats[r, SHAPE]) == 4:
                    up = low
                else:
                    up = 2 * (stats[r, X1] - stats[r, X0]) * (stats[r, Y1] - stats[r, Y0])
                    if low > holed_first:
                        holed_second = holed_first
                        holed_first, holed_first_root = low, r
                    elif low > holed_second:
                        holed_second = low
                if low > low_best:
                    low_best, low_root, low_ties = low, r, 1
                elif low == low_best:
                    low_ties += 1
                    if stats[r, FIRST] > stats[low_root, FIRST]:
                        low_root = r
                if up > up_first:
                    up_second = up_first
                    up_first, up_first_root = up, r
                elif up > up_second:
                    up_second = up
        n_roots = kept
        best[t] = top
        counts[t] = kept
        euler[t] = euler4 // 4
        if not largest or kept == 0:
            continue
        eligible = False
        if low_ties == 1:
            others = up_second if up_first_root == low_root else up_first
            # a hole border's area is at most its component's, equal only without material
            eligible = low_best > 0 or _euler4(stats[low_root, SHAPE]) == 4
            decided = others < low_best and eligible
        else:
            # tied exact areas: OpenCV's order is known on levels without holes
            decided = euler4 == 4 * kept
        if decided:
            largest_iou[t] = _outer_box_iou(stats, low_root, h, w, gt)
            continue
        largest_iou[t] = np.nan
        if eligible:
            # decided after all if the areas of all holes together stay below the margin
            # between this component's material and that of the next one with holes
            candidate[t] = _outer_box_iou(stats, low_root, h, w, gt)
            rival = holed_second if holed_first_root == low_root else holed_first
            margin[t] = low_best - max(rival, 0)
    return best, counts, euler, largest_iou, candidate, margin


@njit(cache=True, nogil=True)
def _hole_pass(
    shape: tuple[int, int],
    gt: np.ndarray,
    needed: np.ndarray,
    record: np.ndarray,
    *work: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hole borders of ``u8 > t`` at each needed level t: 4-connected background
    components, pixels added from low to high value; the one-pixel frame around the image
    is one component from the start, as OpenCV pads the image with zeros. Same work arrays
    as `_outer_pass`. Levels past the last needed one are never visited.
    Returns the best IoU over the hole borders' boxes per level (-1 where none), and for
    the levels in `record`: 2 x the total area of the hole borders (-1 where a hole holds
    a component, or where the level is not recorded), and every hole's border area and the
    pixel just above its first one, which belongs to the component the hole is in: per
    level, where its holes start in the two arrays (levels not recorded hold none), 2 x
    each hole border's area, and those pixels (padded indices); -1 in place of the area
    when a hole holds a component.
    With any level to record, a root's `stats` row holds, besides its bounding box, 2 x
    its share of the plane, which is its border's area when nothing lies inside it, 4 x
    its Euler number as a 4-connected set (1 when nothing lies inside), and its first pixel.
    """
    order, starts, parent, stats, roots = work
    n_levels = starts.size - 1
    h, w, pw, added, offsets = _grid(shape)
    frame = 0
    track = bool(record.any())
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
    n_roots = 0
    best = np.full(n_levels, -1.0)
    hole_total = np.full(n_levels, -1, dtype=np.int64)
    hole_starts = np.zeros(n_levels + 1, dtype=np.int64)
    hole_area = np.empty(64, dtype=np.int64)
    hole_above = np.empty(64, dtype=np.int64)
    n_holes = 0
    wanted = np.nonzero(needed | record)[0]
    for t in range(wanted[-1] + 1):
        # background u8 <= t gains value t
        n_roots = _add_pixels(
            order, starts[t], starts[t + 1], pw, HOLE_RUNS, HOLE_SHAPE_DELTA, offsets, added,
            parent, stats, track, roots, n_roots,
        )[0]
        hole_starts[t + 1] = n_holes
        if not (needed[t] or record[t]):
            continue
        frame_root = _find(parent, U(frame))
        kept = 0
        top = -1.0
        total = 0
        for j in range(n_roots):
            r = U(roots[j])
            if parent[r] != r or r == frame_root:
                continue
            roots[kept] = r
            kept += 1
            # a hole border runs through the foreground around the hole: one pixel wider
            iou = _box_iou(
                stats[r, X0] - 1,
                stats[r, Y0] - 1,
                min(stats[r, X1] + 2, w - 1),
                min(stats[r, Y1] + 2, h - 1),
                gt,
            )
            top = max(top, iou)
            if record[t]:
                if n_holes == hole_area.size:
                    hole_area = np.concatenate((hole_area, np.empty_like(hole_area)))
                    hole_above = np.concatenate((hole_above, np.empty_like(hole_above)))
                hole_shape = stats[r, SHAPE]
                area = _area2(hole_shape) if _euler4(hole_shape) == 4 else -1
                hole_area[n_holes] = area
                hole_above[n_holes] = stats[r, FIRST] - pw
                n_holes += 1
                total = total + area if total >= 0 and area >= 0 else -1
        if record[t]:
            hole_total[t] = total
        hole_starts[t + 1] = n_holes
        n_roots = kept
        best[t] = top
    hole_starts[wanted[-1] + 2 :] = n_holes
    return best, hole_total, hole_starts, hole_area[:n_holes], hole_above[:n_holes]


@njit(cache=True, nogil=True)
def _outer_exact(
    shape: tuple[int, int],
    gt: np.ndarray,
    resolve: np.ndarray,
    recorded: tuple[np.ndarray, np.ndarray, np.ndarray],
    largest_iou: np.ndarray,
    *work: np.ndarray,
) -> None:
    """The outer pass again, down to the lowest level to `resolve`, where each component's
    outer border area is now exact: its material plus the areas of its holes (`recorded`
    by `_hole_pass`: where each level's holes start, their areas and the pixels above
    them), each found in the component of the pixel above the hole's first pixel.
    Sets `largest_iou` at the levels this decides; leaves NaN where a hole holds a
    component, where the largest areas tie (OpenCV's order among them is not known on a
    level with holes) or where the largest component has holes and no material (one of its
    holes may tie with it)."""
    order, starts, parent, stats, roots = work
    n_levels = starts.size - 1
    hole_starts, hole_area, hole_above = recorded
    h, w, pw, added, offsets = _grid(shape)
    n_roots = 0
    wanted = np.nonzero(resolve)[0]
    for step in range(n_levels - wanted[0]):
        t = n_levels - 1 - step
        if t + 1 < n_levels:
            n_roots = _add_pixels(
                order, starts[t + 1], starts[t + 2], pw, OUTER_RUNS, SHAPE_DELTA, offsets,
                added, parent, stats, True, roots, n_roots,
            )[0]
        if not resolve[t]:
            continue
        kept = 0
        for j in range(n_roots):
            r = U(roots[j])
            if parent[r] == r:
                roots[kept] = r
                kept += 1
                stats[r, HOLES2] = 0
        n_roots = kept
        nested = False
        for i in range(hole_starts[t], hole_starts[t + 1]):
            if hole_area[i] < 0:
                nested = True
                break
            stats[_find(parent, U(hole_above[i])), HOLES2] += hole_area[i]
        if nested:
            continue
        area_best, area_root, ties = -1, -1, 0
        for j in range(n_roots):
            r = U(roots[j])
            area = _area2(stats[r, SHAPE]) + stats[r, HOLES2]
            if area > area_best:
                area_best, area_root, ties = area, r, 1
            elif area == area_best:
                ties += 1
        area_shape = stats[area_root, SHAPE]
        if ties == 1 and (_area2(area_shape) > 0 or _euler4(area_shape) == 4):
            largest_iou[t] = _outer_box_iou(stats, area_root, h, w, gt)


_scratch = threading.local()


def _workspace(h: int, w: int) -> tuple[np.ndarray, ...]:
    """Per-thread work arrays for h x w maps: order, parent, stats, roots."""
    if max(h, w) >= 1 << 15:
        raise ValueError(f"score maps up to 32767 pixels a side, got {h} x {w}")
    shape = (h + 2, w + 2)
    cached = getattr(_scratch, "arrays", None)
    if cached is None or cached[0] != shape:
        n = shape[0] * shape[1]
        arrays = (
            np.empty(n, dtype=np.int32),
            np.empty(n, dtype=np.uint32),
            np.empty((n, STATS), dtype=np.int64),
            np.empty(n, dtype=np.uint32),
        )
        _scratch.arrays = cached = (shape, arrays)
    return cached[1]


def empty_box_iou(gt_boxes: np.ndarray) -> float:
    """IoU the reference gives a threshold with no contour: its box is [0, 0, 0, 0]."""
    return float(_box_iou(0, 0, 0, 0, gt_boxes))


def _contour_levels(
    shape: tuple[int, int],
    gt: np.ndarray,
    levels: np.ndarray,
    all_contours: bool,
    largest: bool,
    work: tuple[np.ndarray, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """The passes, each outside the GIL, so that threads scale (called from Python: one
    compiled function holding them all runs about a tenth slower). `work` is the pixels
    in value order, where each value's run starts, then the work arrays. Per entry of
    `levels`: best IoU over all contours (all_contours), and IoU of the largest contour or
    NaN where OpenCV must decide (largest)."""
    starts = work[1]
    needed = np.zeros(starts.size - 1, dtype=np.bool_)
    needed[levels] = True
    best, components, euler, largest_iou, candidate, margin = _outer_pass(
        shape, gt, needed, all_contours, largest, *work
    )
    with_holes = needed & (components != euler) & all_contours
    resolve = np.isnan(largest_iou)
    if with_holes.any() or resolve.any():
        holes, hole_total, hole_starts, hole_area, hole_above = _hole_pass(
            shape, gt, with_holes, resolve, *work
        )
        best = np.maximum(best, holes)
        settled = resolve & (hole_total >= 0) & (hole_total < margin)
        largest_iou[settled] = candidate[settled]
        resolve &= ~settled
        if resolve.any():
            recorded = (hole_starts, hole_area, hole_above)
            _outer_exact(shape, gt, resolve, recorded, largest_iou, *work)
    empty = components[levels] == 0
    nothing = _box_iou(0, 0, 0, 0, gt)
    return (
        np.where(empty, nothing, best[levels]),
        np.where(empty, nothing, largest_iou[levels]),
    )


def _largest_contour_rect(foreground: np.ndarray) -> tuple[int, int, int, int]:
    """OpenCV's answer for one (non-empty) foreground: the bounding rectangle (x, y, w, h) of
    the first contour of largest area, as `max(contours, key=cv2.contourArea)` picks it.
    Only the foreground's bounding box is traced, framed by one zero pixel, which is all
    OpenCV sees of the rest of the image (it pads with zeros too); `offset` puts the points
    back in place, and the raster order, so the contour order, is that of the whole image."""
    ys = np.flatnonzero(foreground.any(axis=1))
    xs = np.flatnonzero(foreground.any(axis=0))
    y0, y1, x0, x1 = ys[0], ys[-1], xs[0], xs[-1]
    mask = np.zeros((y1 - y0 + 3, x1 - x0 + 3), dtype=np.uint8)
    mask[1:-1, 1:-1] = foreground[y0 : y1 + 1, x0 : x1 + 1] * np.uint8(255)
    contours = cv2.findContours(
        mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE, offset=(int(x0) - 1, int(y0) - 1)
    )[0]
    if len(contours) == 1:
        return _bounding_rect(contours[0])
    # cv2.contourArea of every contour at once: the shoelace sum over integer points is
    # exact in float64, as is OpenCV's, and argmax keeps the first maximal one as max() does
    lengths = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    points = np.concatenate(contours).reshape(-1, 2).astype(np.float64)
    first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    following = np.arange(1, len(points) + 1)
    following[np.cumsum(lengths) - 1] = first
    cross = points[:, 0] * points[following, 1] - points[following, 0] * points[:, 1]
    areas = np.abs(np.add.reduceat(cross, first)) * 0.5
    return _bounding_rect(contours[int(np.argmax(areas))])


def _bounding_rect(contour: np.ndarray) -> tuple[int, int, int, int]:
    """`cv2.boundingRect` (x, y, w, h), which its stubs declare a Sequence[int]."""
    x, y, w, h = cv2.boundingRect(contour)
    return x, y, w, h


def contour_curves(
    u8: np.ndarray,
    gt_boxes: np.ndarray,
    levels: np.ndarray,
    all_contours: bool = True,
    largest: bool = True,
    n_levels: int = LEVELS,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Best IoU per entry of `levels` (foreground ``u8 > t``) over all contour boxes
    (MaxBoxAccV2) and of the largest contour's box (MaxBoxAcc), from one pass over the
    pixels; None for the one not asked for. `u8` may be any integer map with values below
    `n_levels`: every normalisation of one raw map is then scored from one pass over its
    rank classes (`wsol.scoring.joint`)."""
    gt = np.ascontiguousarray(gt_boxes, dtype=np.int64)
    u8 = np.ascontiguousarray(u8)
    levels = np.asarray(levels, dtype=np.int64)

    def foreground(level: int) -> np.ndarray:
        return u8 > level

    if largest and not all_contours and np.unique(levels).size <= FEW_LEVELS:
        # a pass costs several OpenCV calls: for one fixed threshold, ask OpenCV
        which = np.ones(levels.size, dtype=bool)
        return None, _largest_by_opencv(foreground, u8.shape, gt, levels, which)
    order, parent, stats, roots = _workspace(*u8.shape)
    work = (order, _padded_order(u8, order, n_levels), parent, stats, roots)
    return _finished(foreground, u8.shape, gt, levels, all_contours, largest, work)


def _finished(
    foreground: Callable[[int], np.ndarray],
    shape: tuple[int, int],
    gt: np.ndarray,
    levels: np.ndarray,
    all_contours: bool,
    largest: bool,
    work: tuple[np.ndarray, ...],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The passes, then OpenCV at the levels they leave open."""
    out_all, out_largest = _contour_levels(shape, gt, levels, all_contours, largest, work)
    if not largest:
        return out_all, None
    left = np.isnan(out_largest)
    if left.any():
        out_largest[left] = _largest_by_opencv(foreground, shape, gt, levels, left)[left]
    return (out_all if all_contours else None), out_largest


def _largest_by_opencv(
    foreground: Callable[[int], np.ndarray],
    shape: tuple[int, int],
    gt: np.ndarray,
    levels: np.ndarray,
    which: np.ndarray,
) -> np.ndarray:
    """IoU of the largest contour's box at the levels marked in `which` (NaN elsewhere),
    from OpenCV on `foreground(level)`, once per distinct level; the box that of a level
    without foreground."""
    h, w = shape
    out = np.full(levels.size, np.nan)
    decided: dict[int, float] = {}
    for i in np.flatnonzero(which):
        t = int(levels[i])
        if t not in decided:
            mask = foreground(t)
            if not mask.any():
                decided[t] = float(_box_iou(0, 0, 0, 0, gt))
            else:
                x, y, bw, bh = _largest_contour_rect(mask)
                decided[t] = float(_box_iou(x, y, min(x + bw, w - 1), min(y + bh, h - 1), gt))
        out[i] = decided[t]
    return out


def all_contours_best_iou(u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Best IoU over all contour boxes of ``u8 > t`` for each t in `levels` (MaxBoxAccV2)."""
    best = contour_curves(u8, gt_boxes, levels, largest=False)[0]
    assert best is not None  # all_contours: always computed
    return best


def largest_contour_best_iou(
    u8: np.ndarray, gt_boxes: np.ndarray, levels: np.ndarray
) -> np.ndarray:
    """Best IoU of the largest contour's box for each t in `levels` (MaxBoxAcc)."""
    best = contour_curves(u8, gt_boxes, levels, all_contours=False)[1]
    assert best is not None  # largest: always computed
    return best
