"""MkDocs hook: images the pages show from the repository's own folders (e.g. a benchmark's
plot under benchmarks/results/) are published with the site.

A page links such an image relative to its own file (`../../benchmarks/results/x.png`), so the
link works on GitHub too; MkDocs only publishes what lies under docs/, so the hook copies each
such image into the site under `repo/<its path>` and points the page's link there. The plot is
never copied into docs/, where it would go stale when the benchmark regenerates it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

IMAGE = re.compile(r"(!\[[^\]]*\]\()([^)\s]+)(\))")
PREFIX = "repo"


def _outside_docs(page_uri: str, target: str, docs: Path) -> str | None:
    """The repository path of `target` when a page at `page_uri` links an existing file above
    docs/, else None (links into docs/ and URLs are MkDocs's to check)."""
    if "://" in target or target.startswith("/"):
        return None
    resolved = (docs / posixpath.dirname(page_uri) / target).resolve()
    repo = docs.resolve().parent
    if resolved.is_relative_to(docs.resolve()) or not resolved.is_relative_to(repo):
        return None
    return resolved.relative_to(repo).as_posix() if resolved.is_file() else None


def on_files(files: Files, config: Any) -> Files:
    docs = Path(config["docs_dir"])
    for page in list(files.documentation_pages()):
        for _, target, _ in IMAGE.findall(Path(page.abs_src_path or "").read_text()):
            inside_repo = _outside_docs(page.src_uri, target, docs)
            if inside_repo and files.get_file_from_path(f"{PREFIX}/{inside_repo}") is None:
                files.append(File.generated(config, f"{PREFIX}/{inside_repo}",
                                            abs_src_path=str(docs.parent / inside_repo)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    docs = Path(config["docs_dir"])

    def publish(match: re.Match[str]) -> str:
        inside_repo = _outside_docs(page.file.src_uri, match[2], docs)
        if inside_repo is None:
            return match[0]
        here = posixpath.dirname(page.file.src_uri) or "."
        return match[1] + posixpath.relpath(f"{PREFIX}/{inside_repo}", here) + match[3]

    return IMAGE.sub(publish, markdown)
