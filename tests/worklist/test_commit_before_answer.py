"""Every endpoint commits before it answers: a commit that fails is a 500 with no patient data in the body,
never a 200 for a view whose audit row, or a claim, was not stored (README: audited in the same transaction
as the change)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.tables import AuditEvent
from tests.service.conftest import AddUser
from tests.worklist.conftest import make_study
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist
from worklist.tables import WorklistEntry


class CommitFailure(Exception):
    """Stands in for any failure at commit time: SQLite busy after its timeout, a dropped PostgreSQL
    connection, a serialization error, a full disk."""


@contextmanager
def failing_commits(factory: sessionmaker[Session]) -> Iterator[None]:
    def fail(_session: Session) -> None:
        raise CommitFailure("disk I/O error")

    event.listen(factory, "before_commit", fail)
    try:
        yield
    finally:
        event.remove(factory, "before_commit", fail)


def test_a_failed_commit_is_a_server_error_not_a_200(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    rita = add_user("rita", "radiologist")
    with session_scope(app.state.session_factory) as session:
        uid = make_study(session).study_instance_uid
        recompute_worklist(session, policy_from_settings(app.state.settings))
    answers = TestClient(app, raise_server_exceptions=False)

    with failing_commits(app.state.session_factory):
        view = answers.get(f"/api/worklist/{uid}", headers=rita)
        claim = answers.post(f"/api/worklist/{uid}/claim", headers=rita)

    # The view's audit row could not be stored, so the patient's identity must not have been sent.
    assert view.status_code == 500
    assert "Doe^Jane" not in view.text and "PID-1" not in view.text
    # The claim was rolled back: the radiologist must not be told they hold the study.
    assert claim.status_code == 500
    with session_scope(app.state.session_factory) as session:
        assert session.scalar(select(WorklistEntry.claimed_by).where(WorklistEntry.study_instance_uid == uid)) is None
        views = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "study.view")
        assert session.scalar(views) == 0
    # With commits working again, the same requests answer and are stored.
    assert answers.get(f"/api/worklist/{uid}", headers=rita).json()["patient_name"] == "Doe^Jane"
    assert answers.post(f"/api/worklist/{uid}/claim", headers=rita).json()["claimed_by"] == "rita"
