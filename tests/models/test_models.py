"""Backbone architectures against the reference code, parameter groups, the generator.

Weight loading is tested in test_backbone_weights.py.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from wsol.models.backbones import BACKBONES, build_backbone
from wsol.models.classifier import CAMClassifier
from wsol.models.generator import UNetGenerator

# (backbone, large_feature_map) -> ((channels, side) of the stem's output, where BGC's
# attentive dropout acts; (channels, side) of the feature map), at a 224x224 input.
# Sides of the feature map as the reference code gives them:
# - vgg16: clovaai/wsolevaluation wsol/vgg.py, configs_dict["cam"]: "14x14" (pool1-4, no pool5)
#   and "28x28" (no pool4 either). Stem: up to conv4_3, before pool4 (BGC Sec. 5.1).
# - resnet50: wsolevaluation wsol/resnet.py ResNetCam: layer4 stride 1 -> 14; with
#   large_feature_map layer3 stride 1 too -> 28. Stem: up to layer4[0] (BGC Sec. 5.1).
# - resnet18: no reference; resnet50's recipe, so the same sides.
# - mobilenet_v2: shadowwkl/MinMaxCAM network_general.py MobileNetV2, strides 1,2,2,1,1,1,1
#   after the stride-2 first conv -> stride 8 -> 28. Stem: blocks 0-13 (96 channels).
# - inception_v3: wsolevaluation wsol/inception.py InceptionCam: 224 -> 112 (padded 1a) -> 110
#   -> 56 (ceil pool) -> 54 -> 28 (ceil pool) -> Mixed_5* 28 -> extra ceil pool 14 (skipped
#   with large_feature_map) -> Mixed_6a at stride 1 -> 14 (or 28).
# - tiny: ours, stride 4 -> 56.
# None: the backbone refuses large_feature_map=True.
FEATURE_MAPS: dict[tuple[str, bool], tuple[tuple[int, int], tuple[int, int]] | None] = {
    ("vgg16", False): ((512, 28), (1024, 14)),
    ("vgg16", True): ((512, 28), (1024, 28)),
    ("resnet50", False): ((2048, 14), (2048, 14)),
    ("resnet50", True): ((2048, 28), (2048, 28)),
    ("resnet18", False): ((512, 14), (512, 14)),
    ("resnet18", True): ((512, 28), (512, 28)),
    ("mobilenet_v2", False): ((96, 28), (1280, 28)),
    ("mobilenet_v2", True): None,
    ("inception_v3", False): ((288, 28), (1024, 14)),
    ("inception_v3", True): ((288, 28), (1024, 28)),
    ("tiny", False): ((128, 56), (128, 56)),
    ("tiny", True): None,
}
SUPPORTED = [key for key, sizes in FEATURE_MAPS.items() if sizes is not None]
REFUSED = [key for key, sizes in FEATURE_MAPS.items() if sizes is None]


def test_every_registered_backbone_is_in_the_table() -> None:
    assert set(BACKBONES.names()) == {"vgg16", "resnet50", "resnet18", "mobilenet_v2",
                                       "inception_v3", "tiny"}
    assert set(FEATURE_MAPS) == {(n, large) for n in BACKBONES.names() for large in (False, True)}


@pytest.mark.parametrize(("name", "large"), SUPPORTED)
def test_feature_map_sizes_at_224(name: str, large: bool) -> None:
    (stem_channels, stem_side), (channels, side) = FEATURE_MAPS[(name, large)]
    backbone = build_backbone(name, None, large_feature_map=large).eval()
    with torch.no_grad():
        middle = backbone.stem(torch.randn(1, 3, 224, 224))
        features = backbone.head(middle)
    assert middle.shape == (1, stem_channels, stem_side, stem_side)
    assert features.shape == (1, channels, side, side)
    assert backbone.out_channels == channels


@pytest.mark.parametrize(("name", "large"), REFUSED)
def test_large_feature_map_is_refused_where_the_reference_has_none(name: str, large: bool) -> None:
    with pytest.raises(ValueError, match=rf"{name} has no large_feature_map setting"):
        build_backbone(name, None, large_feature_map=large)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_builder_takes_weights_and_large_feature_map(name: str) -> None:
    """The method layer passes both to any backbone."""
    parameters = inspect.signature(BACKBONES.get(name)).parameters
    assert parameters["weights"].default is None
    assert parameters["large_feature_map"].default is False


def test_inception_follows_the_reference_layout() -> None:
    """wsolevaluation wsol/inception.py InceptionCam, beyond what the sizes show."""
    backbone = build_backbone("inception_v3", None)
    stem, head = backbone.stem, backbone.head
    assert stem.Conv2d_1a_3x3.conv.padding == (1, 1)
    assert [(p.padding, p.ceil_mode) for p in (stem.maxpool1, stem.maxpool2, head.maxpool3)] == [
        (1, True), (1, True), (0, True)]
    mixed_6a = head.Mixed_6a
    for conv in (mixed_6a.branch3x3.conv, mixed_6a.branch3x3dbl_3.conv):
        assert (conv.stride, conv.padding) == ((1, 1), (1, 1))
    assert [m.p for m in head.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5, 0.5]
    convs = [head.SPG_A3_1b[0], head.SPG_A3_2b[0]]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (768, 1024, (3, 3)), (1024, 1024, (3, 3))]
    new = {id(p) for p in backbone.parameters() if backbone.is_new(p)}
    assert new == {id(p) for c in convs for p in c.parameters()}


def test_inception_dropout_acts_in_training_only() -> None:
    """The reference's three dropouts are in the backbone: random in train, off in eval."""
    head = build_backbone("inception_v3", None).head
    middle = torch.randn(2, 288, 6, 6)  # what the stem gives for a small image
    with torch.no_grad():
        assert not torch.equal(head.train()(middle), head(middle))
        assert torch.equal(head.eval()(middle), head(middle))


def test_parameter_groups_give_new_layers_the_larger_rate() -> None:
    model = CAMClassifier(build_backbone("vgg16", None), num_classes=5)
    body, new = model.parameter_groups(lr=0.001, lr_classifier_ratio=10, weight_decay=5e-4)
    assert body["lr"] == pytest.approx(0.001) and new["lr"] == pytest.approx(0.01)
    ids = [id(p) for group in (body, new) for p in group["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    new_ids = {id(p) for p in new["params"]}
    assert id(model.fc.weight) in new_ids
    assert id(model.backbone.head[-1][0].weight) in new_ids  # the extra 1024 conv
    assert id(model.backbone.stem[0].weight) not in new_ids


def test_cam_is_the_class_weighted_sum_of_features() -> None:
    model = CAMClassifier(build_backbone("tiny", None), num_classes=3)
    features = torch.randn(2, 128, 4, 4)
    labels = torch.tensor([2, 0])
    expected = torch.stack([(model.fc.weight[c][:, None, None] * f).sum(0)
                            for c, f in zip(labels, features, strict=True)])
    torch.testing.assert_close(model.cams(features, labels), expected)


@pytest.mark.parametrize("encoder", ["tiny", "resnet18"])
def test_generator_maps_at_input_resolution(encoder: str) -> None:
    generator = UNetGenerator(encoder).eval()
    with torch.no_grad():
        maps = generator(torch.randn(2, 3, 72, 56))
    assert maps.shape == (2, 72, 56)
    assert float(maps.min()) > 0 and float(maps.max()) < 1
