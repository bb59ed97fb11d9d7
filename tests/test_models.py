"""Backbones, weight loading up to the download, parameter groups, the generator."""

from __future__ import annotations

import pytest
import torch
import torchvision
import torchvision.models as tvm
import torchvision.models._api

from wsol.models.backbones import BACKBONES, build_backbone
from wsol.models.classifier import CAMClassifier
from wsol.models.generator import UNetGenerator


@pytest.mark.parametrize(
    ("name", "kwargs", "channels", "side"),
    [
        ("vgg16", {}, 1024, 14),
        ("resnet50", {}, 2048, 14),
        ("resnet50", {"large_feature_map": True}, 2048, 28),
        ("resnet18", {}, 512, 14),
        ("mobilenet_v2", {}, 1280, 14),
        ("inception_v3", {}, 1024, 12),
        ("tiny", {}, 128, 56),
    ],
)
def test_feature_map_sizes_at_224(name: str, kwargs: dict, channels: int, side: int) -> None:
    backbone = build_backbone(name, None, **kwargs).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 224, 224))
    assert features.shape == (1, channels, side, side)
    assert backbone.out_channels == channels


def test_every_registered_backbone_is_tested() -> None:
    assert set(BACKBONES.names()) == {"vgg16", "resnet50", "resnet18", "mobilenet_v2",
                                       "inception_v3", "tiny"}


def test_weights_from_a_local_file(tmp_path) -> None:
    source = tvm.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    backbone = build_backbone("resnet18", str(path))
    assert torch.equal(backbone.stem[0].weight, source.conv1.weight)


def test_weights_file_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        build_backbone("resnet18", str(tmp_path / "nowhere.pth"))
    wrong = tmp_path / "vgg.pth"
    torch.save(tvm.vgg11(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match=r"vgg\.pth"):
        build_backbone("resnet18", str(wrong))


def test_imagenet_weights_go_through_torchvision_download(monkeypatch) -> None:
    """No network here: stop at the download and check what torchvision asked for."""
    requested = []

    def fake_download(url: str, *args, **kwargs):
        requested.append(url)
        return tvm.resnet50(weights=None).state_dict()

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    build_backbone("resnet50", "imagenet")
    assert requested == [tvm.ResNet50_Weights.DEFAULT.url]


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
