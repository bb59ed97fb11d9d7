"""The search's log: one per driver start (the previous ones kept, up to LOGS_KEPT), and the
trials' forwarded output written without a file handle that outlives the search."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from wsol.search import progress
from wsol.search.progress import console_to_log, worker_output_to


def _start(log: Path, text: str) -> None:
    with console_to_log(log):
        print(text)


def test_each_start_begins_a_log_of_its_own(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOGS_KEPT", 3)
    log = tmp_path / "search" / "search.log"
    for start in range(1, 5):
        _start(log, f"output of start {start}")
    assert log.read_text().count("===== search started") == 1
    assert "output of start 4" in log.read_text()
    assert "output of start 3" in (tmp_path / "search" / "search.log.1").read_text()
    assert "output of start 2" in (tmp_path / "search" / "search.log.2").read_text()
    assert sorted(p.name for p in log.parent.iterdir()) == [
        "search.log", "search.log.1", "search.log.2"]  # start 1's went


class _Dispatcher:
    """Stands in for Ray's dispatcher of the workers' output."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def remove_handler(self, name: str) -> None:
        self.handlers.pop(name, None)

    def add_handler(self, name: str, handler: Any) -> None:
        self.handlers[name] = handler


def _open_on(path: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    return [fd.name for fd in fds.iterdir()
            if os.path.realpath(fd) == str(path.resolve())]


def test_worker_output_holds_no_handle(tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    dispatcher = _Dispatcher()
    monkeypatch.setattr(progress.ray_logging, "global_worker_stdstream_dispatcher", dispatcher,
                        raising=False)
    log = tmp_path / "search.log"
    log.touch()
    worker_output_to(log)
    assert _open_on(log) == []
    dispatcher.handlers["ray_print_logs"]({"lines": ["epoch 1/2 loss 0.5"], "pid": 42,
                                          "ip": "10.0.0.2", "actor_name": "ImplicitFunc"})
    assert _open_on(log) == []
    assert log.read_text() == "(ImplicitFunc pid=42, ip=10.0.0.2) epoch 1/2 loss 0.5\n"
    log.unlink()  # the folder went away: the output is dropped, nothing raised in Ray's thread
    (tmp_path / "gone").mkdir()
    worker_output_to(tmp_path / "gone" / "x" / "search.log")
    dispatcher.handlers["ray_print_logs"]({"lines": ["late"], "pid": 1, "ip": "h"})
