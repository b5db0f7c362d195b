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
