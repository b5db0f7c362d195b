"""Paging numbers, ids and names larger than the database takes are a 422 with the bound, not a 500
(SQLite and PostgreSQL bind integers as signed 64-bit values)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.request_params import MAX_OFFSET
from tests.service.conftest import AddUser

HUGE = [MAX_OFFSET + 1, 2**63, 10**19]


def test_huge_offsets_and_ids_are_refused_with_422(app: FastAPI, add_user: AddUser) -> None:
    admin = add_user("ada", "admin")
    client = TestClient(app, raise_server_exceptions=False)
    for path in ("/api/audit", "/api/worklist", "/api/worklist/priority-changes"):
        for offset in HUGE:
            answer = client.get(path, params={"offset": offset}, headers=admin)
            assert answer.status_code == 422, (path, offset, answer.text)
            assert answer.json()["detail"][0]["loc"] == ["query", "offset"]
            assert "less than or equal to" in answer.json()["detail"][0]["msg"]
        # The largest offset allowed is an empty page, not an error.
        last = client.get(path, params={"offset": MAX_OFFSET}, headers=admin)
        assert last.status_code == 200 and last.json()["items"] == [], (path, last.text)

    for message_id in (2**63, 10**19, 0):
        assert client.post(f"/api/outbox/{message_id}/replay", headers=admin).status_code == 422
    assert client.post(f"/api/outbox/{2**63 - 1}/replay", headers=admin).status_code == 404


def test_names_longer_than_their_columns_are_refused_with_422(app: FastAPI, add_user: AddUser) -> None:
    admin = add_user("ada", "admin")
    client = TestClient(app, raise_server_exceptions=False)
    long_uid = "1.2.826.0.1.3680043." + "9" * 120
    answer = client.get("/api/worklist/priority-changes", params={"study_uid": long_uid}, headers=admin)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "study_uid"]
    answer = client.post("/api/auth/unlock/" + "u" * 200, headers=admin)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["path", "username"]
    assert client.post("/api/auth/unlock/" + "u" * 64, headers=admin).json() == {"username": "u" * 64, "unlocked": False}


def test_a_nul_in_a_path_query_or_form_value_is_a_400_on_both_backends(app: FastAPI, add_user: AddUser) -> None:
    # PostgreSQL text cannot hold NUL: each of these had been a 500 with a traceback there (SQLite: 404/200/401).
    rita = add_user("rita", "radiologist", "admin")
    client = TestClient(app, raise_server_exceptions=False)
    for url, where in [
        ("/api/studies/1.2.3%00", "path"),
        ("/api/worklist/1.2.3%00", "path"),
        ("/api/studies?modality=C%00T", "query"),
        ("/fhir/DiagnosticReport?study=1.2%003", "query"),
    ]:
        answer = client.get(url, headers=rita)
        assert answer.status_code == 400, (url, answer.text)
        said = f"a NUL character (%00) is not allowed in the request {where}"
        if url.startswith("/fhir/"):  # a FHIR endpoint answers its errors as an OperationOutcome
            assert answer.json()["issue"] == [{"severity": "error", "code": "invalid", "diagnostics": said}]
        else:
            assert answer.json() == {"detail": said}
    # Before any login, as the reviewer found: the login form itself.
    for form in ({"username": "ri\x00ta", "password": "rita-password-long"}, {"username": "rita", "password": "x\x00"}):
        answer = client.post("/api/auth/token", data=form)
        assert answer.status_code == 400 and "form value" in answer.json()["detail"], answer.text
    # The guard replays the form it read: a login without NUL still works, and the service kept running.
    assert client.post("/api/auth/token", data={"username": "rita", "password": "rita-password-long"}).status_code == 200
    assert client.get("/api/studies/1.2.3", headers=rita).status_code == 404
