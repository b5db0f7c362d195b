"""How the EMR push reads answers that are neither a success nor a refusal: a redirect (a moved endpoint, the
site's setting) and an answer that cannot be read. Against a real HTTP server on a loopback port."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI
from fastapi.responses import Response

from service.db import Base, make_engine, make_session_factory, session_scope
from service.fhir_push import FHIR_JSON, FhirSender
from service.outbox import OutboxLease, OutboxMessage, OutboxState, RetryPolicy, add_message, dispatch
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
