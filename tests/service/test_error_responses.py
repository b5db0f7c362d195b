"""The OpenAPI document lists the error answers of the JSON API (``/api``), and what it lists is what the routes
answer: 401 without a token, 403 to a user without the role, 404 for a path naming nothing, 409 and 413 where a
route declares them. It had listed only 200 and 422, so a client learnt of these from the answers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.service.conftest import AddUser

# A valid body for the routes that need one, so that the path's row is what decides the answer.
BODIES: dict[str, dict[str, Any]] = {
    "/api/screening/flags/{result_id}/outcome": {"outcome": "referred"},
    "/api/worklist/{study_uid}/read": {"findings": {"chest-xray": "present"}},
}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # What is judged is the HTTP edge; the answers do not depend on the database.
    return f"sqlite:///{tmp_path / 'medscreen.db'}"


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/")
        for method, operation in operations.items()
    ]


def _url(path: str, operation: dict[str, Any]) -> str:
    """The path with each parameter naming nothing there: row ids 1 (the database is empty), names '1.2.3'."""
    kinds = {p["name"]: p["schema"].get("type") for p in operation.get("parameters", []) if p["in"] == "path"}
    return re.sub(r"{(\w+)}", lambda m: "1" if kinds[m.group(1)] == "integer" else "1.2.3", path)


def test_the_error_answers_listed_are_the_answers_given(app: FastAPI, add_user: AddUser) -> None:
    admin = add_user("ada", "admin")
    sender = add_user("sam", "sender")  # a sending system: STOW-RS only, so no /api route of its own
    client = TestClient(app, raise_server_exceptions=False)
    schema = client.get("/openapi.json", headers=admin).json()
    assert schema["components"]["schemas"]["Problem"]["required"] == ["detail"]
    checked = 0
    for method, path, operation in _operations(schema):
        listed = set(operation["responses"])
        url = _url(path, operation)
        if operation.get("security"):
            answer = client.request(method, url, json=BODIES.get(path))
            assert answer.status_code == 401 and "401" in listed, (method, path, answer.status_code, listed)
            # Log out signs out the token it is called with: it gets one of its own, so the sender's stays valid.
            caller = add_user("tim", "sender") if path == "/api/auth/logout" else sender
            answer = client.request(method, url, json=BODIES.get(path), headers=caller)
            assert (answer.status_code == 403) == ("403" in listed), (method, path, answer.status_code, listed)
        if "{" in path:
            answer = client.request(method, url, json=BODIES.get(path), headers=admin)
            assert (answer.status_code == 404) == ("404" in listed), (method, path, answer.status_code, listed)
        for status in listed & {"401", "403", "404", "409", "413", "415", "429"}:
            assert operation["responses"][status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }
        checked += 1
    assert checked >= 35  # every /api operation: studies, jobs, outgoing, quarantine, worklist, screening, quality, ...


def test_the_statuses_a_route_declares_are_listed(app: FastAPI, add_user: AddUser) -> None:
    schema = TestClient(app).get("/openapi.json", headers=add_user("ada", "admin")).json()
    listed = {(method, path): set(operation["responses"]) for method, path, operation in _operations(schema)}
    # Refused by the row's state (409), a body over its limit (413), a body that is not JSON (415).
    for route, statuses in {
        ("POST", "/api/jobs/{job_id}/replay"): {"404", "409"},
        ("POST", "/api/outgoing/{outgoing_id}/abandon"): {"404", "409"},
        ("POST", "/api/studies/{study_uid}/rescore"): {"404", "409"},
        ("POST", "/api/outbox/{message_id}/replay"): {"404", "409"},
        ("POST", "/api/worklist/{study_uid}/claim"): {"404", "409"},
        ("POST", "/api/worklist/{study_uid}/release"): {"404", "409"},
        ("POST", "/api/worklist/{study_uid}/read"): {"404", "409", "413"},
        ("POST", "/api/quality/promote"): {"404", "409", "413"},
        ("POST", "/api/quality/steering"): {"409", "413"},
        ("POST", "/api/screening"): {"413", "415"},
        ("GET", "/api/quality/report"): {"404"},
        ("POST", "/api/auth/token"): {"401", "413", "429"},
    }.items():
        assert statuses <= listed[route], (route, listed[route])


def test_a_body_over_the_limit_and_a_body_not_json_are_answered_as_listed(app: FastAPI, add_user: AddUser) -> None:
    admin = add_user("ada", "admin")
    client = TestClient(app, raise_server_exceptions=False)
    limit = app.state.settings.max_request_mb * 1024 * 1024
    for path in ("/api/worklist/1.2.3/read", "/api/quality/promote", "/api/screening"):
        answer = client.post(
            path, content=b"{" + b" " * limit + b"}", headers={**admin, "Content-Type": "application/json"}
        )
        assert answer.status_code == 413, (path, answer.text)
    answer = client.post(
        "/api/screening", content=b"<Bundle/>", headers={**admin, "Content-Type": "application/fhir+xml"}
    )
    assert answer.status_code == 415
    answer = client.post("/api/auth/token", data={"username": "ada", "password": "x" * 70_000})
    assert answer.status_code == 413
