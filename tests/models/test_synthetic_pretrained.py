"""`weights: synthetic-pretrained`: built once per cache and reused, named by a fingerprint of
everything that makes the weights, loaded strictly by the tiny backbone (a tiny pretraining
config keeps this to seconds)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

from wsol.data.synthetic import PRESETS, SynthConfig
from wsol.models import synthetic_pretrained as sp
from wsol.models.backbones import build_backbone
from wsol.trial.config import config_from_dict, load_config
from wsol.trial.runner import run_trial

TINY = sp.PretrainConfig(
    task=SynthConfig(classes=3, train_per_class=6, val_per_class=1, test_per_class=1,
                     min_size=32, max_size=40, background_correlation=1.0),
    heldout_per_class=2, resize=36, crop=32, epochs=1, batch_size=6)


def test_weights_are_built_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []
    real = sp.pretrain
    monkeypatch.setattr(sp, "pretrain", lambda config: calls.append(config) or real(config))
    path = sp.ensure_pretrained(TINY, tmp_path)
    assert calls == [TINY] and path.is_file()
    assert path.name == f"tiny-w32-synthetic-pretrained-{TINY.fingerprint()}.pt"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["fingerprint"] == TINY.fingerprint()
    assert sidecar["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sidecar["config"]["task"]["classes"] == 3 and sidecar["train_images"] == 18
    stamp = path.stat().st_mtime_ns

    assert sp.ensure_pretrained(TINY, tmp_path) == path
    assert len(calls) == 1 and path.stat().st_mtime_ns == stamp  # not rebuilt
    # nothing half-written is left behind (temporary names start with '.')
    assert {p.name for p in tmp_path.iterdir()} == {path.name, path.with_suffix(".json").name,
                                                    path.with_suffix(".lock").name}


def test_fingerprint_changes_with_every_knob(monkeypatch: pytest.MonkeyPatch):
    base = TINY.fingerprint()
    assert dataclasses.replace(TINY).fingerprint() == base  # a function of the values only
    variants = [
        dataclasses.replace(TINY, epochs=2), dataclasses.replace(TINY, seed=1),
        dataclasses.replace(TINY, data_seed=7), dataclasses.replace(TINY, lr=0.01),
        dataclasses.replace(TINY, width=16), dataclasses.replace(TINY, class_offset=40),
        dataclasses.replace(TINY, task=dataclasses.replace(TINY.task, classes=4)),
        dataclasses.replace(TINY, task=dataclasses.replace(TINY.task, noise=3.0)),
    ]
    prints = [v.fingerprint() for v in variants]
    assert base not in prints and len(set(prints)) == len(variants)
    monkeypatch.setattr(sp, "GENERATOR_VERSION", 99)
    assert TINY.fingerprint() != base
    monkeypatch.undo()
    monkeypatch.setattr(sp, "RECIPE_VERSION", 99)
    assert TINY.fingerprint() != base


def test_the_task_is_not_a_benchmark():
    """Its class styles are none of a preset's, and every context patch is the image's own."""
    for config in (TINY, sp.DEFAULT):
        assert config.class_offset >= max(p.classes for p in PRESETS.values())
        assert config.task.background_correlation == 1.0
        assert config.data_seed not in range(100)


def test_the_tiny_backbone_loads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      tiny_synth: Path):
    monkeypatch.setenv("WSOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sp, "DEFAULT", TINY)
    backbone = build_backbone("tiny", "synthetic-pretrained")
    path = tmp_path / "cache" / "pretrained" / TINY.file_name()
    state = torch.load(path, weights_only=True)
    assert set(state) == set(backbone.state_dict())  # the body only: the task's head is gone
    assert all(torch.equal(value, state[key]) for key, value in backbone.state_dict().items())
    fresh = build_backbone("tiny", None)
    assert any(not torch.equal(value, state[key]) for key, value in fresh.state_dict().items())

    wrong = tmp_path / "wrong.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("head.")}, wrong)
    with pytest.raises(ValueError, match="does not fit the tiny backbone"):
        build_backbone("tiny", str(wrong))
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_backbone("tiny", "imagenet")

    # a trial config names it like `imagenet` (not a path relative to the file), and trains
    trial_file = tmp_path / "trial.yaml"
    trial_file.write_text(yaml.safe_dump({"weights": "synthetic-pretrained"}))
    assert load_config(trial_file).weights == "synthetic-pretrained"
    config = config_from_dict({
        "weights": "synthetic-pretrained", "data_root": str(tiny_synth), "epochs": 1,
        "resize": 36, "crop": 32, "eval_size": 32, "batch_size": 8, "ivr_percentiles": [30.0],
        "device": "cpu"})
    summary = run_trial(config, tmp_path / "trial", log=lambda line: None)
    assert summary["selected_epoch"] == 0 and (tmp_path / "trial" / "best.pt").is_file()
