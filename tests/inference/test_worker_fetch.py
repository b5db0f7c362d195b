"""A `medscreen worker` without the ingest node's spool: it fetches the study over WADO-RS from a real
`medscreen serve` (which scores nothing itself) on one real PostgreSQL, scores it, keeps what it built in its
own spool, and its own dispatcher writes it back to a real Orthanc: once, the same stored files after the
PACS was down for the first send."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from inference.tables import OutgoingResult, ScoreResult, ScoringJob, Study
from service.db import make_engine, make_session_factory, session_scope
from service.tables import AuditEvent
from service.users import create_user
from tests.conftest import free_port
from tests.inference.conftest import INFERENCE_FIXTURES
from tests.inference.test_stowrs import multipart
from tests.peers import MedscreenService, Orthanc, start_orthanc, stop_orthanc, wait_for

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"
SENDER, SENDER_PASSWORD = "worker-1", "worker-1-password-long"  # the workers' account on the ingest node
MODALITY, MODALITY_PASSWORD = "modality-1", "modality-1-password-long"  # what sends the studies
requires_postgres = pytest.mark.skipif(
    shutil.which("initdb") is None and not Path("/usr/lib/postgresql").is_dir(), reason="no PostgreSQL"
)


def start_ingest_node(
    medscreen_service: Callable[..., MedscreenService], database_url: str, tmp_path: Path
) -> tuple[MedscreenService, Engine]:
    """`medscreen serve` scoring nothing itself, with a `sender` account for the workers."""
    ingest = medscreen_service(
        database_url=database_url, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        scoring_workers=0, quiet_period_s=0.5,
    )
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as session:
        create_user(session, SENDER, SENDER_PASSWORD, ["sender"], actor="test")
        create_user(session, MODALITY, MODALITY_PASSWORD, ["sender"], actor="test")
    return ingest, engine


def stow_new_study(ingest: MedscreenService, tmp_path: Path) -> str:
    """A copy of the chest radiograph under new UIDs, sent to the ingest node by STOW-RS; its study UID."""
    token = httpx.post(
        f"{ingest.url}/api/auth/token", data={"username": MODALITY, "password": MODALITY_PASSWORD}, timeout=30
    ).json()["access_token"]
    ds = dcmread(DX_CHEST)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    sent = tmp_path / f"{ds.StudyInstanceUID}.dcm"
    ds.save_as(sent)
    body, content_type = multipart(sent)
    stored = httpx.post(
        f"{ingest.url}/dicomweb/studies", content=body, timeout=60,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )
    assert stored.status_code == 200, stored.text
    return str(ds.StudyInstanceUID)


class FetchingWorker:
    """A `medscreen worker` machine with its own home and spool, fetching over WADO-RS, logging to a file."""

    def __init__(self, home: Path, ingest: MedscreenService, database_url: str, **settings: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.log = home / "worker.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCREEN_")}
        env.update(
            MEDSCREEN_HOME=str(home),  # its own spool (no MEDSCREEN_SPOOL_PATH): the ingest node's is not mounted
            MEDSCREEN_DATABASE_URL=database_url,
            MEDSCREEN_MLFLOW_TRACKING_URI=ingest.env["MEDSCREEN_MLFLOW_TRACKING_URI"],
            MEDSCREEN_INGEST_URL=ingest.url,
            MEDSCREEN_INGEST_USERNAME=SENDER,
            MEDSCREEN_INGEST_PASSWORD=SENDER_PASSWORD,
            MEDSCREEN_SCORING_POLL_S="0.2",
            MEDSCREEN_SCORING_RETRY_BASE_S="0",
            MEDSCREEN_LOG_LEVEL="INFO",
            MEDSCREEN_ORT_THREADS="1",
        )
        env.update({f"MEDSCREEN_{key.upper()}": value for key, value in settings.items()})
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "medscreen", "worker", "--processes", "1"], env=env, stdout=log, stderr=log
            )

    @property
    def node(self) -> str:
        """The name its spool got at its start (inference/spool_node.py)."""
        return wait_for(lambda: self._node_file(), 240, f"{self.home} to name its spool")

    def _node_file(self) -> str | None:
        path = self.home / "spool" / "node-id"
        if path.is_file():
            return path.read_text().strip()
        self.check_alive()
        return None

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the worker exited: {self.log.read_text(errors='replace')[-3000:]}")

    def outgoing(self, study_uid: str) -> Path:
        return self.home / "spool" / "outgoing" / study_uid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


def pacs_settings(port: int, **more: str) -> dict[str, str]:
    return {"pacs_ae_title": "ORTHANC", "pacs_host": "127.0.0.1", "pacs_port": str(port), **more}


def orthanc_instances(pacs: Orthanc, study_uid: str) -> dict[str, Dataset]:
    """The instances Orthanc holds in the study, by SOP Instance UID."""
    found = pacs.client.post("/tools/lookup", content=study_uid).json()
    studies = [item["ID"] for item in found if item["Type"] == "Study"]
    held = {}
    for study_id in studies:
        for instance in pacs.client.get(f"/studies/{study_id}/instances").json():
            ds = dcmread(io.BytesIO(pacs.client.get(f"/instances/{instance['ID']}/file").content))
            held[str(ds.SOPInstanceUID)] = ds
    return held


def outgoing_row(engine: Engine, study_uid: str) -> OutgoingResult | None:
    with make_session_factory(engine)() as session:
        return session.scalar(
            select(OutgoingResult).join(Study, Study.id == OutgoingResult.study_id).where(Study.study_instance_uid == study_uid)
        )


def worker_logins(engine: Engine) -> int:
    """Logins of the workers' account on the ingest node (each one a bcrypt check there)."""
    with make_session_factory(engine)() as session:
        return session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "auth.login", AuditEvent.subject_id == SENDER)
        ) or 0


def event_kinds(engine: Engine, study_uid: str) -> list[str]:
    with make_session_factory(engine)() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_uid)).one()
        return [event.kind for event in study.events]


@pytest.mark.integration
@requires_postgres
def test_a_fetching_worker_writes_back_once_the_same_files_after_the_pacs_was_down(
    medscreen_service: Callable[..., MedscreenService], postgres_database_url: str, tmp_path: Path
) -> None:
    ingest, engine = start_ingest_node(medscreen_service, postgres_database_url, tmp_path)
    study_uid = stow_new_study(ingest, tmp_path)
    pacs_port = free_port()  # nothing listens there until the first send has failed
    worker = FetchingWorker(
        tmp_path / "worker-machine", ingest, postgres_database_url,
        **pacs_settings(pacs_port, dispatch_retry_base_s="1", dispatch_max_attempts="50"),
    )
    pacs: Orthanc | None = None
    try:
        def first_send_failed() -> OutgoingResult | None:
            worker.check_alive()
            row = outgoing_row(engine, study_uid)
            return row if row is not None and row.attempts >= 1 and row.state == "retry" else None

        failed = wait_for(first_send_failed, 300, "the worker to score the fetched study and fail its first send")
        assert failed.node == worker.node and "association" in (failed.last_error or "").lower()
        folder = worker.outgoing(study_uid)
        stored = {path.name: path.read_bytes() for path in folder.iterdir()}
        assert sorted(stored) == sorted(f"{uid}.dcm" for uid in failed.sop_instance_uids)

        pacs = start_orthanc(tmp_path / "orthanc", extra_config={"DicomPort": pacs_port})
        wait_for(lambda: (row := outgoing_row(engine, study_uid)) is not None and row.state == "done", 240,
                 "the retry to reach the PACS")
    finally:
        worker.stop()
    try:
        assert pacs is not None
        held = orthanc_instances(pacs, study_uid)
    finally:
        if pacs is not None:
            stop_orthanc(pacs)
    with make_session_factory(engine)() as session:
        result = session.scalars(select(ScoreResult)).one()
        job = session.scalars(select(ScoringJob)).one()
    row = outgoing_row(engine, study_uid)
    assert row is not None and row.attempts >= 2 and row.node == worker.node
    assert result.outcome == "scored" and result.writeback_state == "sent" and job.attempts == 1  # the model ran once
    uids = (result.sr_sop_instance_uid, result.heatmap_sop_instance_uid)
    # The PACS holds exactly the SR and heat-map built before the first send, as stored (nothing rebuilt).
    assert sorted(held) == sorted(uids)
    assert {path.name: path.read_bytes() for path in worker.outgoing(study_uid).iterdir()} == stored
    for uid in uids:
        assert held[str(uid)] == dcmread(io.BytesIO(stored[f"{uid}.dcm"]))
    kinds = event_kinds(engine, study_uid)
    assert kinds.count("scored") == 1 and kinds.count("written-back") == 1 and "write-back-retry" in kinds
    log = worker.log.read_text(errors="replace")
    assert "fetched 1 instance(s) over WADO-RS" in log and log.count("sent by node") == 1
    assert f"node {worker.node}: result documents in" in log
    # It dropped its copy of the study once done; the ingest node's record shows the result.
    assert not any((worker.home / "instance-cache").glob("*/*"))
    assert ingest.study(ingest.token_headers(), study_uid)["status"] == "scored"
    engine.dispose()
