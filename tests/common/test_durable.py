"""Every write-then-rename fsyncs its data before the rename and the folder after it, so a
machine's crash leaves the old file or the whole new one, never an empty one under the
final name: the synthetic backbone, the synthetic benchmark, the search's record, a
trial's checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from wsol.common import durable
from wsol.data.synthetic import PRESETS, ensure_generated
from wsol.models import synthetic_pretrained
from wsol.search.parent_run import read_record, write_record


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """("fsync", path) and ("replace", target) in the order they happen."""
    seen: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_replace(source: str, target: str) -> None:
        seen.append(("replace", os.path.realpath(target)))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    return seen


def _synced_before(events: list[tuple[str, str]], target: Path) -> None:
    """Some file was fsync'd before `target` was renamed into place, and its folder after."""
    index = events.index(("replace", str(target.resolve())))
    assert any(kind == "fsync" and not Path(p).is_dir() for kind, p in events[:index]), events
    assert ("fsync", str(target.resolve().parent)) in events[index + 1:], events


def test_write_bytes_atomic(tmp_path: Path, events: list[tuple[str, str]]) -> None:
    target = tmp_path / "record.json"
    target.write_text("old")
    durable.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    _synced_before(events, target)
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temporary left


def test_the_synthetic_backbone_is_fsynced(tmp_path: Path,
                                           events: list[tuple[str, str]]) -> None:
    path = tmp_path / "backbone.pt"
    synthetic_pretrained._write_atomic(path, {"w": torch.zeros(2)}, {"seed": 0})
    _synced_before(events, path.with_suffix(".json"))
    _synced_before(events, path)
    assert json.loads(path.with_suffix(".json").read_text())["seed"] == 0


def test_the_synthetic_benchmark_is_fsynced(tmp_path: Path,
                                            events: list[tuple[str, str]]) -> None:
    small = dataclasses.replace(PRESETS["tiny"], classes=2, train_per_class=1, val_per_class=1,
                                test_per_class=1)
    root = tmp_path / "data" / "synth"
    assert ensure_generated(root, small)
    _synced_before(events, root)
    synced = {Path(p).name for kind, p in events if kind == "fsync"}
    assert "synthetic.json" in synced
    assert len(synced) > 4  # images and metadata too


def test_the_search_record_is_written_aside_and_fsynced(
        tmp_path: Path, events: list[tuple[str, str]]) -> None:
    folder = tmp_path / "ray" / "search"
    write_record(str(folder), "1", "r" * 32, tune_run="a")
    write_record(str(folder), "1", "r" * 32, tune_run="b")
    assert read_record(str(folder))["tune_run"] == "b"
    _synced_before(events, folder / "wsol_parent_run.json")
    assert [p.name for p in folder.iterdir()] == ["wsol_parent_run.json"]


def test_a_trials_checkpoint_is_fsynced(tmp_path: Path, events: list[tuple[str, str]]) -> None:
    from wsol.trial.runner import _atomic_save

    path = tmp_path / "last.pt"
    _atomic_save({"epoch": 3, "w": torch.ones(2)}, path)
    _synced_before(events, path)
    assert torch.load(path, weights_only=True)["epoch"] == 3
