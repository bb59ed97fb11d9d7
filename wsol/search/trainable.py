"""The Ray Tune trainable: one trial runner call, reporting after every evaluation.

The trial's working directory is a temporary folder on its node; every report ships the
resume state (last.pt) and the selected checkpoint (best.pt + metrics.json) as a Ray
checkpoint, so a trial restored on any node resumes where it stopped.

Tune retries a failed trial (the experiment's max_failures) whatever failed. A lost worker or
node, or storage that was briefly unreachable, deserve it; an error of the trial itself (a
non-finite loss, a bad setting) would only repeat its epochs. So such an error is noted beside
the trial's Tune state and a retry raises it again at once. An error of the node (a full or
failing disk, a data file missing there) is not noted: the retry, scheduled afresh, may run
on a sound node.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
from ray import tune

from wsol.common.outages import RETRY_S, in_cause_chain, outage_limit_s, transient
from wsol.common.tracking_schema import TRIAL_METRICS
from wsol.data.synthetic import PRESETS, ensure_generated
from wsol.search.pairs import PAIR_KEY
from wsol.search.space import TRIAL_FIELDS
from wsol.trial.config import config_from_dict
from wsol.trial.runner import Evaluation, run_trial

CHECKPOINT_FILES = ("last.pt", "best.pt", "metrics.json", "curves.json", "curves.png",
                    "overlays.png")
ERROR_NOTE = "wsol_trial_error.txt"


class RepeatedTrialError(RuntimeError):
    """A retry of a trial that failed by its own error: the same error, without training."""


# The errors of one node's disks and resources, not of the trial: another node may not have
# them. ENOENT: a data file missing on this node (its copy of the benchmark incomplete).
_NODE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOENT,
                          errno.ESTALE, errno.ENOMEM, errno.EMFILE, errno.ENFILE,
                          errno.ENODEV, errno.ENXIO})


def node_local(error: BaseException) -> bool:
    """An OSError of the node the trial ran on (disk full or failing, read-only, a missing
    file): worth a retry elsewhere, so not noted as the trial's own. A FileNotFoundError
    counts without its errno (PyTorch's DataLoader re-raises a worker's error by type and
    message alone). An error raised from another counts when the one it came from does."""
    return in_cause_chain(error, lambda one: isinstance(one, FileNotFoundError) or (
        isinstance(one, OSError) and one.errno in _NODE_ERRNOS))


def trial_config_values(sampled: dict[str, Any], base: dict[str, Any],
                        method_params: dict[str, dict[str, Any]],
                        pair_defaults: dict[str, dict[str, Any]] | None = None
                        ) -> dict[str, Any]:
    """The pair's paper defaults < experiment base and per-method values < sampled values,
    as TrialConfig values.

    Keys naming a trial setting (epochs, lr, ...) set it; the rest are method hyperparameters.
    """
    sampled = dict(sampled)
    pair = sampled.pop(PAIR_KEY)
    method, backbone = pair.split("/")
    row = (pair_defaults or {}).get(pair, {})
    values = {**method_params.get(method, {}), **sampled}
    settings = {k: v for k, v in values.items() if k in TRIAL_FIELDS}
    params = {k: v for k, v in {**row, **values}.items() if k not in TRIAL_FIELDS}
    row_settings = {k: v for k, v in row.items() if k in TRIAL_FIELDS}
    return {**row_settings, **base, **settings, "method": method, "backbone": backbone,
            "params": params}


def _report(evaluation: Evaluation, limit_s: float) -> None:
    # What the MLflow callback logs (and Tune's scheduler and searchers see).
    metrics = {k: evaluation.metrics[k] for k in TRIAL_METRICS
               if evaluation.metrics.get(k) is not None}
    metrics["normalisation"] = evaluation.metrics["normalisation"]
    metrics["is_best"] = evaluation.is_best
    metrics["node_id"] = ray.get_runtime_context().get_node_id()
    with tempfile.TemporaryDirectory() as tmp:
        for name in CHECKPOINT_FILES:
            source = evaluation.out_dir / name
            if source.exists():
                shutil.copy2(source, Path(tmp) / name)
        checkpoint = tune.Checkpoint.from_directory(tmp)
        # The upload comes before the result is sent, so a failed one can be repeated.
        _through_outages(lambda: tune.report(metrics, checkpoint=checkpoint), limit_s)


def _through_outages(action: Callable[[], None], limit_s: float) -> None:
    """Runs `action` until storage answers, for up to the outage limit (S3's bad minutes);
    a trial that raised at once would spend its retries in seconds."""
    started = time.time()
    while True:
        try:
            action()
            return
        except Exception as error:
            if not transient(error) or time.time() - started > limit_s:
                raise
            print(f"storage unreachable ({error}); trying again in {RETRY_S:.0f} s",
                  file=sys.stderr, flush=True)
            time.sleep(RETRY_S)


def _restore(checkpoint: tune.Checkpoint, out: Path) -> None:
    with checkpoint.as_directory() as saved:
        for name in CHECKPOINT_FILES:
            if (Path(saved) / name).exists():
                shutil.copy2(Path(saved) / name, out / name)


def _error_note() -> tuple[pyarrow.fs.FileSystem, str]:
    storage = tune.get_context().get_storage()
    return storage.storage_filesystem, f"{storage.trial_fs_path}/{ERROR_NOTE}"


def search_trial(sampled: dict[str, Any], base: dict[str, Any],
                 method_params: dict[str, dict[str, Any]],
                 pair_defaults: dict[str, dict[str, Any]] | None = None,
                 synthetic_preset: str | None = None,
                 outage_limit: float | None = None) -> None:
    """`outage_limit`: the driver's outage limit (seconds), else this node's
    $WSOL_TRACKING_OUTAGE_LIMIT_S."""
    limit_s = outage_limit_s() if outage_limit is None else outage_limit
    filesystem, note = _error_note()
    noted: list[str] = []

    def read_note() -> None:  # storage on S3 may be having a bad minute, as for uploads
        noted.clear()
        if filesystem.get_file_info(note).type == pyarrow.fs.FileType.File:
            with filesystem.open_input_stream(note) as handle:
                noted.append(handle.read().decode())

    _through_outages(read_note, limit_s)
    if noted:
        raise RepeatedTrialError(noted[0])
    try:
        _search_trial(sampled, base, method_params, pair_defaults, synthetic_preset, limit_s)
    except Exception as error:
        if not transient(error) and not node_local(error):
            with contextlib.suppress(OSError):  # the trial's own error is the one to see
                filesystem.create_dir(note.rsplit("/", 1)[0], recursive=True)
                with filesystem.open_output_stream(note) as out:
                    out.write(f"{type(error).__module__}.{type(error).__name__}: {error}"
                              .encode())
        raise


def _search_trial(sampled: dict[str, Any], base: dict[str, Any],
                  method_params: dict[str, dict[str, Any]],
                  pair_defaults: dict[str, dict[str, Any]] | None,
                  synthetic_preset: str | None, limit_s: float) -> None:
    values = trial_config_values(sampled, base, method_params, pair_defaults)
    config = config_from_dict(values, f"trial {tune.get_context().get_trial_id()}")
    if synthetic_preset:  # this node may not have the driver's copy
        ensure_generated(config.data_root, PRESETS[synthetic_preset], seed=config.seed)
    # Outside the trial directory, which Ray uploads to storage as it changes: the checkpoints
    # already carry these files, and half-written ones must not be copied.
    out = Path(tempfile.mkdtemp(prefix=f"wsol-{tune.get_context().get_trial_id()}-"))
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            _through_outages(lambda: _restore(checkpoint, out), limit_s)
        run_trial(config, out, functools.partial(_report, limit_s=limit_s))
    finally:
        shutil.rmtree(out, ignore_errors=True)
