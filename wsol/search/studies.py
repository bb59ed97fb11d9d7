"""The Optuna side of a search, persisted: one study per (search, pair) in a storage that the
driver reaches, samplers by name, and what links a study's trials to Tune and MLflow.

A study outlives its search: `optuna-dashboard` and `optuna.visualization` open it, a later
search continues it (warm start), and `--restore` finds the told trials in it. The default
storage is a journal file beside the search's local state (no server, appends only, safe
for the one driver that writes it); an RDB URL (`postgresql://...`, `sqlite:///...`) in the
experiment puts the studies of a cluster's searches in one database. With an s3:// Ray
storage the journal is mlruns/logs/<name>/optuna.journal on the driver's own disk: a head that
may be lost wants an RDB storage.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import optuna
from mlflow.tracking import MlflowClient
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from wsol.common import tracking_schema as schema
from wsol.common.console import say
from wsol.search.space import SearchSpace

JOURNAL_NAME = "optuna.journal"
# User attributes: each trial's Tune trial id and MLflow run id; each study's search, pair,
# sampler and search-space signature (a continued search must search the same space).
RAY_TRIAL_ATTR = "ray_trial_id"
MLFLOW_RUN_ATTR = "mlflow_run_id"
SEARCH_ATTR, PAIR_ATTR, SAMPLER_ATTR, SPACE_ATTR = "search", "pair", "sampler", "search_space"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
END_REASON_ATTR = "end_reason"  # of a trial that the search ended as FAIL


def storage_url(configured: str | None, local_state: Path) -> str:
    """The experiment's RDB URL, else the journal file in the search's local state folder."""
    return configured or str(local_state / JOURNAL_NAME)


# The full URL of each RDB storage this process opened, by its public form (no password):
# what an unpickled MaskedRDBStorage reconnects with.
_OPENED_URLS: dict[str, str] = {}


class MaskedRDBStorage(RDBStorage):
    """An RDB storage whose pickles hold its URL without the password. Tune pickles the
    searcher, and the storage with it, into the search's state on storage_path (tuner.pkl
    and the searcher's checkpoint), which may be a shared bucket. A `--restore` opens the
    storage from the experiment file before Tune unpickles its state, and the unpickled
    storage reconnects with that URL."""

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["url"] = public_url(self.url)
        state["url_masked"] = state["url"] != self.url
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        public, masked = state["url"], state.pop("url_masked", False)
        if masked and public not in _OPENED_URLS:
            raise ValueError(
                f"a search's saved state names the Optuna storage {public} without its "
                "password; it reconnects only in a process that opened the storage first "
                "(`search.py --restore` with the experiment file that names it does)")
        state["url"] = _OPENED_URLS.get(public, public)
        super().__setstate__(state)


def open_storage(url: str) -> BaseStorage:
    """A journal file for a path, an RDB storage (SQLAlchemy URL) otherwise."""
    if "://" in url:
        _OPENED_URLS[public_url(url)] = url
        return MaskedRDBStorage(url)
    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(url))


def public_url(url: str) -> str:
    """The URL without its password (in the user part or a `password=` query parameter):
    what the parent run, the experiment it logs and the console show."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")  # the host as written: IPv6 keeps its brackets
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = _QUERY_PASSWORD.sub(r"\1=***", query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_QUERY_PASSWORD = re.compile(r"(?i)(?<![^&])(password|passwd)=[^&]*")


def study_name(search: str, pair: str) -> str:
    """`<search name>/<method>/<backbone>`: one study per pair, several searches per storage."""
    return f"{search}/{pair}"


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The experiment's sampler by name, seeded per pair.

    TPE is multivariate and grouped (the conditional parameters of a space are modelled
    jointly where they co-occur); GP is Optuna's Gaussian-process BO; CMA-ES falls back to
    independent random sampling for categorical parameters; QMC is a scrambled Sobol
    sequence (space-filling random search). TPE's `group` and QMC are marked experimental by
    Optuna (since 2.8 and 3.0): the warnings say nothing to the user of a search.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _sampler(name, seed)


def _sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    samplers = optuna.samplers
    if name == "tpe":
        return samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "random":
        return samplers.RandomSampler(seed=seed)
    if name == "gp":
        return samplers.GPSampler(seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  (CmaEsSampler needs it at the first relative sample)
        except ImportError:
            raise ImportError("sampler cmaes needs the cmaes package: pip install 'wsol[optuna]'"
                              ) from None
        return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        return samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                   warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {name!r}")


def describe_sampler(name: str) -> str:
    """What the parent run records: the name and the options that matter."""
    return {"tpe": "tpe (TPESampler multivariate, group)", "random": "random (RandomSampler)",
            "gp": "gp (GPSampler)", "cmaes": "cmaes (CmaEsSampler)",
            "qmc": "qmc (QMCSampler sobol, scrambled)"}[name]


def space_signature(space: SearchSpace) -> str:
    """The searched parameters and fixed values, as JSON (sources left out: prose only)."""
    params = [{k: v for k, v in dataclasses.asdict(p).items() if k != "source"}
              for p in space.params]
    return json.dumps({"method": space.method, "params": params, "fixed": space.fixed},
                      sort_keys=True, default=str)


class StudyTaken(ValueError):
    """A new search's study name is in the storage already (e.g. another driver on the same
    RDB created it since the search chose its names)."""


def prepare_study(storage: BaseStorage, search: str, pair: str, sampler: str,
                  space: SearchSpace, parent_run_id: str, resume: bool) -> optuna.Study:
    """Creates the pair's study (a new search: StudyTaken when the name exists) or checks
    the one a search continues: the same space, else a ValueError before anything runs."""
    name = study_name(search, pair)
    signature = space_signature(space)
    if resume:
        if name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
            raise ValueError(f"no Optuna study {name!r} to continue: a continued search keeps "
                             "its pairs")
        study = optuna.load_study(study_name=name, storage=storage)
        if study.user_attrs.get(SPACE_ATTR) != signature:
            raise ValueError(f"Optuna study {name!r} searched another space than "
                             f"{space.path} now defines; a continued search keeps its space")
    else:
        # Created, never loaded: the storage itself decides which driver gets a name.
        try:
            study = optuna.create_study(storage=storage, study_name=name,
                                        direction="maximize", load_if_exists=False)
        except optuna.exceptions.DuplicatedStudyError:
            raise StudyTaken(f"Optuna study {name!r} exists already; continue it with "
                             "--more-trials, or give the search a new name") from None
        for key, value in ((SEARCH_ATTR, search), (PAIR_ATTR, pair), (SPACE_ATTR, signature),
                           (PARENT_RUN_ATTR, parent_run_id)):
            study.set_user_attr(key, value)
    study.set_user_attr(SAMPLER_ATTR, sampler)
    return study


def fail_running(studies: dict[str, optuna.Study]) -> int:
    """Marks FAIL, with the reason, every trial of the studies still RUNNING once their
    search ended: one whose Tune trial did not come back after --restore (Tune's searcher
    snapshot predated it), or one of an interrupted continuation. Returns how many."""
    reason = "the search ended with this trial unfinished (its Tune trial did not come back)"
    failed = 0
    for study in studies.values():
        for trial in study.get_trials(deepcopy=False,
                                      states=(optuna.trial.TrialState.RUNNING,)):
            try:
                optuna.Trial(study, trial._trial_id).set_user_attr(END_REASON_ATTR, reason)
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # ended meanwhile
            failed += 1
    return failed


def without_secrets(text: str, url: str) -> str:
    """`text` (e.g. an error about the storage) with the URL's passwords masked."""
    secrets = [urlsplit(url).password or ""]
    secrets += [m.group(0).split("=", 1)[1] for m in _QUERY_PASSWORD.finditer(urlsplit(url).query)]
    text = text.replace(url, public_url(url))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def dashboard_command(url: str) -> str:
    """The shell command that opens the search's studies in optuna-dashboard."""
    return f"optuna-dashboard {shlex.quote(public_url(url))}"


@dataclass(frozen=True)
class RunLookup:
    """A Tune trial's MLflow run id, found by the trial id tag under the search's parent run
    (the driver's MLflow callback makes the run when the trial starts)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    def __call__(self, trial_id: str) -> str | None:
        runs = MlflowClient(self.tracking_uri).search_runs(
            [self.experiment_id],
            f"tags.`{schema.PARENT}` = '{self.parent_run_id}' "
            f"and tags.`{schema.RAY_TRIAL_ID}` = '{trial_id}'", max_results=1)
        return runs[0].info.run_id if runs else None


PLOTS = {"history": "plot_optimization_history", "parallel": "plot_parallel_coordinate",
         "importances": "plot_param_importances"}


def plot_studies(studies: dict[str, optuna.Study], folder: Path) -> list[Path]:
    """Optuna's matplotlib plots of every pair's study (no plotly needed): optimisation
    history, parallel coordinates, parameter importances, as `<method>-<backbone>_<plot>.png`.
    A plot that the study cannot make yet (too few complete trials) is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for pair, study in studies.items():
        complete = [t for t in study.get_trials(deepcopy=False)
                    if t.state == optuna.trial.TrialState.COMPLETE]
        for plot, function in PLOTS.items():
            if len(complete) < (2 if plot == "importances" else 1):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                try:
                    axes = getattr(plots, function)(study)
                except (ValueError, RuntimeError, ZeroDivisionError):
                    continue  # e.g. importances of a study whose values are all equal
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            path = folder / f"{pair.replace('/', '-')}_{plot}.png"
            figure.savefig(path, dpi=90, bbox_inches="tight")
            plt.close(figure)
            written.append(path)
    return written


def close_studies(uri: str, run_id: str, url: str, pairs: list[str],
                  end_running: bool) -> dict[str, Any] | None:
    """Optuna's plots of every study on the parent run; returns where to open the studies
    (the summary's `optuna` entry). `end_running`: trials still RUNNING become FAIL
    (fail_running). Never the reason a search fails: a warning instead."""
    opened = None
    try:
        prefix = MlflowClient(uri).get_run(run_id).data.tags.get(schema.OPTUNA_STUDY)
        if prefix is None:  # a restored search that began before studies persisted
            return None
        storage = open_storage(url)
        studies = {pair: optuna.load_study(study_name=study_name(prefix, pair),
                                           storage=storage)
                   for pair in pairs}
        if end_running and (failed := fail_running(studies)):
            say(f"{failed} Optuna trials left unfinished marked FAIL", error=True)
        opened = {"storage": public_url(url),
                  "studies": {pair: s.study_name for pair, s in studies.items()},
                  "trials": {pair: len(s.trials) for pair, s in studies.items()}}
        with tempfile.TemporaryDirectory() as tmp:
            if plot_studies(studies, Path(tmp)):
                MlflowClient(uri).log_artifacts(run_id, tmp, schema.OPTUNA_FOLDER)
    except Exception as error:
        say(f"warning: the Optuna studies not closed (plots, links): {type(error).__name__}: "
            f"{without_secrets(str(error), url)}", error=True)
    return opened
