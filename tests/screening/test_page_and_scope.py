"""The paediatrician's side: batch results reach /screening, each clinician sees only their patients'
flags (by practitioner or organisation assignment), a page at a time, with name and record number; a
decision carries a note, a changed decision is a new audited entry, quality counts the latest only;
the page has the same CSP and headers as /worklist."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from datasets.emr_records import CodedFact
from datasets.fhir_emr import record_to_bundle
from medscreen.cli import main
from screening.fhir_feed import flag_statuses
from screening.population import RunOptions, run_population
from screening.results_store import store_output_lines, store_result, unread_children
from screening.screener import Screener
from screening.tables import ScreeningAssignment, ScreeningOutcome, ScreeningRun
from service.db import session_scope
from service.tables import AuditEvent
from tests.screening.conftest import child_of, ordinary_child


def _extract(tmp_path: Path) -> Path:
    children = [child_of(f"a{i}", f"Anna A{i}", f"MRN-A{i}", practitioner="Practitioner/dr-a") for i in range(3)]
    children += [child_of(f"b{i}", f"Boris B{i}", f"MRN-B{i}", organization="Organization/clinic-b") for i in range(2)]
    children += [child_of("c0", "Clara C", "MRN-C0"), ordinary_child("o0")]
    path = tmp_path / "extract.ndjson"
    path.write_text("".join(json.dumps(record_to_bundle(c)) + "\n" for c in children))
    return path


@pytest.fixture
def stored_batch(
    screening_app: FastAPI, token_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    """The extract screened and stored, dr-a and dr-b assigned to its practitioner and organisation: their tokens."""
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", str(screening_app.state.engine.url))
    out = tmp_path / "flags.ndjson"
    assert main(["screen-emr", str(_extract(tmp_path)), "--out", str(out), "--as-of", "2024-03-01", "--quiet"]) == 0
    tokens = {}
    for username, option, value in [("dr-a", "--practitioner", "Practitioner/dr-a"), ("dr-b", "--organization", "Organization/clinic-b")]:
        tokens[username] = token_for(username, "paediatrician")  # `assign` refuses a user who does not exist
        assert main(["screening", "assign", username, option, value]) == 0
    return tokens


def test_batch_results_are_stored_and_each_clinician_sees_only_theirs(
    screening_app: FastAPI, stored_batch: dict[str, dict[str, str]], client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    with session_scope(screening_app.state.session_factory) as session:
        rows = list(session.scalars(select(ScreeningRun)))
    assert sorted(r.patient_id for r in rows) == ["a0", "a1", "a2", "b0", "b1", "c0"]  # flagged ones only
    assert all(r.submitted_by == "batch:extract.ndjson" for r in rows)

    dr_a, dr_b = stored_batch["dr-a"], stored_batch["dr-b"]
    admin = token_for("root", "admin")
    first = client.get("/api/screening/flags?per_page=2", headers=dr_a).json()
    assert (first["total"], first["pages"], len(first["flags"])) == (3, 2, 2)
    second = client.get("/api/screening/flags?per_page=2&page=2", headers=dr_a).json()
    assert {f["patient_id"] for f in first["flags"] + second["flags"]} == {"a0", "a1", "a2"}
    assert second["flags"][0]["patient_name"].startswith("Anna") and second["flags"][0]["mrn"].startswith("MRN-A")
    assert {f["patient_id"] for f in client.get("/api/screening/flags", headers=dr_b).json()["flags"]} == {"b0", "b1"}
    assert client.get("/api/screening/flags", headers=admin).json()["total"] == 6

    html = client.get("/api/screening/flags?format=html&per_page=2", headers=dr_a).text
    assert "Anna A" in html and "MRN-A" in html and "Boris" not in html and "Next page" in html and "textarea" in html

    # One decision at a time, with its history: dr-b cannot decide on dr-a's child.
    target = first["flags"][0]["id"]
    assert client.post(f"/api/screening/flags/{target}/outcome", json={"outcome": "referred"}, headers=dr_b).status_code == 404
    assert client.post(f"/api/screening/flags/{target}/outcome", json={"outcome": "referred", "note": "seen in clinic"},
                       headers=dr_a).status_code == 201
    changed = client.post(f"/api/screening/flags/{target}/outcome",
                          json={"outcome": "not_relevant", "note": "known familial short stature"}, headers=dr_a)
    assert changed.status_code == 201
    decided = client.get("/api/screening/flags?include_decided=true", headers=dr_a).json()["flags"]
    row = next(f for f in decided if f["id"] == target)
    assert row["outcome"] == "not_relevant" and row["note"] == "known familial short stature"
    assert [d["outcome"] for d in row["decisions"]] == ["referred", "not_relevant"]
    assert target not in [f["id"] for f in client.get("/api/screening/flags", headers=dr_a).json()["flags"]]

    quality = client.get("/api/screening/outcomes", headers=token_for("qa", "quality")).json()
    assert (quality["referred"], quality["not_relevant"]) == (0, 1) and quality["outcomes"][0]["decisions_made"] == 2
    with session_scope(screening_app.state.session_factory) as session:
        actions = [(e.actor, e.action) for e in session.scalars(select(AuditEvent))]
    assert ("dr-a", "screening.outcome") in actions and ("dr-a", "screening.outcome.change") in actions
    assigned_by = [actor for actor, action in actions if action == "screening.assign"]
    assert len(assigned_by) == 2 and all(actor.startswith("cli:") for actor in assigned_by)  # as `users` commands


def test_the_page_has_the_worklist_headers_and_holds_no_patient_data(client: TestClient) -> None:
    page, worklist = client.get("/screening"), client.get("/worklist")
    assert page.status_code == 200 and "/screening/static/screening.js" in page.text and "<script>" not in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for header in ("x-content-type-options", "cache-control"):
        assert page.headers[header] == worklist.headers[header]
    assert client.get("/screening/static/screening.js").headers["content-type"].startswith("text/javascript")


def test_a_batch_result_no_clinician_would_see_is_named_and_the_extracts_organisation_gives_it_one(
    screening_app: FastAPI, client: TestClient, token_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # type: ignore[no-untyped-def]
    # Clara's record names no practitioner or organisation: stored without --organization, no paediatrician's
    # scope holds her flag, and screen-emr says so instead of leaving it to be found by an admin.
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", str(screening_app.state.engine.url))
    extract = _extract(tmp_path)
    assert main(["screen-emr", str(extract), "--out", str(tmp_path / "one.ndjson"), "--as-of", "2024-03-01", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert json.loads(next(line for line in err.splitlines() if line.startswith("{")))["stored_in_no_scope"] == 1
    assert "1 stored results name no practitioner or organisation: no paediatrician sees them" in err

    assert main(["screen-emr", str(extract), "--out", str(tmp_path / "two.ndjson"), "--as-of", "2024-03-01", "--quiet",
                 "--organization", "Organization/clinic-b"]) == 0
    err = capsys.readouterr().err
    assert json.loads(next(line for line in err.splitlines() if line.startswith("{")))["stored_in_no_scope"] == 0
    assert "no paediatrician sees them" not in err
    dr_b = token_for("dr-b", "paediatrician")
    assert main(["screening", "assign", "dr-b", "--organization", "Organization/clinic-b"]) == 0
    seen = client.get("/api/screening/flags", headers=dr_b).json()["flags"]
    # dr-b sees the clinic's own children and Clara, whose stored flag the second run gave the organisation; a
    # record's own practitioner still counts (Anna's children stay dr-a's). The re-run's flags rest on the same
    # findings, so none is stored twice.
    assert sorted(f["patient_id"] for f in seen) == ["b0", "b1", "c0"]
    assert json.loads(next(line for line in err.splitlines() if line.startswith("{")))["repeats_not_stored"] == 6


@pytest.mark.parametrize("screening_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_rescreen_on_the_same_findings_is_not_asked_again_and_new_findings_replace_the_flag(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    """A monthly extract screens the same children again: a decided flag must not come back unless the child's
    record has something new, and then the new flag replaces the old one, with the earlier decision beside it."""
    with session_scope(screening_app.state.session_factory) as session:
        session.add(ScreeningAssignment(username="dr-a", practitioner="Practitioner/dr-a", organization="", assigned_by="test"))
    doctor = token_for("dr-a", "paediatrician")
    child = child_of("k1", "Kira K", "MRN-K1", practitioner="Practitioner/dr-a")

    def submit() -> None:
        response = client.post("/api/screening?as_of=2024-03-01", json={"resourceType": "Bundle", "type": "collection",
                               "entry": record_to_bundle(child)["entry"]}, headers=doctor)
        assert response.status_code == 200, response.text
        assert [e["resource"]["resourceType"] for e in response.json()["entry"]] == ["RiskAssessment", "Flag"]

    submit()
    (first,) = client.get("/api/screening/flags", headers=doctor).json()["flags"]
    assert client.post(f"/api/screening/flags/{first['id']}/outcome", json={"outcome": "not_relevant", "note": "known"},
                       headers=doctor).status_code == 201
    submit()  # the same record again: the decision stands, nothing to decide, one row for the child
    assert client.get("/api/screening/flags", headers=doctor).json()["flags"] == []
    assert [f["id"] for f in client.get("/api/screening/flags?include_decided=true", headers=doctor).json()["flags"]] == [first["id"]]

    child.facts.append(CodedFact("condition", "hpo", "HP:0001250", date(2023, 9, 1)))  # seizures: new in the record
    submit()
    (new,) = client.get("/api/screening/flags", headers=doctor).json()["flags"]
    assert new["id"] != first["id"] and new["outcome"] is None
    assert [(d["outcome"], d["note"], d["decided_by"]) for d in new["earlier_decisions"]] == [("not_relevant", "known", "dr-a")]
    listed = client.get("/api/screening/flags?include_decided=true", headers=doctor).json()["flags"]
    assert [f["id"] for f in listed] == [new["id"]]  # the older flag is superseded on the page, kept in the records
    html = client.get("/api/screening/flags?format=html", headers=doctor).text
    assert "Earlier flags of this child" in html and "not relevant — known" in html

    # Another clinic's patient "k1" with the same findings is another child: stored, and it hides nothing of dr-a's.
    other = child_of("k1", "Karl Other", "MRN-X1", organization="Organization/clinic-b")
    other.facts = list(child.facts)
    dr_b = token_for("dr-b", "paediatrician")
    assert client.post("/api/screening?as_of=2024-03-01", json={"resourceType": "Bundle", "type": "collection",
                       "entry": record_to_bundle(other)["entry"]}, headers=dr_b).status_code == 200
    assert [f["patient_name"] for f in client.get("/api/screening/flags", headers=dr_b).json()["flags"]] == ["Karl Other"]
    assert [f["id"] for f in client.get("/api/screening/flags", headers=doctor).json()["flags"]] == [new["id"]]
    with session_scope(screening_app.state.session_factory) as session:
        assert len(list(session.scalars(select(ScreeningRun).where(ScreeningRun.patient_id == "k1")))) == 3
        actions = [e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.subject_id == "k1"))]
    assert actions.count("screening.submit") == 3 and actions.count("screening.repeat") == 1


def test_a_newer_screener_refreshes_an_undecided_flag_and_leaves_a_decided_one(
    screening_app: FastAPI, client: TestClient, token_for, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A new screener version changes candidates and risk, not the record: an undecided flag is replaced by the
    newer model's (one flag on the page, its version), a decided one is not asked about again."""
    doctor = token_for("dr-a", "paediatrician")
    child = child_of("n1", "Nora N", "MRN-N1", practitioner="Practitioner/dr-a")
    model = screening_app.state.screener.model

    def submit(version: str) -> None:
        monkeypatch.setattr(model, "version", version)
        response = client.post("/api/screening?as_of=2024-03-01", json={"resourceType": "Bundle", "type": "collection",
                               "entry": record_to_bundle(child)["entry"]}, headers=doctor)
        assert response.status_code == 200, response.text

    submit("v1")
    (first,) = client.get("/api/screening/flags", headers=doctor).json()["flags"]
    submit("v2")  # nobody has decided: the newer model's flag takes its place
    (second,) = client.get("/api/screening/flags", headers=doctor).json()["flags"]
    assert (first["model_version"], second["model_version"]) == ("v1", "v2") and second["id"] != first["id"]
    submit("v2")  # the same model on the same record: a repeat
    assert [f["id"] for f in client.get("/api/screening/flags", headers=doctor).json()["flags"]] == [second["id"]]
    assert client.post(f"/api/screening/flags/{second['id']}/outcome", json={"outcome": "referred", "note": ""},
                       headers=doctor).status_code == 201
    submit("v3")  # decided: a newer model on the same record asks nothing again
    assert client.get("/api/screening/flags", headers=doctor).json()["flags"] == []
    with session_scope(screening_app.state.session_factory) as session:
        runs = list(session.scalars(select(ScreeningRun).where(ScreeningRun.patient_id == "n1")))
        actions = [e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.subject_id == "n1"))]
    assert sorted(r.model_version for r in runs) == ["v1", "v2"]
    assert actions.count("screening.submit") == 2 and actions.count("screening.repeat") == 2


@pytest.mark.parametrize("screening_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_child_who_has_died_or_whose_record_was_merged_leaves_the_page_undecided_flags_only(
    screening_app: FastAPI, client: TestClient, token_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # type: ignore[no-untyped-def]
    """A later extract says a flagged child has died (or the record was merged into another): the undecided flag
    leaves the page, nobody is asked to contact that family; a decided flag stays in the history. Batch and HTTP."""
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", str(screening_app.state.engine.url))
    doctor = token_for("dr-a", "paediatrician")
    assert main(["screening", "assign", "dr-a", "--practitioner", "Practitioner/dr-a"]) == 0
    children = [child_of(f"d{i}", f"Dana D{i}", f"MRN-D{i}", practitioner="Practitioner/dr-a") for i in range(4)]

    def screen(name: str) -> dict:  # type: ignore[type-arg]
        extract = tmp_path / f"{name}.ndjson"
        extract.write_text("".join(json.dumps(record_to_bundle(c)) + "\n" for c in children))
        assert main(["screen-emr", str(extract), "--out", str(tmp_path / f"{name}-out.ndjson"), "--as-of", "2024-03-01",
                     "--quiet"]) == 0
        return json.loads(next(line for line in capsys.readouterr().err.splitlines() if line.startswith("{")))

    screen("january")
    flags = {f["patient_id"]: f["id"] for f in client.get("/api/screening/flags", headers=doctor).json()["flags"]}
    assert sorted(flags) == ["d0", "d1", "d2", "d3"]
    assert client.post(f"/api/screening/flags/{flags['d1']}/outcome", json={"outcome": "referred"}, headers=doctor).status_code == 201

    children[0].deceased, children[1].deceased = date(2024, 1, 10), date(2024, 1, 10)
    children[2].inactive = "merged"
    summary = screen("february")
    assert (summary["deceased"], summary["inactive_record"], summary["flagged"]) == (2, 1, 1)
    listing = client.get("/api/screening/flags", headers=doctor).json()
    assert [f["patient_id"] for f in listing["flags"]] == ["d3"]
    # The page says why the two undecided flags left it; d1's decided flag is no withdrawn one.
    assert listing["withdrawn_total"] == 2
    assert sorted((w["patient_id"], w["mrn"], w["because"], w["reason"]) for w in listing["withdrawn"]) == [
        ("d0", "MRN-D0", "the child has died", "deceased 2024-01-10"), ("d2", "MRN-D2", "the record is no longer in use", "Patient.active is false: the record is not in use")]
    page = client.get("/api/screening/flags?format=html", headers=doctor).text
    assert "2 flags withdrawn without a decision" in page and "Dana D0" in page and "the child has died (deceased 2024-01-10)" in page
    with session_scope(screening_app.state.session_factory) as session:
        seen = [e.detail for e in session.scalars(select(AuditEvent).where(AuditEvent.subject_id == "d2", AuditEvent.action == "screening.flag.view"))]
    assert any((d or {}).get("withdrawn") == "inactive_record" for d in seen)  # who saw the withdrawn flag is audited
    decided = client.get("/api/screening/flags?include_decided=true", headers=doctor).json()["flags"]
    assert sorted(f["patient_id"] for f in decided) == ["d1", "d3"]  # d1's decision stays in the history
    assert screen("february-again")["repeats_not_stored"] == 4  # the three retirements and d3's flag: stored once

    # The same over HTTP: a flag, then the child's record saying she has died.
    child = child_of("h1", "Hana H", "MRN-H1", practitioner="Practitioner/dr-a")

    def submit() -> list[str]:
        response = client.post("/api/screening?as_of=2024-03-01", json={"resourceType": "Bundle", "type": "collection",
                               "entry": record_to_bundle(child)["entry"]}, headers=doctor)
        assert response.status_code == 200, response.text
        return [e["resource"]["resourceType"] for e in response.json()["entry"]]

    assert submit() == ["RiskAssessment", "Flag"]
    assert "h1" in [f["patient_id"] for f in client.get("/api/screening/flags", headers=doctor).json()["flags"]]
    child.deceased = date(2024, 2, 1)
    assert submit() == ["RiskAssessment"]
    assert [f["patient_id"] for f in client.get("/api/screening/flags", headers=doctor).json()["flags"]] == ["d3"]
    with session_scope(screening_app.state.session_factory) as session:
        statuses = [r.status for r in session.scalars(select(ScreeningRun).where(ScreeningRun.patient_id == "h1"))]
    assert statuses == ["screened", "deceased"]


@pytest.mark.parametrize("screening_backend", ["sqlite", "postgresql"], indirect=True)
def test_two_clinicians_patients_with_the_same_record_id_and_no_care_team_are_two_children(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    """Records naming no practitioner or organisation are in their submitter's scope only, so their child is the
    record id within that clinician: dr-b's patient "1" (died, flagged on other findings, or flagged on the same
    ones) neither withdraws, hides nor swallows dr-a's patient "1"'s flag, and tells dr-a nothing about dr-b's."""
    dr_a, dr_b = token_for("dr-a", "paediatrician"), token_for("dr-b", "paediatrician")

    def submit(record: object, headers: dict[str, str]) -> None:
        response = client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(record), headers=headers)  # type: ignore[arg-type]
        assert response.status_code == 200, response.text

    def page(headers: dict[str, str]) -> tuple[list[str], list[str]]:
        listing = client.get("/api/screening/flags", headers=headers).json()
        return [f["patient_name"] for f in listing["flags"]], [w["patient_name"] for w in listing["withdrawn"]]

    submit(child_of("1", "Anna A", "MRN-A-1"), dr_a)
    submit(child_of("1", "Ben B", "MRN-B-1"), dr_b)  # the same findings: not a repeat of dr-a's child
    assert page(dr_a) == (["Anna A"], []) and page(dr_b) == (["Ben B"], [])
    ben = child_of("1", "Ben B", "MRN-B-1")
    ben.facts.append(CodedFact("condition", "hpo", "HP:0001250", date(2022, 1, 1)))  # other findings
    submit(ben, dr_b)
    assert page(dr_a) == (["Anna A"], []) and page(dr_b) == (["Ben B"], [])
    ben.deceased = date(2024, 1, 5)
    submit(ben, dr_b)
    assert page(dr_a) == (["Anna A"], [])  # not "the child has died"
    assert page(dr_b) == ([], ["Ben B", "Ben B"])  # both of dr-b's undecided flags of Ben
    html = client.get("/api/screening/flags?format=html", headers=dr_a).text
    assert "Anna A" in html and "Ben B" not in html and "2024-01-05" not in html

    # The same clinician's patient "1" is the same child: a later death withdraws their own flag.
    anna_died = child_of("1", "Anna A", "MRN-A-1")
    anna_died.deceased = date(2024, 2, 1)
    submit(anna_died, dr_a)
    assert page(dr_a) == ([], ["Anna A"])


@pytest.mark.parametrize("screening_backend", ["sqlite", "postgresql"], indirect=True)
def test_the_owner_migration_gives_results_named_by_no_care_team_their_submitter(
    screening_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Results stored before the owner column: a clinician's unscoped result becomes theirs, a batch run's and a
    scoped one no one's."""
    from alembic import command
    from sqlalchemy import text

    from medscreen.schema import alembic_config_all, migrate_all
    from service.db import make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}" if screening_backend == "sqlite" else str(request.getfixturevalue("postgres_database_url"))
    command.upgrade(alembic_config_all(url), "5c1e9b7d2f40")  # the screening schema before the owner
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for submitted_by, practitioner, organization in [
                ("dr-a", "", ""), ("batch:x.ndjson", "", ""), ("dr-b", "Practitioner/p", ""), ("dr-c", "", "Organization/o"),
            ]:
                connection.execute(text(
                    "INSERT INTO screening_results (patient_id, patient_digest, screened_at, age_days, status, reason,"
                    " model_version, flagged, explanation, risk_assessment, submitted_by, practitioner, organization)"
                    " VALUES ('1', 'd', '2024-03-01 00:00:00+00:00', 100, 'screened', '', 'v', true, '{}', '{}', :s, :p, :o)"
                ), {"s": submitted_by, "p": practitioner, "o": organization})
        migrate_all(url)
        with engine.connect() as connection:
            owners = connection.execute(text("SELECT submitted_by, owner FROM screening_results ORDER BY id")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in owners] == [("dr-a", "dr-a"), ("batch:x.ndjson", ""), ("dr-b", ""), ("dr-c", "")]


def test_a_child_stored_by_the_clinics_extract_and_posted_by_its_paediatrician_is_one_child(
    screening_app: FastAPI, client: TestClient, token_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """`screen-emr --organization Organization/clinic-7` stores Kira's flag under the clinic; the clinic's
    paediatrician then posts the same record (naming no care team): one child, one flag, one decision."""
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", str(screening_app.state.engine.url))
    kira = child_of("k1", "Kira K", "MRN-K1")
    extract = tmp_path / "extract.ndjson"
    extract.write_text(json.dumps(record_to_bundle(kira)) + "\n")
    assert main(["screen-emr", str(extract), "--out", str(tmp_path / "out.ndjson"), "--as-of", "2024-03-01", "--quiet",
                 "--organization", "Organization/clinic-7"]) == 0
    dr_a = token_for("dr-a", "paediatrician")
    assert main(["screening", "assign", "dr-a", "--organization", "Organization/clinic-7"]) == 0
    (batch_flag,) = client.get("/api/screening/flags", headers=dr_a).json()["flags"]

    response = client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(kira), headers=dr_a)
    assert response.status_code == 200 and "Flag" in [e["resource"]["resourceType"] for e in response.json()["entry"]]
    assert [f["id"] for f in client.get("/api/screening/flags", headers=dr_a).json()["flags"]] == [batch_flag["id"]]
    assert client.post(f"/api/screening/flags/{batch_flag['id']}/outcome", json={"outcome": "not_relevant", "note": "known"},
                       headers=dr_a).status_code == 201
    assert client.get("/api/screening/flags", headers=dr_a).json()["flags"] == []

    kira.facts.append(CodedFact("condition", "hpo", "HP:0001250", date(2023, 9, 1)))  # new findings: the clinic's child's new flag
    assert client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(kira), headers=dr_a).status_code == 200
    (new,) = client.get("/api/screening/flags?include_decided=true", headers=dr_a).json()["flags"]
    assert new["organization"] == "Organization/clinic-7" and new["earlier_decisions"][0]["outcome"] == "not_relevant"
    with session_scope(screening_app.state.session_factory) as session:
        actions = [e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.subject_id == "k1"))]
    assert actions.count("screening.submit") == 2 and actions.count("screening.repeat") == 1

    # A colleague of another clinic posting their own patient "k1" (no care team) is still their own child.
    dr_b = token_for("dr-b", "paediatrician")
    assert client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(child_of("k1", "Kurt", "MRN-9")),
                       headers=dr_b).status_code == 200
    assert [(f["patient_name"], f["organization"]) for f in client.get("/api/screening/flags", headers=dr_b).json()["flags"]] == [("Kurt", "")]
    assert [f["id"] for f in client.get("/api/screening/flags?include_decided=true", headers=dr_a).json()["flags"]] == [new["id"]]


def _clinic_7_batch(screening_app: FastAPI) -> dict[str, int]:
    """clinic-7's extract screened by the site (three flagged children, the records naming the clinic) and pia, its
    assigned paediatrician, deciding one: the result ids by child."""
    screener = screening_app.state.screener
    with session_scope(screening_app.state.session_factory) as session:
        for i in range(3):
            record = child_of(f"case-{i}", f"Clinic Child{i}", f"MRN-7{i}", organization="Organization/clinic-7")
            store_result(session, screener, record, screener.screen(record, date(2024, 3, 1)), "batch:clinic-7.ndjson", owner="")
        session.add(ScreeningAssignment(username="pia", practitioner="", organization="Organization/clinic-7", assigned_by="test"))
        return {row.patient_id: row.id for row in session.scalars(select(ScreeningRun))}


def _post(client: TestClient, record: object, headers: dict[str, str]) -> list[dict]:  # type: ignore[type-arg]
    response = client.post("/api/screening?as_of=2024-03-01", json=record_to_bundle(record), headers=headers)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json()["entry"]]


@pytest.mark.parametrize("screening_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_paediatrician_not_assigned_to_an_organisation_cannot_withdraw_replace_or_repeat_its_flags(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    """paul is not assigned to clinic-7 and cannot read its flags. His records naming the clinic (the child "has
    died"; new findings under another name; the same findings) are his own patients, as records naming no care team
    are: pia's flags, decision and names stay as they were, and his answer says why and how an admin assigns him."""
    ids = _clinic_7_batch(screening_app)
    pia, paul = token_for("pia", "paediatrician"), token_for("paul", "paediatrician")
    assert client.post(f"/api/screening/flags/{ids['case-0']}/outcome", json={"outcome": "not_relevant", "note": "SECRETNOTE"},
                       headers=pia).status_code == 201

    def pia_sees() -> tuple[list[tuple[int, str, str, str | None]], list[dict]]:  # type: ignore[type-arg]
        listing = client.get("/api/screening/flags?include_decided=true", headers=pia).json()
        return [(f["id"], f["patient_name"], f["organization"], f["outcome"]) for f in listing["flags"]], listing["withdrawn"]

    before = pia_sees()
    assert sorted(row[0] for row in before[0]) == sorted(ids.values()) and before[1] == []

    dead = child_of("case-1", "Clinic Child1", "MRN-71", organization="Organization/clinic-7")  # (a) a false death
    dead.deceased = date(2024, 2, 1)
    answer = _post(client, dead, paul)
    assert pia_sees() == before  # case-1's flag is not withdrawn as "the child has died"
    (warning,) = [r for r in answer if r["resourceType"] == "OperationOutcome"]
    (issue,) = warning["issue"]
    assert issue["severity"] == "warning" and "case-1" in issue["diagnostics"]
    assert "Organization/clinic-7, which you are not assigned to" in issue["diagnostics"]
    assert "`medscreen screening assign paul --organization Organization/clinic-7`" in issue["diagnostics"]

    renamed = child_of("case-0", "Probe Attacker", "MRN-X", organization="Organization/clinic-7")  # (b) a replacement
    renamed.facts.append(CodedFact("condition", "hpo", "HP:0001250", date(2023, 9, 1)))
    assert "Flag" in [r["resourceType"] for r in _post(client, renamed, paul)]
    assert pia_sees() == before  # her decided flag of case-0 is not replaced by "Probe Attacker"
    same = child_of("case-2", "Clinic Child2", "MRN-72", organization="Organization/clinic-7")  # the same evidence
    assert "Flag" in [r["resourceType"] for r in _post(client, same, paul)]

    assert pia_sees() == before  # no flag withdrawn or replaced, "SECRETNOTE" still on hers, her names
    earlier = {f["id"]: f["earlier_decisions"] for f in client.get("/api/screening/flags?include_decided=true", headers=pia).json()["flags"]}
    assert all(e == [] for e in earlier.values())
    # His records are his own children: on his page (his names, no care team) and no decision of pia's beside them.
    listing = client.get("/api/screening/flags", headers=paul).json()
    assert sorted((f["patient_name"], f["organization"], f["earlier_decisions"] == []) for f in listing["flags"]) == [
        ("Clinic Child2", "", True), ("Probe Attacker", "", True)]
    assert listing["withdrawn"] == [] and "SECRETNOTE" not in json.dumps(listing)
    with session_scope(screening_app.state.session_factory) as session:
        his = list(session.scalars(select(ScreeningRun).where(ScreeningRun.submitted_by == "paul")))
        repeats = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "screening.repeat")))
        submits = [e.detail for e in session.scalars(select(AuditEvent).where(AuditEvent.actor == "paul", AuditEvent.action == "screening.submit"))]
    assert sorted((r.patient_id, r.owner, r.organization) for r in his) == [("case-0", "paul", ""), ("case-1", "paul", ""), ("case-2", "paul", "")]
    assert repeats == [] and all(d["unassigned_care_team"] == ["Organization/clinic-7"] for d in submits)
    for result_id in ids.values():  # and he still reads none of the clinic's results
        assert client.get(f"/fhir/RiskAssessment/medscreen-ra-{result_id}", headers=paul).status_code == 404


def test_an_assigned_paediatrician_or_an_admin_still_withdraws_and_replaces_the_organisations_flags(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    ids = _clinic_7_batch(screening_app)
    pia, root = token_for("pia", "paediatrician"), token_for("root", "admin")
    assert client.post(f"/api/screening/flags/{ids['case-0']}/outcome", json={"outcome": "not_relevant", "note": "known"},
                       headers=pia).status_code == 201

    renamed = child_of("case-0", "Clinic Child0 Renamed", "MRN-70", organization="Organization/clinic-7")
    renamed.facts.append(CodedFact("condition", "hpo", "HP:0001250", date(2023, 9, 1)))  # new findings: a new flag
    answer = _post(client, renamed, pia)
    assert "OperationOutcome" not in [r["resourceType"] for r in answer]
    dead = child_of("case-1", "Clinic Child1", "MRN-71", organization="Organization/clinic-7")
    dead.deceased = date(2024, 2, 1)
    _post(client, dead, pia)
    gone = child_of("case-2", "Clinic Child2", "MRN-72", organization="Organization/clinic-7")
    gone.deceased = date(2024, 2, 1)
    assert "OperationOutcome" not in [r["resourceType"] for r in _post(client, gone, root)]

    listing = client.get("/api/screening/flags?include_decided=true", headers=pia).json()
    (new,) = listing["flags"]
    assert (new["patient_name"], new["organization"]) == ("Clinic Child0 Renamed", "Organization/clinic-7")
    assert [(d["outcome"], d["note"]) for d in new["earlier_decisions"]] == [("not_relevant", "known")]
    assert sorted((w["patient_id"], w["because"]) for w in listing["withdrawn"]) == [
        ("case-1", "the child has died"), ("case-2", "the child has died")]


@pytest.mark.parametrize("screening_backend", ["sqlite", "postgresql"], indirect=True)
def test_a_record_that_could_not_be_fully_read_reaches_its_paediatrician_not_as_a_negative(
    screening_app: FastAPI, client: TestClient, token_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """A clinic's extract screened with ``--organization``: a child whose epilepsy diagnosis has an impossible onset
    date is ``incomplete`` and not flagged on the part read. It was stored under the clinic and then shown nowhere,
    like a complete negative; now the clinic's paediatrician (only) sees it apart, with the entry not read."""
    monkeypatch.setenv("MEDSCREEN_DATABASE_URL", str(screening_app.state.engine.url))
    bundle = record_to_bundle(ordinary_child("child-2"))
    bundle["entry"].append({"resource": {"resourceType": "Condition", "id": "seizures", "onsetDateTime": "2022-02-30",
                                         "subject": {"reference": "Patient/child-2"},
                                         "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "G40.9"}]}}})
    extract = tmp_path / "extract.ndjson"
    extract.write_text(json.dumps(bundle) + "\n")
    assert main(["screen-emr", str(extract), "--out", str(tmp_path / "out.ndjson"), "--as-of", "2024-03-01", "--quiet",
                 "--organization", "Organization/clinic-7"]) == 0
    doctor, other = token_for("dr-ivanova", "paediatrician"), token_for("dr-other", "paediatrician")
    assert main(["screening", "assign", "dr-ivanova", "--organization", "Organization/clinic-7"]) == 0

    listing = client.get("/api/screening/flags", headers=doctor).json()
    assert listing["total"] == 0 and listing["incomplete_total"] == 1
    unread = listing["incomplete"][0]
    assert unread["patient_id"] == "child-2" and unread["organization"] == "Organization/clinic-7"
    assert unread["risk_is_lower_bound"] and "Condition/seizures" in unread["not_read"][0]["entry"]
    html = client.get("/api/screening/flags?format=html", headers=doctor).text
    assert "could not be fully read" in html and "Condition/seizures" in html
    assert client.get("/api/screening/flags", headers=other).json()["incomplete_total"] == 0

    # Screened again on a readable record, the child's latest result is complete: no longer listed as unread.
    with session_scope(screening_app.state.session_factory) as session:
        screener = screening_app.state.screener
        record = ordinary_child("child-2")
        record.organization = "Organization/clinic-7"
        store_result(session, screener, record, screener.screen(record, date(2024, 3, 2)), "dr-ivanova", owner="dr-ivanova")
    assert client.get("/api/screening/flags", headers=doctor).json()["incomplete_total"] == 0


def test_a_childs_age_is_shown_in_completed_tenths_never_rounded_up_to_the_next_year() -> None:
    """A flagged child days short of 7, the screening's upper bound, had read "7.0 years", and one of 11 months
    and 3 weeks "1.0 years" (review7 time_locale)."""
    import re

    from screening.api import _templates

    for days, shown in ((2556, "6.9"), (364, "0.9"), (1461, "4.0")):
        row = {"id": 1, "status": "screened", "patient_name": "Anna", "mrn": "M1", "patient_id": "a", "age_years": days / 365.25,
               "risk": 0.5, "threshold": 0.1, "model_version": "1", "screened_at": "2026-12-03T10:00:00+00:00",
               "explanation": {"candidates": [], "findings": []}}
        html = _templates.get_template("flags_fragment.html").render(
            include_decided=False, flags=[row], incomplete=[dict(row, not_read=[])], incomplete_total=1, page=1, pages=1, total=1
        )
        assert re.findall(r"record M1 · ([0-9.]+) years", html) == [shown, shown], days


def test_a_child_whose_record_moves_to_another_practitioner_of_the_clinic_is_one_child(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    """The family changed GP within clinic-7: the clinic's next extract names Practitioner/p2. The child's flag had
    been stored again under p2, beside p1's: pia (the clinic's paediatrician) was asked twice about one child, p1's
    paediatrician kept a flag of a child no longer theirs, and the EMR held two active Flags. Now the flag follows
    the record. A paediatrician assigned to p2 only, not to the clinic, still cannot replace the clinic's flags."""
    screener = screening_app.state.screener
    users = {name: token_for(name, "paediatrician") for name in ("pia", "dr-p1", "dr-p2")}
    clinic = "Organization/clinic-7"

    def extract(patient_id: str, practitioner: str, *extra: CodedFact) -> int:
        record = child_of(patient_id, f"Child {patient_id}", f"MRN-{patient_id}", practitioner=practitioner, organization=clinic)
        record.facts += extra
        with session_scope(screening_app.state.session_factory) as session:
            return int(store_result(session, screener, record, screener.screen(record, date(2024, 3, 1)), "batch:clinic-7.ndjson", owner="")["id"])

    with session_scope(screening_app.state.session_factory) as session:
        session.add_all([ScreeningAssignment(username="pia", organization=clinic, assigned_by="test"),
                         ScreeningAssignment(username="dr-p1", practitioner="Practitioner/p1", assigned_by="test"),
                         ScreeningAssignment(username="dr-p2", practitioner="Practitioner/p2", assigned_by="test")])

    def sees() -> dict[str, list[tuple[str, str]]]:
        return {name: [(f["patient_id"], f["practitioner"]) for f in client.get("/api/screening/flags", headers=h).json()["flags"]]
                for name, h in users.items()}

    first = extract("case-0", "Practitioner/p1")
    assert extract("case-0", "Practitioner/p2") == first  # the same findings: the same flag, now p2's
    assert sees() == {"pia": [("case-0", "Practitioner/p2")], "dr-p1": [], "dr-p2": [("case-0", "Practitioner/p2")]}
    newer = extract("case-0", "Practitioner/p2", CodedFact("condition", "hpo", "HP:0001250", date(2023, 9, 1)))
    assert sees()["pia"] == [("case-0", "Practitioner/p2")] and newer != first
    with session_scope(screening_app.state.session_factory) as session:
        assert flag_statuses(session, [first, newer]) == {first: "inactive", newer: "active"}  # one active Flag in the EMR
        moved = [e.detail for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "screening.repeat"))]
    assert moved == [{"result_id": first, "flagged": True, "practitioner_before": "Practitioner/p1", "practitioner": "Practitioner/p2"}]

    # dr-p2 holds p2 but not the clinic: his record of case-1 naming both neither replaces nor moves p1's flag of it.
    extract("case-1", "Practitioner/p1")
    posted = child_of("case-1", "Someone Else", "MRN-X", practitioner="Practitioner/p2", organization=clinic)
    posted.facts.append(CodedFact("condition", "hpo", "HP:0001250", date(2023, 9, 1)))
    assert "OperationOutcome" not in [r["resourceType"] for r in _post(client, posted, users["dr-p2"])]
    assert ("case-1", "Practitioner/p1") in sees()["dr-p1"]


def test_a_decision_made_on_a_list_loaded_before_a_colleagues_is_refused_not_silently_replacing_it(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    """pia and paz both have clinic-7's flag of case-0 on screen, undecided. pia refers the child; paz, on the list
    loaded before, clicks "Not relevant": it had been stored and, the latest counting, had replaced the referral
    unseen. The page sends the decision it showed (``replaces``, from the article's ``data-decision``)."""
    ids = _clinic_7_batch(screening_app)
    pia, paz = token_for("pia", "paediatrician"), token_for("paz", "paediatrician")
    with session_scope(screening_app.state.session_factory) as session:
        session.add(ScreeningAssignment(username="paz", organization="Organization/clinic-7", assigned_by="test"))
    flag = ids["case-0"]
    page = client.get("/api/screening/flags?format=html", headers=paz).text
    assert f'id="result-{flag}" data-decision=""' in page
    assert client.post(f"/api/screening/flags/{flag}/outcome", json={"outcome": "referred", "replaces": None}, headers=pia).status_code == 201
    late = client.post(f"/api/screening/flags/{flag}/outcome", json={"outcome": "not_relevant", "note": "gesund – 健康", "replaces": None}, headers=paz)
    assert late.status_code == 409 and late.json()["detail"].startswith("pia decided 'referred' on this flag at ")
    assert "Reload the list" in late.json()["detail"]
    # Reloaded, paz sees pia's referral and may still change it, knowingly; a client sending no `replaces` adds as before.
    (shown,) = [f for f in client.get("/api/screening/flags?include_decided=true", headers=paz).json()["flags"] if f["id"] == flag]
    assert (shown["outcome"], shown["decided_by"]) == ("referred", "pia")
    assert f'data-decision="{shown["decision_id"]}"' in client.get("/api/screening/flags?format=html&include_decided=true", headers=paz).text
    changed = client.post(f"/api/screening/flags/{flag}/outcome", json={"outcome": "not_relevant", "note": "gesund – 健康",
                                                                         "replaces": shown["decision_id"]}, headers=paz)
    assert changed.status_code == 201 and changed.json()["note"] == "gesund – 健康"
    assert client.post(f"/api/screening/flags/{flag}/outcome", json={"outcome": "referred"}, headers=pia).status_code == 201
    with session_scope(screening_app.state.session_factory) as session:
        stored = [(o.decided_by, o.outcome) for o in session.scalars(select(ScreeningOutcome).order_by(ScreeningOutcome.id))]
    assert stored == [("pia", "referred"), ("paz", "not_relevant"), ("pia", "referred")]


def test_a_decision_on_a_flag_the_page_has_since_withdrawn_or_replaced_is_refused_saying_why(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    """pia's list shows case-1 and case-2. The EMR's next records say case-1 has died and give case-2 new findings (a
    newer flag). Her clicks on the list loaded before had been stored (201) with nothing said: a referral of a child
    who has died; a decision on the old findings, the new flag unseen."""
    ids = _clinic_7_batch(screening_app)
    pia = token_for("pia", "paediatrician")
    dead = child_of("case-1", "Clinic Child1", "MRN-71", organization="Organization/clinic-7")
    dead.deceased = date(2024, 2, 20)
    _post(client, dead, pia)
    grown = child_of("case-2", "Clinic Child2", "MRN-72", organization="Organization/clinic-7")
    grown.facts.append(CodedFact("condition", "hpo", "HP:0001250", date(2023, 9, 1)))
    _post(client, grown, pia)

    died = client.post(f"/api/screening/flags/{ids['case-1']}/outcome", json={"outcome": "referred"}, headers=pia)
    assert died.status_code == 409
    assert "this flag was withdrawn" in died.json()["detail"] and "the child has died (deceased 2024-02-20)" in died.json()["detail"]
    replaced = client.post(f"/api/screening/flags/{ids['case-2']}/outcome", json={"outcome": "not_relevant"}, headers=pia)
    assert replaced.status_code == 409 and "a newer flag of this child" in replaced.json()["detail"]
    assert client.post(f"/api/screening/flags/{ids['case-0']}/outcome", json={"outcome": "referred"}, headers=pia).status_code == 201
    with session_scope(screening_app.state.session_factory) as session:
        assert [o.result_id for o in session.scalars(select(ScreeningOutcome))] == [ids["case-0"]]


def test_the_clinics_next_extract_with_the_record_corrected_takes_it_off_the_unread_list(
    screening_app: FastAPI, client: TestClient, token_for, screener: Screener, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The page says of a record not fully read "Correct the entries in the record and screen it again". The clinic
    did, and its next extract screened the child complete and not flagged; but a run stores only flagged, incomplete
    and retiring results, so the March record stayed listed as unread for good. The run now writes and stores the
    result of each child the page lists so (``RunOptions.listed_unread``, from ``unread_children``)."""
    url = str(screening_app.state.engine.url)
    bundle = record_to_bundle(ordinary_child("child-2"))
    broken = {"resourceType": "Condition", "id": "seizures", "onsetDateTime": "2022-02-30", "subject": {"reference": "Patient/child-2"},
              "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "G40.9"}]}}
    doctor = token_for("dr-ivanova", "paediatrician")
    with session_scope(screening_app.state.session_factory) as session:
        session.add(ScreeningAssignment(username="dr-ivanova", organization="Organization/clinic-7", assigned_by="test"))
    for month, onset in (("2024-03-01", "2022-02-30"), ("2024-04-01", "2022-02-28")):
        extract, out = tmp_path / f"{month}.ndjson", tmp_path / f"{month}.out.ndjson"
        extract.write_text(json.dumps({**bundle, "entry": bundle["entry"] + [{"resource": {**broken, "onsetDateTime": onset}}]}) + "\n")
        options = RunOptions(as_of=month, budget=0.01, max_age_years=7, model_path=None, listed_unread=unread_children(url))
        run_population(extract, out, options, quiet=True, screener=screener)
        store_output_lines(url, out, "cli:test", submitted_by="batch:extract.ndjson", organization="Organization/clinic-7")
        if month == "2024-03-01":
            assert options.listed_unread == () and client.get("/api/screening/flags", headers=doctor).json()["incomplete_total"] == 1
    assert options.listed_unread == ("child-2",)
    (line,) = [json.loads(text) for text in out.read_text().splitlines()]  # written, though neither flagged nor incomplete
    assert (line["status"], line["flagged"]) == ("screened", False)
    assert client.get("/api/screening/flags", headers=doctor).json()["incomplete_total"] == 0
    assert unread_children(url) == ()
    # A third extract stores nothing more of the child: it is no longer listed.
    store_output_lines(url, out, "cli:test", submitted_by="batch:extract.ndjson", organization="Organization/clinic-7")
    with session_scope(screening_app.state.session_factory) as session:
        assert [r.status for r in session.scalars(select(ScreeningRun).order_by(ScreeningRun.id))] == ["incomplete", "screened"]


def test_a_paediatrician_assigned_to_no_care_team_is_told_the_list_holds_only_their_own_submissions(
    screening_app: FastAPI, client: TestClient, token_for
) -> None:  # type: ignore[no-untyped-def]
    """A new account not yet assigned to clinic-7 had read "No flagged children waiting for a decision." while the
    clinic's three flags waited: a negative where the list holds only the children they submitted."""
    _clinic_7_batch(screening_app)  # assigns pia, not nora
    nora, pia, root = (token_for(name, role) for name, role in (("nora", "paediatrician"), ("pia", "paediatrician"), ("root", "admin")))
    listing = client.get("/api/screening/flags", headers=nora).json()
    assert listing["unassigned"] is True and listing["total"] == 0
    html = client.get("/api/screening/flags?format=html", headers=nora).text
    assert "You are assigned to no practitioner or organisation" in html and "medscreen screening assign" in html
    for headers in (pia, root):
        assert "assigned to no practitioner" not in client.get("/api/screening/flags?format=html", headers=headers).text
    with session_scope(screening_app.state.session_factory) as session:
        session.add(ScreeningAssignment(username="nora", organization="Organization/clinic-7", assigned_by="test"))
    assert client.get("/api/screening/flags", headers=nora).json() | {"flags": None} == client.get(
        "/api/screening/flags", headers=pia).json() | {"flags": None}
