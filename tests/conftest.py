"""Shared fixtures: a temporary data directory, settings on free loopback ports, the shared data path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.settings import Settings
from tests.ports import free_port  # noqa: F401  (imported from here by many tests)
from tests.postgres import postgres_database_url, postgres_server, postgres_url  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = Path(os.environ.get("MEDSCREEN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real public data set beside the project (present in CI); tests that sweep it skip elsewhere."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: this test sweeps the whole shared data folder, which only CI has")
    return SHARED_DATA


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "var",
        http_port=free_port(),
        dicom_port=free_port(),
        quiet_period_s=1.0,
        completeness_poll_s=0.2,
        dicom_receivers=1,
        min_free_disk_mb=1,
    )
