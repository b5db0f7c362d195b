"""A `medscreen worker` without the ingest node's spool: it fetches the study over WADO-RS from a real
`medscreen serve` (which scores nothing itself) on one real PostgreSQL, scores it, and keeps what it built."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

from inference.tables import ScoreResult, ScoringJob
from service.db import make_engine, make_session_factory, session_scope
from service.users import create_user
from tests.inference.conftest import INFERENCE_FIXTURES
from tests.inference.test_stowrs import multipart
from tests.peers import MedscreenService, wait_for

DX_CHEST = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("initdb") is None and not Path("/usr/lib/postgresql").is_dir(), reason="no PostgreSQL")
def test_worker_without_the_spool_scores_a_study_fetched_over_wado_rs(
    medscreen_service: Callable[..., MedscreenService], postgres_database_url: str, tmp_path: Path
) -> None:
    ingest = medscreen_service(
        database_url=postgres_database_url, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        scoring_workers=0, quiet_period_s=0.5,
    )
    engine = make_engine(postgres_database_url)
    with session_scope(make_session_factory(engine)) as session:
        create_user(session, "worker-1", "worker-1-password-long", ["sender"], actor="test")
    token = httpx.post(
        f"{ingest.url}/api/auth/token", data={"username": "worker-1", "password": "worker-1-password-long"}, timeout=10
    ).json()["access_token"]
    ds = dcmread(DX_CHEST)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    sent = tmp_path / "sent.dcm"
    ds.save_as(sent)
    body, content_type = multipart(sent)
    stored = httpx.post(
        f"{ingest.url}/dicomweb/studies", content=body, timeout=30,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    )
    assert stored.status_code == 200, stored.text
    assert stored.json()["00081199"]["Value"][0]["00081190"]["Value"][0].startswith(f"{ingest.url}/dicomweb/studies/")

    home = tmp_path / "worker-machine"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCREEN_")}
    env.update(
        MEDSCREEN_HOME=str(home),  # its own spool (no MEDSCREEN_SPOOL_PATH): the ingest node's is not mounted
        MEDSCREEN_DATABASE_URL=postgres_database_url,
        MEDSCREEN_MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        MEDSCREEN_INGEST_URL=ingest.url,
        MEDSCREEN_INGEST_USERNAME="worker-1",
        MEDSCREEN_INGEST_PASSWORD="worker-1-password-long",
        MEDSCREEN_SCORING_POLL_S="0.2",
        MEDSCREEN_LOG_LEVEL="INFO",
        MEDSCREEN_ORT_THREADS="1",
    )
    log_path = home / "worker.log"
    with log_path.open("ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "medscreen", "worker", "--processes", "1"], env=env,
                                  stdout=log, stderr=log)
    factory = make_session_factory(engine)
    try:
        def done() -> bool:
            if worker.poll() is not None:
                raise AssertionError(log_path.read_text(errors="replace")[-3000:])
            with factory() as session:
                jobs = session.scalars(select(ScoringJob)).all()
                return bool(jobs) and all(j.state == "done" for j in jobs)

        wait_for(done, 300, "the worker to score the fetched study")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    with factory() as session:
        result = session.scalars(select(ScoreResult)).one()
    assert result.outcome == "scored" and result.sr_sop_instance_uid
    assert "fetched 1 instance(s) over WADO-RS" in log_path.read_text(errors="replace")
    # The worker kept what it built in its own spool, and dropped its copy of the study once done.
    assert (home / "spool" / "outgoing" / str(ds.StudyInstanceUID) / f"{result.sr_sop_instance_uid}.dcm").is_file()
    assert not any((home / "instance-cache").glob("*/*"))
    headers = ingest.token_headers()
    assert ingest.study(headers, str(ds.StudyInstanceUID))["status"] == "scored"
    engine.dispose()
