"""The search's console: what a user reads while a search runs.

One line per ended trial and a progress block (SearchProgress, a Ray Tune callback), printed
by `say` on the terminal while everything else that Ray, Tune, Optuna, MLflow and the trials
print goes to the search's log file (console_to_log, worker_output_to).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ray._private import ray_logging
from ray._private import worker as ray_worker
from ray.tune import Callback
from ray.tune.experiment import Trial

from wsol.common import protocol
from wsol.common.console import say, terminal_kept
from wsol.search.pairs import PAIR_KEY
from wsol.trial.config import TrialConfig

PROGRESS_EVERY_S = 30.0  # and a tenth of the time spent once that is longer (at most 10 min)
# The search's log holds one driver start; the starts before it are kept as search.log.1
# (the last one), search.log.2, ... up to this many logs in all.
LOGS_KEPT = 10

def _console_handler(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and \
        not isinstance(handler, logging.FileHandler)


def rotate_log(path: Path, kept: int | None = None) -> None:
    """`path` -> `path`.1 -> `path`.2 ..., the oldest of `kept` (LOGS_KEPT) logs removed: each
    driver start (a restore, a continuation) begins a log of its own, so a search's folder
    does not grow by every start's output forever."""
    kept = LOGS_KEPT if kept is None else kept
    names = [path] + [path.with_name(f"{path.name}.{n}") for n in range(1, max(kept, 1))]
    names[-1].unlink(missing_ok=True)
    for newer, older in zip(reversed(names[:-1]), reversed(names[1:]), strict=True):
        if newer.exists():
            newer.replace(older)


@contextlib.contextmanager
def console_to_log(path: Path) -> Iterator[None]:
    """Ray's, Tune's, Optuna's and MLflow's loggers, the trials' forwarded output and anything
    else printed go to `path`, begun afresh (the log of the previous start is `path`.1, see
    rotate_log); `say` still reaches the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(path)
    with path.open("a", buffering=1) as log:
        log.write(f"\n===== search started {datetime.now().isoformat(timespec='seconds')} "
                  f"(pid {os.getpid()})\n")
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        swapped: list[tuple[logging.Logger, list[logging.Handler]]] = []
        for logger in list(logging.root.manager.loggerDict.values()):
            if isinstance(logger, logging.Logger):
                console = [h for h in logger.handlers if _console_handler(h)]
                for old in console:
                    logger.removeHandler(old)
                if console:
                    logger.addHandler(handler)
                    swapped.append((logger, console))
        try:
            with terminal_kept(), contextlib.redirect_stdout(log), \
                    contextlib.redirect_stderr(log):
                yield
        finally:
            for logger, console in swapped:
                logger.removeHandler(handler)
                for old in console:
                    logger.addHandler(old)


def worker_output_to(path: Path) -> None:
    """The trials' output (their epoch lines, Ray Train's checkpoint lines) goes to `path`
    for the rest of this Ray session (until ray.shutdown). Ray forwards it to the driver
    asynchronously, the last trial's often after the search has returned, so a redirect of
    sys.stdout for the search's duration would let it through to the terminal. Each batch
    opens and closes the file: no handle outlives the search (nothing would close one, as
    ray.shutdown only drops the handler), however late the last batch comes."""
    dispatcher = getattr(ray_logging, "global_worker_stdstream_dispatcher", None)
    if dispatcher is None or not hasattr(ray_worker, "filter_autoscaler_events"):
        return  # another Ray: its output then goes where sys.stdout does

    def write(batch: dict[str, Any]) -> None:
        lines = batch.get("lines", [])
        if batch.get("pid") == "autoscaler":  # its events only, as Ray prints them
            lines = list(ray_worker.filter_autoscaler_events(lines))
        who = batch.get("actor_name") or batch.get("task_name") or "ray"
        prefix = f"({who} pid={batch.get('pid')}, ip={batch.get('ip')})"
        with contextlib.suppress(OSError), path.open("a") as log:
            log.writelines(f"{prefix} {line}\n" for line in lines)

    # Ray's own handler has this name; ray.shutdown() removes it, and ours with it.
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", write)


class TrialNames(Protocol):
    """Who knows a trial's run name (`cam/tiny #02`): the MLflow callback."""

    def name_of(self, trial: Trial) -> str: ...


class SearchProgress(Callback):
    """The search's console: a line per ended trial ("cam/tiny #02 finished: ...") and every
    `every_s` seconds (a tenth of the time spent in long searches) a block with the trials
    done / running / stopped early, the best score per pair, the time spent and an estimate
    of the time left. A trial counts as ended once Tune saw it end (also before a restore),
    not when Tune stops it for a Ctrl+C."""

    def __init__(self, budgets: dict[str, int], values: dict[str, dict[str, Any]],
                 names: TrialNames, every_s: float = PROGRESS_EVERY_S,
                 time_budget_s: float | None = None):
        self.budgets = budgets
        self.values = values  # per pair, the trial settings before sampling (epochs, ...)
        self.names = names
        self.every_s = every_s
        self.time_budget_s = time_budget_s
        self.selected: dict[str, dict[str, Any]] = {}
        self.ended: set[str] = set()
        self.started = self.last_block = time.monotonic()

    def setup(self, *args: Any, **info: Any) -> None:
        self.started = self.last_block = time.monotonic()  # also after a restore

    def _setting(self, trial: Trial, key: str, default: Any) -> Any:
        pair = self.values.get(str(trial.config.get(PAIR_KEY)), {})
        return trial.config.get(key, pair.get(key, default))

    def _epochs(self, trial: Trial) -> int:
        return int(self._setting(trial, "epochs", TrialConfig.epochs))

    def _outcome(self, trial: Trial) -> str | None:
        """finished / stopped (early, by ASHA or the time budget) / failed, None if not
        ended."""
        if trial.trial_id not in self.ended:
            return None
        if trial.status == Trial.ERROR:
            return "failed"
        epoch = _result(trial).get("epoch")
        return "stopped" if epoch is None or int(epoch) + 1 < self._epochs(trial) \
            else "finished"

    def _metric(self, trial: Trial) -> str:
        if self._setting(trial, "selection", "train_fullsup") == "label_free":
            return "label-free score"
        metric = self._setting(trial, "selection_metric", protocol.AUTO)
        if metric == protocol.AUTO:
            metric = protocol.MAX_BOX_ACC_V2 \
                if _result(trial).get(protocol.MAX_BOX_ACC_V2) is not None else protocol.PXAP
        return f"{protocol.SELECTION_SPLIT} {metric}"

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict, **info: Any) -> None:
        if result.get("is_best"):
            self.selected[trial.trial_id] = {k: result.get(k) for k in (
                "epoch", "best_score", "normalisation", "percentile")}

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        self.ended.add(trial.trial_id)
        last = _result(trial)
        seconds = f"{last.get('time_total_s', 0):.0f} s"
        if last.get("epoch") is None:
            say(f"{self.names.name_of(trial)} stopped before its first evaluation, {seconds}")
            return
        epochs, epoch = self._epochs(trial), int(last["epoch"]) + 1
        verb = "finished" if epoch >= epochs else f"stopped early after epoch {epoch}/{epochs}"
        chosen = self.selected.get(trial.trial_id)
        choice = ""
        if chosen is not None and chosen.get("best_score") is not None:
            norm = chosen.get("normalisation") or "?"
            if chosen.get("percentile") is not None:
                norm += f"@{chosen['percentile']:g}"
            choice = (f": {self._metric(trial)} {chosen['best_score']:.2f} "
                      f"(epoch {int(chosen['epoch']) + 1}, {norm})")
        elif last.get("best_score") is not None:  # chosen before a restore
            choice = f": {self._metric(trial)} {last['best_score']:.2f}"
        say(f"{self.names.name_of(trial)} {verb}{choice}, {seconds}")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self.ended.add(trial.trial_id)
        reason = "see the log"
        error_file = trial.error_file
        if error_file and Path(error_file).is_file():
            lines = [x for x in Path(error_file).read_text().splitlines() if x.strip()]
            reason = lines[-1][:300] if lines else reason
        seconds = _result(trial).get("time_total_s")
        after = f", {seconds:.0f} s" if seconds else ""
        say(f"{self.names.name_of(trial)} failed: {reason}{after}")

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        # Trials a restored search brings back already ended; Tune marks the ones it stops
        # for a Ctrl+C TERMINATED only after its last step.
        self.ended.update(t.trial_id for t in trials
                          if t.status in (Trial.TERMINATED, Trial.ERROR))
        now = time.monotonic()
        every = min(600.0, max(self.every_s, (now - self.started) / 10))
        if now - self.last_block >= every:
            self._block(trials)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._block(trials, final=True)

    def _block(self, trials: list[Trial], final: bool = False) -> None:
        self.last_block = now = time.monotonic()
        elapsed = now - self.started
        total = sum(self.budgets.values())
        running = [t for t in trials if t.status == Trial.RUNNING]
        outcomes = [self._outcome(t) for t in trials]
        done = sum(o is not None for o in outcomes)
        progress = done + sum(min(1.0, (int(_result(t).get("epoch", -1)) + 1) / self._epochs(t))
                              for t in running)
        left = "estimating the time left"
        if final:
            left = "search ended"
        elif progress > 0:
            estimate = elapsed * (total - progress) / progress
            if self.time_budget_s:
                estimate = min(estimate, max(0.0, self.time_budget_s - elapsed))
            left = f"about {_duration(estimate)} left"
        lines = [f"[{_duration(elapsed)}] {done}/{total} trials done "
                 f"({outcomes.count('stopped')} stopped early, {outcomes.count('failed')} "
                 f"failed), {len(running)} running; {left}"]
        width = max(len(pair) for pair in self.budgets)
        for pair, budget in self.budgets.items():
            own = [t for t in trials if t.config.get(PAIR_KEY) == pair]
            ended = sum(self._outcome(t) is not None for t in own)
            active = sum(t.status == Trial.RUNNING for t in own)
            scored = [t for t in own if _result(t).get("best_score") is not None]
            best = "-"
            if scored:
                top = max(scored, key=lambda t: _result(t)["best_score"])
                best = f"{_result(top)['best_score']:6.2f}  {self.names.name_of(top)}"
            lines.append(f"  {pair:<{width}}  {ended}/{budget} done, {active} running  "
                         f"best {best}")
        say("\n".join(lines))


def _result(trial: Trial) -> dict[str, Any]:
    """The trial's last reported result; unlike `Trial.last_result`, never waits on a
    starting trial's actor."""
    metadata = getattr(trial, "run_metadata", None)
    return getattr(metadata, "last_result", None) or {}


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
