"""Backbones on torchvision's definitions, cut into the two halves the methods need.

Every backbone is `head(stem(x))`: BGC's attentive dropout sits between the halves, at the
position its paper gives per architecture. `new_layers` are the layers the reference trains
with the larger learning rate (added convs, ResNet's layer4).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from wsol.registry import Registry

BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")


class Backbone(nn.Module):
    def __init__(
        self, stem: nn.Module, head: nn.Module, out_channels: int, new_layers: list[nn.Module]
    ):
        super().__init__()
        self.stem = stem
        self.head = head
        self.out_channels = out_channels
        self._new_ids = {id(p) for layer in new_layers for p in layer.parameters()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x))

    def is_new(self, parameter: nn.Parameter) -> bool:
        return id(parameter) in self._new_ids


def load_torchvision(
    builder: Callable[..., nn.Module], enum: type[tvm.WeightsEnum], weights: str | None,
    **kwargs: object,
) -> nn.Module:
    """weights: None (random), 'imagenet' (torchvision download) or a local state-dict path."""
    if weights is None:
        return builder(weights=None, **kwargs)
    if weights == "imagenet":
        return builder(weights=enum.DEFAULT, **kwargs)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (or use 'imagenet' / none)")
    model = builder(weights=None, **kwargs)
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"weights file {path} lacks {len(missing)} parameters, e.g. {missing[0]}")
    if unexpected:
        raise ValueError(f"weights file {path} has unknown parameters, e.g. {unexpected[0]}")
    return model


def _unstride(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and layer.stride == (2, 2):
            layer.stride = (1, 1)


def _extra_conv(in_channels: int, out_channels: int = 1024) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


@BACKBONES.register("vgg16")
def vgg16(weights: str | None = None) -> Backbone:
    """VGG16-GAP: no last max-pool, one extra 3x3 conv (1024). Dropout point: before pool4."""
    features = load_torchvision(tvm.vgg16, tvm.VGG16_Weights, weights).features
    extra = _extra_conv(512)
    return Backbone(features[:23], nn.Sequential(*features[23:30], extra), 1024, [extra])


def _resnet(builder: Callable[..., nn.Module], enum: type[tvm.WeightsEnum], weights: str | None,
            large_feature_map: bool) -> Backbone:
    net = load_torchvision(builder, enum, weights)
    _unstride(net.layer4[0])
    if large_feature_map:
        _unstride(net.layer3[0])
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                         net.layer3, net.layer4[0])
    channels = net.fc.in_features
    return Backbone(stem, net.layer4[1:], channels, [net.layer4])


@BACKBONES.register("resnet50")
def resnet50(weights: str | None = None, large_feature_map: bool = False) -> Backbone:
    """layer4 stride 1 (14x14 at 224); layer3 too with large_feature_map (28x28)."""
    return _resnet(tvm.resnet50, tvm.ResNet50_Weights, weights, large_feature_map)


@BACKBONES.register("resnet18")
def resnet18(weights: str | None = None, large_feature_map: bool = False) -> Backbone:
    return _resnet(tvm.resnet18, tvm.ResNet18_Weights, weights, large_feature_map)


@BACKBONES.register("mobilenet_v2")
def mobilenet_v2(weights: str | None = None) -> Backbone:
    """Block 14 at stride 1 (14x14 at 224); dropout point before that block."""
    features = load_torchvision(tvm.mobilenet_v2, tvm.MobileNet_V2_Weights, weights).features
    _unstride(features[14])
    return Backbone(features[:14], features[14:], 1280, [])


class _InceptionInput(nn.Module):
    """torchvision's input transform for its Inception weights (ImageNet stats -> [-1, 1])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return (x * std + mean - 0.5) / 0.5


@BACKBONES.register("inception_v3")
def inception_v3(weights: str | None = None) -> Backbone:
    """Up to Mixed_6e plus an extra 3x3 conv (1024), as the reference; dropout before Mixed_6a."""
    net = load_torchvision(tvm.inception_v3, tvm.Inception_V3_Weights, weights, aux_logits=True,
                init_weights=weights is None)
    stem = nn.Sequential(
        _InceptionInput(), net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3,
        net.maxpool1, net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, net.maxpool2,
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d,
    )
    extra = _extra_conv(768)
    head = nn.Sequential(net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e,
                         extra)
    return Backbone(stem, head, 1024, [extra])


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


@BACKBONES.register("tiny")
def tiny(weights: str | None = None, width: int = 32) -> Backbone:
    """Four conv layers at stride 4: trains in minutes on 2 CPU cores (demo and tests)."""
    if weights is not None:
        raise ValueError("the tiny backbone has no pretrained weights; use weights: null")
    stem = nn.Sequential(conv_bn_relu(3, width, 2), conv_bn_relu(width, 2 * width, 2),
                         conv_bn_relu(2 * width, 4 * width))
    head = conv_bn_relu(4 * width, 4 * width)
    return Backbone(stem, head, 4 * width, [head])


def build_backbone(name: str, weights: str | None = None, **kwargs: object) -> Backbone:
    return BACKBONES.get(name)(weights=weights, **kwargs)
