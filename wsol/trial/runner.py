"""One trial: train on train-weaksup, select on train-fullsup, keep the best checkpoint.

The same function runs from `wsol train` and inside every search trial. The test split is
never opened here. Output directory:
  best.pt       weights of the selected epoch + config + its train-fullsup metrics and choices
  last.pt       full state after the last finished epoch (resume point)
Both hold tensors and plain values only and load with `weights_only=True`: a checkpoint from
shared storage or a tracking server is data, never code.
  metrics.json  the selected epoch's numbers and the per-epoch history
  curves.json / curves.png / overlays.png  threshold curves and overlays of the selected epoch
"""

from __future__ import annotations

import json
import pickle
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

import wsol.methods  # noqa: F401  (registers the methods)
from wsol.common import protocol
from wsol.common.durable import replace_durably
from wsol.data.datasets import EvalDataset, TrainDataset
from wsol.data.metadata import load_split
from wsol.data.transforms import eval_transform, train_transform
from wsol.methods.base import Method, build_method
from wsol.trial.artifacts import plot_curves, save_overlays, write_curves
from wsol.trial.config import TrialConfig
from wsol.trial.evaluation import (
    RawBatch,
    SplitScore,
    Targets,
    infer,
    select_and_score,
)


@dataclass
class Evaluation:
    """What a trial reports after each evaluation (and what a search logs)."""

    epoch: int
    metrics: dict[str, Any]
    is_best: bool
    out_dir: Path


Reporter = Callable[[Evaluation], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """Plain values only (numpy's key array as a list), so last.pt loads as weights only."""
    return plain({"python": random.getstate(), "numpy": np.random.get_state(),
                  "torch": torch.get_rng_state()}, "rng state")


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())


def plain(value: Any, where: str = "checkpoint") -> Any:
    """`value` with numpy arrays and scalars as Python lists and numbers: what torch.load
    with weights_only=True accepts. Anything else that is not a tensor or a plain value is
    refused here, when saving, rather than found unloadable on resume or evaluation."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool | torch.Tensor):
        return value
    if isinstance(value, dict):
        return {key: plain(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(item, f"{where}[{i}]") for i, item in enumerate(value))
    raise TypeError(f"{where} is a {type(value).__name__}; a checkpoint holds tensors and "
                    "plain values only")


def load_weights_only(path: Path, map_location: str | torch.device = "cpu",
                      source: str | None = None) -> dict[str, Any]:
    """A checkpoint as data: one that needs pickled code to load is refused in one line
    (calling it `source`, else by its path), and that code never runs."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        named = re.search(r"GLOBAL (\S+)", str(error))
        what = f" (it names {named.group(1)})" if named else ""
        raise ValueError(f"{source or path} holds more than tensors and plain values{what}; "
                         "refusing to load it") from None


class Trial:
    def __init__(self, config: TrialConfig, out_dir: str | Path, log: Callable[[str], None]):
        self.config = config
        self.out = Path(out_dir)
        self.log = log
        self.device = resolve_device(config.device)
        c = config
        train_split = load_split(c.metadata_dir, protocol.TRAIN_WEAKSUP)
        val_split = load_split(c.metadata_dir, protocol.TRAIN_FULLSUP)
        self.train_data = TrainDataset(train_split, c.data_root,
                                       train_transform(c.resize, c.crop, c.vertical_flip))
        self.val_data = EvalDataset(val_split, c.data_root, eval_transform(c.eval_size),
                                    mask_root=c.mask_root)
        self.targets = Targets(self.val_data, c.eval_size, cache=True)
        self.metric = self.targets.selection_metric(c.selection_metric)
        num_classes = max(train_split.labels.values()) + 1
        seed_everything(c.seed)
        self.method: Method = build_method(c, num_classes, self.device)

    def _train_loader(self, epoch: int) -> DataLoader:
        c = self.config
        generator = torch.Generator().manual_seed(c.seed * 100_003 + epoch)
        sampler = self.method.batch_sampler(self.train_data.labels, c.seed)
        if sampler is not None:
            sampler.set_epoch(epoch)
            return DataLoader(self.train_data, batch_sampler=sampler, num_workers=c.num_workers,
                              generator=generator)
        batch_size = self.method.batch_size(epoch)
        return DataLoader(self.train_data, batch_size=batch_size, shuffle=True,
                          drop_last=len(self.train_data) > batch_size,
                          num_workers=c.num_workers, generator=generator)

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.method.set_epoch(epoch)
        self.method.model.train()
        totals: dict[str, float] = {}
        steps = 0
        started = time.perf_counter()
        loader = self._train_loader(epoch)
        for images, labels, _ in loader:
            with self.method.autocast():
                values = self.method.train_batch(self.method.inputs(images),
                                                 labels.to(self.device), epoch)
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value
            steps += 1
        losses = {f"loss/{k}": v / max(steps, 1) for k, v in totals.items()}
        losses["epoch_seconds"] = time.perf_counter() - started
        return losses

    def _evaluate(self) -> tuple[dict[str, Any], SplitScore, list[RawBatch]]:
        """train-fullsup's metrics at the selected normalisation and threshold, min-max's
        (`minmax_...`, test-free numbers comparable to the papers') and the seconds it took,
        inference included (`evaluation_seconds`)."""
        c = self.config
        started = time.perf_counter()
        loader = DataLoader(self.val_data, batch_size=c.batch_size, num_workers=c.num_workers)
        batches: list[RawBatch] = list(infer(self.method, loader, self.device))
        selection = select_and_score(batches, self.targets, self.metric, c)
        scored = selection.scored
        metrics: dict[str, Any] = dict(scored.metrics)
        metrics.update({
            "score": metrics[self.metric],
            "selection_metric": self.metric,
            "normalisation": scored.normalisation.method,
            "percentile": scored.normalisation.percentile,
            "threshold": scored.threshold,
            "candidates": scored.candidates,
            **selection.minmax,
        })
        label_free = self.method.label_free_score(torch.cat([b.maps for b in batches]))
        if label_free is not None:
            metrics["label_free_score"] = label_free
        metrics["evaluation_seconds"] = time.perf_counter() - started
        return metrics, scored, batches

    def _selection_value(self, metrics: dict[str, Any]) -> float:
        if self.config.selection == "label_free":
            if "label_free_score" not in metrics:
                raise ValueError(f"method {self.config.method!r} has no label-free selection rule")
            return float(metrics["label_free_score"])
        return float(metrics["score"])

    def run(self, report: Reporter | None = None) -> dict[str, Any]:
        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        start_epoch, best, history = 0, None, []
        last = self.out / "last.pt"
        if last.exists():
            state = load_weights_only(last, self.device)
            if state["config"] != c.to_dict():
                raise ValueError(f"{last} was written by a different config; use a new --out")
            self.method.load_state_dict(state["method"])
            _set_rng_state(state["rng"])
            start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
            self.log(f"resuming after epoch {state['epoch']} from {last}")
        for epoch in range(start_epoch, c.epochs):
            record: dict[str, Any] = {"epoch": epoch, **self._train_epoch(epoch)}
            evaluate = self.method.evaluates(epoch) and (
                (epoch + 1) % c.eval_every == 0 or epoch == c.epochs - 1
            )
            is_best = False
            if evaluate:
                metrics, scored, batches = self._evaluate()
                # the evaluation's share of this epoch's time: training epoch + evaluation
                metrics["evaluation_share"] = metrics["evaluation_seconds"] / (
                    record["epoch_seconds"] + metrics["evaluation_seconds"])
                record.update(metrics)
                value = self._selection_value(metrics)
                is_best = best is None or value > best["value"]
                if is_best:
                    best = {"value": value, "epoch": epoch, "metrics": metrics}
                    self._save_best(epoch, metrics)
                    self._save_pictures(scored, batches[0])
            history.append(record)
            self._save_last(epoch, best, history)
            self._write_metrics(best, history)
            self.log(_progress_line(c, epoch, record))
            if evaluate and report is not None:
                assert best is not None  # the evaluation above set it
                report(Evaluation(epoch, {**record, "best_score": best["value"]}, is_best,
                                  self.out))
        if best is None:
            raise RuntimeError("no epoch was evaluated; check eval_every and the method's phases")
        return self._write_metrics(best, history)

    def _save_best(self, epoch: int, metrics: dict[str, Any]) -> None:
        state = {"config": plain(self.config.to_dict()), "epoch": epoch,
                 "metrics": plain(metrics), "num_classes": self.method.num_classes,
                 "model": self.method.model.state_dict()}
        _atomic_save(state, self.out / "best.pt")

    def _save_pictures(self, scored: SplitScore, batch: RawBatch) -> None:
        """Threshold curves and overlays of the first train-fullsup images at the choices."""
        write_curves(scored, self.out / "curves.json")
        plot_curves(scored, self.out / "curves.png")
        save_overlays(self.val_data, self.targets, scored, batch, self.out / "overlays.png")

    def _save_last(self, epoch: int, best: dict | None, history: list) -> None:
        state = {"config": plain(self.config.to_dict()), "epoch": epoch, "best": plain(best),
                 "history": plain(history), "method": self.method.state_dict(),
                 "rng": _rng_state()}
        _atomic_save(state, self.out / "last.pt")

    def _write_metrics(self, best: dict | None, history: list) -> dict[str, Any]:
        summary = {
            "selected_on": protocol.SELECTION_SPLIT,
            "selection": self.config.selection,
            "method": self.config.method,
            "backbone": self.config.backbone,
            "selected_epoch": None if best is None else best["epoch"],
            "metrics": None if best is None else best["metrics"],
            "history": history,
        }
        tmp = self.out / "metrics.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=float))
        replace_durably(tmp, self.out / "metrics.json")
        return summary


def _atomic_save(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    replace_durably(tmp, path)


def _progress_line(config: TrialConfig, epoch: int, record: dict[str, Any]) -> str:
    losses = " ".join(f"{k[5:]}={v:.4f}" for k, v in record.items() if k.startswith("loss/"))
    line = f"[{config.method}/{config.backbone}] epoch {epoch + 1}/{config.epochs} {losses} " \
           f"({record['epoch_seconds']:.1f}s)"
    if "score" in record:
        line += f" | train-fullsup {record['selection_metric']}={record['score']:.2f} " \
                f"({record['normalisation']}" + \
                (f"@{record['percentile']:g}" if record["percentile"] is not None else "") + ")"
    return line


def run_trial(config: TrialConfig, out_dir: str | Path, report: Reporter | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train one configuration; returns the summary also written to metrics.json."""
    logger = log or (lambda line: print(line, file=sys.stderr, flush=True))
    return Trial(config, out_dir, logger).run(report)
