"""Samplers by name: each of the five drives the project's real search spaces (BGC's seven
floats, the weight map's categorical variant with a conditional parameter) in a study on a real
RDB storage, inside the space, reproducibly per seed; an unknown name is refused."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from wsol.search.experiment import SAMPLERS, experiment_from_dict
from wsol.search.space import load_search_space
from wsol.search.studies import describe_sampler, make_sampler, open_storage
from wsol.trial.config import ConfigError

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def _run(name: str, space_file: str, seed: int, storage: optuna.storages.BaseStorage,
         study: str) -> list[dict]:
    space = load_search_space(SPACES / space_file)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    created = optuna.create_study(storage=storage, study_name=study, direction="maximize",
                                  sampler=make_sampler(name, seed))
    for _ in range(8):
        trial = created.ask()
        space.sample(trial)
        # A smooth objective, so that model-based samplers have something to fit.
        created.tell(trial, -sum((v - 0.3) ** 2 for v in trial.params.values()
                                 if isinstance(v, float)))
    for trial in created.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        for param in space.params:
            if param.name not in trial.params:
                assert param.when, f"{name}: {param.name} unsampled"
                continue
            value = trial.params[param.name]
            if param.kind == "categorical":
                assert value in param.choices
            else:
                assert param.low <= value <= param.high
    return [t.params for t in created.trials]


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_searches_the_real_spaces_reproducibly(name: str, tmp_path: Path
                                                            ) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    for space_file in ("bgc.yaml", "weightmap.yaml"):
        first = _run(name, space_file, 7, storage, f"{space_file}-a")
        assert first == _run(name, space_file, 7, storage, f"{space_file}-b")
        assert first != _run(name, space_file, 8, storage, f"{space_file}-c")
    assert describe_sampler(name).startswith(name)


def test_tpe_is_multivariate() -> None:
    sampler = make_sampler("tpe", 0)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate and sampler._group


def test_an_unknown_sampler_is_refused() -> None:
    with pytest.raises(ConfigError, match="sampler"):
        experiment_from_dict({"name": "x", "sampler": "annealing"})
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("annealing", 0)
