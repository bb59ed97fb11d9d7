"""`wsol score` on maps saved the way other WSOL code bases save them."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch

from wsol.cli import main
from wsol.data.images import load_gt_mask
from wsol.data.metadata import load_split, resized_boxes
from wsol.scoring import reference
from wsol.scoring.saved_maps import score_saved_maps


def save_maps(root: Path, split, maps: dict[str, np.ndarray], basename: bool = False) -> None:
    for image_id, scoremap in maps.items():
        path = root / (PurePosixPath(image_id).name if basename else image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(str(path) + ".npy", scoremap)


def score(
    maps: Path,
    metadata: Path,
    split: str,
    data_root: Path | None = None,
    interval: float | None = None,
    json_out: Path | None = None,
) -> int:
    """Exit code of `wsol score` on the maps under `maps` for `split` of `metadata`."""
    args = ["score", "--scoremaps", str(maps), "--metadata-root", str(metadata), "--split", split]
    if data_root is not None:
        args += ["--data-root", str(data_root)]
    if interval is not None:
        args += ["--curve-interval", str(interval)]
    if json_out is not None:
        args += ["--json", str(json_out)]
    return main(args)


def smooth(rng: np.random.Generator, size: int, knots: int) -> np.ndarray:
    """A CAM-like map: bicubic upsampling of a coarse random map, min-max normalised."""
    coarse = torch.from_numpy(rng.random((1, 1, knots, knots)).astype(np.float32))
    m = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")[0, 0].numpy()
    return ((m - m.min()) / (m.max() - m.min())).astype(np.float32)


@pytest.mark.parametrize("interval", [0.01, 0.001])
@pytest.mark.parametrize("kind", ["random", "cam_like"])
def test_score_matches_reference_boxes_and_masks(tiny_synth, tmp_path, capsys, interval, kind):
    """Every number `wsol score` prints equals the reference evaluator's: MaxBoxAcc (largest
    contour), MaxBoxAccV2 and its parts, PxAP."""
    split = load_split(tiny_synth / "metadata", "val")
    rng = np.random.default_rng(0)
    if kind == "random":
        maps = {i: rng.random((28, 28)).astype(np.float32) ** 3 for i in split.image_ids}
    else:
        maps = {i: smooth(rng, 28, int(rng.integers(4, 9))) for i in split.image_ids}
    save_maps(tmp_path / "maps", split, maps)
    out = tmp_path / "scores.json"
    metadata = tiny_synth / "metadata"
    assert score(tmp_path / "maps", metadata, "val", tiny_synth, interval, out) == 0
    got = json.loads(out.read_text())
    boxes = [resized_boxes(split.boxes[i], split.sizes[i], (28, 28)) for i in split.image_ids]
    v2 = reference.max_box_acc(list(maps.values()), boxes, interval, True)
    v1 = reference.max_box_acc(list(maps.values()), boxes, interval, False)
    assert got["MaxBoxAcc"] == v1[50]
    assert [got["BoxAccV2@30"], got["BoxAccV2@50"], got["BoxAccV2@70"]] == [v2[30], v2[50], v2[70]]
    assert got["MaxBoxAccV2"] == np.mean([v2[30], v2[50], v2[70]])
    masks = [load_gt_mask(tiny_synth, split.masks[i], (28, 28)) for i in split.image_ids]
    assert got["PxAP"] == reference.pxap(list(maps.values()), masks, interval)
    assert 0.0 <= got["BoxAccV2@50_threshold"] < 1.0
    assert "MaxBoxAccV2" in capsys.readouterr().out


def test_score_saved_maps_in_one_thread_equals_two(tiny_synth, tmp_path):
    split = load_split(tiny_synth / "metadata", "val")
    rng = np.random.default_rng(1)
    save_maps(tmp_path / "maps", split, {i: smooth(rng, 32, 6) for i in split.image_ids})
    runs = [
        score_saved_maps(tmp_path / "maps", split, tiny_synth, interval=0.01, workers=workers)
        for workers in (1, 2)
    ]
    assert runs[0] == runs[1]


def test_score_reads_reference_style_basenames(tiny_synth, tmp_path):
    split = load_split(tiny_synth / "metadata", "test")
    maps = {i: np.full((16, 16), 0.5, np.float32) for i in split.image_ids}
    save_maps(tmp_path / "maps", split, maps, basename=True)
    # synthetic basenames (00000.png ...) are unique per split, so they are accepted
    code = score(
        tmp_path / "maps", tiny_synth / "metadata", "test", tiny_synth, 0.001, tmp_path / "s.json"
    )
    assert code == 0
    assert json.loads((tmp_path / "s.json").read_text())["curve_interval"] == 0.001


def test_missing_or_invalid_map_is_a_clear_error(tiny_synth, tmp_path, capsys):
    split = load_split(tiny_synth / "metadata", "val")
    maps = {i: np.zeros((8, 8), np.float32) for i in split.image_ids[1:]}
    save_maps(tmp_path / "maps", split, maps)
    args = (tmp_path / "maps", tiny_synth / "metadata", "val", tiny_synth)
    assert score(*args) == 2
    assert f"no score map for {split.image_ids[0]!r}" in capsys.readouterr().err
    save_maps(tmp_path / "maps", split, {split.image_ids[0]: np.full((8, 8), 2.0, np.float32)})
    assert score(*args) == 2
    err = capsys.readouterr().err
    assert split.image_ids[0] in err and "[0, 1]" in err


def test_score_real_cub_metadata_sizes_without_images(real_metadata, tmp_path):
    """CUB's image_sizes.txt gives the sizes, so no image is needed to score boxes."""
    split = load_split(real_metadata / "CUB", "val")
    some = split.image_ids
    maps = {i: np.zeros((224, 224), np.float32) for i in some}
    for i in some:
        box = split.boxes[i][0].resized(split.sizes[i], (224, 224))
        maps[i][box.y0 : box.y1 + 1, box.x0 : box.x1 + 1] = 1.0
    save_maps(tmp_path / "maps", split, maps)
    out = tmp_path / "cub.json"
    assert score(tmp_path / "maps", real_metadata / "CUB", "val", json_out=out) == 0
    got = json.loads(out.read_text())
    assert got["BoxAccV2@30"] == 100.0 and got["images"] == 1000


def test_score_on_test_says_it_counts_nowhere(tiny_synth, tmp_path, capsys):
    """`wsol score --split test` is for maps made outside this tool; each time it says that
    this reading of test is counted on no model (`wsol evaluate` is the counted one)."""
    for split_name in ("test", "val"):
        split = load_split(tiny_synth / "metadata", split_name)
        maps = tmp_path / split_name
        save_maps(maps, split, {i: np.full((16, 16), 0.5, np.float32) for i in split.image_ids})
        assert score(maps, tiny_synth / "metadata", split_name, tiny_synth) == 0
        err = capsys.readouterr().err
        assert ("counted on no model" in err and "`wsol evaluate`" in err) == (split_name == "test")
