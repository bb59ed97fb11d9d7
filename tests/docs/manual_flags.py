"""The flags a command in the manual passes, checked against what that command accepts:
`wsol` and `search.py` against the one argparse parser (no subprocess), the repository's
scripts against their own source, `make` against the Makefile."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

from manual_blocks import REPO, SEPARATORS, words

from wsol.cli import build_parser

SCRIPT = re.compile(r"^benchmarks/[\w/.-]+\.py$")
REPO_FILE = re.compile(r"^(benchmarks|cluster|configs|experiments|requirements|search_spaces|"
                       r"tests)/[\w/.-]+\.(py|yaml|sh|txt)$")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


WSOL = build_parser()
SEARCH = _subparsers(WSOL)["search"]
MAKE_TARGETS = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))


def _flags(tokens: list[str]) -> list[str]:
    """The options among a command's arguments, up to the next command: `--flag` or
    `--flag=value`, the synopsis's brackets and parentheses stripped."""
    found = []
    for token in tokens:
        if token in SEPARATORS:
            break
        option = token.strip("[]()").split("=")[0]
        if option.startswith("-") and option not in ("-", "--") and not option[1:2].isdigit():
            found.append(option)
    return found


def _wsol(tokens: list[str]) -> list[str]:
    """Problems of `wsol <tokens>`: an unknown subcommand or option."""
    parser, path = WSOL, ["wsol"]
    while (choices := _subparsers(parser)) and tokens:
        word = tokens[0].strip("[]()")
        if word.startswith("-"):
            break
        if word not in choices:
            # A placeholder (`wsol COMMAND --help`) or the end of the command names nothing.
            known = (word.isupper() or word.startswith("<") or word in ("...", "", "|")
                     or word in SEPARATORS)
            return [] if known else [f"`{' '.join(path)} {word}`: no such command"]
        parser, path, tokens = choices[word], [*path, word], tokens[1:]
    accepted = _options(parser)
    return [f"`{' '.join(path)}` has no option {flag}" for flag in _flags(tokens)
            if flag not in accepted]


def _search(tokens: list[str], program: str) -> list[str]:
    tokens = tokens[1:] if tokens[:1] == ["--"] else tokens
    accepted = _options(SEARCH)
    return [f"`{program}` (search.py) has no option {flag}" for flag in _flags(tokens)
            if flag not in accepted]


def _script(source: str, tokens: list[str], name: str) -> list[str]:
    return [f"`{name}` has no option {flag}" for flag in _flags(tokens)
            if f'"{flag}"' not in source]


def problems(line: str) -> list[str]:
    """What is wrong with the commands of one command line (a block's or a code span's)."""
    tokens = words(line)
    found: list[str] = []
    for at, token in enumerate(tokens):
        rest = tokens[at + 1:]
        if " " in token:  # a quoted command: `ray exec cluster/gpu.yaml "... wsol store backup"`
            found += problems(token)
        elif Path(token).name == "wsol" and not token.startswith("<"):
            found += _wsol(rest)
        elif Path(token).name == "search.py" or token == "cluster/slurm.sh":
            found += _search(rest, token)
        elif SCRIPT.match(token) and (REPO / token).is_file():
            found += _script((REPO / token).read_text(), rest, token)
        elif token == "-m" and rest and rest[0].startswith("wsol."):
            spec = importlib.util.find_spec(rest[0])
            if spec is None or spec.origin is None:
                found.append(f"no module {rest[0]}")
            else:
                found += _script(Path(spec.origin).read_text(), rest[1:], rest[0])
        elif token == "make" and rest and rest[0] not in MAKE_TARGETS:
            found.append(f"`make {rest[0]}`: no such target in the Makefile")
        if REPO_FILE.match(token) and not (REPO / token).is_file():
            found.append(f"{token}: no such file in the repository")
    return found
