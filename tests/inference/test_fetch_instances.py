"""A fetching worker's WADO-RS fetch against the real app served over HTTP: one login reused from study to
study (a login is a bcrypt check on the ingest node), and a refused token replaced by a fresh login."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import func, select

from inference.fetch_instances import IngestLogin, instance_files
from medscreen.app import create_app
from service.db import session_scope
from service.settings import Settings
from service.tables import AuditEvent
from service.users import create_user
from tests.inference.test_stowrs import CT, LIDC_STUDY, multipart
from tests.peers import app_in_thread


def test_a_fetching_worker_logs_in_once_and_again_only_when_its_token_is_refused(sqlite_settings: Settings) -> None:
    import httpx
    from pydicom import dcmread

    app = create_app(sqlite_settings)
    factory = app.state.session_factory
    with session_scope(factory) as session:
        create_user(session, "worker-1", "worker-1-password-long", ["sender"], actor="test")

    def logins() -> int:
        with factory() as session:
            return session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "auth.login",
                                                                    AuditEvent.subject_id == "worker-1")
            ) or 0

    with app_in_thread(app) as url:
        token = httpx.post(f"{url}/api/auth/token", data={"username": "worker-1", "password": "worker-1-password-long"})
        body, content_type = multipart(*CT)
        stored = httpx.post(f"{url}/dicomweb/studies", content=body, timeout=60, headers={
            "Authorization": f"Bearer {token.json()['access_token']}", "Content-Type": content_type})
        assert stored.status_code == 200, stored.text
        worker = sqlite_settings.model_copy(update={
            "home": sqlite_settings.home.parent / "worker", "ingest_url": url, "ingest_username": "worker-1",
            "ingest_password": SecretStr("worker-1-password-long"),
        })
        instances = [(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID), Path("/not/read")) for p in CT]
        before = logins()
        login = IngestLogin(worker)
        for job_id in (1, 2, 3):
            assert len(instance_files(worker, job_id, LIDC_STUDY, instances, login)) == len(CT)
        assert logins() == before + 1

        login._token = "no longer valid"  # as after the ingest node's key changed
        assert len(instance_files(worker, 4, LIDC_STUDY, instances, login)) == len(CT)
        assert logins() == before + 2
    app.state.engine.dispose()


def test_a_failed_fetch_leaves_no_instances_and_a_worker_start_clears_stale_ones(sqlite_settings: Settings) -> None:
    import os

    import httpx
    import pytest

    from inference.errors import InstancesUnavailable
    from inference.score_job import score_job
    from inference.tables import Instance, ScoringJob, Study
    from inference.worker_process import build_worker
    from service.db import utcnow
    from service.lifecycle import JobState, ModelRole

    app = create_app(sqlite_settings)
    factory = app.state.session_factory
    with session_scope(factory) as session:
        create_user(session, "worker-1", "worker-1-password-long", ["sender"], actor="test")

    class AnyModel:
        def load(self, task: str, version: str, **_: object) -> object:
            return object()

    with app_in_thread(app) as url:
        token = httpx.post(f"{url}/api/auth/token", data={"username": "worker-1", "password": "worker-1-password-long"})
        body, content_type = multipart(*CT)
        stored = httpx.post(f"{url}/dicomweb/studies", content=body, timeout=60, headers={
            "Authorization": f"Bearer {token.json()['access_token']}", "Content-Type": content_type})
        assert stored.status_code == 200, stored.text
        now = utcnow()
        with session_scope(factory) as session:
            study = session.scalars(select(Study)).one()
            Path(session.scalars(select(Instance.path)).first() or "").unlink()  # retention removed a file: WADO-RS 404
            jobs = [ScoringJob(study_id=study.id, revision=study.revision, task="ct-chest", model_name="m", model_version=str(n),
                               role=ModelRole.champion.value, state=JobState.running.value, attempts=1, next_attempt_at=now,
                               lease_owner=f"{os.uname().nodename}:1:1", created_at=now, updated_at=now) for n in range(2)]
            session.add_all(jobs)
            session.flush()
            failing, running = (job.id for job in jobs)
        worker = sqlite_settings.model_copy(update={
            "home": sqlite_settings.home.parent / "worker", "ingest_url": url, "ingest_username": "worker-1",
            "ingest_password": SecretStr("worker-1-password-long"), "database_url": sqlite_settings.resolved_database_url,
        })
        with pytest.raises(InstancesUnavailable):
            score_job(failing, settings=worker, session_factory=factory, selector=AnyModel(),  # type: ignore[arg-type]
                      started=now, node="w")
    app.state.engine.dispose()
    cache = worker.home / "instance-cache"
    assert not (cache / str(failing)).exists(), "a failed fetch must not leave its folder behind"

    # Left by a worker killed mid-job: a start removes it, not the folder of a job running on this machine.
    for job_id in (running, 999):
        (cache / str(job_id)).mkdir(parents=True)
        (cache / str(job_id) / "1.2.3.dcm").write_bytes(b"fetched")
    assert build_worker(worker).clear_stale_instance_cache() == 1
    assert sorted(p.name for p in cache.iterdir()) == [str(running)]
