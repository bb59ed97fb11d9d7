"""Shared fixtures: the real WSOL metadata bundled in the package and a synthetic set.

Every test also runs under an audit hook that fails it if it opens a file in the folder that CI
places beside the clone: the repo must stand alone, so its tests may only read their own copies.

The `e2e` marker is kept honest: a test not marked e2e that starts Ray (`ray.init`) or one of
servers.py's servers or nodes, itself or through a fixture, fails and says to mark it, so that
the quick check (`-m "not e2e"`) stays quick.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import servers

from wsol.data.bundled import bundled_root
from wsol.data.synthetic import PRESETS, generate

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = os.path.join(str(REPO.parent), "sha" + "red")
_outside_reads: list[str] = []


def _audit(event: str, args: tuple) -> None:
    """Record opens under the sibling folder; cheap, as it runs on every audit event."""
    if event != "open" or not args or not isinstance(args[0], str | bytes | os.PathLike):
        return
    try:
        path = os.path.abspath(os.fsdecode(args[0]))
    except (TypeError, ValueError):
        return
    if path == OUTSIDE or path.startswith(OUTSIDE + os.sep):
        _outside_reads.append(path)


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _reads_stay_inside_the_checkout() -> Iterator[None]:
    start = len(_outside_reads)
    yield
    if len(_outside_reads) > start:
        pytest.fail(f"read outside the checkout: {sorted(set(_outside_reads[start:]))}")


# --- the e2e marker -------------------------------------------------------------------------

_running: list[pytest.Item] = []  # the test whose setup (its fixtures too) or body runs now


def _refuse_unless_e2e(what: str) -> None:
    if _running and _running[0].get_closest_marker("e2e") is None:
        pytest.fail(f"{_running[0].nodeid} starts {what} but is not marked e2e: mark it "
                    "@pytest.mark.e2e (or `pytestmark = pytest.mark.e2e` for the whole file), "
                    'so that the quick check `pytest -m "not e2e"` stays quick', pytrace=False)


def _guarded(start: Callable[..., Any], what: str) -> Callable[..., Any]:
    if getattr(start, "_e2e_guard", False):
        return start

    @functools.wraps(start)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _refuse_unless_e2e(what)
        return start(*args, **kwargs)

    guarded._e2e_guard = True  # type: ignore[attr-defined]
    return guarded


# Before any test module imports them by name.
for _name in ("s3_server", "mlflow_server", "postgres_server", "ray_nodes", "tcp_proxy",
              "silent_proxy"):
    setattr(servers, _name, _guarded(getattr(servers, _name), f"servers.{_name}"))


@contextmanager
def _running_test(item: pytest.Item) -> Iterator[None]:
    ray = sys.modules.get("ray")  # imported by the test modules that use it; looked up late
    if ray is not None and hasattr(ray, "init"):
        ray.init = _guarded(ray.init, "Ray (ray.init)")
    _running[:] = [item]
    try:
        yield
    finally:
        _running.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with _running_test(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with _running_test(item):
        return (yield)


@pytest.fixture(scope="session")
def real_metadata() -> Path:
    """The project's own copy (CUB/, ILSVRC/, OpenImages/), so a plain clone runs every test."""
    return bundled_root()


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth-tiny")
    generate(root, PRESETS["tiny"], seed=3)
    return root


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A Ray of the module's own on two CPUs ("local": never a cluster running here)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
