"""Reading the manual as the tests need it: its fenced blocks (language, title, lines), its
inline code spans, and the commands in both. The conventions are the ones
docs/contributing.md ("The manual") states for writers."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"
SHELL = {"bash", "sh", "shell"}
# A shell block with a title beginning with one of these is not run by a test, for that reason.
LABELS = ("Needs a cluster", "Needs a GPU", "Long run", "Starts a server", "Usage")
# Pages whose untitled shell blocks a test runs: tests/docs/test_walkthrough.py (e2e) and
# tests/docs/test_commands.py (the data commands, seconds).
WALKTHROUGH = DOCS / "getting-started.md"
RUN_HERE = DOCS / "data.md"

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
TITLE = re.compile(r'title="([^"]*)"')
SEPARATORS = {"&&", "||", ";", ">", "/", "do", "then"}


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it starts, its language and title, its lines."""

    page: Path
    line: int
    language: str
    title: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL

    @property
    def is_run(self) -> bool:
        """An untitled shell block: a test runs it."""
        return self.is_shell and not self.title


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def blocks(page: Path) -> list[Block]:
    """The page's fenced blocks; a fence of N backticks closes at N or more, so a block may
    show another one."""
    found: list[Block] = []
    opened: tuple[int, str, int, list[str], int] | None = None  # line, info, width, body, indent
    for number, line in enumerate(page.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if opened is None:
            if match:
                opened = (number, match["info"].strip(), len(match["fence"]), [],
                          len(match["indent"]))
            continue
        start, info, width, body, indent = opened
        if match and len(match["fence"]) >= width and not match["info"].strip():
            title = TITLE.search(info)
            found.append(Block(page, start, info.split(" ")[0] if info else "",
                               title[1] if title else "", "\n".join(body)))
            opened = None
        else:
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
    assert opened is None, f"{page.relative_to(REPO)}:{opened[0]}: a fence never closes"
    return found


def code_spans(page: Path) -> list[str]:
    """The inline code spans of the page's prose (outside fenced blocks); a span may run over
    a line break, as Markdown allows."""
    prose, inside = [], None
    for line in page.read_text().splitlines():
        match = FENCE.match(line)
        if match and (inside is None or len(match["fence"]) >= inside):
            inside = None if inside is not None else len(match["fence"])
            continue
        if inside is None:
            prose.append(line)
    return [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", "\n".join(prose))]


def logical_lines(text: str) -> list[str]:
    """A block's commands, one string each: backslash continuations joined, and so are the
    indented lines with which a synopsis continues the line above."""
    joined = text.replace("\\\n", " ")
    lines: list[str] = []
    for line in joined.splitlines():
        if line[:1].isspace() and lines:
            lines[-1] += " " + line.strip()
        elif line.strip():
            lines.append(line.strip())
    return lines


def words(line: str) -> list[str]:
    """A command line's words as the shell would split them, comments dropped; shell
    punctuation stands alone (`&&`, `;`, `|`, parentheses)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="();<>|&")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in a synopsis: split on spaces, as written
        return line.split()


def without_comment(line: str) -> str:
    """The command a line runs, comment and surrounding blanks dropped."""
    return " ".join(words(line))
