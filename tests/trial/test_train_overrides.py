"""`wsol train --set KEY=VALUE`, and defaults that cannot fit the data being adapted or refused.

A first run must not need a YAML file to change one value, nor fail on an author's default
(MinMaxCAM's 12 classes per batch, the weight map's 5 classifier epochs) that the small demo
data cannot hold; a value the user chose is never changed behind their back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from wsol.cli import main
from wsol.methods import METHODS, build_method
from wsol.trial.config import TrialConfig, apply_overrides, load_config, parse_overrides
from wsol.trial.runner import run_trial

SMALL = {"resize": 36, "crop": 32, "eval_size": 32, "batch_size": 8, "lr": 0.02,
         "ivr_percentiles": [30.0, 60.0]}
HYPERPARAMETERS = {name: METHODS.get(name).defaults for name in METHODS.names()}
CPU = torch.device("cpu")


def small_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "small.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in SMALL.items()) + extra)
    return path


def train(tiny_synth: Path, tmp_path: Path, *args: str, extra: str = "") -> int:
    """`wsol train` on the tiny synthetic set with small images, one epoch unless overridden."""
    return main(["train", "--config", str(small_config(tmp_path, extra)), "--data-root",
                 str(tiny_synth), "--epochs", "1", "--out", str(tmp_path / "run"), *args])


def test_set_reaches_the_saved_config(tiny_synth: Path, tmp_path: Path, capsys) -> None:
    # The file sets lr and weights, the flag epochs: --set wins over both (null included).
    code = train(tiny_synth, tmp_path, "--method", "minmaxcam", "--epochs", "3",
                 "--set", "epochs=1", "--set", "lr=1e-3", "--set", "normalisations=[minmax,ivr]",
                 "--set", "weights=null", "--set", "lambda2=0.5", "--set", "classes_per_batch=2",
                 "--set", "set_size=2", extra="weights: imagenet\n")
    assert code == 0, capsys.readouterr().err
    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["config"]
    assert saved["epochs"] == 1
    assert saved["lr"] == 0.001 and isinstance(saved["lr"], float)
    assert saved["normalisations"] == ["minmax", "ivr"]
    assert saved["weights"] is None
    assert saved["params"] == {"lambda2": 0.5, "classes_per_batch": 2, "set_size": 2}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["method"] == "minmaxcam"
    assert {label.split("@")[0] for label in metrics["metrics"]["candidates"]} == {"minmax",
                                                                                 "ivr"}
    assert "note:" not in capsys.readouterr().err  # every value was set, nothing adapted


def test_precedence_defaults_file_flags_set(tmp_path: Path) -> None:
    path = small_config(tmp_path, "epochs: 5\nseed: 7\nmomentum: 0.5\n")
    config = load_config(path, {"epochs": 3, "seed": 2})
    config = apply_overrides(config, parse_overrides(["epochs=2"]), HYPERPARAMETERS)
    assert (config.epochs, config.seed, config.momentum, config.weight_decay) == (2, 2, 0.5, 5e-4)


def test_values_are_read_as_yaml(tmp_path: Path) -> None:
    values = parse_overrides(["lr=1e-3", "lr_milestones=[3, 6]", "weights=null", "amp=true",
                              "device = cpu", "lambda_drop=2e0"])
    config = apply_overrides(TrialConfig(method="bgc"), values, HYPERPARAMETERS)
    assert config.lr == 0.001
    assert config.lr_milestones == [3, 6]
    assert config.weights is None and config.amp is True and config.device == "cpu"
    assert config.params == {"lambda_drop": 2.0}


MALFORMED = [
    (["--set", "epoch=3"], "epoch", "unknown key; did you mean epochs?"),
    (["--set", "xyzzy=0.1"], "xyzzy", "unknown key; trial fields: amp,"),
    (["--set", "epochs=ten"], "epochs", "'ten' is not an int"),
    (["--set", "lr=-1"], "lr", "-1 is not > 0"),
    (["--set", "normalisations=minmax"], "normalisations",
     "a list is written normalisations=[minmax]"),
    (["--set", "normalisations=[minmax,bogus]"], "normalisations", "'bogus' is not one of"),
    (["--set", "batch_size=null"], "batch_size", "None is not an int"),
    (["--set", "lr"], "lr", "expected KEY=VALUE"),
    (["--set", "lr=0.1", "--set", "lr=0.2"], "lr", "given twice (lr=0.1 and lr=0.2)"),
    (["--method", "cam", "--set", "lambda1=2"], "lambda1",
     "not a hyperparameter of cam (it belongs to minmaxcam)"),
    (["--method", "minmaxcam", "--set", "lambda1=abc"], "lambda1", "'abc' is not a number"),
    (["--method", "minmaxcam", "--set", "set_size=2.5"], "set_size", "2.5 is not an int"),
    (["--set", "params.lambda1=2"], "params.lambda1", "nested keys are not supported"),
    (["--set", "params={lambda1: 2}"], "params", "one at a time"),
    (["--set", "lr="], "lr", "empty value"),
    (["--set", "=3"], "=3", "the key is empty"),
    (["--set", "normalisations=[minmax"], "normalisations", "is not a YAML value"),
    (["--set", "method=nosuch"], "method", "unknown method 'nosuch'"),
    (["--set", "curve_interval=0.05"], "curve_interval", "0.05 is not 0.01 or 0.001"),
    (["--set", "amp=maybe"], "amp", "'maybe' is not a bool"),
]


@pytest.mark.parametrize(("args", "key", "says"), MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_set_is_a_one_line_usage_error(tiny_synth: Path, tmp_path: Path, capsys,
                                                 args: list[str], key: str, says: str) -> None:
    assert train(tiny_synth, tmp_path, *args) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"wsol train: error: --set {key}: "), lines[0]
    assert says in lines[0]
    assert not (tmp_path / "run").exists()


def test_help_lists_set(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--set KEY=VALUE" in text
    assert "hyperparameter of the method" in text and "repeatable" in text


# Defaults that cannot fit the data ------------------------------------------------------------

EIGHT_CLASSES = [i % 8 for i in range(80)]


def test_minmaxcam_default_classes_per_batch_adapts_to_the_classes_present(capsys) -> None:
    method = build_method(TrialConfig(method="minmaxcam", backbone="tiny"), 8, CPU)
    sampler = method.batch_sampler(EIGHT_CLASSES, seed=0)
    assert sampler.classes_per_batch == 8
    assert capsys.readouterr().err == ("note: minmaxcam classes_per_batch 12 -> 8 (the data has "
                                       "8 classes); set it to silence this\n")
    method.batch_sampler(EIGHT_CLASSES, seed=0)  # every epoch asks again: one note only
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("params", [{"classes_per_batch": 12},
                                    {"classes_per_batch": 6, "variant": "II",
                                     "generator_encoder": "tiny", "classifier_epochs": 1}])
def test_a_classes_per_batch_the_user_set_is_refused(capsys, params: dict) -> None:
    """Anything in params counts as set: a config file, --set, a search's sampled value."""
    method_name = "weightmap" if "variant" in params else "minmaxcam"
    config = TrialConfig(method=method_name, backbone="tiny", epochs=3, params=params)
    method = build_method(config, 4, CPU)
    wanted = params["classes_per_batch"]
    with pytest.raises(ValueError, match=rf"classes_per_batch={wanted} does not fit the data: "
                       r".* train has 4 classes; set classes_per_batch between 1 and 4"):
        method.batch_sampler([i % 4 for i in range(40)], seed=0)
    assert "note:" not in capsys.readouterr().err


def test_weightmap_variant_two_adapts_its_default_classes_per_batch(capsys) -> None:
    params = {"variant": "II", "generator_encoder": "tiny", "classifier_epochs": 1}
    method = build_method(TrialConfig(method="weightmap", backbone="tiny", epochs=3,
                                      params=params), 4, CPU)
    assert method.batch_sampler([i % 4 for i in range(40)], seed=0).classes_per_batch == 4
    assert "note: weightmap classes_per_batch 8 -> 4 (the data has 4 classes)" in \
        capsys.readouterr().err


def test_cli_minmaxcam_with_defaults_runs_on_fewer_classes(tiny_synth: Path, tmp_path: Path,
                                                           capsys) -> None:
    assert train(tiny_synth, tmp_path, "--method", "minmaxcam") == 0
    err = capsys.readouterr().err
    assert "note: minmaxcam classes_per_batch 12 -> 4 (the data has 4 classes); set it to " \
           "silence this" in err
    assert (tmp_path / "run" / "best.pt").exists()


@pytest.mark.parametrize("where", ["--set", "config file"])
def test_cli_minmaxcam_refuses_the_users_classes_per_batch(tiny_synth: Path, tmp_path: Path,
                                                           capsys, where: str) -> None:
    if where == "--set":
        code = train(tiny_synth, tmp_path, "--method", "minmaxcam",
                     "--set", "classes_per_batch=6")
    else:
        code = train(tiny_synth, tmp_path, "--method", "minmaxcam",
                     extra="params:\n  classes_per_batch: 6\n")
    assert code == 2
    err = capsys.readouterr().err
    assert "minmaxcam classes_per_batch=6 does not fit the data" in err
    assert "train has 4 classes" in err and "note:" not in err


def test_cli_weightmap_with_defaults_adapts_classifier_epochs(tiny_synth: Path, tmp_path: Path,
                                                              capsys) -> None:
    assert train(tiny_synth, tmp_path, "--method", "weightmap", "--epochs", "2",
                 "--set", "generator_encoder=tiny") == 0
    err = capsys.readouterr().err
    assert "note: weightmap classifier_epochs 5 -> 1 (it must be below epochs=2; half the " \
           "epochs go to the classifier); set it to silence this" in err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["selected_epoch"] == 1  # epoch 0 trained f, epoch 1 trained g


def test_weightmap_default_classifier_epochs_adapts_to_half_the_epochs(capsys) -> None:
    config = TrialConfig(method="weightmap", backbone="tiny", epochs=4,
                         params={"generator_encoder": "tiny"})
    method = build_method(config, 4, CPU)
    assert method.hp["classifier_epochs"] == 2
    assert [method.evaluates(epoch) for epoch in range(4)] == [False, False, True, True]
    assert capsys.readouterr().err == ("note: weightmap classifier_epochs 5 -> 2 (it must be "
                                       "below epochs=4; half the epochs go to the classifier); "
                                       "set it to silence this\n")
    assert config.params == {"generator_encoder": "tiny"}  # resume compares the config as given


@pytest.mark.parametrize(("epochs", "classifier_epochs", "fix"), [
    (2, 5, "set classifier_epochs to 1"),
    (3, 3, "set classifier_epochs between 1 and 2"),
    (3, 0, "set classifier_epochs between 1 and 2"),
])
def test_weightmap_refuses_the_users_classifier_epochs(tmp_path: Path, epochs: int,
                                                       classifier_epochs: int, fix: str,
                                                       capsys) -> None:
    params = {"generator_encoder": "tiny", "classifier_epochs": classifier_epochs}
    config = TrialConfig(method="weightmap", backbone="tiny", epochs=epochs, params=params)
    with pytest.raises(ValueError, match=rf"classifier_epochs={classifier_epochs} and "
                       rf"epochs={epochs}: the first classifier_epochs epochs train the "
                       rf"classifier f only.*; {fix}$"):
        build_method(config, 4, CPU)
    assert "note:" not in capsys.readouterr().err


def test_cli_weightmap_refuses_the_users_classifier_epochs(tiny_synth: Path, tmp_path: Path,
                                                           capsys) -> None:
    assert train(tiny_synth, tmp_path, "--method", "weightmap", "--epochs", "2",
                 "--set", "classifier_epochs=5", "--set", "generator_encoder=tiny") == 2
    err = capsys.readouterr().err
    assert err.startswith("wsol: error: weightmap needs 1 <= classifier_epochs < epochs, got "
                          "classifier_epochs=5 and epochs=2")
    assert "note:" not in err


def test_weightmap_with_one_epoch_has_no_value_to_adapt_to(tiny_synth: Path,
                                                          tmp_path: Path) -> None:
    config = TrialConfig(method="weightmap", backbone="tiny", epochs=1, data_root=str(tiny_synth),
                         params={"generator_encoder": "tiny"}, **SMALL)
    with pytest.raises(ValueError, match="set epochs >= 2"):
        run_trial(config, tmp_path, log=lambda _: None)


def test_exponent_numbers_without_a_dot_are_numbers_in_files_too(tmp_path):
    """PyYAML alone reads 1e-3 as a string; every file the tool reads takes it as a float."""
    from wsol.trial.config import load_config

    path = tmp_path / "trial.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5e-4\nivr_percentiles: [3e1, 50]\n")
    config = load_config(path)
    assert config.lr == 1e-3 and config.weight_decay == 5e-4
    assert config.ivr_percentiles == [30.0, 50.0]
