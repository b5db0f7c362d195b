"""/api/outbox: counts and reasons for what the RIS/EMR refused, no payloads, replay audited, role-checked."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.db import session_scope, utcnow
from service.errors import DeliveryFailed
from service.outbox import Outgoing, RetryPolicy, add_message, dispatch
from service.tables import AuditEvent
from tests.service.conftest import AddUser


def _refuse(message: Outgoing) -> str:
    raise DeliveryFailed("the RIS rejected it (AR): unknown order", permanent=True)


def test_refused_messages_are_listed_with_reasons_and_replayed(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    engineer = add_user("erin", "ml-engineer")
    radiologist = add_user("rita", "radiologist")
    with session_scope(app.state.session_factory) as session:
        add_message(session, "hl7", "MSR1", "ORU^R01 MSR1", "MSH|...|PID|||SECRET-PATIENT-ID", "application/hl7-v2", utcnow())
    assert dispatch(app.state.session_factory, "hl7", _refuse, RetryPolicy(retry_s=0, max_attempts=3)) == 0

    page = client.get("/api/outbox", params={"state": "rejected"}, headers=engineer)
    assert page.status_code == 200
    body = page.json()
    assert body["counts"] == {"hl7": {"rejected": 1}}
    (item,) = body["items"]
    assert item["label"] == "ORU^R01 MSR1" and "unknown order" in item["last_error"]
    assert "SECRET-PATIENT-ID" not in page.text  # payloads carry patient identity: never listed
    assert client.get("/api/outbox", headers=radiologist).status_code == 403

    replayed = client.post(f"/api/outbox/{item['id']}/replay", headers=engineer)
    assert replayed.status_code == 200 and replayed.json()["state"] == "pending" and replayed.json()["attempts"] == 0
    assert client.post(f"/api/outbox/{item['id']}/replay", headers=engineer).status_code == 409
    assert client.post("/api/outbox/999/replay", headers=engineer).status_code == 404
    with session_scope(app.state.session_factory) as session:
        actions = [(e.actor, e.action) for e in session.scalars(select(AuditEvent))]
    assert ("erin", "outbox.replay") in actions
