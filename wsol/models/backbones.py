"""Backbones as the papers' code builds them, cut into the two halves the methods need.

Every backbone is `head(stem(x))`: BGC's attentive dropout sits between the halves, at the
position its paper gives per architecture. `new_layers` are the layers the reference trains
with the larger learning rate (added convs, ResNet's layer4).

Sources, cited per builder:
- wsolevaluation: clovaai/wsolevaluation (Choe et al., "Evaluating WSOL Right", CVPR 2020),
  wsol/vgg.py, wsol/resnet.py, wsol/inception.py, and main.py for the learning-rate split.
- MinMaxCAM: shadowwkl/MinMaxCAM, network_general.py (MobileNetV2); paper Sec. 4.2.
- BGC: Kim et al., CVPR 2022, Sec. 5.1 "Implementation Details" (dropout positions).

Every builder takes (weights, large_feature_map). `weights` is None (random init), "imagenet"
(the torchvision IMAGENET1K_V1 checkpoint of its PRETRAINED entry) or a path to a local state
dict with torchvision's parameter names. large_feature_map is accepted only where the reference
code has it; elsewhere True is refused with a ValueError naming the backbone. Each registration
states the feature maps its builder gives, which the tests check for every registered backbone.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.models import inception

from wsol.common.factories import Factories


@dataclass(frozen=True)
class Pretrained:
    """A torchvision network and its ImageNet checkpoint: what `weights: imagenet` loads."""

    # Builds the network (weights=None) whose state dicts the checkpoint and local weights
    # files are.
    network: Callable[..., nn.Module]
    imagenet: tvm.WeightsEnum


# torchvision's ResNets: the CAM backbones here, the weight map's plain f and its generator's
# encoder (wsol.methods.weightmap, wsol.models.generator) are all built from this one table.
RESNETS: dict[str, Pretrained] = {
    "resnet18": Pretrained(tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": Pretrained(tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
}

# Per backbone, what it starts from. The reference and the papers start from the original
# ImageNet-1K weights (wsolevaluation downloads vgg16-397923af, resnet50-19c8e357 and
# inception_v3_google-1a9a5a14; MinMaxCAM loads mobilenet_v2-b0353104), which torchvision lists
# as IMAGENET1K_V1. Its DEFAULT is IMAGENET1K_V2 for ResNet50 and MobileNetV2: a newer
# training recipe that no paper here used.
PRETRAINED: dict[str, Pretrained] = {
    "vgg16": Pretrained(tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1),
    **RESNETS,
    "mobilenet_v2": Pretrained(tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1),
    # The backbone is built from torchvision's blocks (_inception_layers); the checkpoint is this
    # network's, auxiliary head included (no init: loaded values replace it).
    "inception_v3": Pretrained(
        functools.partial(tvm.inception_v3, aux_logits=True, init_weights=False),
        tvm.Inception_V3_Weights.IMAGENET1K_V1),
}


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


# Weights ------------------------------------------------------------------------------------


def _read_state_dict(weights: str, imagenet: tvm.WeightsEnum) -> tuple[Mapping, str]:
    """The state dict named by `weights` and how to name its source in an error."""
    if weights == "imagenet":
        return imagenet.get_state_dict(progress=True, check_hash=True), f"{imagenet} weights"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (or use 'imagenet' / none)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is no checkpoint
        raise ValueError(f"weights file {path} cannot be read as a state dict: {error}") from error
    if not isinstance(state, Mapping) or not all(
            isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"weights file {path} is not a state dict (parameter name -> tensor)")
    return state, f"weights file {path}"


def load_weights(
    model: nn.Module, weights: str, imagenet: tvm.WeightsEnum,
    unused: tuple[str, ...] = (), new: tuple[str, ...] = (),
) -> None:
    """Load by parameter name, as the reference does (strict=False), but refuse what it would
    silently skip: an unknown name, a missing non-new parameter, a wrong shape.

    unused: name prefixes of the parts the backbone discards (classifier heads, Inception's
    Mixed_7* and AuxLogits); never loaded nor checked, in the model or in the file.
    new: name prefixes of layers torchvision's checkpoints lack (added convs); kept at their
    initialisation when the file lacks them.
    """
    state, source = _read_state_dict(weights, imagenet)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(unused)}
    given = {k: v for k, v in state.items() if not k.startswith(unused)}
    unknown = [k for k in given if k not in own]
    if unknown:
        raise ValueError(f"{source} has parameters this backbone does not know, e.g. {unknown[0]}")
    # Old checkpoints predate BatchNorm's counter; it is no weight.
    missing = [k for k in own if k not in given and not k.startswith(new)
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{source} lacks {len(missing)} parameters, e.g. {missing[0]}")
    wrong = [k for k in given if given[k].shape != own[k].shape]
    if wrong:
        k = wrong[0]
        raise ValueError(f"{source}: {k} has shape {tuple(given[k].shape)}, "
                         f"the backbone expects {tuple(own[k].shape)}")
    model.load_state_dict(given, strict=False)


def load_torchvision(pretrained: Pretrained, weights: str | None,
                     unused: tuple[str, ...] = ()) -> nn.Module:
    """torchvision's network with random, ImageNet ('imagenet') or local-file weights."""
    model = pretrained.network(weights=None)
    if weights is not None:
        load_weights(model, weights, pretrained.imagenet, unused=unused)
    return model


def pretrained_fc(name: str, weights: str, num_classes: int) -> dict[str, torch.Tensor]:
    """The `fc.weight` and `fc.bias` of a ResNet's pretrained weights, for a dataset with the
    weights' own classes: wsolevaluation and BGC keep them on ILSVRC (wsol/resnet.py
    load_pretrained_model: `fc` is removed unless dataset_name is 'ILSVRC')."""
    if name not in RESNETS:
        raise ValueError(f"keep_pretrained_fc applies to {', '.join(RESNETS)}, not {name}; "
                         "set keep_pretrained_fc: false")
    state, source = _read_state_dict(weights, RESNETS[name].imagenet)
    head = {key: state.get(f"fc.{key}") for key in ("weight", "bias")}
    if head["weight"] is None or head["bias"] is None:
        raise ValueError(f"keep_pretrained_fc: {source} has no fc.weight and fc.bias")
    if head["weight"].shape[0] != num_classes:
        raise ValueError(f"keep_pretrained_fc: {source} has {head['weight'].shape[0]} classes, "
                         f"the data {num_classes}; set keep_pretrained_fc: false")
    return {key: value for key, value in head.items() if value is not None}


# Registration -------------------------------------------------------------------------------


class FeatureMaps(NamedTuple):
    """(channels, side) at a 224 x 224 input of the stem's output, where BGC's attentive
    dropout acts, and of the feature map."""

    stem: tuple[int, int]
    features: tuple[int, int]


Builder = Callable[..., Backbone]


def _adds_nothing(backbone: Backbone) -> list[nn.Module]:
    return []


@dataclass(frozen=True)
class Registered:
    """A backbone's builder and what it must give, stated where it is registered so that the
    tests check every registered backbone without tables of their own."""

    build: Builder
    # Without large_feature_map, and with it (None: the builder refuses it).
    feature_maps: FeatureMaps
    large_feature_maps: FeatureMaps | None
    # The layers it adds to its PRETRAINED network: its checkpoints lack them, so they keep
    # their initialisation when weights load.
    added: Callable[[Backbone], list[nn.Module]] = _adds_nothing


BACKBONES: Factories[Registered] = Factories("backbone")


def register(name: str, feature_maps: FeatureMaps, large_feature_maps: FeatureMaps | None,
             added: Callable[[Backbone], list[nn.Module]] = _adds_nothing
             ) -> Callable[[Builder], Builder]:
    """Register a builder under `name` with the feature maps it gives (see Registered)."""

    def decorate(build: Builder) -> Builder:
        BACKBONES.register(name)(Registered(build, feature_maps, large_feature_maps, added))
        return build

    return decorate


# Shared pieces ------------------------------------------------------------------------------


def _reference_init(module: nn.Module, mode: str) -> None:
    """wsolevaluation wsol/util.py initialize_weights: 'he' (kaiming normal, fan_out) or
    'xavier' (uniform) for convs with zero bias; BatchNorm at weight 1, bias 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            if mode == "he":
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def _unstride(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and layer.stride == (2, 2):
            layer.stride = (1, 1)


def _extra_conv(in_channels: int, out_channels: int = 1024, init: str = "xavier") -> nn.Sequential:
    """An added 3x3 conv + ReLU, initialised as the reference initialises it."""
    block = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                          nn.ReLU(inplace=True))
    _reference_init(block, init)
    return block


def _no_large_feature_map(name: str, large_feature_map: bool, why: str) -> None:
    if large_feature_map:
        raise ValueError(f"{name} has no large_feature_map setting {why}; "
                         "use large_feature_map: false")


# VGG16 --------------------------------------------------------------------------------------


# wsolevaluation wsol/vgg.py, configs_dict["cam"]: "14x14" (pool1-4, no pool5) and "28x28"
# (no pool4 either); the stem ends at conv4_3, before pool4 (BGC Sec. 5.1).
@register("vgg16", FeatureMaps((512, 28), (1024, 14)), FeatureMaps((512, 28), (1024, 28)),
          added=lambda backbone: [list(backbone.head.children())[-1]])
def vgg16(weights: str | None = None, large_feature_map: bool = False) -> Backbone:
    """VGG16-GAP as wsolevaluation wsol/vgg.py (VggCam, configs 'cam'): the conv layers without
    pool5, then conv6 (3x3, 1024, 'he' init) + ReLU: 14x14 at 224. large_feature_map drops
    pool4 as well (its '28x28' config): 28x28.

    Dropout point: before pool4, "the last pooling layer" (BGC Sec. 5.1); with
    large_feature_map, at the same depth (after conv4_3). New layer: conv6 (wsolevaluation
    main.py trains all but 'features.' at the larger rate).
    """
    network = load_torchvision(PRETRAINED["vgg16"], weights, unused=("classifier.",))
    features = cast(nn.Sequential, network.features)
    # torchvision's features: 23 is pool4, 30 is pool5.
    extra = _extra_conv(512, init="he")
    head = features[24:30] if large_feature_map else features[23:30]
    return Backbone(features[:23], nn.Sequential(*head, extra), 1024, [extra])


# ResNet -------------------------------------------------------------------------------------


def _resnet(name: str, weights: str | None, large_feature_map: bool) -> Backbone:
    """wsolevaluation wsol/resnet.py (ResNetCam): layer4 at stride 1 (14x14 at 224); with
    large_feature_map layer3 too (28x28), the setting BGC (Sec. 5.1: "the stride of the third
    layer to 1") and MinMaxCAM's code (resnet50_cvpr) use.

    Dropout point: after the first block of layer4 (BGC Sec. 5.1). New layers: layer4
    (wsolevaluation main.py trains 'layer4.' and 'fc.' at the larger rate).
    """
    net: tvm.ResNet = load_torchvision(RESNETS[name], weights, unused=("fc.",))
    if weights is None:
        _reference_init(net, "xavier")  # ResNetCam's init
    _unstride(net.layer4[0])
    if large_feature_map:
        _unstride(net.layer3[0])
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                         net.layer3, net.layer4[0])
    return Backbone(stem, net.layer4[1:], net.fc.in_features, [net.layer4])


# wsolevaluation wsol/resnet.py ResNetCam: layer4 at stride 1 -> 14; with large_feature_map
# layer3 too -> 28. The stem ends at layer4[0] (BGC Sec. 5.1).
@register("resnet50", FeatureMaps((2048, 14), (2048, 14)), FeatureMaps((2048, 28), (2048, 28)))
def resnet50(weights: str | None = None, large_feature_map: bool = False) -> Backbone:
    """ResNet50 CAM (wsolevaluation wsol/resnet.py): 14x14 at 224, 28x28 with large_feature_map."""
    return _resnet("resnet50", weights, large_feature_map)


# No reference: ResNet50's recipe, so the same sides.
@register("resnet18", FeatureMaps((512, 14), (512, 14)), FeatureMaps((512, 28), (512, 28)))
def resnet18(weights: str | None = None, large_feature_map: bool = False) -> Backbone:
    """ResNet18 on ResNet50's recipe. No WSOL reference builds a ResNet18 CAM backbone
    (wsolevaluation's ResNetCam takes any block but exports resnet50 only); the weight-map
    method's plain stride-32 f is built in wsol.methods.weightmap, not here."""
    return _resnet("resnet18", weights, large_feature_map)


# MobileNetV2 --------------------------------------------------------------------------------


# shadowwkl/MinMaxCAM network_general.py MobileNetV2: strides 1,2,2,1,1,1,1 after the stride-2
# first conv -> stride 8 -> 28. The stem is blocks 0-13 (96 channels).
@register("mobilenet_v2", FeatureMaps((96, 28), (1280, 28)), None)
def mobilenet_v2(weights: str | None = None, large_feature_map: bool = False) -> Backbone:
    """MinMaxCAM's MobileNetV2 (shadowwkl/MinMaxCAM network_general.py, MobileNetV2: strides
    1,2,2,1,1,1,1 for the seven stages): the 64-channel stage (features[7]) and the 160-channel
    stage (features[14]) at stride 1, so stride 8: 28x28 at 224 (MinMaxCAM Sec. 4.2: "changing
    the stride of convolution layers from 2 to 1"). The feature map is after the final 1x1 conv
    (1280 channels). wsolevaluation has no MobileNetV2 and MinMaxCAM's code has this one
    layout, so large_feature_map is refused.

    Dropout point: before block 14 (no paper places one in MobileNetV2). No new layers.
    """
    _no_large_feature_map("mobilenet_v2", large_feature_map,
                          "in the reference code (MinMaxCAM's single layout is 28x28 already)")
    network = load_torchvision(PRETRAINED["mobilenet_v2"], weights, unused=("classifier.",))
    features = cast(nn.Sequential, network.features)
    _unstride(features[7])
    _unstride(features[14])
    return Backbone(features[:14], features[14:], 1280, [])


# InceptionV3 --------------------------------------------------------------------------------


class _Mixed6aStride1(inception.InceptionB):
    """torchvision's InceptionB without its down-sampling, as wsolevaluation's Mixed_6a
    (wsol/inception.py: InceptionB(288, kernel_size=3, stride=1, padding=1)): both 3x3 stride-2
    convs at stride 1 with padding 1, the pool branch at stride 1 with padding 1. Names and
    shapes stay torchvision's, so its Mixed_6a weights load."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels)
        for block in (self.branch3x3, self.branch3x3dbl_3):
            block.conv.stride = (1, 1)
            block.conv.padding = (1, 1)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3(x)
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return [branch3x3, double, pooled]


# Layers the reference adds to InceptionV3; torchvision's checkpoints lack them.
INCEPTION_NEW_LAYERS = ("SPG_A3_1b.", "SPG_A3_2b.")
# Parts of torchvision's InceptionV3 the reference drops (its load_pretrained_model removes them).
INCEPTION_UNUSED = ("Mixed_7", "AuxLogits.", "fc.")


def _inception_layers(large_feature_map: bool) -> nn.Sequential:
    """wsolevaluation wsol/inception.py (InceptionCam) from torchvision's blocks, named as
    torchvision names them so its weights load by name."""
    conv = inception.BasicConv2d

    def pool(padding: int) -> nn.MaxPool2d:
        return nn.MaxPool2d(3, stride=2, padding=padding, ceil_mode=True)

    return nn.Sequential(OrderedDict([
        # Padded, unlike torchvision's (which has padding 0).
        ("Conv2d_1a_3x3", conv(3, 32, kernel_size=3, stride=2, padding=1)),
        ("Conv2d_2a_3x3", conv(32, 32, kernel_size=3)),
        ("Conv2d_2b_3x3", conv(32, 64, kernel_size=3, padding=1)),
        ("maxpool1", pool(1)),
        ("Conv2d_3b_1x1", conv(64, 80, kernel_size=1)),
        ("Conv2d_4a_3x3", conv(80, 192, kernel_size=3)),
        ("maxpool2", pool(1)),
        ("Mixed_5b", inception.InceptionA(192, pool_features=32)),
        ("Mixed_5c", inception.InceptionA(256, pool_features=64)),
        ("Mixed_5d", inception.InceptionA(288, pool_features=64)),
        # The down-sampling Mixed_6a no longer does, skipped for the large feature map.
        ("maxpool3", nn.Identity() if large_feature_map else pool(0)),
        ("Mixed_6a", _Mixed6aStride1(288)),
        ("Mixed_6b", inception.InceptionC(768, channels_7x7=128)),
        ("Mixed_6c", inception.InceptionC(768, channels_7x7=160)),
        ("Mixed_6d", inception.InceptionC(768, channels_7x7=160)),
        ("Mixed_6e", inception.InceptionC(768, channels_7x7=192)),
        # The reference's forward: dropout 0.5 after Mixed_6e and after each added conv.
        ("dropout_6e", nn.Dropout(0.5)),
        ("SPG_A3_1b", _extra_conv(768)),
        ("dropout_A3_1b", nn.Dropout(0.5)),
        ("SPG_A3_2b", _extra_conv(1024)),
        ("dropout_A3_2b", nn.Dropout(0.5)),
    ]))


# wsolevaluation wsol/inception.py InceptionCam: 224 -> 112 (padded 1a) -> 110 -> 56 (ceil
# pool) -> 54 -> 28 (ceil pool) -> Mixed_5* 28 -> extra ceil pool 14 (skipped with
# large_feature_map) -> Mixed_6a at stride 1 -> 14 (or 28).
@register("inception_v3", FeatureMaps((288, 28), (1024, 14)), FeatureMaps((288, 28), (1024, 28)),
          added=lambda backbone: [backbone.head.get_submodule("SPG_A3_1b"),
                                  backbone.head.get_submodule("SPG_A3_2b")])
def inception_v3(weights: str | None = None, large_feature_map: bool = False) -> Backbone:
    """InceptionV3 CAM as wsolevaluation wsol/inception.py (InceptionCam): torchvision's layers
    up to Mixed_6e with a padded first conv, ceil-mode pools, Mixed_6a at stride 1 behind an
    extra max-pool, then two 3x3 1024-channel convs (SPG_A3_1b, SPG_A3_2b) + ReLU, with the
    reference's dropouts: 14x14 at 224; large_feature_map skips the extra pool: 28x28.

    Weights load by name with INCEPTION_UNUSED dropped and the INCEPTION_NEW_LAYERS left at
    their xavier init, as the reference does. Like the reference, the input is the usual
    ImageNet-normalised image: no torchvision transform_input.
    Dropout point: before the extra pool and Mixed_6a (where wsolevaluation's InceptionAdl puts
    its first ADL, ADL_5d). New layers: the two added convs (wsolevaluation main.py).
    """
    layers = _inception_layers(large_feature_map)
    _reference_init(layers, "xavier")  # InceptionCam's init; loaded weights overwrite it
    if weights is not None:
        load_weights(layers, weights, PRETRAINED["inception_v3"].imagenet,
                     unused=INCEPTION_UNUSED, new=INCEPTION_NEW_LAYERS)
    split = list(layers._modules).index("maxpool3")
    return Backbone(layers[:split], layers[split:], 1024,
                    [layers.get_submodule("SPG_A3_1b"), layers.get_submodule("SPG_A3_2b")])


# Tiny ---------------------------------------------------------------------------------------


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


# Ours: stride 4 -> 56.
@register("tiny", FeatureMaps((128, 56), (128, 56)), None)
def tiny(weights: str | None = None, large_feature_map: bool = False, width: int = 32) -> Backbone:
    """Four conv layers at stride 4: trains in minutes on 2 CPU cores (demo and tests).

    weights: None (random init), "synthetic-pretrained" (pretrained on a separate synthetic
    classification task, built and cached on first use: wsol.models.synthetic_pretrained) or
    a path to a state dict of this body; loaded strictly (the pretraining head is not in it).
    """
    if weights == "imagenet":
        raise ValueError("the tiny backbone has no ImageNet weights; use weights: null, "
                         "synthetic-pretrained or a path")
    _no_large_feature_map("tiny", large_feature_map, "(it is ours, at stride 4 already)")
    stem = nn.Sequential(conv_bn_relu(3, width, 2), conv_bn_relu(width, 2 * width, 2),
                         conv_bn_relu(2 * width, 4 * width))
    head = conv_bn_relu(4 * width, 4 * width)
    backbone = Backbone(stem, head, 4 * width, [head])
    if weights is not None:
        from wsol.models.synthetic_pretrained import load_body  # it builds this backbone

        load_body(backbone, weights, width)
    return backbone


def build_backbone(name: str, weights: str | None = None, large_feature_map: bool = False,
                   **kwargs: object) -> Backbone:
    return BACKBONES.get(name).build(weights=weights, large_feature_map=large_feature_map,
                                     **kwargs)
