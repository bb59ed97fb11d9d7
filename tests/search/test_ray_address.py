"""A search without --address starts its own Ray, never joining a cluster running here."""

import pytest

from wsol.search.runner import ray_address


def test_no_address_means_a_new_local_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(None) == "local"


def test_an_empty_ray_address_is_no_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "")  # ray.init would look for a running cluster
    assert ray_address(None) == "local"


def test_ray_job_submit_address_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert ray_address(None) is None  # ray.init reads $RAY_ADDRESS itself


def test_an_explicit_address_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address("auto") == "auto"
