"""The weight-map generator g: a U-Net on a ResNet (or tiny) encoder with a sigmoid output.

Five up-sampling blocks of two 3x3 conv + BN + ReLU with skip connections, as the weight-map
paper describes; each block up-samples to its skip's size, so any input size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from wsol.models.backbones import RESNETS, conv_bn_relu, load_torchvision


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels)
    )


def _out_channels(stage: nn.Module) -> int:
    """What a ResNet stage gives: the channels of its last BatchNorm (after its last conv)."""
    return [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def _resnet_stages(name: str, weights: str | None) -> tuple[list[nn.Module], list[int]]:
    net: tvm.ResNet = load_torchvision(RESNETS[name], weights)
    stages = [
        nn.Sequential(net.conv1, net.bn1, net.relu),
        nn.Sequential(net.maxpool, net.layer1),
        net.layer2,
        net.layer3,
        net.layer4,
    ]
    return stages, [_out_channels(stage) for stage in stages]


def _tiny_stages(width: int = 8) -> tuple[list[nn.Module], list[int]]:
    channels = [width, 2 * width, 4 * width, 4 * width, 8 * width]
    inputs = [3, *channels[:-1]]
    return [conv_bn_relu(i, o, stride=2) for i, o in zip(inputs, channels, strict=True)], channels


ENCODERS = (*RESNETS, "tiny")


class UNetGenerator(nn.Module):
    def __init__(self, encoder: str = "resnet18", weights: str | None = None):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown generator encoder {encoder!r}; known: {', '.join(ENCODERS)}")
        if encoder == "tiny":
            if weights is not None:
                raise ValueError("the tiny encoder has no pretrained weights")
            stages, channels = _tiny_stages()
        else:
            stages, channels = _resnet_stages(encoder, weights)
        self.encoder = nn.ModuleList(stages)
        skips = [*channels[:-1][::-1], 0]
        widths = [max(16, c // 2) for c in channels[::-1]]
        blocks, previous = [], channels[-1]
        for skip, width in zip(skips, widths, strict=True):
            blocks.append(_double_conv(previous + skip, width))
            previous = width
        self.decoder = nn.ModuleList(blocks)
        self.out = nn.Conv2d(previous, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Weight map M in (0, 1), shape (B, H, W) at the input resolution."""
        features, x = [], images
        for stage in self.encoder:
            x = stage(x)
            features.append(x)
        targets = [*(f.shape[-2:] for f in features[:-1][::-1]), images.shape[-2:]]
        skips = [*features[:-1][::-1], None]
        for block, size, skip in zip(self.decoder, targets, skips, strict=True):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            x = block(x if skip is None else torch.cat([x, skip], dim=1))
        return torch.sigmoid(self.out(x)).squeeze(1)
