"""A RIS or EMR configured today is sent what is made from today on, never the site's history: the feeds' look-back
(for ids committed out of order) had reached 500 results behind where their cursor started (review round 3,
upgrade 1: a site upgraded from a release without feeds sent every past result, shadow positives among them)."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import select

from inference.fhir_feed import FHIR_CHANNEL, take_in_fhir_results
from inference.fhir_results import report_id
from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory, session_scope
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


def test_first_start_floor_skips_out_of_order_commit(postgres_database_url: str) -> None:
    """A result in flight when the feeds first start (its id below where their cursors start) is no history: it
    reaches both peers when it commits (review 3, crash D6: the floor had dropped it for good, on PostgreSQL)."""
    migrate_all(postgres_database_url)
    node1 = make_session_factory(make_engine(postgres_database_url))
    node2 = make_session_factory(make_engine(postgres_database_url))
    with session_scope(node1) as session:  # history, so that the cursors start above 0
        history = add_result(session, make_study(session), score=0.2).id
    in_flight = node2()  # node 2's worker: result A stored (its id taken), not committed yet
    in_flight.begin()
    late = add_result(in_flight, make_study(in_flight), score=0.97).id
    with session_scope(node1) as session:  # node 1's worker: result B, committed
        committed = add_result(session, make_study(session), score=0.96).id
    assert history < late < committed
    take_in_fhir_results(node1)  # the feeds' first pass: their cursors start at B
    take_in_ris_messages(node1, ENDPOINT)
    in_flight.commit()
    in_flight.close()
    for _ in range(2):
        take_in_fhir_results(node1)
        take_in_ris_messages(node1, ENDPOINT)
    with session_scope(node1) as session:
        keys = set(session.scalars(select(OutboxMessage.key)))
    assert {f"MSR{late}", f"DiagnosticReport/{report_id(late)}"} <= keys
    assert not {f"MSR{history}", f"DiagnosticReport/{report_id(history)}"} & keys
