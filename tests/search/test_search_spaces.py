"""Search-space files: every method has one, they load, and bad files are named precisely."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from wsol.methods import METHODS
from wsol.search.space import load_search_space
from wsol.trial.config import ConfigError

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample_many(path: Path, count: int = 60) -> list[dict]:
    space = load_search_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(count):
        trial = study.ask()
        fixed = space.sample(trial)
        out.append({**trial.params, **fixed})
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_has_a_loadable_space(method: str) -> None:
    space = load_search_space(SPACES / f"{method}.yaml")
    assert space.method == method
    assert {"lr", "weight_decay"} <= {p.name for p in space.params}
    assert all(p.source for p in space.params), "every range documents its source"


def test_bgc_constraint_tau_bg_below_tau_fg() -> None:
    for values in sample_many(SPACES / "bgc.yaml"):
        assert values["tau_bg"] < values["tau_fg"]


def test_weightmap_margin_only_for_method_two() -> None:
    samples = sample_many(SPACES / "weightmap.yaml")
    assert {s["variant"] for s in samples} == {"I", "II"}
    for values in samples:
        assert ("margin" in values) == (values["variant"] == "II")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: cam\nextends: base.yaml\nparamz: {}\n", "unknown key 'paramz'"),
        ("method: nosuch\n", "method: unknown method 'nosuch'"),
        ("method: bgc\nparams:\n  lambda_sim: {type: float, low: 2, high: 1}\n",
         "params.lambda_sim: low 2 must be below high 1"),
        ("method: bgc\nparams:\n  lambda_typo: {type: float, low: 1, high: 2}\n",
         "params.lambda_typo: not a trial setting and not a hyperparameter of bgc"),
        ("method: bgc\nparams:\n  lambda_sim: {type: float, low: 0, high: 1, log: true}\n",
         "params.lambda_sim: a log range needs low > 0"),
        ("method: bgc\nparams:\n  lambda_sim: {type: normal, low: 0, high: 1}\n",
         "params.lambda_sim.type: 'normal' is not one of float, int or categorical"),
        ("method: bgc\nparams:\n  lambda_sim: {type: float, low: 0.1, high: 1, step: 2}\n",
         "params.lambda_sim: unknown key 'step'"),
        ("method: bgc\nparams:\n  tau_fg: {type: float, low: 0.1, high: 0.5}\n"
         "  tau_bg: {type: float, low: 0.2, high: 0.4}\nconstraints: [tau_bg < tau_fg]\n",
         "cannot hold"),
        ("method: cam\nfixed: {epochz: 3}\n", "fixed.epochz: not a trial setting"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "base.yaml").write_text((SPACES / "base.yaml").read_text())
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_search_space(path)
    assert str(path) in str(error.value) and message in str(error.value)


@pytest.mark.parametrize(("values", "message"), [
    ({"sampler": "grid"}, "sampler: 'grid' is not one of tpe, random"),
    ({"scheduler": {"type": "hyperband"}}, "scheduler.type: 'hyperband' is not one of asha"),
    ({"trials_per_pair": 0}, "trials_per_pair: 0 is not >= 1"),
    ({"methds": ["cam"]}, "unknown key 'methds'"),
])
def test_bad_experiment_files_are_refused_with_the_file(tmp_path, values, message):
    from wsol.search.experiment import load_experiment

    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=f"{path}.*{message}"):
        load_experiment(path, {})


def experiment_for(**values):
    from wsol.search.experiment import experiment_from_dict

    return experiment_from_dict({"search_spaces": str(SPACES), **values})


@pytest.mark.parametrize(("dataset", "backbone", "expected"), [
    ("cub", "vgg16", {"lambda_sim": 0.5, "tau_fg": 0.6, "fine_grained": True,
                      "lr_classifier_ratio": 5.0}),
    ("cub", "resnet50", {"lambda_norm": 0.07, "tau_fg": 0.4, "large_feature_map": True,
                         "lr_classifier_ratio": 10.0}),
    ("ilsvrc", "vgg16", {"lambda_norm": 0.2, "tau_bg": 0.3, "fine_grained": False,
                         "lr": 2e-5}),
    ("openimages", "resnet50", {"lambda_sim": 8.0, "tau_fg": 0.28, "lr": 1e-5}),
])
def test_bgc_defaults_are_one_row_of_the_papers(dataset, backbone, expected) -> None:
    from wsol.search.pair_spaces import load_spaces, pair_defaults

    experiment = experiment_for(dataset=dataset, methods=["bgc"], backbones=[backbone],
                                trial={"weights": "imagenet"})
    row = pair_defaults(experiment, load_spaces(experiment))[f"bgc/{backbone}"]
    assert expected.items() <= row.items()


def test_a_users_value_wins_over_the_row_and_the_search_starts_from_it() -> None:
    from wsol.search.pair_spaces import first_point, load_spaces, pair_defaults
    from wsol.search.trainable import trial_config_values

    experiment = experiment_for(dataset="cub", methods=["bgc"], backbones=["vgg16"],
                                trial={"weights": "imagenet", "lr_classifier_ratio": 7.0},
                                method_params={"bgc": {"tau_bg": 0.2}})
    spaces = load_spaces(experiment)
    defaults = pair_defaults(experiment, spaces)
    assert "tau_bg" not in defaults["bgc/vgg16"]
    assert "lr_classifier_ratio" not in defaults["bgc/vgg16"]
    values = trial_config_values({"pair": "bgc/vgg16", "lambda_sim": 1.5},
                                 experiment.trial_base(), experiment.method_params, defaults)
    assert values["lr_classifier_ratio"] == 7.0 and values["lr"] == 4e-3
    assert values["params"]["lambda_sim"] == 1.5  # sampled
    assert values["params"]["tau_bg"] == 0.2  # the user's
    assert values["params"]["tau_fg"] == 0.6  # the row's
    point = first_point(spaces["bgc"], defaults["bgc/vgg16"])
    assert point == {"lr": 4e-3, "weight_decay": 5e-4, "lambda_sim": 0.5, "lambda_norm": 0.15,
                     "lambda_drop": 3.0, "gamma": 0.8, "p": 0.5, "tau_fg": 0.6, "tau_bg": 0.1}


def test_weightmap_rows_follow_the_regime() -> None:
    from wsol.search.pair_spaces import load_spaces, pair_defaults

    scratch = experiment_for(methods=["weightmap"], param_ranges={"lr": {"low": 1e-3}})
    pretrained = experiment_for(dataset="cub", methods=["weightmap"], backbones=["resnet18"],
                                trial={"weights": "imagenet"})
    assert pair_defaults(scratch, load_spaces(scratch))["weightmap/tiny"]["generator_lr"] == 1e-2
    row = pair_defaults(pretrained, load_spaces(pretrained))["weightmap/resnet18"]
    assert row["generator_lr"] == 1e-4 and row["lr"] == 1e-3


def test_search_ranges_contain_every_papers_rate() -> None:
    lr = next(p for p in load_search_space(SPACES / "cam.yaml").params if p.name == "lr")
    for rate in (1e-5, 2e-5, 1e-4, 1e-3, 2e-3, 4e-3):  # BGC, MinMaxCAM, weight map
        assert lr.low <= rate <= lr.high


@pytest.mark.parametrize(("ranges", "message"), [
    ({"lr": {"low": 0.5, "high": 0.1}}, "params.lr: low 0.5 must be below high 0.1"),
    ({"lr": {"low": -1.0, "high": 0.1}}, "a log range needs low > 0"),
    ({"lr": "fast"}, "param_ranges.lr: 'fast' is not a mapping"),
    ({"bgc.lambda_sim": {"low": 0.1, "high": 1.0}}, "param_ranges.bgc.lambda_sim: bgc is not"),
    ({"cam.lambda_sim": {"low": 0.1}}, "lambda_sim: not a searched parameter of cam"),
    ({"warp": {"low": 0.1}}, "param_ranges.warp: no method searches it"),
])
def test_bad_param_ranges_name_the_key(ranges, message) -> None:
    from wsol.search.pair_spaces import load_spaces

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_spaces(experiment_for(methods=["cam"], param_ranges=ranges))


@pytest.mark.parametrize(("text", "message"), [
    ("defaults: {a: 1}", "defaults: {'a': 1} is not a list"),
    ("defaults: [{values: {tau_fg: 0.5}}]", "defaults[0].source: every row names"),
    ("defaults: [{when: {family: birds}, values: {}, source: x}]", "when.family: 'birds'"),
    ("defaults: [{values: {tau_fgg: 0.5}, source: x}]", "values.tau_fgg: not a trial setting"),
])
def test_bad_default_rows_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bgc.yaml"
    path.write_text(f"method: bgc\n{text}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_search_space(path)
