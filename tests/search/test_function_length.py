"""No function or method in wsol/search is over 60 lines (its `def` to its last line, decorators
left out), so each stays readable on one screen."""

from __future__ import annotations

import ast
from pathlib import Path

SEARCH = Path(__file__).resolve().parents[2] / "wsol" / "search"
LIMIT = 60


def _too_long(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > LIMIT:
                found.append(f"wsol/search/{path.relative_to(SEARCH)}:{node.lineno}: "
                             f"{node.name} is {length} lines")
    return found


def test_no_function_in_wsol_search_is_over_60_lines() -> None:
    modules = sorted(SEARCH.rglob("*.py"))
    assert modules
    offenders = [line for path in modules for line in _too_long(path)]
    assert not offenders, f"over {LIMIT} lines (split them):\n" + "\n".join(offenders)
