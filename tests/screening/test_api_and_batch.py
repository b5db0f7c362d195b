"""The HTTP edge with real users and tokens (submit, flags, outcome, page, audit) and the batch command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from datasets.fhir_emr import record_to_bundle
from medscreen.cli import main
from screening.fhir_feed import take_in_screening_flags
from screening.tables import ScreeningBatchRun, ScreeningOutcome, ScreeningRun
from service.db import session_scope
from service.outbox import OutboxMessage
from service.tables import AuditEvent
from tests.screening.conftest import child_of, ordinary_child, syndromic_child


def _bundle() -> dict:  # type: ignore[type-arg]
    bundle = record_to_bundle(syndromic_child("child-1"))
    bundle["entry"] += record_to_bundle(ordinary_child("child-2"))["entry"]
    bundle["entry"].append({"resource": {"resourceType": "Condition", "id": "broken", "onsetDateTime": "yesterday",
                                         "subject": {"reference": "Patient/child-2"}, "code": {"text": "x"}}})
    return bundle


def test_paediatrician_submits_views_and_decides(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    doctor = token_for("dr-ivanova", "paediatrician")
    take_in_screening_flags(screening_app.state.session_factory)  # the EMR feed's first start
    response = client.post("/api/screening?as_of=2024-03-01", json=_bundle(), headers=doctor)
    assert response.status_code == 200, response.text
    resources = [e["resource"] for e in response.json()["entry"]]
    kinds = [r["resourceType"] for r in resources]
    assert kinds.count("RiskAssessment") == 2 and kinds.count("Flag") == 1
    flag = next(r for r in resources if r["resourceType"] == "Flag")
    assert flag["subject"]["reference"] == "Patient/child-1" and "genetics referral" in flag["code"]["text"]
    assessment = next(r for r in resources if r["resourceType"] == "RiskAssessment" and r["subject"]["reference"] == "Patient/child-1")
    assert assessment["prediction"][0]["probabilityDecimal"] > 0
    assert any("coding" in p["outcome"] for p in assessment["prediction"][1:])  # candidate diseases
    # child-2's unreadable Condition is named on its own assessment, which is preliminary (incomplete).
    incomplete = next(r for r in resources if r["resourceType"] == "RiskAssessment" and r["subject"]["reference"] == "Patient/child-2")
    assert incomplete["status"] == "preliminary" and any("Condition/broken" in n["text"] for n in incomplete["note"])

    listing = client.get("/api/screening/flags", headers=doctor).json()
    listed = listing["flags"]
    assert [row["patient_id"] for row in listed] == ["child-1"]
    row = listed[0]
    assert row["explanation"]["candidates"] and row["explanation"]["findings"] and row["flag"]["status"] == "active"
    # child-2 is not flagged on what could be read, but its record could not be fully read: listed apart, with the
    # entry not read and its risk as a lower bound, never left to pass for a negative.
    assert listing["incomplete_total"] == 1 and [r["patient_id"] for r in listing["incomplete"]] == ["child-2"]
    unread = listing["incomplete"][0]
    assert unread["risk_is_lower_bound"] and unread["risk"] < unread["threshold"]
    assert "Condition/broken" in unread["not_read"][0]["entry"]

    html = client.get("/api/screening/flags?format=html", headers=doctor)
    assert html.status_code == 200 and "child-1" in html.text and "Referred to genetics" in html.text
    assert "1 record could not be fully read: not a negative" in html.text and "child-2" in html.text
    assert "Condition/broken" in html.text and "risk at least" in html.text
    assert client.get("/api/screening/flags", headers=token_for("dr-other", "paediatrician")).json()["incomplete"] == []

    # Both reach the EMR: child-1's flag and child-2's preliminary RiskAssessment.
    assert take_in_screening_flags(screening_app.state.session_factory) == 2
    with session_scope(screening_app.state.session_factory) as session:
        ids = {r.patient_id: r.id for r in session.scalars(select(ScreeningRun))}
        payloads = {m.key: json.loads(m.payload) for m in session.scalars(select(OutboxMessage))}
    pushed = payloads[f"RiskAssessment/medscreen-ra-{ids['child-2']}"]["entry"]
    assert [e["resource"]["resourceType"] for e in pushed] == ["RiskAssessment"]
    assert pushed[0]["resource"]["status"] == "preliminary" and "a lower bound" in pushed[0]["resource"]["note"][0]["text"]
    assert f"RiskAssessment/medscreen-ra-{ids['child-1']}" in payloads

    decided = client.post(f"/api/screening/flags/{row['id']}/outcome", json={"outcome": "referred"}, headers=doctor)
    assert decided.status_code == 201 and decided.json()["decided_by"] == "dr-ivanova"
    assert client.get("/api/screening/flags", headers=doctor).json()["flags"] == []
    again = client.get("/api/screening/flags?include_decided=true", headers=doctor).json()["flags"]
    assert again[0]["outcome"] == "referred" and again[0]["flag"]["status"] == "inactive"  # as the EMR is sent it
    bad = client.post(f"/api/screening/flags/{row['id']}/outcome", json={"outcome": "maybe"}, headers=doctor)
    assert bad.status_code == 422

    with session_scope(screening_app.state.session_factory) as session:
        actions = [(e.actor, e.action, e.subject_id) for e in session.scalars(select(AuditEvent))]
        outcomes = list(session.scalars(select(ScreeningOutcome)))
    assert ("dr-ivanova", "screening.flag.view", "child-1") in actions
    assert ("dr-ivanova", "screening.outcome", "child-1") in actions
    assert ("dr-ivanova", "screening.submit", "child-2") in actions
    assert [o.outcome for o in outcomes] == ["referred"]

    quality = token_for("qa-lead", "quality")
    assert client.get("/api/screening/outcomes", headers=doctor).status_code == 403
    review = client.get("/api/screening/outcomes", headers=quality).json()
    assert review["referred"] == 1 and review["outcomes"][0]["decided_by"] == "dr-ivanova"
    assert review["outcomes"][0]["top_candidate"]


def test_roles_are_enforced(client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/screening/flags").status_code == 401
    radiologist = token_for("dr-rad", "radiologist")
    assert client.get("/api/screening/flags", headers=radiologist).status_code == 403
    assert client.post("/api/screening", json=_bundle(), headers=radiologist).status_code == 403
    admin = token_for("root-admin", "admin")
    assert client.get("/api/screening/flags", headers=admin).status_code == 200


def test_a_bundle_without_children_is_refused(client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    doctor = token_for("dr-p", "paediatrician")
    response = client.post("/api/screening", json={"resourceType": "Patient"}, headers=doctor)
    assert response.status_code == 422


def test_the_page_holds_no_patient_data(client: TestClient) -> None:
    page = client.get("/screening")
    script = client.get("/screening/static/screening.js")
    assert page.status_code == 200 and "/api/screening/flags?format=html" in script.text
    assert "child-" not in page.text


def test_screen_emr_streams_flags_and_records_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extract = tmp_path / "extract.ndjson"
    lines = [json.dumps(record_to_bundle(syndromic_child(f"s{i}"))) for i in range(3)]
    lines += [json.dumps(record_to_bundle(ordinary_child(f"o{i}"))) for i in range(5)]
    lines.insert(4, "{broken")
    extract.write_text("\n".join(lines) + "\n")
    out, errors = tmp_path / "flags.ndjson", tmp_path / "errors.ndjson"
    rc = main(["screen-emr", str(extract), "--out", str(out), "--errors", str(errors), "--as-of", "2024-03-01", "--quiet"])
    assert rc == 0
    flagged = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(f["patient_id"] for f in flagged) == ["s0", "s1", "s2"]
    assert all(f["Flag"]["resourceType"] == "Flag" and f["RiskAssessment"]["resourceType"] == "RiskAssessment" for f in flagged)
    assert [json.loads(line)["record"] for line in errors.read_text().splitlines()] == ["line 5"]
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["screened"] == 8 and summary["flagged"] == 3 and summary["errors"] == 1


def test_screen_emr_writes_unread_records_beside_its_output_when_not_told_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --errors the unread records and their reasons were dropped, leaving a count: which child was
    not screened, and why, was nowhere."""
    extract = tmp_path / "extract.ndjson"
    bundle = record_to_bundle(ordinary_child("o1"))
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["birthDate"] = "2022-02-30"
    extract.write_text(json.dumps(bundle) + "\n" + json.dumps(record_to_bundle(ordinary_child("o2"))) + "\n")
    out = tmp_path / "flags.ndjson"
    assert main(["screen-emr", str(extract), "--out", str(out), "--as-of", "2024-03-01", "--quiet", "--no-store"]) == 0
    errors = tmp_path / "flags.errors.ndjson"
    reasons = [json.loads(line)["reason"] for line in errors.read_text().splitlines()]
    assert any("birthDate: invalid date '2022-02-30'" in r for r in reasons), reasons
    err = capsys.readouterr().err
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["screened"] == 1 and summary["errors"] == len(reasons) and summary["errors_file"] == str(errors)
    assert f"{len(reasons)} records could not be read and were not screened; each is in {errors}" in err
    assert main(["screen-emr", str(extract), "--out", str(out), "--errors", str(out), "--quiet", "--no-store"]) == 2
    assert "--errors and --out are both" in capsys.readouterr().err


def test_screen_emr_says_when_there_is_nothing_to_screen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty extract (an export that failed on the way) had given a summary of zeros and nothing else; a folder of
    neither layout was only "patients.csv is missing", which a FHIR site never meant to write."""
    (tmp_path / "empty.ndjson").write_text("")
    args = ["--quiet", "--no-store", "--as-of", "2024-03-01"]
    assert main(["screen-emr", str(tmp_path / "empty.ndjson"), "--out", str(tmp_path / "a.ndjson"), *args]) == 0
    assert "empty.ndjson holds no child's record: nothing was screened" in capsys.readouterr().err
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "notes.txt").write_text("not an extract")
    assert main(["screen-emr", str(tmp_path / "export"), "--out", str(tmp_path / "b.ndjson"), *args]) == 2
    assert "holds no FHIR .ndjson or Bundle .json file, and is not a CSV extract" in capsys.readouterr().err


def test_screen_emr_says_when_an_extract_flags_beyond_its_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threshold was set on simulated ordinary children; an extract that flags more than twice the alert
    budget (here a clinic's 3 syndromic children in 8) is said to differ, with the rate in the summary."""
    import screening.cli

    extract = tmp_path / "extract.ndjson"
    records = [syndromic_child(f"s{i}") for i in range(3)] + [ordinary_child(f"o{i}") for i in range(5)]
    extract.write_text("".join(json.dumps(record_to_bundle(r)) + "\n" for r in records))
    args = ["screen-emr", str(extract), "--as-of", "2024-03-01", "--quiet", "--no-store"]
    assert main([*args, "--out", str(tmp_path / "a.ndjson")]) == 0
    err = capsys.readouterr().err
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["flag_rate"] == 0.375 and summary["budget"] == 0.01
    assert "differs from the population" not in err  # 8 children: too few to tell
    monkeypatch.setattr(screening.cli, "_RATE_CHECKED_FROM", 8)
    assert main([*args, "--out", str(tmp_path / "b.ndjson")]) == 0
    assert "37.50% of the 8 children screened were flagged against an alert budget of 1.00%" in capsys.readouterr().err


def test_a_long_list_of_unread_entries_shows_five_and_counts_the_rest(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    """A clinic's own problem-list codes make many unread entries: the flag lists five and the rest on a click."""
    doctor = token_for("dr-ivanova", "paediatrician")
    bundle = record_to_bundle(syndromic_child("child-1"))
    bundle["entry"] += [{"resource": {"resourceType": "Condition", "id": f"local-{i}", "subject": {"reference": "Patient/child-1"},
                                      "code": {"coding": [{"system": "http://clinic.example/codes", "code": f"L{i}"}]}}}
                        for i in range(12)]
    assert client.post("/api/screening?as_of=2024-03-01", json=bundle, headers=doctor).status_code == 200
    html = client.get("/api/screening/flags?format=html", headers=doctor).text
    assert "Incomplete record" in html and html.count("no ICD-10, SNOMED CT, HPO, ORPHA or OMIM coding") == 12
    assert '<details class="more-dropped"><summary>7 more not read</summary>' in html


def test_screen_emr_says_when_an_older_extract_loses_children_who_have_since_turned_seven(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extract = tmp_path / "extract.ndjson"
    records = [syndromic_child(f"s{i}") for i in range(3)] + [ordinary_child(f"o{i}") for i in range(5)]
    extract.write_text("".join(json.dumps(record_to_bundle(r)) + "\n" for r in records))
    args = ["screen-emr", str(extract), "--quiet", "--no-store"]
    assert main([*args, "--out", str(tmp_path / "a.ndjson"), "--as-of", "2030-01-01"]) == 0
    err = capsys.readouterr().err
    assert json.loads(err.strip().splitlines()[-1])["aged_out"] == 8
    assert "8 of 8 children were under 7 at their record's last entry but are older on 2030-01-01" in err
    assert main([*args, "--out", str(tmp_path / "b.ndjson"), "--as-of", "2024-03-01"]) == 0  # its own date
    err = capsys.readouterr().err
    assert json.loads(err.strip().splitlines()[-1])["aged_out"] == 0 and "older extract" not in err


def test_quality_counts_a_batch_runs_screened_children_from_the_run_as_it_counts_posted_ones(
    screening_app: FastAPI, client: TestClient, token_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A screen-emr run stores only its flagged and incomplete children: the quality view's "screened" and flag
    rate come from the run's own counts, and give what posting the same children over HTTP gives (not 3 of 3)."""
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", str(screening_app.state.engine.url))
    records = [syndromic_child(f"s{i}") for i in range(3)] + [ordinary_child(f"o{i}") for i in range(5)]
    extract = tmp_path / "extract.ndjson"
    extract.write_text("".join(json.dumps(record_to_bundle(r)) + "\n" for r in records))
    assert main(["screen-emr", str(extract), "--out", str(tmp_path / "out.ndjson"), "--as-of", "2024-03-01", "--quiet"]) == 0
    quality = token_for("qa", "quality")
    (batch,) = client.get("/api/quality/screening", headers=quality).json()
    assert (batch["screened"], batch["flagged"], batch["batch_runs"]) == (8, 3, 1)
    assert batch["flag_rate"]["value"] == pytest.approx(3 / 8) and batch["flag_rate"]["ci_low"] < 3 / 8 < batch["flag_rate"]["ci_high"]

    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [e for r in records for e in record_to_bundle(r)["entry"]]}
    doctor = token_for("dr-a", "paediatrician")
    with session_scope(screening_app.state.session_factory) as session:  # the HTTP route alone, in a fresh store
        session.execute(ScreeningRun.__table__.delete())
        session.execute(ScreeningBatchRun.__table__.delete())
    assert client.post("/api/screening?as_of=2024-03-01", json=bundle, headers=doctor).status_code == 200
    (posted,) = client.get("/api/quality/screening", headers=quality).json()
    assert (posted["screened"], posted["flagged"], posted["batch_runs"]) == (8, 3, 0)
    assert posted["flag_rate"] == batch["flag_rate"]


def _nul_bundle() -> dict:  # type: ignore[type-arg]
    """A flagged child whose name, record number, organisation and a Condition's wording hold a NUL (0x00)."""
    bundle = record_to_bundle(child_of("child-nul", "Jane\x00Doe", "MR\x0012", "Practitioner/7", "Organization/a\x00b"))
    bundle["entry"].append({"resource": {
        "resourceType": "Condition", "id": "nul-words", "subject": {"reference": "Patient/child-nul"},
        "onsetDateTime": "2022-01-01",
        # A finding, not a diagnosis: read without its NUL, "Q90" is Down syndrome itself (a bare category is read
        # as the diagnosis its subcategories all are), which takes the child out of screening.
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "Q2\x001.1", "display": "Atrial\x00"}],
                 "text": "Atrial\x00 septal defect"},
    }})
    return bundle


@pytest.mark.parametrize("screening_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_nul_in_a_record_is_removed_from_the_name_and_leaves_identifiers_unread(
    screening_app: FastAPI, client: TestClient, token_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # PostgreSQL text cannot hold NUL: the POST had been a 500 and screen-emr a traceback after its flags file.
    doctor = token_for("dr-n", "paediatrician")
    answer = client.post("/api/screening?as_of=2024-03-01", json=_nul_bundle(), headers=doctor)
    assert answer.status_code == 200, answer.text
    assessment = next(e["resource"] for e in answer.json()["entry"] if e["resource"]["resourceType"] == "RiskAssessment")
    assert assessment["status"] == "preliminary"
    notes = " ".join(n["text"] for n in assessment["note"])
    for element in ("mrn", "organization"):
        assert f"Patient/child-nul {element}: holds a NUL character (0x00): not read" in notes, notes

    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", str(screening_app.state.engine.url.render_as_string(hide_password=False)))
    extract = tmp_path / "extract.ndjson"
    extract.write_text(json.dumps(_nul_bundle()) + "\n" + json.dumps(record_to_bundle(ordinary_child("o1"))) + "\n")
    out = tmp_path / "out.ndjson"
    rc = main(["screen-emr", str(extract), "--out", str(out), "--as-of", "2024-03-01", "--quiet",
               "--organization", "Organization/clinic1"])
    assert rc == 0
    with session_scope(screening_app.state.session_factory) as session:
        rows = session.scalars(select(ScreeningRun).where(ScreeningRun.patient_id == "child-nul")).all()
        stored = {(r.submitted_by, r.patient_name, r.mrn, r.organization) for r in rows}
    # The posted record named a care team dr-n is not assigned to: stored as dr-n's own patient (screening.scope).
    assert stored == {("dr-n", "JaneDoe", "", ""), ("batch:extract.ndjson", "JaneDoe", "", "")}


@pytest.mark.parametrize("screening_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_patient_id_longer_than_fhir_allows_is_an_unread_record_as_in_screen_emr(
    client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    # fhir.resources does not bound an id's length: a 140-character Patient id was screened and its store failed on
    # PostgreSQL (a 500; SQLite stored it). FHIR ids are at most 64 characters, as screen-emr's reader says.
    long_id = "x" * 140
    long_child = record_to_bundle(syndromic_child("placeholder"))
    for entry in long_child["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["id"] = long_id
        else:
            resource["subject"] = {"reference": f"Patient/{long_id}"}
    bundle = record_to_bundle(ordinary_child("short"))
    bundle["entry"] += long_child["entry"]
    answer = client.post("/api/screening?as_of=2024-03-01", json=bundle, headers=token_for("dr-l", "paediatrician"))
    assert answer.status_code == 200, answer.text
    resources = [e["resource"] for e in answer.json()["entry"]]
    assert [r["subject"]["reference"] for r in resources if r["resourceType"] == "RiskAssessment"] == ["Patient/short"]
    (outcome,) = [r for r in resources if r["resourceType"] == "OperationOutcome"]
    assert f"invalid Patient: id: invalid id {long_id[:70]!r}" in json.dumps(outcome)


@pytest.mark.parametrize("screening_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_nul_in_a_decision_note_is_a_422(client: TestClient, token_for) -> None:  # type: ignore[no-untyped-def]
    # PostgreSQL text cannot hold NUL: the decision had been a 500 there (SQLite stored it).
    doctor = token_for("dr-o", "paediatrician")
    bundle = record_to_bundle(syndromic_child("child-o"))
    assert client.post("/api/screening?as_of=2024-03-01", json=bundle, headers=doctor).status_code == 200
    (flag,) = client.get("/api/screening/flags", headers=doctor).json()["flags"]
    answer = client.post(f"/api/screening/flags/{flag['id']}/outcome", json={"outcome": "referred", "note": "a\x00b"},
                         headers=doctor)
    assert answer.status_code == 422 and "NUL character" in answer.json()["detail"][0]["msg"], answer.text
    decided = client.post(f"/api/screening/flags/{flag['id']}/outcome", json={"outcome": "referred", "note": "ab"},
                          headers=doctor)
    assert decided.status_code == 201 and decided.json()["note"] == "ab"


def test_screen_emr_audits_each_child_it_writes_as_the_person_who_ran_it(
    screening_app: FastAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit actor had been batch:<file>, which names no one, and --no-store wrote every flagged child's name and
    record number to its output with no audit row at all."""
    from service.users_command import cli_actor

    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", str(screening_app.state.engine.url))
    records = [child_of(f"s{i}", f"Leak{i}^Name", f"MRN{i}") for i in range(2)] + [ordinary_child("o1")]
    extract = tmp_path / "extract.ndjson"
    extract.write_text("".join(json.dumps(record_to_bundle(r)) + "\n" for r in records))
    base = ["screen-emr", str(extract), "--as-of", "2024-03-01", "--quiet"]

    def audit_rows() -> list[tuple[str, str, str, dict]]:  # type: ignore[type-arg]
        with session_scope(screening_app.state.session_factory) as session:
            rows = session.scalars(select(AuditEvent).where(AuditEvent.action.like("screening.%")).order_by(AuditEvent.id))
            return [(r.actor, r.action, r.subject_id, r.detail or {}) for r in rows]

    flags = tmp_path / "flags.ndjson"
    assert main([*base, "--out", str(flags), "--no-store"]) == 0
    written = [json.loads(line)["patient_id"] for line in flags.read_text().splitlines()]
    assert sorted(written) == ["s0", "s1"] and "Leak0^Name" in flags.read_text()
    exported = audit_rows()
    assert [(actor, action, subject) for actor, action, subject, _ in exported] == [
        (cli_actor(), "screening.export", patient) for patient in written
    ]
    assert all(detail["batch"] == "batch:extract.ndjson" and detail["flagged"] for *_, detail in exported)

    everyone = tmp_path / "all.ndjson"
    assert main([*base, "--out", str(everyone), "--all"]) == 0
    rows = audit_rows()[len(exported):]
    assert sorted(subject for _, action, subject, _ in rows if action == "screening.export") == ["o1", "s0", "s1"]
    assert sorted(subject for _, action, subject, _ in rows if action == "screening.submit") == ["s0", "s1"]
    assert {actor for actor, *_ in rows} == {cli_actor()}, "the person who ran it, as the users commands record"
    with session_scope(screening_app.state.session_factory) as session:
        stored = session.scalars(select(ScreeningRun.submitted_by)).all()
        (run,) = session.scalars(select(ScreeningBatchRun)).all()
    assert stored == ["batch:extract.ndjson"] * 2, "the rows' origin, by which quality tells a run from posts"
    assert (run.actor, run.screened, run.flagged) == (cli_actor(), 3, 2)
