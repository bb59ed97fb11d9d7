"""Every command's --help: exit status 0 and every option it accepts listed (one parser, so
`wsol search --help` is a real help, and `python search.py --help` the same options)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from wsol.cli import build_parser, main
from wsol.cli.search import add_arguments

REPO = Path(__file__).resolve().parents[2]


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
              ) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Each leaf command (`data check`, `search`, ...) and its parser."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_commands(sub, (*prefix, name)) or {(*prefix, name): sub})
    return found


COMMANDS = _commands(build_parser())


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings]


def test_every_subcommand_is_covered() -> None:
    assert {" ".join(c) for c in COMMANDS} == {
        "data check", "data prepare", "data shard", "data synth", "score", "train", "search",
        "promote", "evaluate", "report", "compare", "store backup", "store restore"}


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=" ".join)
def test_help_lists_every_option(command: tuple[str, ...], capsys: pytest.CaptureFixture
                                 ) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: wsol {' '.join(command)}")
    options = _options(COMMANDS[command])
    assert len(options) > 2
    assert [o for o in options if o not in text] == []


def test_search_py_has_the_options_of_wsol_search() -> None:
    done = subprocess.run([sys.executable, str(REPO / "search.py"), "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: search.py")
    standalone = argparse.ArgumentParser(prog="search.py")
    add_arguments(standalone)
    assert _options(standalone) == _options(COMMANDS[("search",)])
    assert [o for o in _options(standalone) if o not in done.stdout] == []


def test_an_option_shared_by_commands_is_defined_once() -> None:
    """--tracking-uri reads the same in every command that takes it."""
    helps = {action.help for parser in COMMANDS.values() for action in parser._actions
             if "--tracking-uri" in action.option_strings}
    assert len(helps) == 1
    assert sum("--tracking-uri" in _options(p) for p in COMMANDS.values()) == 5
