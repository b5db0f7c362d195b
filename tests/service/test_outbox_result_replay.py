"""A set-aside result message is not replayed after a newer result of its study was stored (review 3, crash D5):
its replay had made the superseded result current again at both peers (the EMR held two final reports of the study,
the RIS's current result was the superseded negative)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from inference.fhir_feed import take_in_fhir_results
from inference.tables import Study
from service.db import session_scope
from service.errors import DeliveryFailed
from service.outbox import OutboxMessage, OutboxState, Outgoing, RetryPolicy, dispatch
from tests.service.conftest import AddUser
from tests.worklist.conftest import add_result, make_study
from worklist.hl7_messages import Hl7Endpoint
from worklist.ris_feed import take_in_ris_messages

ENDPOINT = Hl7Endpoint("MEDSCREEN", "HOSP", "RIS", "HOSP")
ONCE = RetryPolicy(retry_s=0, max_attempts=1)


def _refuse(message: Outgoing) -> str:
    raise DeliveryFailed("the peer refused it", permanent=True)


def _accept(message: Outgoing) -> str:
    return "AA"


def test_replay_of_superseded_result(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    engineer = add_user("erin", "ml-engineer")
    factory = app.state.session_factory
    take_in_fhir_results(factory)  # both peers configured from the start
    take_in_ris_messages(factory, ENDPOINT)
    with session_scope(factory) as session:
        study = make_study(session)
        add_result(session, study, score=0.11)
        study.revision = 2  # a late image: the study is scored again
        study_id = study.id
    take_in_fhir_results(factory)
    take_in_ris_messages(factory, ENDPOINT)
    for channel in ("fhir", "hl7"):
        dispatch(factory, channel, _refuse, ONCE)  # the first result is set aside at both peers
    with session_scope(factory) as session:
        first = session.scalars(select(OutboxMessage.id).where(OutboxMessage.state == OutboxState.rejected)).all()
        add_result(session, session.get(Study, study_id), score=0.999)
    assert len(first) == 2
    take_in_fhir_results(factory)
    take_in_ris_messages(factory, ENDPOINT)
    for channel in ("fhir", "hl7"):
        assert dispatch(factory, channel, _accept, ONCE) == 1  # the re-score is sent, correcting the first
    for message_id in first:
        answer = client.post(f"/api/outbox/{message_id}/replay", headers=engineer)
        assert answer.status_code == 409 and "superseded by message" in answer.json()["detail"]
    with session_scope(factory) as session:
        states = session.scalars(select(OutboxMessage.state).where(OutboxMessage.id.in_(first))).all()
    assert states == [OutboxState.rejected] * 2
