"""STOW-RS through the real app: per-instance outcomes, reasons, status codes, and the studies API after it."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread

from inference.ingest import InstanceIngestor
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


SMALL_DX = INFERENCE_FIXTURES / "images" / "dx_abdomen_ge.dcm"  # 3.5 kB: it fits in the file's write buffer


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to fail writes with ENOSPC")
def test_a_full_disk_is_503_even_when_it_shows_only_on_a_parts_close(
    client: TestClient, add_user: AddUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small part's bytes reach the disk only when its file is closed; that ENOSPC was a 400 "malformed body",
    # a client error the sender does not retry. Each part's file is a link to /dev/full: every write-out fails
    # with ENOSPC, as on a truly full disk (watermark 0).
    ingestor: InstanceIngestor = client.app.state.ingestor  # type: ignore[attr-defined]
    new_incoming_path = ingestor.spool.new_incoming_path

    def onto_a_full_disk() -> Path:
        path = new_incoming_path()
        path.symlink_to("/dev/full")
        return path

    monkeypatch.setattr(ingestor.spool, "new_incoming_path", onto_a_full_disk)
    sender = add_user("pacs-sender", "sender")
    response = post(client, sender, SMALL_DX)
    assert response.status_code == 503, response.text
    assert "no space left" in response.json()["detail"]
    assert not any(ingestor.spool.incoming.iterdir()), "nothing of the request stays in incoming"


def test_the_watermark_is_checked_at_each_part(
    client: TestClient, add_user: AddUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watermark was checked once per request and then every 16 MB of one part: a request of many small parts
    # ran past it to a full disk. Here the disk goes under the watermark once two parts are written.
    ingestor: InstanceIngestor = client.app.state.ingestor  # type: ignore[attr-defined]
    monkeypatch.setattr(ingestor, "has_free_disk", lambda: len(list(ingestor.spool.incoming.iterdir())) < 2)
    sender = add_user("pacs-sender", "sender")
    response = post(client, sender, *CT)
    assert response.status_code == 503, response.text
    assert "watermark" in response.json()["detail"]
    assert not any(ingestor.spool.incoming.iterdir()) and not any(ingestor.spool.studies.iterdir())
