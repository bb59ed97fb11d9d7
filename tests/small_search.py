"""The smallest real search the tests run: one-epoch CAM trials of the tiny backbone on the tiny
synthetic set, 32-pixel crops, one IVR percentile. Each test changes what it is about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SMALL_TRIAL = {"resize": 36, "crop": 32, "eval_size": 32, "batch_size": 8, "epochs": 1,
               "ivr_percentiles": [30.0]}


def small_experiment(name: str, data_root: Path, work: Path, *, trial: dict[str, Any] | None = None,
                     **changes: Any) -> dict[str, Any]:
    """An experiment file's values: Ray state under `work`, data already there (no preset)."""
    return {"name": name, "data_root": str(data_root), "synthetic_preset": None,
            "methods": ["cam"], "backbones": ["tiny"], "trials_per_pair": 1,
            "max_concurrent": 1, "scheduler": {"type": "fifo"}, "search_spaces": str(SPACES),
            "storage_path": str(work / "ray"), "trial": {**SMALL_TRIAL, **(trial or {})},
            **changes}
