"""WADO-RS through the real app: the STOW-RS answer's RetrieveURL is followed and gives back the bytes as sent;
a whole study; roles, audit and no-store."""

from __future__ import annotations

from fastapi.testclient import TestClient
from python_multipart.multipart import parse_options_header

from tests.inference.test_stowrs import CT, LIDC_STUDY, post
from tests.service.conftest import AddUser


def parts(body: bytes, content_type: str) -> list[bytes]:
    kind, params = parse_options_header(content_type)
    assert kind == b"multipart/related" and params[b"type"] == b"application/dicom"
    boundary = b"--" + params[b"boundary"]
    chunks = body.split(boundary)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    out = []
    for chunk in chunks[1:-1]:
        head, _, data = chunk.partition(b"\r\n\r\n")
        assert b"content-type: application/dicom" in head.lower()
        out.append(data[: -len(b"\r\n")])
    return out


def test_retrieve_url_of_stow_gives_back_the_instance_as_sent(client: TestClient, add_user: AddUser) -> None:
    sender = add_user("pacs-sender", "sender")
    stored = post(client, sender, *CT).json()["00081199"]["Value"]
    sent = {p.read_bytes() for p in CT}
    for item in stored:
        response = client.get(item["00081190"]["Value"][0], headers=sender)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        [instance] = parts(response.content, response.headers["content-type"])
        assert instance in sent

    study = client.get(f"/dicomweb/studies/{LIDC_STUDY}", headers=sender)
    assert study.status_code == 200 and study.headers["cache-control"] == "no-store"
    assert set(parts(study.content, study.headers["content-type"])) == sent

    assert client.get(f"/dicomweb/studies/{LIDC_STUDY}").status_code == 401
    radiologist = add_user("reader", "radiologist")
    assert client.get(f"/dicomweb/studies/{LIDC_STUDY}", headers=radiologist).status_code == 403
    assert client.get("/dicomweb/studies/1.2.3", headers=sender).status_code == 404
    url = stored[0]["00081190"]["Value"][0].rsplit("/", 1)[0] + "/1.2.3"
    assert client.get(url, headers=sender).status_code == 404

    admin = add_user("root", "admin")
    assert client.get(f"/dicomweb/studies/{LIDC_STUDY}", headers=admin).status_code == 200
    audit = client.get("/api/audit", params={"limit": 100}, headers=admin).json()
    actions = [(e["actor"], e["action"], e["subject_id"]) for e in audit["items"]]
    assert actions.count(("pacs-sender", "instance.retrieve", LIDC_STUDY)) == 3
    assert ("pacs-sender", "study.retrieve", LIDC_STUDY) in actions
    assert ("root", "study.retrieve", LIDC_STUDY) in actions


def test_an_ml_engineer_gets_no_identified_instances(client: TestClient, add_user: AddUser) -> None:
    """The instances carry the patient's name and ID in their headers, which GET /api/studies/{uid} nulls for the
    role: WADO-RS had answered an ml-engineer the study as received."""
    sender = add_user("pacs-sender", "sender")
    stored = post(client, sender, *CT).json()["00081199"]["Value"]
    engineer = add_user("mle", "ml-engineer")
    for url in (f"/dicomweb/studies/{LIDC_STUDY}", stored[0]["00081190"]["Value"][0]):
        refused = client.get(url, headers=engineer)
        assert refused.status_code == 403, refused.text
        assert "without patient identity" in refused.json()["detail"] and b"LIDC-IDRI" not in refused.content
    study = client.get(f"/api/studies/{LIDC_STUDY}", headers=engineer).json()
    assert study["patient_id"] is None and study["instance_count"] == len(CT), "the identity-free view stays open"
    admin = add_user("root", "admin")
    audit = client.get("/api/audit", params={"actor": "mle"}, headers=admin).json()
    actions = {e["action"] for e in audit["items"]}
    assert actions == {"auth.login", "study.view"}, "nothing retrieved, nothing audited as retrieved"
