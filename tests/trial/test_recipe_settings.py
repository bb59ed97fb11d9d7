"""The recipe settings a trial carries out: the training transform, batch sizes per phase, the
new head's initialisation, the kept ILSVRC classifier and BGC's warm-up guard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torchvision import transforms

from wsol.data.transforms import train_transform
from wsol.methods import build_method
from wsol.search.experiment import experiment_from_dict
from wsol.search.pair_spaces import load_spaces, pair_recipes
from wsol.trial.config import TrialConfig
from wsol.trial.runner import Trial

SMALL = {"resize": 36, "crop": 32, "eval_size": 32, "batch_size": 8, "epochs": 4,
         "ivr_percentiles": [30.0]}
CPU = torch.device("cpu")
SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def trial(root: Path, tmp_path: Path, **values) -> Trial:
    return Trial(TrialConfig(data_root=str(root), **{**SMALL, **values}), tmp_path,
                 lambda _: None)


def flips(transform: transforms.Compose) -> list[type]:
    kinds = (transforms.RandomHorizontalFlip, transforms.RandomVerticalFlip)
    return [type(t) for t in transform.transforms if isinstance(t, kinds)]


@pytest.mark.parametrize(("method", "vertical"), [("cam", False), ("bgc", False),
                                                  ("minmaxcam", True), ("weightmap", False)])
def test_training_transform_per_method(method: str, vertical: bool) -> None:
    """MinMaxCAM's recipe adds vertical flips (shadowwkl/MinMaxCAM train.py:136); no other
    method's does (wsolevaluation and BGC data_loaders.py: horizontal flips only)."""
    backbone = "resnet18" if method == "weightmap" else "vgg16"
    experiment = experiment_from_dict({
        "dataset": "cub", "methods": [method], "backbones": [backbone],
        "search_spaces": str(SPACES), "synthetic_preset": None,
        "resources_per_trial": {"gpu": 1}, "trial": {"weights": "imagenet"}})
    recipe = pair_recipes(experiment, load_spaces(experiment))[f"{method}/{backbone}"]
    assert recipe["vertical_flip"] is vertical
    expected = [transforms.RandomHorizontalFlip,
                *([transforms.RandomVerticalFlip] if vertical else [])]
    assert flips(train_transform(vertical_flip=recipe["vertical_flip"])) == expected


def test_the_trial_trains_on_the_configured_transform(tiny_synth: Path, tmp_path: Path) -> None:
    plain = trial(tiny_synth, tmp_path / "a").train_data.transform
    both = trial(tiny_synth, tmp_path / "b", vertical_flip=True).train_data.transform
    assert flips(plain) == [transforms.RandomHorizontalFlip]
    assert flips(both) == [transforms.RandomHorizontalFlip, transforms.RandomVerticalFlip]


def test_bgc_batch_size_changes_after_the_warm_up(tiny_synth: Path, tmp_path: Path) -> None:
    """BGC's VGG16 recipe: warm_batch_size 32 during the warm-up, batch_size 64 after
    (configs/config_exp_vgg.yaml:33-34, main.py:55-56); here 4 then 8 on tiny data."""
    run = trial(tiny_synth, tmp_path, method="bgc", params={"warm": 2, "warm_batch_size": 4})
    assert [run._train_loader(epoch).batch_size for epoch in range(4)] == [4, 4, 8, 8]
    images, _, _ = next(iter(run._train_loader(0)))
    assert len(images) == 4


def test_weightmap_trains_f_and_g_at_their_own_batch_sizes(tiny_synth: Path,
                                                           tmp_path: Path) -> None:
    """The weight-map paper's f at batch 16, g at 128 (sec. 4); here 4 then 8."""
    run = trial(tiny_synth, tmp_path, method="weightmap",
                params={"classifier_epochs": 2, "classifier_batch_size": 4,
                        "generator_encoder": "tiny"})
    assert [run._train_loader(epoch).batch_size for epoch in range(4)] == [4, 4, 8, 8]


def test_weightmap_f_decays_on_its_own_milestones() -> None:
    config = TrialConfig(method="weightmap", backbone="tiny", epochs=6, lr=1e-3,
                         params={"classifier_epochs": 4, "classifier_lr_milestones": [2],
                                 "classifier_weight_decay": 1e-4, "generator_encoder": "tiny"})
    method = build_method(config, 3, CPU)
    assert method.optimizers["f"].param_groups[0]["weight_decay"] == 1e-4
    assert method.optimizers["g"].param_groups[0]["weight_decay"] == config.weight_decay
    method.set_epoch(2)
    assert method.optimizers["f"].param_groups[0]["lr"] == pytest.approx(1e-4)
    assert method.optimizers["g"].param_groups[0]["lr"] == pytest.approx(1e-4)  # generator_lr


def test_head_init_normal_is_n0_001_with_zero_bias() -> None:
    """wsolevaluation / BGC wsol/util.py:59-61: nn.init.normal_(weight, 0, 0.01), bias 0;
    PyTorch's default (uniform with bound 1/sqrt(fan_in) = 1/sqrt(128): std 0.051) otherwise."""
    stats = {}
    for mode in ("default", "normal"):
        torch.manual_seed(0)
        config = TrialConfig(method="cam", backbone="tiny", head_init=mode)
        fc = build_method(config, 1000, CPU).model.fc.requires_grad_(False)
        stats[mode] = (float(fc.weight.mean()), float(fc.weight.std()), float(fc.bias.abs().max()))
    mean, std, bias = stats["normal"]
    assert abs(mean) < 1e-3 and std == pytest.approx(0.01, rel=0.02) and bias == 0
    assert stats["default"][1] == pytest.approx(1 / (3 * 128) ** 0.5, rel=0.02)
    assert stats["default"][2] > 0


def test_ilsvrc_keeps_the_pretrained_fc(tmp_path: Path) -> None:
    """wsolevaluation wsol/resnet.py:465-469 and BGC wsol/resnet.py:217-221 keep `fc` on
    ILSVRC: the classifier starts from the weights file's (torchvision's state-dict format)."""
    torch.manual_seed(1)
    network = tvm.resnet18(weights=None)
    weights = tmp_path / "resnet18.pth"
    torch.save(network.state_dict(), weights)
    config = TrialConfig(method="cam", backbone="resnet18", weights=str(weights),
                         keep_pretrained_fc=True, head_init="normal")
    fc = build_method(config, 1000, CPU).model.fc
    assert torch.equal(fc.weight, network.fc.weight) and torch.equal(fc.bias, network.fc.bias)
    fresh = build_method(TrialConfig(method="cam", backbone="resnet18", weights=str(weights)),
                         1000, CPU).model.fc
    assert not torch.equal(fresh.weight, network.fc.weight)
    with pytest.raises(ValueError, match="has 1000 classes, the data 200"):
        build_method(config, 200, CPU)
    with pytest.raises(ValueError, match="keep_pretrained_fc needs pretrained weights"):
        build_method(TrialConfig(method="cam", backbone="resnet18", keep_pretrained_fc=True),
                     1000, CPU)


def test_bgc_refuses_a_warm_up_as_long_as_training() -> None:
    config = TrialConfig(method="bgc", backbone="tiny", epochs=5, params={"warm": 5})
    with pytest.raises(ValueError) as error:
        build_method(config, 3, CPU)
    assert str(error.value) == ("bgc needs warm < epochs, got warm=5 and epochs=5: L_sim and "
                                "L_norm would never be turned on")
    assert "\n" not in str(error.value)
    assert build_method(TrialConfig(method="bgc", backbone="tiny", epochs=6,
                                    params={"warm": 5}), 3, CPU).hp["warm"] == 5


def test_bgc_lowers_its_built_in_warm_up_with_a_note(capsys: pytest.CaptureFixture) -> None:
    method = build_method(TrialConfig(method="bgc", backbone="tiny", epochs=10), 3, CPU)
    assert method.hp["warm"] == 5
    assert "bgc warm 20 -> 5" in capsys.readouterr().err


@pytest.mark.parametrize(("key", "value", "message"), [
    ("classifier_batch_size", 0, "classifier_batch_size must be a positive integer"),
    ("classifier_weight_decay", "high", "classifier_weight_decay must be in"),
    ("classifier_lr_milestones", [0], "classifier_lr_milestones must be a list of epochs"),
])
def test_weightmap_phase_settings_are_checked(key: str, value: object, message: str) -> None:
    config = TrialConfig(method="weightmap", backbone="tiny", epochs=4,
                         params={key: value, "generator_encoder": "tiny"})
    with pytest.raises(ValueError, match=message):
        build_method(config, 3, CPU)


def test_bgc_warm_batch_size_is_checked() -> None:
    config = TrialConfig(method="bgc", backbone="tiny", epochs=4,
                         params={"warm": 1, "warm_batch_size": 0})
    with pytest.raises(ValueError, match="warm_batch_size must be a positive integer or null"):
        build_method(config, 3, CPU)
