"""The synthetic benchmark: real format, deterministic, and built to fool CAM."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from wsol.cli import main
from wsol.data.metadata import load_split
from wsol.data.synthetic import (
    PRESETS,
    _class_style,
    config_with_overrides,
    generate,
    mismatch,
    render_image,
)


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


def context_hues(correlation: float, seed: int) -> list[float]:
    """Median hue of the saturated pixels outside the objects (the context patch), class 2."""
    cfg = config_with_overrides("demo", {"background_correlation": str(correlation)})
    hues = []
    for i in range(40):
        image, instances, _ = render_image(np.random.default_rng([seed, i]), 2, cfg)
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        outside = np.max(instances, axis=0) == 0
        context = outside & (hsv[..., 1] > 115)
        assert context.sum() > 20, "every image has a context patch"
        hues.append(float(np.median(hsv[..., 0][context])))
    return hues


def test_context_patch_is_correlated_with_the_class():
    own_hue = _class_style(2)["context_hue"] * 179
    always, never = context_hues(1.0, 2), context_hues(0.0, 3)
    assert np.all(np.abs(np.array(always) - own_hue) <= 12)
    assert np.mean(np.abs(np.array(never) - own_hue) <= 12) < 0.5


def test_scene_outside_the_context_is_dull():
    cfg = PRESETS["demo"]
    image, _, _ = render_image(np.random.default_rng(7), 0, cfg)
    saturation = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1]
    assert np.median(saturation) < 115


def test_mismatch_names_what_differs(tmp_path):
    root = tmp_path / "s"
    generate(root, PRESETS["tiny"], seed=1)
    assert mismatch(root, PRESETS["tiny"], 1) is None
    assert "seed is 1, expected 2" in mismatch(root, PRESETS["tiny"], 2)
    assert "config" in mismatch(root, PRESETS["demo"], 1)
    manifest = json.loads((root / "synthetic.json").read_text())
    manifest["version"] = 1
    (root / "synthetic.json").write_text(json.dumps(manifest))
    assert str(root / "synthetic.json") in mismatch(root, PRESETS["tiny"], 1)
    assert "version is 1" in mismatch(root, PRESETS["tiny"], 1)
    assert "missing" in mismatch(tmp_path / "none", PRESETS["tiny"], 1)


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


def test_search_generates_missing_data_and_warns_on_stale_data(tmp_path, capsys):
    from wsol.search.experiment import Experiment
    from wsol.search.runner import prepare_data

    experiment = Experiment(data_root=str(tmp_path / "s"), synthetic_preset="tiny", seed=3)
    prepare_data(experiment)
    assert mismatch(tmp_path / "s", PRESETS["tiny"], 3) is None
    before = digest(tmp_path / "s")
    prepare_data(Experiment(data_root=str(tmp_path / "s"), synthetic_preset="tiny", seed=4))
    err = capsys.readouterr().err
    assert "seed is 3, expected 4" in err
    assert "delete" not in err.lower() and "wsol data synth --preset tiny --seed 4" in err
    assert digest(tmp_path / "s") == before
