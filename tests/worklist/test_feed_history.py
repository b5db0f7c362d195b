"""A RIS or EMR configured today is sent what is made from today on, never the site's history: the feeds' look-back
(for ids committed out of order) had reached 500 results behind where their cursor started (review round 3,
upgrade 1: a site upgraded from a release without feeds sent every past result, shadow positives among them)."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import select

from inference.fhir_feed import FHIR_CHANNEL, take_in_fhir_results
from inference.fhir_results import report_id
from service.db import session_scope
from service.outbox import OutboxMessage
from tests.worklist.conftest import add_result, make_study
from worklist.hl7_messages import Hl7Endpoint
from worklist.ris_feed import CHANNEL, take_in_ris_messages

ENDPOINT = Hl7Endpoint("MEDSCREEN", "ST ELSEWHERE", "RIS", "ST ELSEWHERE")


def test_results_made_before_a_peer_was_configured_are_never_sent(app: FastAPI) -> None:
    factory = app.state.session_factory
    with session_scope(factory) as session:  # the site's history: results from before the feeds existed
        for score in (0.9, 0.2, 0.8):
            add_result(session, make_study(session), score=score)
    assert take_in_ris_messages(factory, ENDPOINT) == 0  # the feeds' first start: cursors begin here
    assert take_in_fhir_results(factory) == 0
    with session_scope(factory) as session:
        today = add_result(session, make_study(session), score=0.7).id
    for _ in range(2):  # later passes re-read behind their cursors, not behind where they started
        take_in_ris_messages(factory, ENDPOINT)
        take_in_fhir_results(factory)
    with session_scope(factory) as session:
        ris = [m.key for m in session.scalars(select(OutboxMessage).where(OutboxMessage.channel == CHANNEL))]
        emr = [m.key for m in session.scalars(select(OutboxMessage).where(OutboxMessage.channel == FHIR_CHANNEL))]
    assert [key for key in ris if key.startswith("MSR")] == [f"MSR{today}"]
    assert emr == [f"DiagnosticReport/{report_id(today)}"]
