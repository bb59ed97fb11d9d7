"""Helpers shared by the benchmarks: realistic CAM-like maps and boxes, timing and JSON
output."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
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


def random_boxes(count: int, seed: int) -> list[np.ndarray]:
    """One random box per 224 x 224 map, 20 to 93 pixels a side."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        x0, y0 = rng.integers(0, 150, 2)
        boxes.append(np.array([[x0, y0, x0 + rng.integers(20, 74), y0 + rng.integers(20, 74)]]))
    return boxes


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all its threads) of one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """Shortest wall-clock and shortest CPU time of the repetitions."""
    return min(r[0] for r in runs), min(r[1] for r in runs)


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


def write_result(path: str | None, name: str, payload: dict) -> None:
    payload = {"benchmark": name, "machine": platform.machine(), "cpus": torch.get_num_threads(),
               **payload}
    text = json.dumps(payload, indent=2, sort_keys=True)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
