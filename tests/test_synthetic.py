"""The synthetic benchmark: real format, deterministic, and built to fool CAM."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from wsol.cli import main
from wsol.data.metadata import load_split
from wsol.data.synthetic import PRESETS, config_with_overrides, generate, render_image


def digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    generate(tmp_path / "a", PRESETS["tiny"], seed=5)
    generate(tmp_path / "b", PRESETS["tiny"], seed=5)
    generate(tmp_path / "c", PRESETS["tiny"], seed=6)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_splits_in_the_real_format_with_boxes_and_masks(tiny_synth):
    cfg = PRESETS["tiny"]
    for split, per_class in (("train", 12), ("val", 3), ("test", 6)):
        meta = load_split(tiny_synth / "metadata", split)
        assert len(meta.image_ids) == per_class * cfg.classes
        assert meta.num_classes == cfg.classes
        assert meta.has_boxes and meta.has_masks
        assert set(meta.boxes) == set(meta.masks) == set(meta.image_ids)
    assert (
        main(
            [
                "data",
                "check",
                "--metadata-root",
                str(tiny_synth / "metadata"),
                "--data-root",
                str(tiny_synth),
            ]
        )
        == 0
    )


def test_some_images_hold_several_instances(tiny_synth):
    meta = load_split(tiny_synth / "metadata", "train")
    assert any(len(b) > 1 for b in meta.boxes.values())


def test_classes_share_the_body_and_differ_by_a_small_part():
    cfg = PRESETS["demo"]
    part_fraction = []
    for label in range(cfg.classes):
        rng = np.random.default_rng([0, label])
        image, instances, _ = render_image(rng, label, cfg)
        body_pixels = image[(instances[0] > 0)]
        part = np.abs(body_pixels.astype(float) - [150, 128, 110]).max(axis=1) > 70
        part_fraction.append(part.mean())
    assert 0.02 < np.mean(part_fraction) < 0.3


def test_background_is_correlated_with_the_class():
    cfg = PRESETS["demo"]
    corners = [
        render_image(np.random.default_rng([2, i]), 1, cfg)[0][:4, :4].mean(axis=(0, 1))
        for i in range(40)
    ]
    spread = np.std(corners, axis=0).mean()
    other = [
        render_image(np.random.default_rng([3, i]), i % cfg.classes, cfg)[0][:4, :4].mean(
            axis=(0, 1)
        )
        for i in range(40)
    ]
    assert spread < np.std(other, axis=0).mean()


def test_cli_synth_with_overrides(tmp_path, capsys):
    out = tmp_path / "s"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--preset",
                "tiny",
                "--set",
                "classes=3",
                "--set",
                "val_per_class=2",
            ]
        )
        == 0
    )
    assert len(load_split(out / "metadata", "val").image_ids) == 6
    assert json.loads((out / "synthetic.json").read_text())["config"]["classes"] == 3


def test_unknown_knob_is_an_error():
    with pytest.raises(ValueError, match="unknown synthetic knob 'colour'"):
        config_with_overrides("demo", {"colour": "1"})
    assert main(["data", "synth", "--out", "/tmp/x", "--set", "classes=many"]) == 2
