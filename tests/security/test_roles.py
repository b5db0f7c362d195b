"""STOW-RS is for sending systems: the `sender` role (or admin); other roles cannot inject studies."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.inference.test_stowrs import CT, post
from tests.service.conftest import AddUser


@pytest.mark.parametrize("role", ["paediatrician", "quality", "ml-engineer", "radiologist"])
def test_roles_other_than_sender_cannot_store_over_stow_rs(client: TestClient, add_user: AddUser, role: str) -> None:
    user = add_user(f"not-a-sender-{role}", role)
    response = post(client, user, CT[0])
    assert response.status_code == 403, response.text
    assert client.get("/api/studies", headers=add_user("viewer", "ml-engineer")).json()["total"] == 0


def test_a_sender_stores_and_sees_nothing_else(client: TestClient, add_user: AddUser) -> None:
    sender = add_user("pacs", "sender")
    assert post(client, sender, CT[0]).status_code == 200
    for path in ("/api/studies", "/api/worklist", "/api/quarantine", "/api/audit"):
        assert client.get(path, headers=sender).status_code == 403, path


# Whose study it is goes to the clinical roles only; ml-engineer and quality read the study without it (README,
# "Users, roles and audit"). A user holding quality and radiologist is clinical.
IDENTITY_BY_ROLES = [
    (("radiologist",), True),
    (("admin",), True),
    (("quality", "radiologist"), True),
    (("ml-engineer",), False),
    (("quality",), False),
]


@pytest.mark.parametrize(("roles", "identified"), IDENTITY_BY_ROLES, ids=lambda v: "+".join(v) if isinstance(v, tuple) else str(v))
def test_study_views_carry_patient_identity_only_for_clinical_roles(
    app, client: TestClient, add_user: AddUser, roles: tuple[str, ...], identified: bool
) -> None:
    from service.db import session_scope
    from tests.worklist.conftest import add_result, make_study

    with session_scope(app.state.session_factory) as session:
        study = make_study(session)
        study.patient_birth_date = "20190101"
        add_result(session, study, score=0.81, threshold=0.5)
        uid, accession = study.study_instance_uid, study.accession_number
    user = add_user("reader", *roles)

    detail = client.get(f"/api/studies/{uid}", headers=user)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    identity = {key: body[key] for key in ("patient_name", "patient_id", "patient_birth_date", "accession_number")}
    if identified:
        assert identity == {"patient_name": "Doe^Jane", "patient_id": "PID-1", "patient_birth_date": "20190101",
                            "accession_number": accession}
    else:
        assert identity == dict.fromkeys(identity), "no name, patient ID, birth date or accession"
        assert body["series"] is not None and body["results"] and body["timeline"] is not None

    search = client.get("/fhir/DiagnosticReport", params={"study": uid}, headers=user)
    assert search.status_code == 200, search.text
    (report,) = [e["resource"] for e in search.json()["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    read = client.get(f"/fhir/DiagnosticReport/{report['id']}", headers=user).json()
    for served in (report, read):
        assert ("PID-1" in str(served)) is identified and (accession in str(served)) is identified
        assert served["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{uid}"
