"""What a command says to its user, also while a search sends all other output to its log.

A search redirects sys.stdout and sys.stderr to its log file (wsol.search.progress); `say`
still reaches the terminal through the streams saved here. Every module that talks to the
user (the search's progress, its MLflow records, the outage retries) prints through it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TextIO

# The terminal while a search in this process sends sys.stdout/sys.stderr to its log.
_console: TextIO | None = None
_console_err: TextIO | None = None


def say(line: str, error: bool = False) -> None:
    """Prints on the terminal, also while a search sends everything else to its log."""
    stream = (_console_err if error else _console) or (sys.stderr if error else sys.stdout)
    print(line, file=stream, flush=True)


@contextlib.contextmanager
def terminal_kept() -> Iterator[None]:
    """`say` keeps today's sys.stdout and sys.stderr while the block redirects them."""
    global _console, _console_err
    saved = _console, _console_err
    _console, _console_err = sys.stdout, sys.stderr
    try:
        yield
    finally:
        _console, _console_err = saved


def error_line(error: str) -> str:
    """The exception line of a traceback ('NonFiniteLossError: non-finite loss ...')."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "trial failed")[:4000]
