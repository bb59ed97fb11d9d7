"""The threshold grid and score-map checks shared by every metric."""

from __future__ import annotations

import numpy as np
from numba import njit


def threshold_grid(interval: float) -> np.ndarray:
    """``np.arange(0, 1, interval)`` exactly as the reference builds it (float64 values)."""
    if not 0.0 < interval < 1.0:
        raise ValueError(f"curve interval must be in (0, 1), got {interval}")
    return np.arange(0, 1, interval)


def check_scoremap(scoremap: np.ndarray, name: str = "score map") -> None:
    """The reference's validity test: a 2-D float map without NaN, within [0, 1]."""
    if not isinstance(scoremap, np.ndarray) or scoremap.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D numpy array, got {getattr(scoremap, 'shape', None)}"
        )
    if not np.issubdtype(scoremap.dtype, np.floating):
        raise ValueError(f"{name}: expected floating-point values, got dtype {scoremap.dtype}")
    if np.isnan(scoremap).any():
        raise ValueError(f"{name}: contains NaN")
    if scoremap.size and (scoremap.min() < 0 or scoremap.max() > 1):
        raise ValueError(
            f"{name}: values must lie in [0, 1] (got {scoremap.min()}..{scoremap.max()}); "
            "normalise the map first"
        )


def quantize(scoremap: np.ndarray) -> np.ndarray:
    """uint8 map by truncation, computed in the map's own dtype as the reference does."""
    return (scoremap * 255).astype(np.uint8)


def threshold_levels(u8: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """uint8 cut-off of each threshold: ``int(tau * max(u8))``; foreground is ``u8 > level``."""
    return np.trunc(thresholds * u8.max()).astype(np.int64)


@njit(cache=True, nogil=True)
def _quantize_checked(
    scoremap: np.ndarray, scale: float, thresholds: np.ndarray, u8: np.ndarray,
    levels: np.ndarray,
) -> int:
    """`check_scoremap`, `quantize` and `threshold_levels` in one pass over a 2-D float32 or
    float64 map (`scale` is 255 in the map's dtype, so the product rounds as numpy's does).
    Returns 0, or 1 on NaN, 2 on a value outside [0, 1] (the caller raises)."""
    h, w = scoremap.shape
    top = 0
    status = 0
    for y in range(h):
        for x in range(w):
            v = scoremap[y, x]
            if v != v:
                return 1
            if v < 0 or v > 1:
                status = 2
                continue
            q = np.uint8(v * scale)
            u8[y, x] = q
            top = max(top, q)
    if status:
        return status
    for i in range(thresholds.size):
        levels[i] = np.int64(thresholds[i] * np.float64(top))
    return 0


def checked_levels(
    scoremap: np.ndarray, thresholds: np.ndarray, name: str = "score map"
) -> tuple[np.ndarray, np.ndarray]:
    """`check_scoremap`, then the uint8 map and each threshold's cut-off level; one pass for
    the usual 2-D float32 / float64 maps, the three functions otherwise."""
    if (
        isinstance(scoremap, np.ndarray)
        and scoremap.ndim == 2
        and scoremap.size
        and scoremap.dtype in (np.float32, np.float64)
        and scoremap.dtype.isnative
    ):
        u8 = np.empty(scoremap.shape, dtype=np.uint8)
        levels = np.empty(thresholds.size, dtype=np.int64)
        scale = scoremap.dtype.type(255)
        if _quantize_checked(scoremap, scale, thresholds, u8, levels) == 0:
            return u8, levels
    check_scoremap(scoremap, name)  # raises for what the pass refused
    u8 = quantize(scoremap)
    return u8, threshold_levels(u8, thresholds)
