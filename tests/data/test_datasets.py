"""Split-aware datasets, the class-set sampler and the transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsol.data.datasets import EvalDataset, SplitAccessError, TrainDataset
from wsol.data.metadata import load_split
from wsol.data.sampler import ClassSetBatchSampler
from wsol.data.transforms import eval_transform, train_transform


def test_train_dataset_cannot_reach_boxes_or_masks(tiny_synth):
    split = load_split(tiny_synth / "metadata", "train")
    assert split.has_boxes and split.has_masks  # the files have them...
    data = TrainDataset(split, tiny_synth, train_transform(40, 32))
    reachable = {k for k in vars(data)} | {k for k in dir(data) if not k.startswith("_")}
    assert not any("box" in k or "mask" in k or "split" in k for k in reachable)
    image, label, _ = data[5]
    assert image.shape == (3, 32, 32) and label == split.labels[split.image_ids[5]]


def test_train_dataset_refuses_other_splits(tiny_synth):
    with pytest.raises(ValueError, match="'train' split"):
        TrainDataset(load_split(tiny_synth / "metadata", "val"), tiny_synth, eval_transform(32))


def test_eval_dataset_gives_boxes_and_masks_at_map_size(tiny_synth):
    split = load_split(tiny_synth / "metadata", "val")
    data = EvalDataset(split, tiny_synth, eval_transform(32))
    image, _, index = data[0]
    assert image.shape == (3, 32, 32)
    w, h = split.sizes[split.image_ids[0]]
    boxes = data.gt_boxes(index, (32, 32))
    original = split.boxes[split.image_ids[0]][0]
    assert boxes[0].tolist() == [
        int(original.x0 * 32 / w),
        int(original.y0 * 32 / h),
        int(original.x1 * 32 / w),
        int(original.y1 * 32 / h),
    ]
    mask = data.gt_mask(index, (32, 32))
    assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1, 255}
    assert (mask == 1).any() and (mask == 255).any()


def test_test_split_needs_explicit_permission(tiny_synth):
    split = load_split(tiny_synth / "metadata", "test")
    with pytest.raises(SplitAccessError):
        EvalDataset(split, tiny_synth, eval_transform(32))
    assert len(EvalDataset(split, tiny_synth, eval_transform(32), allow_test=True)) == 24


def test_class_set_sampler_builds_n_by_s_batches():
    labels = [c for c in range(6) for _ in range(7)]
    sampler = ClassSetBatchSampler(labels, classes_per_batch=3, set_size=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(labels) // 12
    for batch in batches:
        classes = [labels[i] for i in batch]
        assert len(batch) == 12
        assert [classes[i * 4] for i in range(3)] == [classes[i * 4 + 3] for i in range(3)]
        assert len(set(classes)) == 3 and all(classes.count(c) == 4 for c in set(classes))
    assert batches == list(ClassSetBatchSampler(labels, 3, 4, seed=1))
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_class_set_sampler_rejects_impossible_requests():
    with pytest.raises(ValueError, match="exceeds"):
        ClassSetBatchSampler([0, 0, 1, 1], classes_per_batch=3, set_size=2)
    with pytest.raises(ValueError, match="set_size"):
        ClassSetBatchSampler([0, 0, 1, 1], classes_per_batch=2, set_size=1)


def test_train_transform_is_random_eval_is_not(tiny_synth):
    split = load_split(tiny_synth / "metadata", "train")
    data = TrainDataset(split, tiny_synth, train_transform(48, 32))
    torch.manual_seed(0)
    a = data[0][0]
    torch.manual_seed(1)
    b = data[0][0]
    assert not torch.equal(a, b)
    evaluation = EvalDataset(
        load_split(tiny_synth / "metadata", "val"), tiny_synth, eval_transform(32)
    )
    assert torch.equal(evaluation[0][0], evaluation[0][0])
