"""`wsol data check`: counts, every problem, non-zero exit, JSON report."""

from __future__ import annotations

import json
import shutil

from wsol.cli import main


def test_real_metadata_is_clean_without_images(real_metadata, tmp_path, capsys):
    report = tmp_path / "cub.json"
    assert (
        main(
            ["data", "check", "--metadata-root", str(real_metadata / "CUB"), "--json", str(report)]
        )
        == 0
    )
    payload = json.loads(report.read_text())
    assert payload["ok"] is True
    assert [(s["name"], s["images"], s["classes"], s["boxes"]) for s in payload["splits"]] == [
        ("train", 5994, 200, 5994),
        ("val", 1000, 200, 1000),
        ("test", 5794, 200, 5794),
    ]


def test_missing_images_and_bad_lines_are_reported(tiny_synth, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_synth, copy)
    (copy / "images" / "val" / "c00" / "00000.png").unlink()
    loc = copy / "metadata" / "test" / "localization.txt"
    lines = loc.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",oops"
    loc.write_text("\n".join(lines))
    code = main(
        [
            "data",
            "check",
            "--metadata-root",
            str(copy / "metadata"),
            "--data-root",
            str(copy),
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "00000.png is missing" in out
    assert "test/localization.txt:3" in out and "not all integers" in out
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["ok"] is False
