"""The threshold grid and score-map checks shared by every metric."""

from __future__ import annotations

import numpy as np

IOU_THRESHOLDS = (30, 50, 70)


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
