"""A trial's own error is noted so that Tune's retry raises it at once; an error of the node it
ran on (a full or failing disk, a data file missing there) is not, so the retry trains again,
possibly on a sound node."""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow.fs
import pytest

from wsol.search import trainable
from wsol.search.trainable import ERROR_NOTE, RepeatedTrialError, node_local, search_trial
from wsol.trial.config import ConfigError


def _wrapped() -> RuntimeError:
    try:
        try:
            raise OSError(errno.EIO, "Input/output error", "/data/x.png")
        except OSError as error:
            raise RuntimeError("reading the batch failed") from error
    except RuntimeError as outer:
        return outer


NODE_ERRORS = [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    OSError(errno.EIO, "Input/output error"),
    OSError(errno.EROFS, "Read-only file system"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/train/0001.png"),
    FileNotFoundError("Caught FileNotFoundError in DataLoader worker process 0."),  # no errno
    _wrapped(),
]
OWN_ERRORS = [
    FloatingPointError("non-finite loss at epoch 1"),
    ConfigError("trial t1: lr must be positive"),
    ValueError("bad setting"),
    PermissionError(errno.EACCES, "Permission denied"),
    OSError("When reading information for key 'k' in bucket 'b': AWS Error ACCESS_DENIED "
            "during HeadObject operation"),
]


@pytest.mark.parametrize("error", NODE_ERRORS)
def test_node_errors_are_node_local(error: BaseException) -> None:
    assert node_local(error)


@pytest.mark.parametrize("error", OWN_ERRORS)
def test_own_errors_are_not_node_local(error: BaseException) -> None:
    assert not node_local(error)


def _trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> Path:
    """search_trial with its storage a local folder and its training raising `error`."""
    note = tmp_path / "trial" / ERROR_NOTE
    monkeypatch.setattr(trainable, "_error_note",
                        lambda: (pyarrow.fs.LocalFileSystem(), str(note)))

    def fails(*args: object) -> None:
        raise error

    monkeypatch.setattr(trainable, "_search_trial", fails)
    with pytest.raises(type(error)):
        search_trial({}, {}, {}, outage_limit=0.0)
    return note


@pytest.mark.parametrize("error", NODE_ERRORS[:5])
def test_a_node_error_is_not_noted_and_a_retry_trains_again(
        error: BaseException, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    note = _trial(tmp_path, monkeypatch, error)
    assert not note.exists()
    _trial(tmp_path, monkeypatch, error)  # the retry trains (and fails) again, not at once


@pytest.mark.parametrize("error", OWN_ERRORS[:3])
def test_an_own_error_is_noted_and_a_retry_raises_it_at_once(
        error: BaseException, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    note = _trial(tmp_path, monkeypatch, error)
    assert type(error).__name__ in note.read_text()
    with pytest.raises(RepeatedTrialError, match=str(error)):
        search_trial({}, {}, {}, outage_limit=0.0)
