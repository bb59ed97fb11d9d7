"""Backbone architectures against the reference code, parameter groups, the generator.

Weight loading is tested in test_backbone_weights.py.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from wsol.models.backbones import BACKBONES, FeatureMaps, build_backbone
from wsol.models.classifier import CAMClassifier
from wsol.models.generator import UNetGenerator


def feature_maps(name: str, large: bool) -> FeatureMaps | None:
    """What the backbone's registration says it gives at 224 x 224 (None: it refuses
    large_feature_map), with the reference code each side comes from."""
    registered = BACKBONES.get(name)
    return registered.large_feature_maps if large else registered.feature_maps


CASES = [(name, large) for name in BACKBONES.names() for large in (False, True)]
SUPPORTED = [case for case in CASES if feature_maps(*case) is not None]
REFUSED = [case for case in CASES if feature_maps(*case) is None]


def test_every_registered_backbone_is_checked() -> None:
    assert set(BACKBONES.names()) == {"vgg16", "resnet50", "resnet18", "mobilenet_v2",
                                       "inception_v3", "tiny"}
    assert REFUSED == [("mobilenet_v2", True), ("tiny", True)]


@pytest.mark.parametrize(("name", "large"), SUPPORTED)
def test_feature_map_sizes_at_224(name: str, large: bool) -> None:
    (stem_channels, stem_side), (channels, side) = feature_maps(name, large)
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
    parameters = inspect.signature(BACKBONES.get(name).build).parameters
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
