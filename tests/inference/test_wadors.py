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

    engineer = add_user("mle", "ml-engineer")
    assert client.get(f"/dicomweb/studies/{LIDC_STUDY}", headers=engineer).status_code == 200
    admin = add_user("root", "admin")
    audit = client.get("/api/audit", params={"limit": 100}, headers=admin).json()
    items = audit["items"] if isinstance(audit, dict) else audit
    actions = [(e["actor"], e["action"]) for e in items]
    assert actions.count(("pacs-sender", "instance.retrieve")) == 3
    assert ("pacs-sender", "study.retrieve") in actions and ("mle", "study.retrieve") in actions
