"""One rule for every path the tool reads, so nothing depends on the working directory silently.

- A path the user types (a flag, an argument) is taken as given: `~` and `$VARS` expand, and a
  relative path is relative to the working directory.
- A relative path written inside a file (an experiment's search spaces or data, a trial
  config's data or weights) is relative to the folder of that file.
- A relative `--config` that is not found in the working directory is looked up in the project
  the package was installed from: the source checkout of an editable install, then the copy of
  `experiments/` and `search_spaces/` that a wheel installs under `<prefix>/share/wsol`. The
  error names every place tried.

`ray submit` copies `search.py` alone to the head's home and runs it from there: with this rule
`--config experiments/cub.yaml` still finds the project's file, and that file's relative paths
still point into the project.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import wsol


class PathNotFoundError(FileNotFoundError):
    """A file the user named is in none of the places the rule looks; says which were tried."""


def expand(value: str | os.PathLike[str]) -> str:
    return os.path.expandvars(os.path.expanduser(str(value)))


def is_uri(value: str) -> bool:
    return "://" in value


def relative_to_file(value: str, file: Path) -> str:
    """A path written inside `file`: absolute, or relative to its folder; URIs unchanged."""
    expanded = expand(value)
    if is_uri(expanded) or Path(expanded).is_absolute():
        return expanded
    return os.path.normpath(file.resolve().parent / expanded)


def project_roots() -> list[Path]:
    """Where the installed project's own files are: the checkout, then the wheel's data copy."""
    roots = []
    checkout = Path(wsol.__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        roots.append(checkout)
    shared = Path(sysconfig.get_path("data")) / "share" / "wsol"
    if shared.is_dir():
        roots.append(shared)
    return roots


def find_input(value: str | os.PathLike[str], what: str = "file") -> Path:
    """A user-named file: as given, else (if relative) in the installed project."""
    path = Path(expand(value))
    if path.exists():
        return path
    tried = [Path.cwd() / path if not path.is_absolute() else path]
    if not path.is_absolute():
        for root in project_roots():
            candidate = root / path
            if candidate.exists():
                return candidate
            tried.append(candidate)
    places = ", ".join(str(p) for p in tried)
    raise PathNotFoundError(f"{value}: no such {what} (looked at {places})")


def project_file(relative: str, what: str = "file") -> Path:
    """A file the project ships (e.g. the default experiment), found the same way."""
    for root in project_roots():
        if (root / relative).exists():
            return root / relative
    where = ", ".join(str(root) for root in project_roots()) or "no installed project found"
    raise PathNotFoundError(f"the project's {what} {relative} is missing (looked in {where})")
