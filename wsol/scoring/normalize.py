"""CAM normalisations of "Normalization Matters in WSOL" (Kim et al., ICCV 2021), batched.

All take raw maps (..., H, W) as a torch tensor on any device and return maps in [0, 1].
A map that is NaN anywhere or constant becomes all zeros, as the reference does for
min-max; any other zero denominator gives zeros too. `Normaliser` normalises one batch many
ways (the train-fullsup search over candidates) with what they share computed once: the
NaN and constant-map masks, each map's min and max, and one sort for every percentile.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wsol.common.protocol import NORMALISATIONS


def _sorted_values(maps: torch.Tensor) -> torch.Tensor:
    """Each map's values in ascending order, (..., H * W): numpy's sort for float32 / float64
    on the CPU (about 3x torch's there), torch's otherwise. Sorted values are the same
    whichever sort orders equal ones."""
    flat = maps.detach().flatten(-2)
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(flat.numpy(), axis=-1))
    return flat.sort(dim=-1).values


def _percentile_of_sorted(flat: torch.Tensor, q: float, shift: torch.Tensor | None = None
                          ) -> torch.Tensor:
    """Per-map percentile, shape (..., 1, 1), with numpy's default 'linear' method, from
    sorted values; `shift` (..., 1, 1) gives the percentile of the maps minus it (the sorted
    values minus it are the sorted shifted maps, as float subtraction keeps the order)."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    n = flat.shape[-1]
    position = q / 100.0 * (n - 1)
    low = int(position // 1)
    high = min(low + 1, n - 1)
    t = position - low
    a, b = flat[..., low], flat[..., high]
    if shift is not None:
        a, b = a - shift[..., 0, 0], b - shift[..., 0, 0]
    diff = b - a
    value = a + diff * t if t < 0.5 else b - diff * (1 - t)
    return value[..., None, None]


def percentile(maps: torch.Tensor, q: float) -> torch.Tensor:
    """Per-map percentile with numpy's default 'linear' method, shape (..., 1, 1)."""
    return _percentile_of_sorted(_sorted_values(maps), q)


def _divide_or_zero(numerator: torch.Tensor, denominator: torch.Tensor,
                    zero: torch.Tensor) -> torch.Tensor:
    """numerator / denominator per map, all zeros where the denominator is not positive or
    `zero` holds; in place (`numerator` is a fresh tensor): a pass less and no allocation per
    step, which is most of a normalisation's time on the CPU."""
    ok = denominator > 0
    numerator.div_(torch.where(ok, denominator, torch.ones_like(denominator)))
    return numerator.masked_fill_(zero | ~ok, 0)


def _amin(maps: torch.Tensor) -> torch.Tensor:
    return maps.amin(dim=(-2, -1), keepdim=True)


def _amax(maps: torch.Tensor) -> torch.Tensor:
    return maps.amax(dim=(-2, -1), keepdim=True)


class Normaliser:
    """One batch of raw maps, to be normalised one or many ways (PROTOCOL.md's definitions):

    - minmax: (F - min) / (max - min);
    - max: ReLU(F) / max;
    - pas (percentile as a standard): (F - min) / Pct_p(F - min), clipped to [0, 1];
    - ivr (inverted-variance rescaling): ReLU(F - Pct_p(F)) / max(F - Pct_p(F)).
    """

    def __init__(self, maps: torch.Tensor):
        nan = torch.isnan(maps).flatten(-2).any(dim=-1)[..., None, None]
        self.maps = torch.where(nan, torch.zeros_like(maps), maps) if nan.any() else maps
        self.low, self.high = _amin(self.maps), _amax(self.maps)
        self.degenerate = nan | (self.high == self.low)
        self._sorted: torch.Tensor | None = None

    @classmethod
    def presorted(cls, maps: torch.Tensor, values: torch.Tensor) -> Normaliser:
        """For a caller that has sorted each map's values anyway, (..., H * W) ascending with
        NaN last (as numpy and torch sort): the NaN test, min and max are read off the ends
        and the percentiles need no sort. A min or max of zero may differ in sign from
        `amin` / `amax` when 0.0 and -0.0 both occur, which changes no normalised value but
        the sign of a zero."""
        if values.shape != maps.flatten(-2).shape:
            raise ValueError(f"sorted values {tuple(values.shape)} do not fit the maps "
                             f"{tuple(maps.shape)}")
        self = cls.__new__(cls)
        nan = torch.isnan(values[..., -1:])
        if nan.any():
            maps = torch.where(nan[..., None], torch.zeros_like(maps), maps)
            values = torch.where(nan, torch.zeros_like(values), values)
        self.maps, self._sorted = maps, values
        self.low, self.high = values[..., :1, None], values[..., -1:, None]
        self.degenerate = nan[..., None] | (self.high == self.low)
        return self

    def affine(self, method: str, p: float | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, bool, torch.Tensor]:
        """What `__call__` computes, as per-map constants: each normalised value is
        ``min(max(F - shift, 0) / divisor, 1 if clip else inf)``, and all zeros where `zero`
        holds; shapes (..., 1, 1). The same float32 operations as `__call__` on every pixel
        (ReLU and the clip are no-ops where `__call__` has none), so both give the same
        bits; every normalisation is thus non-decreasing in F (IEEE rounding is)."""
        if method == "minmax":
            shift, divisor, clip = self.low, self.high - self.low, False
        elif method == "max":
            shift, divisor, clip = torch.zeros_like(self.low), self.high, False
        elif method == "pas":
            shift, clip = self.low, True
            divisor = self._percentile(90.0 if p is None else p, shift=self.low)
        elif method == "ivr":
            if p is None:
                raise ValueError("IVR needs a percentile; select it on train-fullsup")
            # the max of F - pct over the map is max(F) - pct: rounding keeps the order
            shift = self._percentile(p)
            divisor, clip = self.high - shift, False
        else:
            raise ValueError(
                f"unknown normalisation {method!r}; choose from {', '.join(NORMALISATIONS)}"
            )
        return shift, divisor, clip, self.degenerate | ~(divisor > 0)

    @property
    def sorted_values(self) -> torch.Tensor:
        """Each map's values (NaN maps as zeros) in ascending order, (..., H * W)."""
        if self._sorted is None:  # sorted once, for every percentile asked of this batch
            self._sorted = _sorted_values(self.maps)
        return self._sorted

    def _percentile(self, q: float, shift: torch.Tensor | None = None) -> torch.Tensor:
        return _percentile_of_sorted(self.sorted_values, q, shift)

    def __call__(self, method: str, p: float | None = None) -> torch.Tensor:
        """The maps normalised by `method` (with percentile `p` for pas and ivr)."""
        maps = self.maps
        if method == "minmax":
            return _divide_or_zero(maps - self.low, self.high - self.low, self.degenerate)
        if method == "max":
            return _divide_or_zero(maps.clamp(min=0), self.high, self.degenerate)
        if method == "pas":
            pct = self._percentile(90.0 if p is None else p, shift=self.low)
            return _divide_or_zero(maps - self.low, pct, self.degenerate).clamp_(0, 1)
        if method == "ivr":
            if p is None:
                raise ValueError("IVR needs a percentile; select it on train-fullsup")
            shifted = maps - self._percentile(p)
            top = _amax(shifted)
            return _divide_or_zero(shifted.clamp_(min=0), top, self.degenerate)
        raise ValueError(
            f"unknown normalisation {method!r}; choose from {', '.join(NORMALISATIONS)}"
        )


def normalize(maps: torch.Tensor, method: str, p: float | None = None) -> torch.Tensor:
    """Apply a named normalisation; NaN and constant maps come back as zeros (PROTOCOL.md)."""
    return Normaliser(maps)(method, p)


def resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of (B, H, W) maps to (height, width), before normalisation."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bicubic", align_corners=False)[:, 0]
