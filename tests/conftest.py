"""Shared fixtures: the real WSOL metadata beside the repo and a generated synthetic set."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsol.data.synthetic import PRESETS, generate

REPO = Path(__file__).resolve().parents[1]
REAL_METADATA = REPO.parent / "shared" / "wsol-metadata"


@pytest.fixture(scope="session")
def real_metadata() -> Path:
    if not REAL_METADATA.is_dir():
        pytest.fail(f"the real metadata is expected at {REAL_METADATA} (../shared beside the repo)")
    return REAL_METADATA


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth-tiny")
    generate(root, PRESETS["tiny"], seed=3)
    return root
