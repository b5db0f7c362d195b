"""Fixtures of the inference tests: the real app and users (from the service tests), an ingestor, a receiver."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pynetdicom.transport import ThreadedAssociationServer

from benchmarks.dcmtk import dcmtk, have_dcmtk
from inference.complete import CompletenessMonitor
from inference.ingest import InstanceIngestor
from inference.receive.dimse import start_dimse_server
from inference.receive.process import build_ingestor
from inference.route import load_rules
from inference.worker import ScoringWorker
from inference.worker_process import build_worker
from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory
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
        [dcmtk("storescu"), "-v", "-aet", calling_ae, "-aec", "MEDSCREEN", *extra, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    return result.stdout + result.stderr


requires_dcmtk = pytest.mark.skipif(not have_dcmtk(), reason="dcmtk is not installed (make test installs it)")


@pytest.fixture(scope="module")
def registry(registered_store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow sqlite registry holding the shipped bundles as version 1, alias champion (as on first start):
    a module's own copy of the session's store, so that what a module promotes stays in it. The copy's versions
    read their artifacts where the session's store logged them; a version a test logs writes beside them."""
    home = tmp_path_factory.mktemp("mlflow")
    shutil.copyfile(registered_store, home / "mlflow.db")
    return f"sqlite:///{home / 'mlflow.db'}"


@dataclass
class Pipeline:
    settings: Settings
    ingestor: InstanceIngestor
    monitor: CompletenessMonitor
    worker: ScoringWorker

    def receive(self, *paths: Path) -> None:
        for path in paths:
            target = self.ingestor.spool.new_incoming_path()
            shutil.copyfile(path, target)
            self.ingestor.accept_file(target, source="dimse")

    def complete_route_and_score(self) -> None:
        self.monitor.run_once()
        self.worker.enqueue_routed()
        while self.worker.process_one():
            pass

    def session(self):
        return self.worker.session_factory()


@pytest.fixture
def pipeline(settings: Settings, registry: str) -> Iterator[Pipeline]:
    settings = settings.model_copy(
        update={"mlflow_tracking_uri": registry, "quiet_period_s": 0.0, "scoring_retry_base_s": 0.0, "model_refresh_s": 0.0}
    )
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate_all(settings.resolved_database_url)
    ingestor = build_ingestor(settings)
    factory = make_session_factory(make_engine(settings.resolved_database_url, serialise_writes=True))
    yield Pipeline(settings, ingestor, CompletenessMonitor(settings, factory, load_rules()), build_worker(settings))
