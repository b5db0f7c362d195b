"""Champion results as FHIR R4 for the EMR: resources validated with fhir.resources, read at GET /fhir/...
(role-checked, audited) and pushed as transaction Bundles to a real HTTP receiver, through an outage."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from inference.fhir_feed import FHIR_CHANNEL, take_in_fhir_results
from inference.fhir_results import SHADOW_NOTE, ResultFacts, report_id, result_resources
from service.db import session_scope, utcnow
from service.fhir_push import FhirSender
from service.outbox import OutboxMessage, RetryPolicy, dispatch
from service.tables import AuditEvent
from tests.fhir_receiver import fhir_receiver
from tests.service.conftest import AddUser
from tests.worklist.conftest import add_result, make_study


def _validated(bundle_json: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    """Every resource of a Bundle parsed back by its fhir.resources model, by type/id."""
    Bundle.model_validate(bundle_json)
    out = {}
    for entry in bundle_json["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        out[f"{resource['resourceType']}/{resource['id']}"] = resource
    return out


def test_results_read_at_fhir_match_the_api(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    radiologist = add_user("rita", "radiologist")
    paediatrician = add_user("paul", "paediatrician")
    with session_scope(app.state.session_factory) as session:
        scored = make_study(session)
        add_result(session, scored, score=0.8123, threshold=0.5, model_version="3", mlflow_run_id="run-abc")
        failed = make_study(session, modality="MG", task="mammography")
        add_result(session, failed, score=None, outcome="could_not_score", reason="MG view without laterality")
        uids = (scored.study_instance_uid, failed.study_instance_uid)

    response = client.get("/fhir/DiagnosticReport", params={"study": uids[0]}, headers=radiologist)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+json")
    resources = _validated(response.json())
    detail = client.get(f"/api/studies/{uids[0]}", headers=radiologist).json()
    api = detail["results"][0]
    (report,) = [r for key, r in resources.items() if key.startswith("DiagnosticReport/")]
    assert report["imagingStudy"][0]["identifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{uids[0]}"}
    assert report["basedOn"][0]["identifier"]["value"] == detail["accession_number"]
    assert "not a diagnosis" in report["conclusion"] and report["subject"]["identifier"]["value"] == "PID-1"
    probability = resources[report["result"][0]["reference"]]
    call = resources[report["result"][1]["reference"]]
    assert probability["valueQuantity"]["value"] == round(api["score"], 6)
    assert call["valueCodeableConcept"]["coding"][0]["code"] == api["call"] == "positive"
    device = resources[probability["device"]["reference"]]
    assert device["deviceName"][0]["name"] == api["model_name"] and device["version"][0]["value"] == api["model_version"] == "3"
    assert "run-abc" in device["note"][0]["text"]

    one = client.get(f"/fhir/{report['result'][0]['reference']}", headers=radiologist)
    assert one.status_code == 200 and one.json() == probability
    assert client.get(f"/fhir/{probability['device']['reference']}", headers=radiologist).json() == device
    assert client.get(f"/fhir/DiagnosticReport/{report['id']}", headers=radiologist).json() == report

    # The self link names the parameters applied (R4 search.html), not `status`, which is not: there had been no link.
    # Review7 fhir_conformance.
    filtered = client.get("/fhir/DiagnosticReport", params={"study": uids[0], "status": "preliminary"}, headers=radiologist)
    assert filtered.json()["link"] == [{"relation": "self", "url": f"http://testserver/fhir/DiagnosticReport?study={uids[0]}"}]
    # `study` is a token: searched by the report's own imagingStudy identifier, system|value, it had answered total 0.
    for token in (f"urn:dicom:uid|urn:oid:{uids[0]}", f"urn:dicom:uid|{uids[0]}", f"urn:oid:{uids[0]}"):
        by_token = client.get("/fhir/DiagnosticReport", params={"study": token}, headers=radiologist).json()
        assert by_token["entry"] == response.json()["entry"], token
    for other in (f"urn:other|{uids[0]}", f"|{uids[0]}"):
        assert client.get("/fhir/DiagnosticReport", params={"study": other}, headers=radiologist).json()["total"] == 0
    # A comma ORs values (FHIR search): two studies had been read as one UID, total 0. Review7 fhir_conformance.
    both = client.get("/fhir/DiagnosticReport", params={"study": f"{uids[0]},urn:oid:{uids[1]}"}, headers=radiologist)
    assert sorted(e["resource"]["imagingStudy"][0]["identifier"]["value"] for e in both.json()["entry"]
                  if e["search"]["mode"] == "match") == sorted(f"urn:oid:{uid}" for uid in uids)
    cannot = _validated(client.get("/fhir/DiagnosticReport", params={"study": uids[1]}, headers=radiologist).json())
    (observation,) = [r for key, r in cannot.items() if key.startswith("Observation/")]
    assert "MG view without laterality" in observation["dataAbsentReason"]["text"]

    assert client.get("/fhir/DiagnosticReport", params={"study": uids[0]}, headers=paediatrician).status_code == 403
    assert client.get("/fhir/DiagnosticReport", params={"study": uids[0]}).status_code == 401
    assert client.get("/fhir/DiagnosticReport/medscreen-dr-999", headers=radiologist).status_code == 404
    with session_scope(app.state.session_factory) as session:
        audited = {(e.actor, e.action, e.subject_id) for e in session.scalars(select(AuditEvent))}
    assert ("rita", "fhir.read", uids[0]) in audited and ("rita", "fhir.read", uids[1]) in audited


def test_results_are_pushed_once_in_order_through_an_outage(app: FastAPI) -> None:
    factory = app.state.session_factory
    take_in_fhir_results(factory)  # the feed's first start
    with session_scope(factory) as session:
        studies = [make_study(session) for _ in range(3)]
        for study, score in zip(studies, (0.9, 0.2, 0.7), strict=True):
            add_result(session, study, score=score)
        add_result(session, studies[0], score=0.1, role="challenger")  # shadow: never leaves medscreen
    assert take_in_fhir_results(factory) == 3
    assert take_in_fhir_results(factory) == 0
    retry = RetryPolicy(retry_s=0.0, max_attempts=5)
    with fhir_receiver() as emr:
        sender = FhirSender(emr.url, token=None, timeout_s=30)  # the test EMR validates strictly: slow under load
        emr.answer_status = [503]
        assert dispatch(factory, FHIR_CHANNEL, sender, retry) == 0  # 503: offered again, nothing skipped
        assert dispatch(factory, FHIR_CHANNEL, sender, retry) == 3
        assert not emr.invalid and len(emr.transactions) == 3
        reports = [key for keys in emr.transactions for key in keys if key.startswith("DiagnosticReport/")]
        assert reports == sorted(reports, key=lambda k: int(k.rsplit("-", 1)[1]))
        url = emr.url
    # The EMR is gone: the next result waits, and goes once it is back.
    with session_scope(factory) as session:
        add_result(session, make_study(session), score=0.95)
    take_in_fhir_results(factory)
    assert dispatch(factory, FHIR_CHANNEL, FhirSender(url, token=None, timeout_s=2), retry) == 0
    with session_scope(factory) as session:
        waiting = session.scalars(select(OutboxMessage).where(OutboxMessage.state == "pending")).one()
        assert waiting.attempts == 1 and "EMR" in (waiting.last_error or "")
        waiting.next_attempt_at = utcnow() - timedelta(seconds=1)
    with fhir_receiver() as emr:
        assert dispatch(factory, FHIR_CHANNEL, FhirSender(emr.url, token=None, timeout_s=30), retry) == 1
        assert len(emr.transactions) == 1 and not emr.invalid
        emr.answer_status = [400]
        with session_scope(factory) as session:
            add_result(session, make_study(session), score=0.3)
        take_in_fhir_results(factory)
        assert dispatch(factory, FHIR_CHANNEL, FhirSender(emr.url, token=None, timeout_s=30), retry) == 0
    with session_scope(factory) as session:
        states = [m.state for m in session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
    assert states == ["sent"] * 4 + ["rejected"]


def test_a_shadow_champion_result_is_not_sent_to_the_emr_unless_the_site_asks(app: FastAPI) -> None:
    """A shadow version is recorded for monitoring: the EMR would show its DiagnosticReport as a result."""
    factory = app.state.session_factory
    take_in_fhir_results(factory)  # the feed's first start
    with session_scope(factory) as session:
        kept = add_result(session, make_study(session), score=0.9, steering="shadow")
        sent = add_result(session, make_study(session), score=0.8, steering="raise-only")
        kept_id, sent_id = kept.id, sent.id
    assert take_in_fhir_results(factory) == 1
    with session_scope(factory) as session:
        (message,) = session.scalars(select(OutboxMessage)).all()
        assert message.key.endswith(f"-{sent_id}")
    # MEDSCREEN_WRITEBACK_SHADOW: the feed takes the shadow result in too (behind its cursor, by the look-back).
    assert take_in_fhir_results(factory, include_shadow=True) == 1
    with session_scope(factory) as session:
        keys = sorted(m.key for m in session.scalars(select(OutboxMessage)))
    assert keys == sorted([f"DiagnosticReport/{report_id(kept_id)}", f"DiagnosticReport/{report_id(sent_id)}"])


def test_a_shadow_champion_result_is_not_read_as_a_finding_unless_the_site_asks(
    app: FastAPI, client: TestClient, add_user: AddUser
) -> None:
    """GET /fhir/... had served a shadow version's result (the shipped mammography model's) as a final report with
    a positive call, while the push left it out: a reader shows what it gets as a finding."""
    radiologist = add_user("rita", "radiologist")
    with session_scope(app.state.session_factory) as session:
        mammo = make_study(session, modality="MG", task="mammography", description="MAMMO SCREENING")
        shadow = add_result(session, mammo, score=0.81, threshold=0.5, steering="shadow")
        chest = make_study(session)
        shown = add_result(session, chest, score=0.7, threshold=0.5, steering="raise-only")
        uids, ids = (mammo.study_instance_uid, chest.study_instance_uid), (shadow.id, shown.id)
    shadow_reads = [
        f"/fhir/DiagnosticReport/{report_id(ids[0])}",
        f"/fhir/Observation/medscreen-obs-{ids[0]}-call",
        "/fhir/Device/medscreen-mammography-champion-3",
    ]

    def search(uid: str) -> dict[str, dict]:  # type: ignore[type-arg]
        response = client.get("/fhir/DiagnosticReport", params={"study": uid}, headers=radiologist)
        assert response.status_code == 200
        return _validated(response.json()) if response.json().get("entry") else {}

    assert search(uids[0]) == {}
    assert client.get("/fhir/DiagnosticReport", params={"study": uids[0]}, headers=radiologist).json()["total"] == 0
    for path in shadow_reads:
        assert client.get(path, headers=radiologist).status_code == 404, path
    assert f"DiagnosticReport/{report_id(ids[1])}" in search(uids[1])  # a version that may steer is served

    # MEDSCREEN_WRITEBACK_SHADOW: the site sends shadow results to its peers, and serves them here alike.
    app.state.settings = app.state.settings.model_copy(update={"writeback_shadow": True})
    assert f"DiagnosticReport/{report_id(ids[0])}" in search(uids[0])
    for path in shadow_reads:
        assert client.get(path, headers=radiologist).status_code == 200, path


def _bdl_7(bundle_json: dict) -> list[str]:  # type: ignore[type-arg]
    """The fullUrls that break R4 invariant bdl-7: a fullUrl is unique in a Bundle unless meta.versionId differs."""
    seen: dict[tuple[str, str | None], int] = {}
    for entry in bundle_json["entry"]:
        key = (entry["fullUrl"], entry["resource"].get("meta", {}).get("versionId"))
        seen[key] = seen.get(key, 0) + 1
    return [url for (url, _), count in seen.items() if count > 1]


def test_a_reopened_study_scored_twice_by_one_version_is_a_valid_searchset(
    app: FastAPI, client: TestClient, add_user: AddUser
) -> None:
    """A late instance re-opens a study and the same champion version scores it again: both results name one
    Device, which the searchset had carried twice under one fullUrl (bdl-7), so strict clients refused the answer."""
    radiologist = add_user("rita", "radiologist")
    with session_scope(app.state.session_factory) as session:
        study = make_study(session)
        first = add_result(session, study, score=0.3, steering="raise-only")
        study.revision = 2
        second = add_result(session, study, score=0.7, steering="raise-only")
        uid, ids = study.study_instance_uid, (first.id, second.id)

    bundle = client.get("/fhir/DiagnosticReport", params={"study": uid}, headers=radiologist).json()
    assert _bdl_7(bundle) == []
    resources = _validated(bundle)
    assert bundle["total"] == 2
    assert {f"DiagnosticReport/{report_id(i)}" for i in ids} <= set(resources)
    devices = [key for key in resources if key.startswith("Device/")]
    assert devices == ["Device/medscreen-chest-xray-champion-3"]
    for key, resource in resources.items():
        if key.startswith("Observation/"):
            assert resource["device"]["reference"] in resources  # every observation's Device is in the answer


def _facts(**change: object) -> ResultFacts:
    facts = ResultFacts(
        result_id=5, study_instance_uid="1.2.3", accession_number="ACC1", patient_id="PID-1", task="chest-xray",
        model_name="chest-xray", model_version="1", mlflow_run_id=None, outcome="scored", score=0.8, threshold=0.5,
        call="positive", reason=None, created_at=utcnow(),
    )
    return replace(facts, **change)  # type: ignore[arg-type]


def _by_type(facts: ResultFacts) -> dict[str, dict]:  # type: ignore[type-arg]
    """The resources of one result by type (the call observation as Observation), validated again from JSON."""
    out = {}
    for resource in result_resources(facts):
        as_json = resource.model_dump(mode="json", exclude_none=True)
        get_fhir_model_class(as_json["resourceType"]).model_validate(as_json)
        key = as_json["resourceType"] + ("-probability" if as_json["id"].endswith("-probability") else "")
        out[key] = as_json
    return out


def test_a_study_outside_intended_use_is_not_applicable_not_an_error() -> None:
    """Out of intended use had gone to the EMR as 'could not score' with dataAbsentReason `error`, which invites a
    resend; it means the model's result does not apply to this patient (review 3, honesty D8)."""
    reason = "no PA/AP view; chest-xray v1 is validated for those views only"
    out = _by_type(_facts(outcome="out_of_scope", score=None, threshold=None, call=None, reason=reason))
    absent = out["Observation"]["dataAbsentReason"]
    assert absent["coding"][0]["code"] == "not-applicable"
    assert absent["text"] == f"not scored: outside the model's intended use: {reason}"
    assert "not scored: outside the model's intended use" in out["DiagnosticReport"]["conclusion"]
    assert "could not score" not in json.dumps(out)
    failed = _by_type(_facts(outcome="could_not_score", score=None, threshold=None, call=None, reason="unreadable"))
    assert failed["Observation"]["dataAbsentReason"]["coding"][0]["code"] == "error"
    assert "could not score" in failed["DiagnosticReport"]["conclusion"]


def test_a_result_is_dated_by_its_study_not_by_when_it_was_scored() -> None:
    """effectiveDateTime ("clinically relevant time") had been the scoring time: a film of January 2025 backfilled in
    December 2026 showed in the EMR as a December 2026 finding (review 3, time 4). DICOM keeps StudyDate without a
    zone, so the date goes alone; issued stays the scoring time."""
    scored_at = utcnow()
    out = _by_type(_facts(study_date="20250115", created_at=scored_at))
    for key in ("DiagnosticReport", "Observation", "Observation-probability"):
        assert out[key]["effectiveDateTime"] == "2025-01-15", key
        assert out[key]["issued"].startswith(scored_at.strftime("%Y-%m-%dT%H:%M:%S")), key
    for missing in ("", "2025011", "20250230"):  # none, or not a date: no clinically relevant time is claimed
        undated = _by_type(_facts(study_date=missing))
        assert "effectiveDateTime" not in undated["DiagnosticReport"] and "issued" in undated["DiagnosticReport"]


def test_a_shadow_result_sent_by_the_sites_choice_is_preliminary_and_says_so() -> None:
    """With MEDSCREEN_WRITEBACK_SHADOW the shipped mammography version (AUROC 0.58) had reached the EMR as a final
    'positive at its operating point' with no word of shadow (review 3, honesty D4)."""
    shadow = _by_type(_facts(steering="shadow"))
    for key in ("DiagnosticReport", "Observation", "Observation-probability"):
        assert shadow[key]["status"] == "preliminary", key
    assert SHADOW_NOTE in shadow["DiagnosticReport"]["conclusion"]
    assert SHADOW_NOTE in shadow["Observation"]["note"][0]["text"]
    shown = _by_type(_facts(steering="raise-only"))
    assert shown["DiagnosticReport"]["status"] == "final" and "shadow" not in json.dumps(shown)


def test_a_shadow_result_is_preliminary_when_served_and_pushed(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    radiologist = add_user("rita", "radiologist")
    app.state.settings = app.state.settings.model_copy(update={"writeback_shadow": True})
    factory = app.state.session_factory
    take_in_fhir_results(factory)  # the feed's first start
    with session_scope(factory) as session:
        study = make_study(session, modality="MG", task="mammography")
        add_result(session, study, score=0.413, threshold=0.315, steering="shadow")
        uid = study.study_instance_uid
    served = _validated(client.get("/fhir/DiagnosticReport", params={"study": uid}, headers=radiologist).json())
    assert take_in_fhir_results(factory, include_shadow=True) == 1
    with session_scope(factory) as session:
        (payload,) = session.scalars(select(OutboxMessage.payload)).all()
    for resources in (served, _validated(json.loads(payload))):
        (report,) = [r for key, r in resources.items() if key.startswith("DiagnosticReport/")]
        assert report["status"] == "preliminary" and SHADOW_NOTE in report["conclusion"]


def test_a_rescored_study_has_one_current_report_served_and_pushed(
    app: FastAPI, client: TestClient, add_user: AddUser
) -> None:
    """A late image re-opened a study scored negative and it was scored again positive: the search and the EMR push
    had given two final reports, nothing saying which was current (review 3, honesty D1)."""
    radiologist = add_user("rita", "radiologist")
    factory = app.state.session_factory
    take_in_fhir_results(factory)  # the feed's first start
    with session_scope(factory) as session:
        study = make_study(session)
        first = add_result(session, study, score=0.11)
        study.revision = 2
        uid, first_id = study.study_instance_uid, first.id
    assert take_in_fhir_results(factory) == 1
    with session_scope(factory) as session:
        second = add_result(session, session.get(type(study), study.id), score=0.999)  # type: ignore[arg-type]
        second_id = second.id
    assert take_in_fhir_results(factory) == 1

    served = _validated(client.get("/fhir/DiagnosticReport", params={"study": uid}, headers=radiologist).json())
    old, new = served[f"DiagnosticReport/{report_id(first_id)}"], served[f"DiagnosticReport/{report_id(second_id)}"]
    assert (old["status"], new["status"]) == ("entered-in-error", "final")
    assert report_id(second_id) in old["conclusion"] and "not the current result" in old["conclusion"]
    assert new["extension"] == [{"url": "http://hl7.org/fhir/StructureDefinition/diagnosticReport-replaces",
                                 "valueReference": {"reference": f"DiagnosticReport/{report_id(first_id)}"}}]
    for reference in old["result"]:
        assert served[reference["reference"]]["status"] == "entered-in-error"
    assert client.get(f"/fhir/DiagnosticReport/{report_id(first_id)}", headers=radiologist).json() == old

    with session_scope(factory) as session:
        first_push, second_push = [json.loads(p) for p in session.scalars(
            select(OutboxMessage.payload).order_by(OutboxMessage.id))]
    pushed = _validated(second_push)  # the later result's push re-sends the earlier report, same id
    assert pushed[f"DiagnosticReport/{report_id(first_id)}"]["status"] == "entered-in-error"
    assert pushed[f"DiagnosticReport/{report_id(second_id)}"]["status"] == "final"
    assert _validated(first_push)[f"DiagnosticReport/{report_id(first_id)}"]["status"] == "final"  # sent before
