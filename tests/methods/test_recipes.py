"""Each paper row's recipe, as the optimisers see it: parameter groups (rate, momentum,
Nesterov, weight decay) and the rate at every epoch boundary, against tables transcribed from
the authors' code and papers. The rows come from search_spaces/ through the same resolution a
search uses (pair_defaults, trial_config_values); the bodies start from random weights (the
groups and schedules do not depend on them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from wsol.methods import build_method
from wsol.search.experiment import experiment_from_dict
from wsol.search.pair_spaces import load_spaces, pair_defaults, pair_recipes, pair_rungs
from wsol.search.trainable import trial_config_values
from wsol.trial.config import config_from_dict

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
CPU = torch.device("cpu")


def row_config(method: str, dataset: str, backbone: str, **trial: Any) -> dict[str, Any]:
    """The trial values of `method/backbone`'s first trial in a GPU experiment on `dataset`."""
    experiment = experiment_from_dict({
        "dataset": dataset, "methods": [method], "backbones": [backbone],
        "search_spaces": str(SPACES), "synthetic_preset": None,
        "resources_per_trial": {"cpu": 1, "gpu": 1}, "trial": {"weights": "imagenet"}})
    defaults = pair_defaults(experiment, load_spaces(experiment))
    values = trial_config_values({"pair": f"{method}/{backbone}"}, experiment.trial_base(),
                                 experiment.method_params, defaults)
    # Built here from random weights: no download, and so no pretrained fc to keep.
    return {**values, "weights": None, "keep_pretrained_fc": False, **trial}


def build(values: dict[str, Any], num_classes: int) -> Any:
    torch.manual_seed(0)
    return build_method(config_from_dict(values), num_classes, CPU)


def group_table(method: Any) -> dict[str, list[tuple[float, float, bool, float]]]:
    return {name: [(g["lr"], g["momentum"], g["nesterov"], g["weight_decay"])
                   for g in opt.param_groups]
            for name, opt in method.optimizers.items()}


def lrs_at(method: Any, epoch: int) -> dict[str, list[float]]:
    method.set_epoch(epoch)
    return {name: [g["lr"] for g in opt.param_groups] for name, opt in method.optimizers.items()}


# Rates per optimiser and group at epoch boundaries (0-based epochs), and the groups at epoch 0:
# (lr, momentum, nesterov, weight decay).
BGC_CUB_VGG16 = {  # bridging-gap-wsol configs/config_exp_vgg.yaml:18-42, trainer.py:173-179,
    # trainer.py:366-369 (x lr_decay_rate when epoch + 1 in [41, 61], main.py:58);
    # appendix B: 4e-3 body, 2e-2 new layers (lr_classifier_ratio 5)
    "epochs": 70,
    "groups": {"main": [(4e-3, 0.9, True, 5e-4), (2e-2, 0.9, True, 5e-4)]},
    "lr": {0: [4e-3, 2e-2], 39: [4e-3, 2e-2], 40: [8e-4, 4e-3], 59: [8e-4, 4e-3],
           60: [1.6e-4, 8e-4], 69: [1.6e-4, 8e-4]},
    # warm_batch_size 32 for the 20 warm epochs, batch_size 64 after (config lines 19, 33-34)
    "batch": {0: 32, 19: 32, 20: 64, 69: 64},
}
BGC_CUB_RESNET50 = {  # configs/config_exp.yaml:18-42 (70 epochs, points 41/61, rate 0.2);
    # appendix B: 2e-3 body, 2e-2 for layer4 and fc, weight decay 5e-4
    "epochs": 70,
    "groups": {"main": [(2e-3, 0.9, True, 5e-4), (2e-2, 0.9, True, 5e-4)]},
    "lr": {0: [2e-3, 2e-2], 39: [2e-3, 2e-2], 40: [4e-4, 4e-3], 60: [8e-5, 8e-4],
           69: [8e-5, 8e-4]},
}
BGC_ILSVRC_VGG16 = {  # the authors' reply, ejkim47/bridging-gap-wsol issue #1: 40 epochs,
    # lr 2e-5, ratio 5, decay 0.1 at points [11, 31]
    "epochs": 40,
    "groups": {"main": [(2e-5, 0.9, True, 5e-4), (1e-4, 0.9, True, 5e-4)]},
    "lr": {0: [2e-5, 1e-4], 9: [2e-5, 1e-4], 10: [2e-6, 1e-5], 29: [2e-6, 1e-5],
           30: [2e-7, 1e-6], 39: [2e-7, 1e-6]},
}
BGC_ILSVRC_RESNET50 = {  # issue #1: 30 epochs, lr 1e-5, ratio 10, decay 0.1 at [21, 31]
    "epochs": 30,
    "groups": {"main": [(1e-5, 0.9, True, 5e-4), (1e-4, 0.9, True, 5e-4)]},
    "lr": {0: [1e-5, 1e-4], 19: [1e-5, 1e-4], 20: [1e-6, 1e-5], 29: [1e-6, 1e-5]},
}
MINMAXCAM_CUB_RESNET50 = {  # shadowwkl/MinMaxCAM train.py:172-179 (200 epochs, steps 50 and
    # 100, lr 1e-4, wd 5e-4), 251-254 (net.base at lr, pred at lr x 10, Nesterov), 277
    # (MultiStepLR gamma 0.1, stepped after each epoch, line 480); stage II steps the same
    # classifier weights at pred's rate (one optimiser there, two here)
    "epochs": 200,
    "groups": {"main": [(1e-4, 0.9, True, 5e-4), (1e-3, 0.9, True, 5e-4)],
               "stage2": [(1e-3, 0.9, True, 5e-4)]},
    "lr": {0: [1e-4, 1e-3], 49: [1e-4, 1e-3], 50: [1e-5, 1e-4], 99: [1e-5, 1e-4],
           100: [1e-6, 1e-5], 199: [1e-6, 1e-5]},
}
MINMAXCAM_CUB_VGG16 = {  # train.py:267-271: features at lr, extra_conv and pred at lr x 10
    "epochs": 200,
    "groups": {"main": [(1e-4, 0.9, True, 5e-4), (1e-3, 0.9, True, 5e-4)],
               "stage2": [(1e-3, 0.9, True, 5e-4)]},
    "lr": {0: [1e-4, 1e-3], 50: [1e-5, 1e-4], 100: [1e-6, 1e-5]},
}
CAM_CUB_VGG16 = {  # clovaai/wsolevaluation main.py:155-161 (Nesterov), main.py:337-340 with
    # main.py:370 (x0.1 when (epoch + 1) % 15 == 0), config.py:197 (ratio 10); 50 epochs on CUB;
    # lr is searched (TrialConfig's 0.01 here); weight decay 5e-4 (README's commands)
    "epochs": 50,
    "groups": {"main": [(1e-2, 0.9, True, 5e-4), (1e-1, 0.9, True, 5e-4)]},
    "lr": {0: [1e-2, 1e-1], 13: [1e-2, 1e-1], 14: [1e-3, 1e-2], 29: [1e-4, 1e-3],
           44: [1e-5, 1e-4], 49: [1e-5, 1e-4]},
}
CAM_ILSVRC_RESNET50 = {  # 10 epochs, x0.1 when (epoch + 1) % 3 == 0
    "epochs": 10,
    "groups": {"main": [(1e-2, 0.9, True, 5e-4), (1e-1, 0.9, True, 5e-4)]},
    "lr": {0: [1e-2, 1e-1], 1: [1e-2, 1e-1], 2: [1e-3, 1e-2], 5: [1e-4, 1e-3],
           8: [1e-5, 1e-4], 9: [1e-5, 1e-4]},
}
WEIGHTMAP_CUB = {  # weight-map paper sec. 4: f SGD batch 16, lr 1e-3, 200 epochs, wd 1e-4,
    # lr / 10 every 80 epochs; g SGD batch 128, lr 1e-4, 100 epochs (no decay named)
    "epochs": 300,
    "groups": {"f": [(1e-3, 0.9, False, 1e-4)], "g": [(1e-4, 0.9, False, 1e-4)]},
    "lr": {0: [1e-3, 1e-4], 79: [1e-3, 1e-4], 80: [1e-4, 1e-4], 160: [1e-5, 1e-4],
           299: [1e-5, 1e-4]},
    "batch": {0: 16, 199: 16, 200: 128, 299: 128},
}

ROWS = [
    ("bgc", "cub", "vgg16", 200, BGC_CUB_VGG16),
    ("bgc", "cub", "resnet50", 200, BGC_CUB_RESNET50),
    ("bgc", "ilsvrc", "vgg16", 1000, BGC_ILSVRC_VGG16),
    ("bgc", "ilsvrc", "resnet50", 1000, BGC_ILSVRC_RESNET50),
    ("minmaxcam", "cub", "resnet50", 200, MINMAXCAM_CUB_RESNET50),
    ("minmaxcam", "cub", "vgg16", 200, MINMAXCAM_CUB_VGG16),
    ("cam", "cub", "vgg16", 200, CAM_CUB_VGG16),
    ("cam", "ilsvrc", "resnet50", 1000, CAM_ILSVRC_RESNET50),
    ("weightmap", "cub", "resnet18", 200, WEIGHTMAP_CUB),
]


@pytest.mark.parametrize(("method", "dataset", "backbone", "classes", "table"), ROWS,
                         ids=[f"{m}-{d}-{b}" for m, d, b, _, _ in ROWS])
def test_each_paper_row_gives_the_authors_optimiser_and_schedule(
        method: str, dataset: str, backbone: str, classes: int, table: dict) -> None:
    values = row_config(method, dataset, backbone)
    assert values["epochs"] == table["epochs"]
    built = build(values, classes)
    groups = group_table(built)
    for name, expected in table["groups"].items():
        assert [(pytest.approx(lr), m, n, pytest.approx(wd)) for lr, m, n, wd in expected] \
            == groups[name], name
    first = next(iter(table["groups"]))
    for epoch, expected in table["lr"].items():
        rates = lrs_at(built, epoch)
        if method == "weightmap":
            assert [rates["f"][0], rates["g"][0]] == pytest.approx(expected), epoch
        else:
            assert rates[first] == pytest.approx(expected), epoch
    for epoch, size in table.get("batch", {}).items():
        assert built.batch_size(epoch) == size, epoch


def test_resnet_layer4_rate_follows_the_paper_text_or_the_authors_code() -> None:
    """BGC appendix B puts layer4 at the higher rate (the default); MinMaxCAM's code
    (train.py:251-254) and BGC's (trainer.py:78-81) keep it at the body's: layer4_rate: base."""
    for rate, bgc_like in (("ratio", True), ("base", False)):
        method = build(row_config("bgc", "cub", "resnet50", layer4_rate=rate), 200)
        higher = {id(p) for p in method.optimizers["main"].param_groups[1]["params"]}
        layer4 = [id(p) for p in method.model.backbone.stem[-1].parameters()]
        assert all((i in higher) == bgc_like for i in layer4)
        assert {id(p) for p in method.model.fc.parameters()} <= higher
    minmax = build(row_config("minmaxcam", "cub", "resnet50"), 200)
    higher = {id(p) for p in minmax.optimizers["main"].param_groups[1]["params"]}
    assert higher == {id(p) for p in minmax.model.fc.parameters()}


def test_layer4_rate_base_is_refused_on_a_body_without_layer4() -> None:
    with pytest.raises(ValueError, match="layer4_rate: base applies to ResNets, not tiny"):
        build({"method": "cam", "backbone": "tiny", "layer4_rate": "base"}, 3)


def test_nesterov_needs_momentum() -> None:
    from wsol.trial.config import ConfigError

    with pytest.raises(ConfigError, match="Nesterov momentum needs momentum > 0"):
        config_from_dict({"momentum": 0.0, "nesterov": True})


def test_recipe_own_keeps_the_experiments_schedule() -> None:
    """A CPU experiment (or `recipe: own`) takes the rows' losses and rates only."""
    for recipe, epochs in (("own", 10), ("paper", 70)):
        experiment = experiment_from_dict({
            "dataset": "cub", "methods": ["bgc"], "backbones": ["vgg16"], "recipe": recipe,
            "search_spaces": str(SPACES), "synthetic_preset": None,
            "trial": {"weights": "imagenet"}})
        spaces = load_spaces(experiment)
        row = pair_defaults(experiment, spaces)["bgc/vgg16"]
        assert row["lr"] == 4e-3 and row.get("epochs", 10) == epochs
        assert ("warm" in row) == (recipe == "paper")
        assert pair_recipes(experiment, spaces)["bgc/vgg16"]["epochs"] == epochs


def test_asha_follows_each_pairs_epochs() -> None:
    """cub.yaml's pairs: CAM 50, MinMaxCAM 200, BGC 70 (warm 20), weight map 300 (f alone for
    200) epochs (their rows). The first rung comes after the warm-up and the classifier phase
    (a rung inside them would cut trials on an objective they have not trained yet); then
    grace_period 10 counts epochs of the shortest full-objective span (CAM's and BGC's 50),
    scaled ("fraction") or kept ("epochs")."""
    values = {"dataset": "cub", "methods": ["cam", "minmaxcam", "bgc", "weightmap"],
              "backbones": ["vgg16"], "search_spaces": str(SPACES), "synthetic_preset": None,
              "resources_per_trial": {"cpu": 1, "gpu": 1}, "trial": {"weights": "imagenet"}}
    for rungs, graces in (("fraction", (10, 40, 30, 220)), ("epochs", (10, 10, 30, 210))):
        experiment = experiment_from_dict({**values, "scheduler": {
            "type": "asha", "grace_period": 10, "reduction_factor": 3, "rungs": rungs}})
        found = pair_rungs(experiment, load_spaces(experiment))
        assert [tuple(found[f"{m}/vgg16"]) for m in values["methods"]] == \
            list(zip((50, 200, 70, 300), graces, strict=True))


def test_a_warm_up_longer_than_a_shortened_schedule_is_refused_on_load() -> None:
    """cub.yaml with `trial: {epochs: 10}`: BGC's row keeps warm 20, which never ends."""
    from wsol.trial.config import ConfigError

    experiment = experiment_from_dict({
        "dataset": "cub", "methods": ["bgc"], "backbones": ["vgg16"], "recipe": "paper",
        "search_spaces": str(SPACES), "synthetic_preset": None,
        "trial": {"weights": "imagenet", "epochs": 10}})
    with pytest.raises(ConfigError, match=r"bgc/vgg16: bgc needs warm < epochs, got warm=20 "
                                          r"and epochs=10"):
        load_spaces(experiment)


def test_paired_asha_runs_each_pair_on_its_own_rungs() -> None:
    """Ray's ASHA per pair: max_t and the rung epochs follow the pair's (max_t, grace)."""
    from wsol.search.pairs import PairedASHA

    scheduler = PairedASHA({"cam/vgg16": (50, 10), "minmaxcam/vgg16": (200, 40)}, "score",
                           "max", reduction_factor=3)
    found = {pair: (asha._max_t, sorted(epoch for epoch, _ in asha._brackets[0]._rungs))
             for pair, asha in scheduler.schedulers.items()}
    assert found == {"cam/vgg16": (50, [10, 30]), "minmaxcam/vgg16": (200, [40, 120])}
