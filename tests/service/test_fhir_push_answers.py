"""How the EMR push reads answers that are neither a success nor a refusal: a redirect (a moved endpoint, the
site's setting) and an answer that cannot be read. Against a real HTTP server on a loopback port."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.responses import Response

from service.audit import subject_digest
from service.db import Base, make_engine, make_session_factory, session_scope
from service.fhir_push import FHIR_JSON, FhirSender
from service.outbox import OutboxLease, OutboxMessage, OutboxState, RetryPolicy, add_message, dispatch
from service.peer_answers import scrub_peer_answer
from tests.peers import app_in_thread


def _emr() -> FastAPI:
    app = FastAPI()

    @app.post("/moved/fhir")
    def moved() -> Response:
        return Response(status_code=301, headers={"Location": "https://emr.example/fhir"})

    @app.post("/garbled/fhir")
    def garbled() -> Response:  # says gzip, is not
        return Response(b"not gzip at all", status_code=200, headers={"Content-Encoding": "gzip"}, media_type=FHIR_JSON)

    return app


def test_a_redirect_waits_for_the_setting_and_an_unreadable_answer_is_a_counted_attempt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A 3xx had set every message aside as refused by the EMR; an answer whose body could not be decoded escaped the
    dispatch pass (retried every poll, never counted, never set aside)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    Base.metadata.create_all(engine, tables=[OutboxMessage.__table__, OutboxLease.__table__])  # type: ignore[list-item]
    factory = make_session_factory(engine)
    now = datetime(2026, 12, 2, tzinfo=UTC)
    with session_scope(factory) as session:
        for key in ("a", "b"):
            add_message(session, "fhir", key, f"bundle {key}", '{"resourceType": "Bundle"}', FHIR_JSON, now)
    policy = RetryPolicy(retry_s=0, max_attempts=2)
    with app_in_thread(_emr()) as base:
        for _ in range(3):
            assert dispatch(factory, "fhir", FhirSender(f"{base}/moved/fhir", token=None, timeout_s=30), policy) == 0
        with session_scope(factory) as session:
            messages = list(session.query(OutboxMessage).order_by(OutboxMessage.id))
            assert [m.state for m in messages] == [OutboxState.pending, OutboxState.pending]  # waiting, in order
            assert "redirecting to https://emr.example/fhir: set MEDSCREEN_FHIR_PUSH_URL" in str(messages[0].last_error)
        for _ in range(2):
            assert dispatch(factory, "fhir", FhirSender(f"{base}/garbled/fhir", token=None, timeout_s=30), policy) == 0
        with session_scope(factory) as session:
            first = session.query(OutboxMessage).order_by(OutboxMessage.id).first()
            assert first is not None and first.state == OutboxState.rejected and first.attempts == 4
            assert str(first.last_error).startswith("the EMR's answer could not be read: DecodingError")


CHILD, STUDY_UID = "MRN-4711", "1.2.826.0.1.3680043.8.498.12345678"


def _refusing_emr() -> FastAPI:
    app = FastAPI()

    @app.post("/fhir")
    def refuse() -> Response:  # HAPI's referential-integrity refusal quotes the subject it could not resolve
        diagnostics = (f"HAPI-1094: Resource Patient/{CHILD} not found, specified in path: RiskAssessment.subject; "
                       f"study {STUDY_UID}; Patient?identifier=urn:mrn|{CHILD}")
        body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing", "diagnostics": diagnostics}]}
        return Response(json.dumps(body), status_code=400, media_type=FHIR_JSON)

    return app


def test_the_emrs_refusal_is_kept_and_logged_with_the_patient_and_study_as_digests(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    """The refusal's text went in clear into the log stream and into last_error, which /api/outbox answers to
    ml-engineer (no patient identity): the child's record id and the study's UID (review8 data_protection)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    Base.metadata.create_all(engine, tables=[OutboxMessage.__table__, OutboxLease.__table__])  # type: ignore[list-item]
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        add_message(session, "fhir", "RiskAssessment/medscreen-ra-1", "screening flag 1", '{"resourceType": "Bundle"}',
                    FHIR_JSON, datetime(2026, 12, 2, tzinfo=UTC))
    with app_in_thread(_refusing_emr()) as base, caplog.at_level(logging.INFO):
        dispatch(factory, "fhir", FhirSender(f"{base}/fhir", token=None, timeout_s=30), RetryPolicy(retry_s=0, max_attempts=2))
    with session_scope(factory) as session:
        message = session.query(OutboxMessage).one()
        error = str(message.last_error)
    assert message.state == OutboxState.rejected
    # What the engineer needs stays: who refused, the status, the server's code and the path it names.
    assert "the EMR refused it: HTTP 400" in error and "HAPI-1094" in error and "RiskAssessment.subject" in error
    assert f"Patient/{subject_digest(CHILD)}" in error and f"uid:{subject_digest(STUDY_UID)}" in error
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "set aside" in logged and f"Patient/{subject_digest(CHILD)}" in logged
    for text in (error, logged):
        assert CHILD not in text and STUDY_UID not in text


def test_a_peers_answer_keeps_medscreens_own_ids_and_the_conformance_urls() -> None:
    answer = scrub_peer_answer("RiskAssessment/medscreen-ra-12 vs http://hl7.org/fhir/StructureDefinition/RiskAssessment, HTTP/1.1")
    assert answer == "RiskAssessment/medscreen-ra-12 vs http://hl7.org/fhir/StructureDefinition/RiskAssessment, HTTP/1.1"
