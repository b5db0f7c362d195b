"""A record naming no care team is an organisation's child only when exactly one of the clinician's organisations
holds its id (mutation review 3: C2), and quality's list of decisions is an audited view of each patient (A2).
The real screener, stored results and app on SQLite."""

from __future__ import annotations

from datetime import date

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from screening.results_store import store_result
from screening.scope import Child, child_of_record
from screening.tables import ScreeningAssignment, ScreeningOutcome, ScreeningRun
from service.db import session_scope
from service.tables import AuditEvent
from tests.screening.conftest import child_of

AS_OF = date(2024, 3, 1)
CLINIC_1, CLINIC_2 = "Organization/clinic-1", "Organization/clinic-2"


def _store(app: FastAPI, patient_id: str, organization: str) -> int:
    screener = app.state.screener
    with session_scope(app.state.session_factory) as session:
        record = child_of(patient_id, f"Child {patient_id}", f"MRN-{patient_id}", organization=organization)
        store_result(session, screener, record, screener.screen(record, AS_OF), "batch:extract.ndjson", owner="")
        return session.scalars(select(ScreeningRun.id).where(ScreeningRun.organization == organization,
                                                             ScreeningRun.patient_id == patient_id)).one()


def test_a_record_naming_no_care_team_held_by_two_of_the_clinicians_organisations_is_their_own(
    screening_app: FastAPI, client: TestClient
) -> None:
    _store(screening_app, "p1", CLINIC_1)
    _store(screening_app, "p1", CLINIC_2)
    _store(screening_app, "p2", CLINIC_1)
    with session_scope(screening_app.state.session_factory) as session:
        for organization in (CLINIC_1, CLINIC_2):
            session.add(ScreeningAssignment(username="dr-a", practitioner="", organization=organization, assigned_by="test"))
    with session_scope(screening_app.state.session_factory) as session:
        assert child_of_record(session, "p1", "", "", "dr-a") == Child("p1", "", "", "dr-a")  # which clinic: not known
        assert child_of_record(session, "p2", "", "", "dr-a") == Child("p2", "", CLINIC_1, "")  # one clinic holds it
        assert child_of_record(session, "p3", "", "", "dr-a") == Child("p3", "", "", "dr-a")


def test_quality_listing_the_decisions_is_an_audited_view_of_each_patient(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    result_id = _store(screening_app, "p1", CLINIC_1)
    with session_scope(screening_app.state.session_factory) as session:
        session.add(ScreeningOutcome(result_id=result_id, outcome="referred", note="", decided_by="dr-a"))
    listed = client.get("/api/screening/outcomes", headers=token_for("qa", "quality")).json()
    assert [o["patient_id"] for o in listed["outcomes"]] == [None]  # quality: no patient identity, viewed all the same
    with session_scope(screening_app.state.session_factory) as session:
        views = [(e.actor, e.subject_type, e.subject_id, e.detail) for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action == "screening.outcome.view"))]
    assert views == [("qa", "patient", "p1", {"result_id": result_id})]


def test_quality_reads_the_decisions_without_the_childs_record_id_or_the_doctors_note(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    # README's roles table gives quality no patient identity; the list had given it each child's record id and the
    # paediatrician's free text ("Anna's mother ...") for every child (review8 data_protection).
    result_id = _store(screening_app, "p1", CLINIC_1)
    with session_scope(screening_app.state.session_factory) as session:
        session.add(ScreeningOutcome(result_id=result_id, outcome="not_relevant", note="Anna's mother declined", decided_by="dr-a"))
    quality = client.get("/api/screening/outcomes", headers=token_for("qa", "quality")).json()
    row = quality["outcomes"][0]
    assert (row["patient_id"], row["note"]) == (None, None)
    assert (row["result_id"], row["outcome"], row["decided_by"], quality["not_relevant"]) == (result_id, "not_relevant", "dr-a", 1)
    assert "p1" not in str(quality) and "Anna" not in str(quality)
    admin = client.get("/api/screening/outcomes", headers=token_for("root", "admin")).json()["outcomes"][0]
    assert (admin["patient_id"], admin["note"]) == ("p1", "Anna's mother declined")
