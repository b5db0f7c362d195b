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


def test_a_message_that_cannot_be_built_is_set_aside_and_the_rest_go(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    """A producer's build() that raised had failed the whole pass: the same batch was read and failed again on
    every pass, its cursor never moved, and nothing after it was ever sent."""
    from service.outbox import Candidate, take_in

    engineer = add_user("erin", "ml-engineer")

    def broken() -> str:
        raise ValueError("conclusion: field required")

    def read(session: object) -> list[Candidate]:
        return [Candidate("results", 1, "R1", "ORU^R01 R1", lambda: "MSH|1"),
                Candidate("results", 2, "R2", "ORU^R01 R2", broken),
                Candidate("results", 3, "R3", "ORU^R01 R3", lambda: "MSH|3")]

    assert take_in(app.state.session_factory, "hl7", "application/hl7-v2", read) == 3
    sent: list[str] = []
    assert dispatch(app.state.session_factory, "hl7", lambda m: sent.append(m.payload) or "AA", RetryPolicy(retry_s=0, max_attempts=3)) == 2
    assert sent == ["MSH|1", "MSH|3"]
    page = client.get("/api/outbox", params={"state": "rejected"}, headers=engineer).json()
    (item,) = page["items"]
    assert item["label"] == "ORU^R01 R2" and item["last_error"] == "could not be built: ValueError: conclusion: field required"
    refused = client.post(f"/api/outbox/{item['id']}/replay", headers=engineer)
    assert refused.status_code == 409 and "nothing to send" in refused.json()["detail"]
