"""Backbone weights: the ImageNet entry per backbone, local state-dict files, clear refusals.

No network here: 'imagenet' is checked up to torchvision's download call, and local files are
state dicts of torchvision's own (randomly initialised) networks written by the test. Every
backbone with a PRETRAINED entry is checked, with what its registration states.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
import torchvision.models._api
from torch import nn

from wsol.methods.weightmap import plain_resnet
from wsol.models.backbones import (
    BACKBONES,
    INCEPTION_NEW_LAYERS,
    INCEPTION_UNUSED,
    PRETRAINED,
    Backbone,
    build_backbone,
)
from wsol.models.generator import UNetGenerator


def torchvision_network(name: str) -> nn.Module:
    """The torchvision network whose checkpoint the backbone loads, randomly initialised."""
    return PRETRAINED[name].network(weights=None)


def test_every_pretrained_backbone_has_an_imagenet_entry() -> None:
    assert set(PRETRAINED) == set(BACKBONES.names()) - {"tiny"}


@pytest.mark.parametrize("name", PRETRAINED)
def test_imagenet_is_the_v1_entry(name: str) -> None:
    """What the papers start from: the original ImageNet-1K weights of the backbone's own
    network, torchvision's IMAGENET1K_V1."""
    network = PRETRAINED[name].network
    weights = tvm.get_model_weights(network.func if isinstance(network, functools.partial)
                                    else network)
    assert PRETRAINED[name].imagenet is weights.IMAGENET1K_V1
    assert PRETRAINED[name].imagenet.name == "IMAGENET1K_V1"


def test_v1_is_not_torchvision_default_where_they_differ() -> None:
    assert PRETRAINED["resnet50"].imagenet is not tvm.ResNet50_Weights.DEFAULT
    assert PRETRAINED["mobilenet_v2"].imagenet is not tvm.MobileNet_V2_Weights.DEFAULT


class _Downloaded(Exception):
    pass


def _record_downloads(monkeypatch: pytest.MonkeyPatch, answer: Callable[[], dict] | None = None
                      ) -> list[str]:
    """Replace torchvision's download: record the URL, then answer or stop the build."""
    requested: list[str] = []

    def fake_download(url: str, *args: object, **kwargs: object) -> dict:
        requested.append(url)
        if answer is None:
            raise _Downloaded(url)
        return answer()

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    return requested


@pytest.mark.parametrize("name", PRETRAINED)
def test_imagenet_downloads_the_v1_file(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    requested = _record_downloads(monkeypatch)
    with pytest.raises(_Downloaded):
        build_backbone(name, "imagenet")
    assert requested == [PRETRAINED[name].imagenet.url]


def test_imagenet_weights_load_through_torchvision_download(monkeypatch) -> None:
    source = tvm.resnet50(weights=None)
    requested = _record_downloads(monkeypatch, source.state_dict)
    backbone = build_backbone("resnet50", "imagenet")
    assert requested == [tvm.ResNet50_Weights.IMAGENET1K_V1.url]
    assert torch.equal(backbone.stem[0].weight, source.conv1.weight)


@pytest.mark.parametrize("build", [UNetGenerator, plain_resnet])
def test_the_weight_maps_resnets_load_v1_too(build: Callable[[str, str], nn.Module],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The generator's encoder and the weight map's plain f are built from the same table."""
    requested = _record_downloads(monkeypatch)
    with pytest.raises(_Downloaded):
        build("resnet50", "imagenet")
    assert requested == [tvm.ResNet50_Weights.IMAGENET1K_V1.url]


def _randomised(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with every float tensor random, so equal values mean loaded values."""
    return {k: torch.randn_like(v) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}


def _assert_loaded(name: str, backbone: Backbone, state: dict[str, torch.Tensor]) -> None:
    """Every tensor of the backbone but those of the layers its registration says it adds has
    the values of one in the file."""
    by_shape: dict[tuple, list[torch.Tensor]] = {}
    for value in state.values():
        by_shape.setdefault(tuple(value.shape), []).append(value)
    named = {**dict(backbone.named_parameters()), **dict(backbone.named_buffers())}
    layers = BACKBONES.get(name).added(backbone)
    added = {id(t) for layer in layers for t in layer.state_dict(keep_vars=True).values()}
    assert len(added) == 2 * len(layers)  # each an added conv: its weight and bias
    for key, value in named.items():
        if key.endswith("num_batches_tracked"):
            continue
        loaded = any(torch.equal(value, c) for c in by_shape.get(tuple(value.shape), []))
        # Added layers keep their initialisation.
        assert loaded != (id(value) in added), key


# Every layout a pretrained backbone has: vgg16's large_feature_map (no pool4) re-indexes the
# layers as the reference does.
LAYOUTS = [(name, large) for name in PRETRAINED for large in (False, True)
           if not large or BACKBONES.get(name).large_feature_maps is not None]


@pytest.mark.parametrize(("name", "large"), LAYOUTS)
def test_every_backbone_loads_a_local_file(name: str, large: bool, tmp_path: Path) -> None:
    state = _randomised(torchvision_network(name))
    if name == "vgg16":  # the discarded classifier is 500 MB; the file may leave it out
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    _assert_loaded(name, build_backbone(name, str(path), large_feature_map=large), state)


def test_inception_loads_a_file_in_the_reference_layout(tmp_path: Path) -> None:
    """The reference strips Mixed_7*, AuxLogits and fc before loading; a file with the added
    convs (SPG_A3_*) loads them too."""
    state = {k: v for k, v in _randomised(torchvision_network("inception_v3")).items()
             if not k.startswith(INCEPTION_UNUSED)}
    state |= {"SPG_A3_1b.0.weight": torch.randn(1024, 768, 3, 3),
              "SPG_A3_1b.0.bias": torch.randn(1024),
              "SPG_A3_2b.0.weight": torch.randn(1024, 1024, 3, 3),
              "SPG_A3_2b.0.bias": torch.randn(1024)}
    torch.save(state, tmp_path / "reference.pth")
    backbone = build_backbone("inception_v3", str(tmp_path / "reference.pth"))
    assert INCEPTION_NEW_LAYERS == ("SPG_A3_1b.", "SPG_A3_2b.")
    assert torch.equal(backbone.head.SPG_A3_2b[0].weight, state["SPG_A3_2b.0.weight"])
    assert torch.equal(backbone.stem.Conv2d_1a_3x3.conv.weight, state["Conv2d_1a_3x3.conv.weight"])


# Refusals -----------------------------------------------------------------------------------


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        build_backbone("resnet18", str(tmp_path / "nowhere.pth"))


@pytest.mark.parametrize("name", PRETRAINED)
def test_another_networks_file_is_refused_naming_the_file(name: str, tmp_path: Path) -> None:
    other = tvm.mobilenet_v2 if name == "resnet18" else tvm.resnet18
    path = tmp_path / "other.pth"
    torch.save(other(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"weights file .*other\.pth"):
        build_backbone(name, str(path))


def test_a_file_lacking_parameters_is_refused(tmp_path: Path) -> None:
    state = tvm.resnet18(weights=None).state_dict()
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth lacks 1 parameters.*layer1\.0\.conv1"):
        build_backbone("resnet18", str(tmp_path / "partial.pth"))


def test_a_file_with_a_wrong_shape_is_refused(tmp_path: Path) -> None:
    state = tvm.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape\.pth: conv1\.weight has shape \(64, 3, 3, 3\)"):
        build_backbone("resnet18", str(tmp_path / "shape.pth"))


def test_a_file_that_is_no_state_dict_is_refused(tmp_path: Path) -> None:
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth is not a state dict"):
        build_backbone("resnet18", str(tmp_path / "list.pth"))
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.pth cannot be read"):
        build_backbone("resnet18", str(tmp_path / "text.pth"))


def test_discarded_heads_are_not_checked(tmp_path: Path) -> None:
    """A fine-tuned checkpoint with a 200-class fc still gives its body (the fc is dropped)."""
    source = tvm.resnet18(weights=None, num_classes=200)
    torch.save(source.state_dict(), tmp_path / "cub.pth")
    backbone = build_backbone("resnet18", str(tmp_path / "cub.pth"))
    assert torch.equal(backbone.stem[0].weight, source.conv1.weight)
