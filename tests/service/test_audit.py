"""The audit log: recorded with the change it describes, queryable by admins only, never rewritten."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from service.audit import record_audit
from service.db import session_scope, utcnow
from service.tables import AuditEvent
from tests.service.conftest import AddUser

STUDY_UID = "1.2.826.0.1.3680043.8.498.12345678901234567890"
PATIENT_ID = "MRN-0042-SECRET"


def test_audit_query_filters_and_pages(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    admin = add_user("ada", "admin")
    radiologist = add_user("rita", "radiologist")
    with session_scope(app.state.session_factory) as session:
        for n in range(5):
            record_audit(session, "rita", "study.view", "study", f"{STUDY_UID}.{n}")
        record_audit(session, "rita", "study.claim", "study", STUDY_UID, {"claimed": True})
        record_audit(session, "paul", "patient.view", "patient", PATIENT_ID)

    assert client.get("/api/audit").status_code == 401
    assert client.get("/api/audit", headers=radiologist).status_code == 403

    everything = client.get("/api/audit", headers=admin).json()
    # 7 above + the two user.create lines written when the test users were added + their two logins (auth.login)
    assert everything["total"] == 11
    assert [item["action"] for item in everything["items"][:2]] == ["patient.view", "study.claim"]

    claim = client.get("/api/audit", headers=admin, params={"subject_id": STUDY_UID}).json()
    assert claim["total"] == 1
    item = claim["items"][0]
    assert (item["actor"], item["action"], item["subject_type"], item["detail"]) == (
        "rita",
        "study.claim",
        "study",
        {"claimed": True},
    )
    assert item["at"].endswith("Z") or item["at"].endswith("+00:00")

    by_actor = client.get("/api/audit", headers=admin, params={"actor": "rita", "subject_type": "study"}).json()
    assert by_actor["total"] == 6
    page = client.get(
        "/api/audit",
        headers=admin,
        params={"actor": "rita", "subject_type": "study", "limit": 4, "offset": 4},
    ).json()
    assert page["total"] == 6 and len(page["items"]) == 2
    first_pages = client.get(
        "/api/audit", headers=admin, params={"actor": "rita", "subject_type": "study", "limit": 4}
    ).json()
    ids = [i["id"] for i in first_pages["items"]] + [i["id"] for i in page["items"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6

    future = (utcnow() + timedelta(minutes=1)).isoformat()
    assert client.get("/api/audit", headers=admin, params={"since": future}).json() == {
        "items": [],
        "total": 0,
    }
    past = (utcnow() - timedelta(minutes=5)).isoformat()
    # the 11 and the six queries of the log above, each an audit.view row
    assert client.get("/api/audit", headers=admin, params={"since": past}).json()["total"] == 11 + 6
    assert client.get("/api/audit", headers=admin, params={"limit": 0}).status_code == 422


def test_reading_the_audit_log_is_audited_with_its_filters(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    """An admin looking up who saw a patient had left no trace (DICOM PS3.15's "Audit Log Used")."""
    admin = add_user("ada", "admin")
    with session_scope(app.state.session_factory) as session:
        record_audit(session, "paul", "patient.view", "patient", PATIENT_ID)
    assert client.get("/api/audit", headers=admin, params={"subject_id": PATIENT_ID}).json()["total"] == 1
    views = client.get("/api/audit", headers=admin, params={"action": "audit.view"}).json()["items"]
    assert [(v["actor"], v["subject_type"], v["subject_id"], v["detail"]) for v in views] == [
        ("ada", "audit", "audit_events", {"filters": {"subject_id": PATIENT_ID}, "rows": 1, "offset": 0})
    ]


def test_audit_line_rolls_back_with_its_change(app: FastAPI) -> None:
    with pytest.raises(RuntimeError), session_scope(app.state.session_factory) as session:
        record_audit(session, "rita", "study.claim", "study", STUDY_UID)
        raise RuntimeError("the claim failed")
    with session_scope(app.state.session_factory) as session:
        assert session.scalars(select(AuditEvent)).all() == []


def test_subject_ids_stay_out_of_the_log_stream(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), session_scope(app.state.session_factory) as session:
        record_audit(session, "paul", "patient.view", "patient", PATIENT_ID)
        record_audit(session, "rita", "study.view", "study", STUDY_UID)
    assert "audit actor=paul action=patient.view" in caplog.text
    assert PATIENT_ID not in caplog.text and STUDY_UID not in caplog.text
    with session_scope(app.state.session_factory) as session:
        stored = session.scalars(select(AuditEvent.subject_id).order_by(AuditEvent.id)).all()
    assert stored == [PATIENT_ID, STUDY_UID]


def test_database_refuses_update_and_delete(app: FastAPI) -> None:
    with session_scope(app.state.session_factory) as session:
        record_audit(session, "rita", "study.view", "study", STUDY_UID)
    statements = ["UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events"]
    columns = "id, at, actor, action, subject_type, subject_id"
    if app.state.engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_events")
        statements.append(f"INSERT INTO audit_events ({columns}) SELECT {columns} FROM audit_events "
                          "ON CONFLICT (id) DO UPDATE SET actor = 'mallory'")
    else:
        # REPLACE deletes the old row without firing DELETE triggers: it had rewritten an audit row.
        statements.append(f"REPLACE INTO audit_events ({columns}) "
                          "SELECT id, at, 'mallory', action, subject_type, subject_id FROM audit_events")
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), app.state.engine.begin() as connection:
            connection.execute(text(statement))
    # Through the ORM too: a changed attribute is flushed as an UPDATE and refused.
    with pytest.raises(DBAPIError, match="append-only"), session_scope(app.state.session_factory) as session:
        event = session.scalars(select(AuditEvent)).one()
        event.actor = "mallory"
    with app.state.engine.connect() as connection:
        assert connection.execute(text("SELECT actor FROM audit_events")).scalars().all() == ["rita"]
