"""One Optuna study and one ASHA per (method, backbone) pair, inside a single Ray Tune run.

The protocol compares methods at equal budgets, so every pair gets its own trial budget, its
own Optuna study and its own early-stopping rungs (trials are only ever stopped relative to
trials of the same pair), while the trials of all pairs share the cluster. Each Optuna trial
carries its Tune trial id and MLflow run id as user attributes (wsol.search.studies).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from wsol.search.studies import MLFLOW_RUN_ATTR, RAY_TRIAL_ATTR

PAIR_KEY = "pair"


def pair_name(method: str, backbone: str) -> str:
    return f"{method}/{backbone}"


class PairedSearcher(Searcher):
    """`run_of` (picklable: it travels in the searcher's checkpoint) finds a Tune trial's
    MLflow run id, or None while the run does not exist yet."""

    def __init__(self, searchers: dict[str, Searcher], budgets: dict[str, int], metric: str,
                 mode: str, run_of: Callable[[str], str | None] | None = None):
        super().__init__(metric=metric, mode=mode)
        self.searchers = searchers
        self.remaining = dict(budgets)
        self.owner: dict[str, str] = {}
        self.run_of = run_of
        self.linked: set[str] = set()

    def _user_attr(self, trial_id: str, key: str, value: str) -> None:
        """On the Optuna trial behind a Tune trial, while it is still open (Optuna keeps a
        finished trial's attributes as they were)."""
        trials = getattr(self.searchers[self.owner[trial_id]], "_ot_trials", {})
        if trial_id in trials:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                trials[trial_id].set_user_attr(key, value)

    def _ended(self, trial_id: str) -> bool:
        """Whether the study already ended the Optuna trial behind a Tune trial: after
        --restore, Tune's searcher snapshot may predate the study's last writes (the driver
        died between the two), and Optuna refuses any update of an ended trial."""
        trial = getattr(self.searchers[self.owner[trial_id]], "_ot_trials", {}).get(trial_id)
        if not isinstance(trial, optuna.Trial):
            return False
        return trial.storage.get_trial(trial._trial_id).state.is_finished()

    def _link(self, trial_id: str) -> None:
        if self.run_of is None or trial_id in self.linked or trial_id not in self.owner:
            return
        try:
            run_id = self.run_of(trial_id)
        except Exception:  # a tracking outage: the next report tries again
            return
        if run_id is not None:
            self._user_attr(trial_id, MLFLOW_RUN_ATTR, run_id)
            self.linked.add(trial_id)

    # Ray's annotation leaves out Searcher.FINISHED (a str), which its own searchers return.
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        open_pairs = [p for p, left in self.remaining.items() if left > 0]
        if not open_pairs:
            return Searcher.FINISHED
        # The pair with the most budget left goes first: pairs advance together.
        for pair in sorted(open_pairs, key=lambda p: (-self.remaining[p], p)):
            config = self.searchers[pair].suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                continue
            self.remaining[pair] -= 1
            self.owner[trial_id] = pair
            self._user_attr(trial_id, RAY_TRIAL_ATTR, trial_id)
            return {**config, PAIR_KEY: pair}
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self._link(trial_id)
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.searchers[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.owner:
            return
        self._link(trial_id)
        searcher = self.searchers[self.owner[trial_id]]
        if self._ended(trial_id):  # told before the driver died: the study keeps its value
            completed = getattr(searcher, "_completed_trials", None)
            if isinstance(completed, set):
                completed.add(trial_id)
            return
        searcher.on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """The searcher's state as JSON: the file lies on the search's storage, which others
        may write, so it is read back as data, never unpickled. The studies hold the rest."""
        state = {"remaining": self.remaining, "owner": self.owner, "linked": sorted(self.linked),
                 "pairs": {pair: _optuna_state(searcher)
                           for pair, searcher in self.searchers.items()}}
        with open(checkpoint_path, "w") as handle:
            json.dump(state, handle)

    def restore(self, checkpoint_path: str) -> None:
        """The state `save` wrote, onto the searchers Tune restored (their studies open)."""
        try:
            with open(checkpoint_path) as handle:
                state = json.load(handle)
            self.remaining = {str(p): int(n) for p, n in state["remaining"].items()}
            self.owner = {str(t): str(p) for t, p in state["owner"].items()}
            self.linked = {str(t) for t in state["linked"]}
            for pair, saved in state["pairs"].items():
                _restore_optuna(self.searchers[pair], saved)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{checkpoint_path}: not a searcher state this version wrote "
                             f"({type(error).__name__}: {error})") from None


def _optuna_state(searcher: Searcher) -> dict[str, Any]:
    """What an OptunaSearch holds beyond its study: which Optuna trial each Tune trial is,
    the trials it told, and the start points it has not suggested yet."""
    assert isinstance(searcher, OptunaSearch)
    return {"trials": {t: trial._trial_id for t, trial in searcher._ot_trials.items()},
            "completed": sorted(searcher._completed_trials),
            "points_to_evaluate": searcher._points_to_evaluate}


def _restore_optuna(searcher: Searcher, saved: dict[str, Any]) -> None:
    assert isinstance(searcher, OptunaSearch)
    study = searcher._ot_study
    if study is None:
        raise ValueError("its Optuna searcher has no study")
    searcher._ot_trials = {str(t): optuna.Trial(study, int(number))
                           for t, number in saved["trials"].items()}
    searcher._completed_trials = {str(t) for t in saved["completed"]}
    searcher._points_to_evaluate = [dict(point) for point in saved["points_to_evaluate"]]
    # The sampler came back as Tune saved it at the start: a fresh random stream keeps it
    # from drawing the points of the search's first trials again.
    study.sampler.reseed_rng()


class PairedASHA(FIFOScheduler):
    """ASHA rungs kept per pair, each on its pair's own epochs (`rungs`: pair -> (max_t,
    grace_period)); runs trials first-in first-out."""

    def __init__(self, rungs: Mapping[str, tuple[int, int]], metric: str, mode: str,
                 reduction_factor: float):
        super().__init__()
        self.schedulers = {
            pair: ASHAScheduler(metric=metric, mode=mode, max_t=max_t, grace_period=grace,
                                reduction_factor=reduction_factor)
            for pair, (max_t, grace) in rungs.items()
        }

    def _for(self, trial: Trial) -> TrialScheduler:
        return self.schedulers[trial.config[PAIR_KEY]]

    def set_search_properties(self, metric: str | None, mode: str | None,
                              **spec: Any) -> bool:
        return True

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._for(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        return self._for(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._for(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._for(trial).on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._for(trial).on_trial_error(tune_controller, trial)

    def debug_string(self) -> str:
        return "Per-pair ASHA: " + "; ".join(
            f"{pair}: {s.debug_string()}" for pair, s in self.schedulers.items()
        )
