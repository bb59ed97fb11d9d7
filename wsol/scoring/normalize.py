"""CAM normalisations of "Normalization Matters in WSOL" (Kim et al., ICCV 2021), batched.

All take raw maps (..., H, W) as a torch tensor on any device and return maps in [0, 1].
A map that is NaN anywhere or constant becomes all zeros, as the reference does for
min-max; any other zero denominator gives zeros too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

NORMALISATIONS = ("minmax", "max", "pas", "ivr")
NEEDS_PERCENTILE = ("pas", "ivr")


def percentile(maps: torch.Tensor, q: float) -> torch.Tensor:
    """Per-map percentile with numpy's default 'linear' method, shape (..., 1, 1)."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    flat = maps.flatten(-2).sort(dim=-1).values
    n = flat.shape[-1]
    position = q / 100.0 * (n - 1)
    low = int(position // 1)
    high = min(low + 1, n - 1)
    t = position - low
    a, b = flat[..., low], flat[..., high]
    diff = b - a
    value = a + diff * t if t < 0.5 else b - diff * (1 - t)
    return value[..., None, None]


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    ok = denominator > 0
    result = numerator / torch.where(ok, denominator, torch.ones_like(denominator))
    return torch.where(ok, result, torch.zeros_like(result))


def _amin(maps: torch.Tensor) -> torch.Tensor:
    return maps.amin(dim=(-2, -1), keepdim=True)


def _amax(maps: torch.Tensor) -> torch.Tensor:
    return maps.amax(dim=(-2, -1), keepdim=True)


def minmax(maps: torch.Tensor, p: float | None = None) -> torch.Tensor:
    low = _amin(maps)
    return _safe_divide(maps - low, _amax(maps) - low)


def max_norm(maps: torch.Tensor, p: float | None = None) -> torch.Tensor:
    return _safe_divide(maps.clamp(min=0), _amax(maps))


def pas(maps: torch.Tensor, p: float | None = 90.0) -> torch.Tensor:
    """Percentile as a standard: (F - min) / Pct_p(F - min), clipped to [0, 1]."""
    shifted = maps - _amin(maps)
    return _safe_divide(shifted, percentile(shifted, 90.0 if p is None else p)).clamp(0, 1)


def ivr(maps: torch.Tensor, p: float | None = None) -> torch.Tensor:
    """Inverted-variance rescaling: ReLU(F - Pct_p(F)) / max(F - Pct_p(F))."""
    if p is None:
        raise ValueError("IVR needs a percentile; select it on train-fullsup")
    shifted = maps - percentile(maps, p)
    return _safe_divide(shifted.clamp(min=0), _amax(shifted))


_FUNCTIONS: dict[str, Callable[[torch.Tensor, float | None], torch.Tensor]] = {
    "minmax": minmax,
    "max": max_norm,
    "pas": pas,
    "ivr": ivr,
}


def normalize(maps: torch.Tensor, method: str, p: float | None = None) -> torch.Tensor:
    """Apply a named normalisation; NaN and constant maps come back as zeros (PROTOCOL.md)."""
    if method not in _FUNCTIONS:
        raise ValueError(
            f"unknown normalisation {method!r}; choose from {', '.join(NORMALISATIONS)}"
        )
    nan = torch.isnan(maps).flatten(-2).any(dim=-1)[..., None, None]
    clean = torch.where(nan, torch.zeros_like(maps), maps)
    degenerate = nan | (_amax(clean) == _amin(clean))
    return torch.where(degenerate, torch.zeros_like(maps), _FUNCTIONS[method](clean, p))


def resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of (B, H, W) maps to (height, width), before normalisation."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bicubic", align_corners=False)[:, 0]
