"""Bad metadata: every problem is reported with its file and line, nothing is half-loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsol.data.metadata import MetadataError, load_split


def write_split(root: Path, files: dict[str, str], split: str = "val") -> Path:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    defaults = {
        "image_ids.txt": "a/1.jpg\na/2.jpg\n",
        "class_labels.txt": "a/1.jpg,0\na/2.jpg,1\n",
        "image_sizes.txt": "a/1.jpg,100,80\na/2.jpg,50,60\n",
        "localization.txt": "a/1.jpg,1,2,30,40\na/2.jpg,0,0,49,59\na/2.jpg,5,5,10,10\n",
    }
    defaults.update(files)
    for name, text in defaults.items():
        (folder / name).write_text(text)
    return root


def problems(root: Path, split: str = "val") -> list[str]:
    with pytest.raises(MetadataError) as info:
        load_split(root, split)
    return [str(p) for p in info.value.problems]


def test_valid_split_without_trailing_newline(tmp_path):
    root = write_split(tmp_path, {"localization.txt": "a/1.jpg,1,2,30,40\na/2.jpg,0,0,49,59"})
    meta = load_split(root, "val")
    assert meta.image_ids == ("a/1.jpg", "a/2.jpg")
    assert meta.boxes["a/2.jpg"][0].x1 == 49


@pytest.mark.parametrize(
    ("files", "where", "what"),
    [
        ({"localization.txt": "a/1.jpg,1,2,30\na/2.jpg,0,0,4,5\n"}, "localization.txt:1", "fields"),
        (
            {"localization.txt": "a/1.jpg,1,2,30,4x\na/2.jpg,0,0,4,5\n"},
            "localization.txt:1",
            "not all integers",
        ),
        (
            {"localization.txt": "a/1.jpg,31,2,30,40\na/2.jpg,0,0,4,5\n"},
            "localization.txt:1",
            "x1 < x0",
        ),
        (
            {"localization.txt": "a/1.jpg,1,2,130,40\na/2.jpg,0,0,4,5\n"},
            "localization.txt:1",
            "outside the 100x80 image",
        ),
        (
            {"localization.txt": "a/1.jpg,1,2,3,4\n"},
            "localization.txt",
            "no annotation for 'a/2.jpg'",
        ),
        (
            {"localization.txt": "a/1.jpg,1,2,3,4\na/2.jpg,0,0,4,5\nb/3.jpg,0,0,1,1\n"},
            "localization.txt:3",
            "not in image_ids.txt",
        ),
        ({"image_ids.txt": "a/1.jpg\na/2.jpg\na/1.jpg\n"}, "image_ids.txt:3", "duplicate image id"),
        ({"image_ids.txt": "/abs/1.jpg\na/2.jpg\n"}, "image_ids.txt:1", "absolute path"),
        ({"image_ids.txt": "a/../../1.jpg\na/2.jpg\n"}, "image_ids.txt:1", "'..' in path"),
        (
            {"class_labels.txt": "a/1.jpg,zero\na/2.jpg,1\n"},
            "class_labels.txt:1",
            "not a non-negative",
        ),
        ({"class_labels.txt": "a/1.jpg,0\n"}, "class_labels.txt", "no label for 'a/2.jpg'"),
        (
            {"class_labels.txt": "a/1.jpg,0\na/2.jpg,1\na/2.jpg,1\n"},
            "class_labels.txt:3",
            "duplicate",
        ),
        ({"image_sizes.txt": "a/1.jpg,100\na/2.jpg,50,60\n"}, "image_sizes.txt:1", "3 fields"),
        ({"image_sizes.txt": "a/1.jpg,100,80\n"}, "image_sizes.txt", "no size for 'a/2.jpg'"),
    ],
)
def test_each_problem_names_file_and_line(tmp_path, files, where, what):
    found = problems(write_split(tmp_path, files))
    assert any(where in p and what in p for p in found), found


def test_all_problems_are_reported_at_once(tmp_path):
    root = write_split(
        tmp_path,
        {"localization.txt": "a/1.jpg,1,2\na/2.jpg,9,0,4,5\n", "class_labels.txt": "a/1.jpg,x\n"},
    )
    assert len(problems(root)) >= 4


def test_masks_ignore_path_only_on_first_line(tmp_path):
    root = write_split(
        tmp_path,
        {
            "image_sizes.txt": "",
            "localization.txt": "a/1.jpg,m/1_0.png,m/1_ig.png\na/1.jpg,m/1_1.png,\n"
            "a/2.jpg,m/2_0.png,m/2_ig.png\n",
        },
    )
    meta = load_split(root, "val")
    assert meta.masks["a/1.jpg"].mask_paths == ("m/1_0.png", "m/1_1.png")
    assert meta.masks["a/1.jpg"].ignore_path == "m/1_ig.png"
    bad = write_split(
        tmp_path / "bad",
        {
            "image_sizes.txt": "",
            "localization.txt": "a/1.jpg,m/1_0.png,m/1_ig.png\na/1.jpg,m/1_1.png,m/x.png\n"
            "a/2.jpg,m/2_0.png,m/2_ig.png\n",
        },
    )
    assert any("localization.txt:2" in p and "first line" in p for p in problems(bad))


def test_mask_path_may_not_leave_the_root(tmp_path):
    root = write_split(
        tmp_path,
        {"image_sizes.txt": "", "localization.txt": "a/1.jpg,../m.png,\na/2.jpg,m/2.png,\n"},
    )
    assert any("localization.txt:1" in p and "'..'" in p for p in problems(root))


def test_missing_required_file(tmp_path):
    root = write_split(tmp_path, {})
    (root / "val" / "class_labels.txt").unlink()
    assert any("class_labels.txt" in p and "missing" in p for p in problems(root))
