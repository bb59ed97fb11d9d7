"""The `e2e` marker is kept honest (conftest.py): a test not marked e2e that starts a server,
Ray nodes or Ray itself fails, saying to mark it. Nothing starts here: a refused starter fails
before it runs, and servers.py's starters only start when their context is entered."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import servers

STARTERS = ("s3_server", "mlflow_server", "postgres_server", "ray_nodes", "tcp_proxy",
            "silent_proxy")


@pytest.mark.parametrize("name", STARTERS)
def test_an_unmarked_test_starting_a_server_is_told_to_mark_it(name: str, tmp_path: Path):
    args = {"ray_nodes": (1,), "tcp_proxy": (1, 2), "silent_proxy": (1,)}.get(name, (tmp_path,))
    with pytest.raises(pytest.fail.Exception, match=rf"starts servers\.{name} but is not "
                       r"marked e2e: mark it @pytest\.mark\.e2e"):
        getattr(servers, name)(*args)


def test_ray_init_is_guarded_too() -> None:
    assert getattr(ray.init, "_e2e_guard", False)
