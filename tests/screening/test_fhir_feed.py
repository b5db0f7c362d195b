"""Screening flags for the EMR: the stored RiskAssessment and Flag, read at GET /fhir/... (paediatricians,
audited) and pushed as transaction Bundles to a real HTTP receiver that validates them with fhir.resources."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.riskassessment import RiskAssessment
from sqlalchemy import delete, func, insert, select

from datasets.emr_records import CodedFact
from datasets.fhir_emr import fhir_id, record_to_bundle
from screening.fhir_feed import FHIR_CHANNEL, take_in_screening_flags
from screening.results_store import store_result
from screening.tables import ScreeningAssignment, ScreeningRun
from service.db import session_scope
from service.fhir_push import FhirSender
from service.outbox import OutboxCursor, OutboxMessage, RetryPolicy, dispatch, newer_of_topic
from service.tables import AuditEvent
from tests.fhir_receiver import fhir_receiver
from tests.screening.conftest import child_of, ordinary_child, syndromic_child


def test_flags_are_readable_and_pushed(screening_app: FastAPI, client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    factory = screening_app.state.session_factory
    take_in_screening_flags(factory)  # the feed's first start
    doctor = token_for("dr-ivanova", "paediatrician")
    bundle = record_to_bundle(syndromic_child("child-1"))
    bundle["entry"] += record_to_bundle(ordinary_child("child-2"))["entry"]
    assert client.post("/api/screening?as_of=2024-03-01", json=bundle, headers=doctor).status_code == 200

    found = client.get("/fhir/RiskAssessment", params={"subject": "Patient/child-1"}, headers=doctor)
    assert found.status_code == 200
    searchset = Bundle.model_validate(found.json())
    kinds = [e.resource.get_resource_type() for e in searchset.entry]
    assert kinds == ["RiskAssessment", "Flag"] and searchset.total == 1
    assessment = found.json()["entry"][0]["resource"]
    RiskAssessment.model_validate(assessment)
    assert client.get(f"/fhir/RiskAssessment/{assessment['id']}", headers=doctor).json() == assessment
    flag_id = found.json()["entry"][1]["resource"]["id"]
    Flag.model_validate(client.get(f"/fhir/Flag/{flag_id}", headers=doctor).json())
    assert client.get(f"/fhir/Flag/{flag_id}", headers=token_for("rita", "radiologist")).status_code == 403
    with session_scope(factory) as session:
        audited = {(e.actor, e.action, e.subject_id) for e in session.scalars(select(AuditEvent))}
    assert ("dr-ivanova", "fhir.read", "child-1") in audited

    assert take_in_screening_flags(factory) == 1  # the flagged child only
    with fhir_receiver() as emr:
        assert dispatch(factory, FHIR_CHANNEL, FhirSender(emr.url, token=None, timeout_s=30),
                        RetryPolicy(retry_s=0, max_attempts=3)) == 1
        assert not emr.invalid
        assert emr.transactions == [[f"RiskAssessment/{assessment['id']}", f"Flag/{flag_id}"]]
        assert emr.resources[f"RiskAssessment/{assessment['id']}"] == assessment


def test_fhir_reads_hold_to_the_clinicians_scope(screening_app: FastAPI, client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    """Another paediatrician's patient is 'not found' over FHIR as on the page (ids are sequential: no walking
    through them), the subject search answers only the children in one's scope, and each result read is audited."""
    factory = screening_app.state.session_factory
    dr_a, dr_b = token_for("dr-a", "paediatrician"), token_for("dr-b", "paediatrician")
    with session_scope(factory) as session:
        session.add(ScreeningAssignment(username="dr-a", practitioner="", organization="Organization/clinic-a", assigned_by="t"))
    anna = record_to_bundle(child_of("123", "Anna A", "MRN-A", organization="Organization/clinic-a"))
    bert = record_to_bundle(child_of("123", "Bert B", "MRN-B", organization="Organization/clinic-b"))
    assert client.post("/api/screening?as_of=2024-03-01", json=anna, headers=dr_a).status_code == 200
    assert client.post("/api/screening?as_of=2024-03-01", json=bert, headers=dr_b).status_code == 200
    with session_scope(factory) as session:
        anna_id, bert_id = (row.id for row in session.scalars(select(ScreeningRun).order_by(ScreeningRun.id)))

    for path in (f"/fhir/RiskAssessment/medscreen-ra-{anna_id}", f"/fhir/Flag/medscreen-flag-{anna_id}"):
        refused = client.get(path, headers=dr_b)
        assert refused.status_code == 404 and refused.json()["resourceType"] == "OperationOutcome", path
        assert client.get(path, headers=dr_a).status_code == 200
    assert client.get(f"/fhir/Flag/medscreen-flag-{anna_id}", headers=token_for("root", "admin")).status_code == 200

    def assessments(headers: dict[str, str]) -> list[str]:
        found = client.get("/fhir/RiskAssessment", params={"subject": "Patient/123"}, headers=headers).json()
        return [e["resource"]["id"] for e in found.get("entry", []) if e["resource"]["resourceType"] == "RiskAssessment"]

    assert assessments(dr_a) == [f"medscreen-ra-{anna_id}"]
    assert assessments(dr_b) == [f"medscreen-ra-{bert_id}"]
    with session_scope(factory) as session:
        reads = [(e.actor, e.detail) for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "fhir.read"))]
    assert ("dr-b", {"result_id": anna_id}) not in reads
    assert ("dr-a", {"result_id": anna_id}) in reads and ("dr-b", {"result_id": bert_id}) in reads


def test_a_read_of_an_id_that_is_not_ours_is_a_fhir_not_found(client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    doctor = token_for("dr-a", "paediatrician")
    for path in ("/fhir/RiskAssessment/medscreen-ra-99999999999999999999", "/fhir/RiskAssessment/medscreen-ra-²",
                 "/fhir/Flag/medscreen-flag-9223372036854775808", "/fhir/Flag/medscreen-flag-١", "/fhir/Flag/medscreen-flag-",
                 "/fhir/RiskAssessment/medscreen-ra--1", "/fhir/Flag/other-1"):
        response = client.get(path, headers=doctor)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
        assert response.json()["issue"][0]["code"] == "not-found"


def test_a_record_id_that_is_no_fhir_id_is_named_and_found_by_a_valid_reference(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    doctor = token_for("dr-a", "paediatrician")
    screener = screening_app.state.screener
    record = syndromic_child("MRN 12/34")  # as a CSV extract may name a child
    with session_scope(screening_app.state.session_factory) as session:
        store_result(session, screener, record, screener.screen(record, date(2024, 3, 1)), "dr-a", owner="dr-a")
        other = syndromic_child("MRN 12-34")  # another child whose id cleans to the same characters
        store_result(session, screener, other, screener.screen(other, date(2024, 3, 1)), "dr-a", owner="dr-a")
    reference = f"Patient/{fhir_id('MRN 12/34')}"
    for subject in (reference, "MRN 12/34"):
        found = client.get("/fhir/RiskAssessment", params={"subject": subject}, headers=doctor).json()
        resources = [e["resource"] for e in found["entry"]]
        assert [r["resourceType"] for r in resources] == ["RiskAssessment", "Flag"], subject
        assert all(r["subject"] == {"reference": reference, "identifier": {"value": "MRN 12/34"}} for r in resources)
        Bundle.model_validate(found)


def test_the_answer_to_a_submitted_bundle_holds_the_resources_as_served_with_their_ids(
    client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    # They had had no id, so an EMR could not match them with /fhir or the push (PUT RiskAssessment/medscreen-ra-<n>),
    # and the collection carried a total, which R4 allows only in a searchset or history (bdl-1). Review7
    # fhir_conformance.
    doctor = token_for("dr-a", "paediatrician")
    bundle = record_to_bundle(syndromic_child("child-1"))
    bundle["entry"] += record_to_bundle(ordinary_child("child-2"))["entry"]
    answer = client.post("/api/screening?as_of=2024-03-01", json=bundle, headers=doctor).json()
    assert answer["type"] == "collection" and "total" not in answer
    Bundle.model_validate(answer)
    resources = [e["resource"] for e in answer["entry"]]
    assert [(r["resourceType"], r["subject"]["reference"]) for r in resources] == [
        ("RiskAssessment", "Patient/child-1"), ("Flag", "Patient/child-1"), ("RiskAssessment", "Patient/child-2")
    ]
    for resource in resources:
        assert client.get(f"/fhir/{resource['resourceType']}/{resource['id']}", headers=doctor).json() == resource
    # The same evidence again is not stored again: the answer is the stored flag, by its id.
    again = client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(syndromic_child("child-1")), headers=doctor)
    assert [e["resource"]["id"] for e in again.json()["entry"]] == [resources[0]["id"], resources[1]["id"]]


def test_a_childs_results_are_searched_by_patient_as_by_subject(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    # R4's RiskAssessment search names the child by `patient` too (a HAPI client's RiskAssessment.PATIENT.hasId
    # sends it): it had been a 422 asking for `subject`. Review7 fhir_conformance.
    doctor = token_for("dr-a", "paediatrician")
    screener = screening_app.state.screener
    with session_scope(screening_app.state.session_factory) as session:
        for child in (syndromic_child("child-1"), syndromic_child("child-2")):
            store_result(session, screener, child, screener.screen(child, date(2024, 3, 1)), "dr-a", owner="dr-a")
    by_subject = client.get("/fhir/RiskAssessment", params={"subject": "Patient/child-1"}, headers=doctor).json()
    assert by_subject["total"] == 1
    for value in ("child-1", "Patient/child-1"):
        found = client.get("/fhir/RiskAssessment", params={"patient": value}, headers=doctor).json()
        assert found["entry"] == by_subject["entry"], value
    both = {"patient": "child-1", "subject": "Patient/child-1"}
    assert client.get("/fhir/RiskAssessment", params=both, headers=doctor).json()["entry"] == by_subject["entry"]
    two = client.get("/fhir/RiskAssessment", params={"patient": "child-1", "subject": "child-2"}, headers=doctor)
    assert two.json()["total"] == 0  # both parameters apply
    missing = client.get("/fhir/RiskAssessment", headers=doctor)
    assert missing.status_code == 422 and missing.json()["issue"][0]["code"] == "required"


def test_a_risk_assessment_search_names_the_parameters_it_applied_in_its_self_link(
    client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    # R4 search.html: the server returns the parameters it used, in the searchset's self link, so that a client can
    # tell that `date` was not applied; there had been no link. Review7 fhir_conformance.
    doctor = token_for("dr-a", "paediatrician")
    found = client.get("/fhir/RiskAssessment?patient=Patient/child-1&date=ge2024-01-01&_count=5", headers=doctor).json()
    assert found["link"] == [{"relation": "self", "url": "http://testserver/fhir/RiskAssessment?patient=Patient%2Fchild-1"}]
    Bundle.model_validate(found)


def test_a_flag_committed_after_a_later_one_still_reaches_the_emr(screening_app: FastAPI, client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    """On PostgreSQL a result's id is drawn before its transaction commits, so two requests can commit out of id
    order: the feed read strictly after its cursor, and a flag committed after a higher-numbered one was skipped for
    good (never in the outbox, so never pending nor rejected). Here the lower id arrives after the feed moved past."""
    factory = screening_app.state.session_factory
    take_in_screening_flags(factory)
    doctor = token_for("dr-ivanova", "paediatrician")
    for child in ("child-1", "child-2"):
        assert client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(syndromic_child(child)),
                           headers=doctor).status_code == 200
    with session_scope(factory) as session:
        first, second = session.scalars(select(ScreeningRun).order_by(ScreeningRun.id)).all()
        late = first.id
        # as if child-1's request had not committed yet when the feed read: its row is taken out, then put back
        kept = {c.key: getattr(first, c.key) for c in ScreeningRun.__table__.columns}
        session.delete(first)
    assert take_in_screening_flags(factory) == 1  # child-2's flag; the feed's cursor is now past child-1's id
    with session_scope(factory) as session:
        session.add(ScreeningRun(**kept))  # child-1's transaction commits, under its lower id
    assert take_in_screening_flags(factory) == 1
    with session_scope(factory) as session:
        from service.outbox import OutboxMessage

        keys = sorted(m.key for m in session.scalars(select(OutboxMessage).where(OutboxMessage.channel == FHIR_CHANNEL)))
    assert keys == sorted([f"RiskAssessment/medscreen-ra-{late}", f"RiskAssessment/medscreen-ra-{second.id}"])


def _patient(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def _flag_messages(factory: Any) -> list[tuple[str, str | None, list[str]]]:
    """The FHIR outbox: each message's key, topic and the statuses of the Flags it carries."""
    with session_scope(factory) as session:
        messages = session.scalars(select(OutboxMessage).where(OutboxMessage.channel == FHIR_CHANNEL).order_by(OutboxMessage.id))
        return [(m.key, m.topic, [e["resource"]["status"] for e in json.loads(m.payload)["entry"]
                                  if e["resource"]["resourceType"] == "Flag"]) for m in messages]


def test_a_flag_the_page_retires_is_sent_again_and_read_as_inactive(screening_app: FastAPI, client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    """The EMR got an active Flag; a later record says the child has died and the page withdraws the flag. No
    message followed and GET /fhir/Flag still said active: the EMR kept asking someone to contact that family."""
    factory = screening_app.state.session_factory
    take_in_screening_flags(factory)
    doctor = token_for("dr-ivanova", "paediatrician")
    assert client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(syndromic_child("child-1")), headers=doctor).status_code == 200
    assert take_in_screening_flags(factory) == 1
    with session_scope(factory) as session:
        flag_id = f"medscreen-flag-{session.scalar(select(ScreeningRun.id))}"
    assert client.get(f"/fhir/Flag/{flag_id}", headers=doctor).json()["status"] == "active"

    dead = record_to_bundle(syndromic_child("child-1"))
    _patient(dead)["deceasedDateTime"] = "2024-02-20"
    assert client.post("/api/screening?as_of=2024-03-01", json=dead, headers=doctor).status_code == 200
    assert client.get("/api/screening/flags", headers=doctor).json()["withdrawn_total"] == 1
    assert client.get(f"/fhir/Flag/{flag_id}", headers=doctor).json()["status"] == "inactive"
    found = client.get("/fhir/RiskAssessment", params={"subject": "Patient/child-1"}, headers=doctor).json()
    assert [e["resource"]["status"] for e in found["entry"] if e["resource"]["resourceType"] == "Flag"] == ["inactive"]

    assert take_in_screening_flags(factory) == 1
    assert take_in_screening_flags(factory) == 0  # each change once
    topic = f"Flag/{flag_id}"
    assert _flag_messages(factory) == [
        (f"RiskAssessment/medscreen-ra-{flag_id.rsplit('-', 1)[1]}", topic, ["active"]),
        (f"{topic}/inactive", topic, ["inactive"]),
    ]
    with session_scope(factory) as session:
        first = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).first()
        assert first is not None and newer_of_topic(session, first) is not None  # the active one is never replayed
    with fhir_receiver() as emr:
        assert dispatch(factory, FHIR_CHANNEL, FhirSender(emr.url, token=None, timeout_s=30),
                        RetryPolicy(retry_s=0, max_attempts=3)) == 2
        assert not emr.invalid and emr.transactions[-1] == [topic]
        assert emr.resources[topic]["status"] == "inactive" and emr.resources[topic]["code"]["text"]


def test_a_decision_a_newer_flag_or_a_merged_record_retires_the_flag_in_the_emr(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    factory = screening_app.state.session_factory
    take_in_screening_flags(factory)
    doctor = token_for("dr-ivanova", "paediatrician")

    def post(bundle: dict[str, Any]) -> None:
        assert client.post("/api/screening?as_of=2024-03-01", json=bundle, headers=doctor).status_code == 200

    def flag_of(patient_id: str) -> str:
        with session_scope(factory) as session:
            return f"medscreen-flag-{session.scalar(select(ScreeningRun.id).where(ScreeningRun.patient_id == patient_id))}"

    for child in ("decided", "replaced", "merged"):
        post(record_to_bundle(syndromic_child(child)))
    assert take_in_screening_flags(factory) == 3
    decided, replaced, merged = (flag_of(c) for c in ("decided", "replaced", "merged"))

    assert client.post(f"/api/screening/flags/{decided.rsplit('-', 1)[1]}/outcome", json={"outcome": "not_relevant"},
                       headers=doctor).status_code == 201
    newer = syndromic_child("replaced")
    newer.facts.append(CodedFact("condition", "hpo", "HP:0001250", date(2023, 9, 1)))  # seizures: new findings
    post(record_to_bundle(newer))
    gone = record_to_bundle(syndromic_child("merged"))
    _patient(gone)["link"] = [{"other": {"reference": "Patient/kept"}, "type": "replaced-by"}]
    post(gone)

    expected = {decided: "inactive", replaced: "inactive", merged: "entered-in-error"}
    assert {flag: client.get(f"/fhir/Flag/{flag}", headers=doctor).json()["status"] for flag in expected} == expected
    assert take_in_screening_flags(factory) == 4  # three changes, and the newer flag's first push (active)
    sent = {key: statuses for key, _, statuses in _flag_messages(factory)}
    assert {flag: sent[f"Flag/{flag}/{status}"] for flag, status in expected.items()} == {f: [s] for f, s in expected.items()}
    with session_scope(factory) as session:
        latest = session.scalar(select(func.max(ScreeningRun.id)).where(ScreeningRun.patient_id == "replaced"))
    assert sent[f"RiskAssessment/medscreen-ra-{latest}"] == ["active"]
    assert take_in_screening_flags(factory) == 0


def test_flags_and_decisions_from_before_the_emr_was_configured_are_never_sent(  # type: ignore[no-untyped-def]
    screening_app: FastAPI, client: TestClient, token_for
) -> None:
    """The look-back behind the feed's cursor stops where the cursor started: it had sent up to 500 earlier flags
    (a flag decided before the upgrade among them, as active) to an EMR configured today."""
    factory = screening_app.state.session_factory
    doctor = token_for("dr-ivanova", "paediatrician")
    assert client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(syndromic_child("child-1")),
                       headers=doctor).status_code == 200
    with session_scope(factory) as session:
        old = session.scalars(select(ScreeningRun)).one().id
    assert client.post(f"/api/screening/flags/{old}/outcome", json={"outcome": "referred"}, headers=doctor).status_code == 201
    assert take_in_screening_flags(factory) == 0  # the feed's first start: the EMR is configured today
    assert client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(syndromic_child("child-2")),
                       headers=doctor).status_code == 200
    take_in_screening_flags(factory)
    take_in_screening_flags(factory)
    with session_scope(factory) as session:
        from service.outbox import OutboxMessage

        keys = [m.key for m in session.scalars(select(OutboxMessage).where(OutboxMessage.channel == FHIR_CHANNEL))]
        new = session.scalars(select(ScreeningRun).where(ScreeningRun.id != old)).one().id
    assert keys == [f"RiskAssessment/medscreen-ra-{new}"]


def test_a_deeply_nested_extension_is_one_records_error_not_a_500(client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    """An extension nested 200 deep (10 kB) exhausted the validator's stack: a 500, no child of the Bundle screened."""
    doctor = token_for("dr-ivanova", "paediatrician")
    nested: dict = {"url": "http://example.org/e", "valueString": "v"}  # type: ignore[type-arg]
    for _ in range(200):
        nested = {"url": "http://example.org/e", "extension": [nested]}
    bundle = record_to_bundle(syndromic_child("child-1"))
    deep = record_to_bundle(ordinary_child("child-2"))
    deep["entry"][0]["resource"]["extension"] = [nested]
    bundle["entry"] += deep["entry"]
    answer = client.post("/api/screening?as_of=2024-03-01", json=bundle, headers=doctor)
    assert answer.status_code == 200, answer.text
    subjects = [e["resource"]["subject"]["reference"] for e in answer.json()["entry"]
                if e["resource"]["resourceType"] == "RiskAssessment"]
    assert subjects == ["Patient/child-1"]
    assert "child-2" in answer.text  # named in the answer's OperationOutcome, with its reason


def test_flag_decided_before_upgrade_is_retired_in_emr(screening_app: FastAPI, client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    """A flag the EMR got from a release that sent no status changes, decided on under it beyond the look-back, is
    retired at the upgrade's first pass (review 3, crash D7: it had stayed active in the EMR for good)."""
    factory = screening_app.state.session_factory
    take_in_screening_flags(factory)
    doctor = token_for("dr-ivanova", "paediatrician")
    assert client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(syndromic_child("child-1")),
                       headers=doctor).status_code == 200
    assert take_in_screening_flags(factory) == 1  # the EMR got the active Flag
    assert client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(ordinary_child("child-2")),
                       headers=doctor).status_code == 200
    with session_scope(factory) as session:  # the site screens on: 700 results after the flag, taken in
        plain = session.scalar(select(ScreeningRun.id).where(ScreeningRun.flagged.is_(False)))
        columns = [c for c in ScreeningRun.__table__.columns if c.name != "id"]
        for _ in range(700):
            session.execute(insert(ScreeningRun.__table__).from_select(
                [c.name for c in columns], select(*columns).where(ScreeningRun.id == plain)))
    take_in_screening_flags(factory)
    take_in_screening_flags(factory)
    with session_scope(factory) as session:  # the release before had no outcomes cursor
        session.execute(delete(OutboxCursor).where(OutboxCursor.name == "fhir:screening_outcomes"))
        flag_id = session.scalar(select(ScreeningRun.id).where(ScreeningRun.flagged.is_(True)))
    assert client.post(f"/api/screening/flags/{flag_id}/outcome", json={"outcome": "not_relevant"},
                       headers=doctor).status_code == 201  # decided under that release
    for _ in range(2):  # upgraded: the feed's passes
        take_in_screening_flags(factory)
    with session_scope(factory) as session:
        keys = session.scalars(select(OutboxMessage.key).where(OutboxMessage.key.like("Flag/%"))).all()
    assert keys == [f"Flag/medscreen-flag-{flag_id}/inactive"]
    assert client.get(f"/fhir/Flag/medscreen-flag-{flag_id}", headers=doctor).json()["status"] == "inactive"
