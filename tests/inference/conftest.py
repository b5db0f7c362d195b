"""Fixtures of the inference tests: the real app and users (from the service tests), an ingestor, a receiver."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom.transport import ThreadedAssociationServer

from inference.ingest import InstanceIngestor
from inference.receive.dimse import start_dimse_server
from inference.receive.process import build_ingestor
from medscreen.schema import migrate_all
from service.settings import Settings
from tests.conftest import FIXTURES
from tests.peers import medscreen_service  # noqa: F401  (fixture)
from tests.service.conftest import add_user, app, client, database_url, service_settings  # noqa: F401

INFERENCE_FIXTURES = FIXTURES / "inference"


@pytest.fixture
def sqlite_settings(settings: Settings) -> Settings:
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate_all(settings.resolved_database_url)
    return settings


@pytest.fixture
def ingestor(sqlite_settings: Settings) -> Iterator[InstanceIngestor]:
    ingestor = build_ingestor(sqlite_settings)
    yield ingestor
    ingestor.engine.dispose()


@pytest.fixture
def incoming_copy(ingestor: InstanceIngestor):
    """Copy a fixture file into the spool's incoming folder, as a receiver would have written it."""

    def copy(source: Path) -> Path:
        target = ingestor.spool.new_incoming_path()
        shutil.copyfile(source, target)
        return target

    return copy


@pytest.fixture
def dimse_server(ingestor: InstanceIngestor, sqlite_settings: Settings) -> Iterator[ThreadedAssociationServer]:
    """A real pynetdicom receiver on a free loopback port, in this process."""
    server = start_dimse_server(
        ingestor, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", sqlite_settings.dicom_allowed_aes, 262144
    )
    yield server
    server.shutdown()


def storescu(port: int, *files: Path, calling_ae: str = "TESTSCU", extra: tuple[str, ...] = ()) -> str:
    """Send files with dcmtk's storescu; returns its verbose output (status per file)."""
    result = subprocess.run(
        ["storescu", "-v", "-aet", calling_ae, "-aec", "MEDSCREEN", *extra, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    return result.stdout + result.stderr


requires_dcmtk = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (make test installs it)")
