"""Helpers shared by the benchmarks: realistic CAM-like maps and JSON output."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch


def cam_like_maps(count: int, size: int = 224, knots: int = 14, seed: int = 0) -> np.ndarray:
    """Bicubic upsampling of random 14x14 maps, min-max normalised: the shape of real CAMs."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((count, 1, knots, knots)).astype(np.float32))
    maps = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return ((maps - low) / (high - low)).numpy()


def write_result(path: str | None, name: str, payload: dict) -> None:
    payload = {"benchmark": name, "machine": platform.machine(), "cpus": torch.get_num_threads(),
               **payload}
    text = json.dumps(payload, indent=2, sort_keys=True)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
