"""The `wsol` command: the one parser, built from a module per subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from wsol.cli import (
    common,
    compare,
    data,
    evaluate,
    promote,
    report,
    score,
    search,
    store,
    train,
)

# In the order of the flow: data, trial, search, what happens to a search's results; then
# the upkeep of the store they all write.
SUBCOMMANDS = (data, score, train, search, promote, evaluate, report, compare, store)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsol", description="The `wsol` command.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return common.run(build_parser(), argv)
