"""The final evaluation of a selected checkpoint: the only code that opens the test split.

Every choice (epoch, normalisation, percentile, threshold) comes from the checkpoint, where
the trial runner stored what train-fullsup selected; nothing is chosen here. The same maps are
also scored with min-max alone (wsol.lifecycle.minmax), the normalisation the papers report.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

import wsol.methods  # noqa: F401  (registers the methods)
from wsol.common import protocol
from wsol.data.datasets import EvalDataset
from wsol.data.metadata import load_split
from wsol.data.transforms import eval_transform
from wsol.lifecycle.minmax import MinMaxReading
from wsol.methods.base import build_method
from wsol.scoring.selection import Normalisation
from wsol.trial.artifacts import plot_curves, save_overlays, write_curves
from wsol.trial.config import config_from_dict
from wsol.trial.evaluation import RawBatch, SplitScore, Targets, infer, score_split
from wsol.trial.runner import load_weights_only, resolve_device


def load_checkpoint(path: str | Path, source: str | None = None) -> dict[str, Any]:
    """As data only: a downloaded best.pt that needs pickled code is refused."""
    return load_weights_only(Path(path), source=source)


def evaluate_checkpoint(checkpoint: str | Path | dict[str, Any], data_root: str | None = None,
                        metadata_root: str | None = None, device: str = "auto",
                        batch_size: int | None = None, pictures: Path | None = None,
                        ) -> tuple[SplitScore, dict[str, Any]]:
    """Test metrics of `best.pt` (a path, or its loaded state) with its stored choices, and
    those of min-max maps under `minmax_` names; data roots may be re-pointed. With `pictures`
    (a directory), also the test curves and overlays of the first images (selected
    normalisation)."""
    if isinstance(checkpoint, dict):
        state, source = checkpoint, "checkpoint"
    else:
        state, source = load_checkpoint(checkpoint), str(checkpoint)
    values = dict(state["config"])
    if data_root is not None:
        values["data_root"] = data_root
    if metadata_root is not None:
        values["metadata_root"] = metadata_root
    values["device"] = device
    values["weights"] = None  # the checkpoint holds every weight; no download needed
    config = config_from_dict(values, source)
    selected = state["metrics"]
    normalisation = Normalisation(selected["normalisation"], selected["percentile"])
    torch_device = resolve_device(device)
    method = build_method(config, state["num_classes"], torch_device)
    method.model.load_state_dict(state["model"])
    split = load_split(config.metadata_dir, protocol.TEST)
    data = EvalDataset(split, config.data_root, eval_transform(config.eval_size),
                       mask_root=config.mask_root, allow_test=True)
    loader = DataLoader(data, batch_size=batch_size or config.batch_size,
                        num_workers=config.num_workers)
    targets = Targets(data, config.eval_size, cache=False)
    first: list[RawBatch] = []
    minmax = MinMaxReading(selected)

    def keep_first(batches: Iterator[RawBatch]) -> Iterator[RawBatch]:
        for batch in batches:
            if not first:
                first.append(batch)
            minmax.add(batch)
            yield batch

    score = score_split(keep_first(infer(method, loader, torch_device)), targets, normalisation,
                        config.curve_interval, threshold=float(selected["threshold"]))
    score.metrics.update(minmax.metrics(score.metrics, targets, config.curve_interval))
    if pictures is not None:
        pictures.mkdir(parents=True, exist_ok=True)
        write_curves(score, pictures / "curves.json")
        plot_curves(score, pictures / "curves.png")
        save_overlays(data, targets, score, first[0], pictures / "overlays.png")
    return score, state
