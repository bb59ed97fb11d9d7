"""The reader on the real CUB, ImageNet and OpenImages split files (no images needed)."""

from __future__ import annotations

import pytest

from wsol.data.metadata import MetadataError, load_split


@pytest.mark.parametrize(
    ("dataset", "split", "images", "classes"),
    [
        ("CUB", "train", 5994, 200),
        ("CUB", "val", 1000, 200),
        ("CUB", "test", 5794, 200),
        ("ILSVRC", "val", 10000, 1000),
        ("ILSVRC", "test", 50000, 1000),
        ("OpenImages", "train", 29819, 100),
        ("OpenImages", "val", 2500, 100),
        ("OpenImages", "test", 5000, 100),
    ],
)
def test_published_counts(real_metadata, dataset, split, images, classes):
    meta = load_split(real_metadata / dataset, split)
    assert len(meta.image_ids) == images
    assert meta.num_classes == classes


def test_cub_boxes_and_sizes(real_metadata):
    meta = load_split(real_metadata / "CUB", "val")
    assert meta.has_boxes and not meta.has_masks
    assert len(meta.sizes) == 1000
    assert sum(len(b) for b in meta.boxes.values()) == 1000


def test_imagenet_several_boxes_per_image(real_metadata):
    meta = load_split(real_metadata / "ILSVRC", "val")
    counts = [len(b) for b in meta.boxes.values()]
    assert sum(counts) == 18532
    assert max(counts) > 1


def test_openimages_masks_and_ignore_on_first_line_only(real_metadata):
    meta = load_split(real_metadata / "OpenImages", "val")
    assert meta.has_masks and not meta.has_boxes
    assert meta.sizes == {}  # empty image_sizes.txt: sizes come from the images
    several = [m for m in meta.masks.values() if len(m.mask_paths) > 1]
    assert several, "some images hold several instance masks"
    assert all(m.ignore_path and m.ignore_path.endswith("_ignore.png") for m in meta.masks.values())
    assert sum(len(m.mask_paths) for m in meta.masks.values()) == 3854


def test_imagenet_train_has_only_sizes_and_localization_files(real_metadata):
    with pytest.raises(MetadataError, match=r"image_ids\.txt: file is missing"):
        load_split(real_metadata / "ILSVRC", "train")
