"""Image transforms of the reference protocol, with sizes configurable for small CPU runs."""

from __future__ import annotations

import torch
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(resize: int = 256, crop: int = 224,
                    vertical_flip: bool = False) -> transforms.Compose:
    """Resize to `resize` x `resize`, random crop `crop`, horizontal flip (reference training);
    with `vertical_flip` a random vertical flip too, as MinMaxCAM's training transform
    (shadowwkl/MinMaxCAM train.py:134-137: resize 256, both flips, crop 224)."""
    flips: list[torch.nn.Module] = [transforms.RandomHorizontalFlip()]
    if vertical_flip:
        flips.append(transforms.RandomVerticalFlip())
    return transforms.Compose(
        [
            transforms.Resize((resize, resize)),
            transforms.RandomCrop(crop),
            *flips,
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(size: int = 224) -> transforms.Compose:
    """Resize to `size` x `size`, no crop, so score maps align with rescaled boxes."""
    return transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
