"""STOW-RS through the real app: per-instance outcomes, reasons, status codes, and the studies API after it."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom import dcmread

from tests.inference.conftest import INFERENCE_FIXTURES
from tests.service.conftest import AddUser

CT = sorted((INFERENCE_FIXTURES / "ct").glob("*.dcm"))
LIDC_STUDY = "1.3.6.1.4.1.14519.5.2.1.6279.6001.490157381160200744295382098329"


def multipart(*parts: Path | bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(8)
    body = b""
    for part in parts:
        data = part.read_bytes() if isinstance(part, Path) else part
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def post(client: TestClient, headers: dict[str, str], *parts: Path | bytes, url: str = "/dicomweb/studies"):
    body, content_type = multipart(*parts)
    return client.post(url, content=body, headers={**headers, "Content-Type": content_type})


def test_stow_stores_instances_and_the_study_appears(client: TestClient, add_user: AddUser) -> None:
    sender = add_user("pacs-sender", "sender", "ml-engineer")
    response = post(client, sender, *CT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    stored = response.json()["00081199"]["Value"]
    assert len(stored) == 3 and {item["00081155"]["Value"][0] for item in stored} == {str(dcmread(p).SOPInstanceUID) for p in CT}
    # Each stored instance names its WADO-RS RetrieveURL on this node (followed in test_wadors.py).
    assert all(item["00081190"]["Value"][0].startswith("http://testserver/dicomweb/studies/") for item in stored)

    studies = client.get("/api/studies", headers=sender).json()
    assert studies["total"] == 1
    item = studies["items"][0]
    assert (item["study_instance_uid"], item["modality"], item["status"], item["instance_count"]) == (
        LIDC_STUDY,
        "CT",
        "receiving",
        3,
    )
    detail = client.get(f"/api/studies/{LIDC_STUDY}", headers=sender).json()
    assert detail["series"][0]["instance_count"] == 3
    assert [event["kind"] for event in detail["timeline"]] == ["receiving"]


def test_stow_reports_each_failure_with_its_reason(client: TestClient, add_user: AddUser) -> None:
    sender = add_user("pacs-sender", "sender", "ml-engineer")
    response = post(client, sender, CT[0], INFERENCE_FIXTURES / "bad" / "no_pixel_data_dx.dcm", b"not dicom at all")
    assert response.status_code == 202, response.text
    failed = response.json()["00081198"]["Value"]
    reasons = sorted(item["0040A160"]["Value"][0].split(":")[0] for item in failed)
    # Only broken data fails; an image without pixels is valid DICOM, acknowledged and recorded as ignored.
    assert reasons == ["not-dicom"]
    assert sorted(item["00081197"]["Value"][0] for item in failed) == [0xC000]
    assert len(response.json()["00081199"]["Value"]) == 2
    quarantine = client.get("/api/quarantine", headers=sender).json()
    assert quarantine["total"] == 1


def test_stow_to_a_study_url_refuses_other_studies(client: TestClient, add_user: AddUser) -> None:
    sender = add_user("pacs-sender", "sender", "ml-engineer")
    response = post(client, sender, CT[0], url="/dicomweb/studies/1.2.3.4")
    assert response.status_code == 409
    assert "study-mismatch" in response.json()["00081198"]["Value"][0]["0040A160"]["Value"][0]


def test_stow_needs_login_and_multipart_related(client: TestClient, add_user: AddUser) -> None:
    body, content_type = multipart(CT[0])
    assert client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}).status_code == 401
    sender = add_user("pacs-sender", "sender", "ml-engineer")
    wrong = client.post("/dicomweb/studies", content=b"x", headers={**sender, "Content-Type": "application/dicom"})
    assert wrong.status_code == 415


def test_studies_api_filters_paginates_and_audits_views(client: TestClient, add_user: AddUser) -> None:
    sender = add_user("pacs-sender", "sender", "ml-engineer")
    post(client, sender, *CT, INFERENCE_FIXTURES / "images" / "mg_ge_senographe.dcm")
    assert client.get("/api/studies?modality=MG", headers=sender).json()["total"] == 1
    page = client.get("/api/studies?limit=1&offset=1", headers=sender).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    assert client.get("/api/studies/9.9.9", headers=sender).status_code == 404

    paediatrician = add_user("paed", "paediatrician")
    assert client.get("/api/studies", headers=paediatrician).status_code == 403

    client.get(f"/api/studies/{LIDC_STUDY}", headers=sender)
    admin = add_user("boss", "admin")
    audit = client.get("/api/audit", params={"subject_type": "study"}, headers=admin).json()
    assert any(e["actor"] == "pacs-sender" and e["subject_id"] == LIDC_STUDY for e in audit["items"])
