"""Every shell command the manual and the README show is run by a test or marked as not run,
with the reason in its block's title; every `wsol` / `search.py` flag they show exists; the
data commands of "Preparing data" run here (seconds). Conventions: docs/contributing.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from manual_blocks import (
    LABELS,
    README,
    REPO,
    RUN_HERE,
    WALKTHROUGH,
    Block,
    blocks,
    code_spans,
    logical_lines,
    pages,
    without_comment,
)
from manual_flags import problems

DOCUMENTS = [*pages(), README]


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


@pytest.mark.parametrize("page", DOCUMENTS, ids=_ids(DOCUMENTS))
def test_every_block_has_a_language_and_every_shell_block_is_run_or_marked(page: Path) -> None:
    wrong = []
    for block in blocks(page):
        if not block.language:
            wrong.append(f"{block.where}: a block without a language (bash, text, yaml, ...)")
        elif block.is_shell and block.title and not block.title.startswith(LABELS):
            wrong.append(f"{block.where}: title {block.title!r} begins with none of {LABELS}")
        elif block.is_run and page not in (WALKTHROUGH, RUN_HERE, README):
            wrong.append(f"{block.where}: no test runs this block: move it to a page a test "
                         f"runs, or title it with one of {LABELS} (docs/contributing.md)")
    assert wrong == []


def test_the_readmes_commands_are_lines_of_the_walkthrough() -> None:
    """The README shows a few of the walkthrough's commands; they are tested there."""
    walked = {without_comment(line) for block in blocks(WALKTHROUGH) if block.is_run
              for line in logical_lines(block.text)}
    shown = [without_comment(line) for block in blocks(README) if block.is_run
             for line in logical_lines(block.text)]
    assert shown, "README shows no command of the walkthrough"
    assert [line for line in shown if line not in walked] == []


def _commands(page: Path) -> list[tuple[str, str]]:
    """(where, command line) for every command a page shows, in blocks and in code spans."""
    found = []
    for block in blocks(page):
        if block.is_shell:
            found += [(block.where, line) for line in logical_lines(block.text)]
    found += [(f"{page.relative_to(REPO)} (code span)", span) for span in code_spans(page)]
    return found


@pytest.mark.parametrize("page", DOCUMENTS, ids=_ids(DOCUMENTS))
def test_every_flag_shown_exists(page: Path) -> None:
    wrong = [f"{where}: {problem}" for where, line in _commands(page)
             for problem in problems(line)]
    assert wrong == []


def test_the_flag_check_catches_what_it_is_for() -> None:
    """The checks above can fail: a flag, a subcommand, a target or a file that does not exist."""
    assert problems(".venv/bin/wsol promote --method cam --bogus 1") == [
        "`wsol promote` has no option --bogus"]
    assert problems("wsol data chek --dataset cub") == ["`wsol data chek`: no such command"]
    assert problems("ray submit cluster/gpu.yaml search.py -- --config x.yaml --restor") == [
        "`search.py` (search.py) has no option --restor"]
    assert problems('ray exec cluster/gpu.yaml "~/wsol/.venv/bin/wsol store backup --now"') == [
        "`wsol store backup` has no option --now"]
    assert problems("wsol train --out DIR [--epochs N] [--seeds N]") == [
        "`wsol train` has no option --seeds"]
    assert problems("make dcos") == ["`make dcos`: no such target in the Makefile"]
    assert problems("python benchmarks/replay.py --seed 1") == [
        "`benchmarks/replay.py` has no option --seed"]
    assert problems("wsol search --config experiments/nothing.yaml") == [
        "experiments/nothing.yaml: no such file in the repository"]
    assert problems("git archive bf7dcf6^ wsol | tar -x -C DIR") == []


def test_a_block_is_read_with_its_title_and_a_shown_fence_stays_inside() -> None:
    page = REPO / "docs" / "contributing.md"
    shown = [b for b in blocks(page) if b.language == "text" and "```bash" in b.text]
    assert len(shown) == 1 and 'title="Needs a cluster' in shown[0].text
    assert isinstance(shown[0], Block) and not shown[0].is_shell


def test_the_data_commands_run(tmp_path: Path) -> None:
    """Preparing data's untitled blocks, in order, in an empty folder with the venv at .venv."""
    script = "\n".join(block.text for block in blocks(RUN_HERE) if block.is_run)
    assert "wsol data synth" in script and "wsol data check" in script
    (tmp_path / ".venv").symlink_to(sys.prefix)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": ""},
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "data" / "synthetic-demo" / "metadata" / "val" / "image_ids.txt").is_file()
    assert done.stdout.count("\nOK") == 2 and "test       5794" in done.stdout  # CUB's test split
