"""The manual builds as a site with `mkdocs build --strict` (a broken link or anchor, or a page
missing from the nav, fails), and the README's links into it resolve, as GitHub follows them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from manual_blocks import README, REPO

ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(config), "--site-dir", str(site)], capture_output=True,
                          text=True, env=ENV, timeout=300, check=False)


def test_the_manual_builds_strictly(tmp_path: Path) -> None:
    done = build(REPO / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "getting-started" / "index.html").is_file()
    # A figure of the repository's own, published by docs/hooks/repo_images.py.
    assert (tmp_path / "site" / "repo" / "benchmarks" / "results" / "replay_regret.png").is_file()


def test_a_broken_link_anchor_or_page_outside_the_nav_fails_the_build(tmp_path: Path) -> None:
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copytree(REPO / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    page = tmp_path / "docs" / "data.md"
    broken = "[gone](nowhere.md) and [lost](protocol.md#no-such-part)"
    page.write_text(f"{page.read_text()}\n{broken}\n")
    (tmp_path / "docs" / "orphan.md").write_text("# Not in the nav\n")
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    for warning in ("nowhere.md", "no-such-part", "orphan.md"):
        assert warning in done.stderr, done.stderr


def _slugs(page: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub and MkDocs's toc both make them for the
    headings this manual has: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_links_into_the_manual_resolve() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") for link in local)
    wrong = []
    for link in local:
        path, _, anchor = link.partition("#")
        target = REPO / path
        if not target.is_file():
            wrong.append(f"{link}: no such file")
        elif anchor and anchor not in _slugs(target):
            wrong.append(f"{link}: no heading with that anchor")
    assert wrong == []
