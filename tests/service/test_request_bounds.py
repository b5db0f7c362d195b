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
