"""Search-space files: every method has one, they load, and bad files are named precisely."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from wsol.config import ConfigError
from wsol.methods import METHODS
from wsol.search_space import load_search_space

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
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
        ("method: cam\nextends: base.yaml\nparamz: {}\n", "paramz: unknown key"),
        ("method: nosuch\n", "method: unknown method 'nosuch'"),
        ("method: bgc\nparams:\n  lambda_sim: {type: float, low: 2, high: 1}\n",
         "params.lambda_sim: low 2 must be below high 1"),
        ("method: bgc\nparams:\n  lambda_typo: {type: float, low: 1, high: 2}\n",
         "params.lambda_typo: not a trial setting and not a hyperparameter of bgc"),
        ("method: bgc\nparams:\n  lambda_sim: {type: float, low: 0, high: 1, log: true}\n",
         "params.lambda_sim: a log range needs low > 0"),
        ("method: bgc\nparams:\n  lambda_sim: {type: normal, low: 0, high: 1}\n",
         "params.lambda_sim.type: must be float, int or categorical"),
        ("method: bgc\nparams:\n  lambda_sim: {type: float, low: 0.1, high: 1, step: 2}\n",
         "params.lambda_sim.step: unknown field"),
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
    ({"sampler": "grid"}, "sampler must be tpe or random"),
    ({"scheduler": {"type": "hyperband"}}, "scheduler.type must be asha or fifo"),
    ({"trials_per_pair": 0}, "trials_per_pair must be at least 1"),
    ({"methds": ["cam"]}, "unknown key 'methds'"),
])
def test_bad_experiment_files_are_refused_with_the_file(tmp_path, values, message):
    from wsol.search.experiment import load_experiment

    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=f"{path}.*{message}"):
        load_experiment(path, {})
