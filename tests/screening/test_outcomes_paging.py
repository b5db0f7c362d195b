"""Quality's list of decisions pages like the other lists: ``total``, ``offset`` and ``limit``, and counts of
referred and not relevant over every decided flag. It had counted the page only (past 200 decisions, the rate of
the latest 200), given no total and ignored ``offset``. The real screener, stored results and app on SQLite."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from screening.results_store import store_result
from screening.tables import ScreeningOutcome
from service.db import session_scope
from service.tables import AuditEvent
from tests.screening.conftest import child_of

AS_OF = date(2024, 3, 1)
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _decide(app: FastAPI, patient_ids: list[str], outcomes: dict[str, list[str]]) -> dict[str, int]:
    """Store a flagged result of each child and its decisions (oldest first), the children decided in turn."""
    screener = app.state.screener
    ids: dict[str, int] = {}
    with session_scope(app.state.session_factory) as session:
        for patient_id in patient_ids:
            record = child_of(patient_id, f"Child {patient_id}", f"MRN-{patient_id}", organization="Organization/c")
            stored = store_result(session, screener, record, screener.screen(record, AS_OF), "batch:x.ndjson", owner="")
            ids[patient_id] = stored["id"]
        session.flush()
        at = T0
        for patient_id in patient_ids:
            for outcome in outcomes[patient_id]:
                at += timedelta(minutes=1)
                session.add(
                    ScreeningOutcome(
                        result_id=ids[patient_id], outcome=outcome, note="", decided_by="dr-a", decided_at=at
                    )
                )
    return ids


def test_the_decisions_page_with_a_total_and_counts_over_every_decision(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    children = [f"p{i}" for i in range(5)]
    outcomes = {
        "p0": ["referred"],
        "p1": ["not_relevant"],
        "p2": ["referred", "not_relevant"],
        "p3": ["referred"],
        "p4": ["referred"],
    }
    ids = _decide(screening_app, children, outcomes)
    child = {result_id: patient_id for patient_id, result_id in ids.items()}  # quality sees result ids, not children
    quality = token_for("qa", "quality")

    pages = []
    for offset in (0, 2, 4, 6):
        answer = client.get("/api/screening/outcomes", params={"limit": 2, "offset": offset}, headers=quality)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        # Over every flag's latest decision, whatever the page: p2 was referred, then judged not relevant.
        assert (body["total"], body["referred"], body["not_relevant"]) == (5, 3, 2)
        assert (body["offset"], body["limit"]) == (offset, 2)
        pages.append([(child[o["result_id"]], o["outcome"], o["decisions_made"]) for o in body["outcomes"]])
    # Newest decision first, each flag once, on the page its place puts it.
    assert pages == [
        [("p4", "referred", 1), ("p3", "referred", 1)],
        [("p2", "not_relevant", 2), ("p1", "not_relevant", 1)],
        [("p0", "referred", 1)],
        [],
    ]
    # Only the flags shown are audited as viewed.
    with session_scope(screening_app.state.session_factory) as session:
        views = session.scalar(select(func.count()).where(AuditEvent.action == "screening.outcome.view"))
    assert views == 5

    whole = client.get("/api/screening/outcomes", headers=quality).json()
    assert [child[o["result_id"]] for o in whole["outcomes"]] == ["p4", "p3", "p2", "p1", "p0"]
    assert (whole["total"], whole["offset"], whole["limit"]) == (5, 0, 200)
    for params in ({"offset": -1}, {"offset": 2**62 + 1}, {"limit": 0}):
        assert client.get("/api/screening/outcomes", params=params, headers=quality).status_code == 422
