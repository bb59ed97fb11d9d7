"""The repository stands alone: a plain clone (or a wheel) has everything its tests and docs use.

CI clones the repo next to a folder of shared project material; these tests fail if anything
still points at, or reads from, that folder instead of the project's own copies.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from wsol.cli import main
from wsol.data.bundled import DATASETS, bundled_metadata, bundled_root
from wsol.data.metadata import load_split

REPO = Path(__file__).resolve().parents[1]
BUNDLED = PurePosixPath("wsol/data/benchmark_metadata")
OUTSIDE = "sha" + "red"  # the sibling folder name, never written whole with a slash here
NEEDLES = ("../" + OUTSIDE, "/work/" + OUTSIDE, OUTSIDE + "/wsol-metadata", OUTSIDE + "/spec")


def test_bundled_metadata_names_are_case_insensitive():
    for name, folder in DATASETS.items():
        for spelling in (name, name.upper(), folder):
            path = bundled_metadata(spelling)
            assert path == bundled_root() / folder
            assert (path / "val" / "image_ids.txt").is_file()


def test_unknown_bundled_dataset_lists_the_known_names():
    with pytest.raises(ValueError, match="known: cub, ilsvrc, openimages"):
        bundled_metadata("voc")


def test_bundled_licence_and_notice_travel_with_the_files():
    root = bundled_root()
    assert "NAVER Corp." in (root / "LICENSE").read_text()
    assert "Permission is hereby granted" in (root / "LICENSE").read_text()
    assert (root / "NOTICE").stat().st_size > 0
    assert "clovaai/wsolevaluation" in (root / "README.md").read_text()


def test_package_data_declares_the_bundled_files():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["wsol.data"]
    assert "benchmark_metadata/**/*" in patterns


def test_data_check_dataset_cub_reports_published_counts(tmp_path):
    report = tmp_path / "cub.json"
    done = subprocess.run(
        [sys.executable, "-m", "wsol.cli", "data", "check", "--dataset", "cub",
         "--json", str(report)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("OK")
    payload = json.loads(report.read_text())
    assert [(s["name"], s["images"], s["classes"], s["boxes"]) for s in payload["splits"]] == [
        ("train", 5994, 200, 5994),
        ("val", 1000, 200, 1000),
        ("test", 5794, 200, 5794),
    ]


def test_dataset_and_metadata_root_are_exclusive_and_one_is_required(capsys):
    for argv in (
        ["data", "check", "--dataset", "cub", "--metadata-root", "x"],
        ["data", "check"],
        ["score", "--scoremaps", "m", "--split", "val"],
        ["score", "--scoremaps", "m", "--split", "val", "--dataset", "cub", "--metadata-root", "x"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    assert "--dataset" in capsys.readouterr().err


def test_score_dataset_cub_without_images(tmp_path):
    """CUB states every image size, so boxes drawn as maps score 100 with no image at hand."""
    split = load_split(bundled_metadata("cub"), "val")
    for image_id in split.image_ids:
        scoremap = np.zeros((28, 28), np.float32)
        box = split.boxes[image_id][0].resized(split.sizes[image_id], (28, 28))
        scoremap[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1] = 1.0
        path = tmp_path / "maps" / (image_id + ".npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, scoremap)
    out = tmp_path / "cub.json"
    argv = ["score", "--scoremaps", str(tmp_path / "maps"), "--dataset", "CUB", "--split", "val",
            "--json", str(out)]
    assert main(argv) == 0
    got = json.loads(out.read_text())
    assert got["BoxAccV2@30"] == 100.0 and got["images"] == 1000


def _repo_text_files() -> list[str]:
    """Tracked files plus new ones not ignored, so a reference is caught before it is committed."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, check=True, timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (e.g. an unpacked sdist)")
    return sorted({name for name in listed.decode().split("\0") if name})


def test_no_file_points_outside_the_checkout():
    offenders = []
    for name in _repo_text_files():
        relative = PurePosixPath(name)
        if relative.is_relative_to(BUNDLED) and relative.suffix == ".txt":
            continue  # third-party split files: image paths only
        path = REPO / relative
        if not path.is_file():
            continue  # deleted in the working tree
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            offenders += [f"{name}:{number}: {needle}" for needle in NEEDLES if needle in line]
    assert not offenders, "files refer to material outside the repo:\n" + "\n".join(offenders)


AUDITED = textwrap.dedent(
    """
    import json, os, sys

    opened = []

    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.path.realpath(os.fsdecode(args[0])))

    sys.addaudithook(hook)
    from wsol.cli import main

    codes = [main(["data", "check", "--dataset", name]) for name in ("cub", "openimages")]
    print(json.dumps({"codes": codes, "opened": opened}))
    """
)


def test_nothing_is_read_from_outside_the_checkout(tmp_path):
    """Every file the real-metadata code path opens, recorded by an audit hook in a subprocess."""
    done = subprocess.run(
        [sys.executable, "-c", AUDITED],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["codes"] == [0, 0]
    opened = [Path(p) for p in result["opened"]]
    root = bundled_root().resolve()
    assert any(p.is_relative_to(root) for p in opened), "the hook saw no metadata file open"
    forbidden = (REPO.parent / OUTSIDE).resolve()
    outside = sorted({str(p) for p in opened if p.is_relative_to(forbidden)})
    assert not outside, f"opened outside the checkout: {outside}"
