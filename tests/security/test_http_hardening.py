"""The HTTP edge: authentication and size limits before a body is parsed, security headers on every answer,
/docs behind login with local assets, and a download name that request input cannot break."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.security_headers import attachment, html_policy
from tests.service.conftest import AddUser


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the edge does not depend on the database backend."""
    return f"sqlite:///{tmp_path / 'medscreen.db'}"


def test_a_body_without_a_token_is_refused_before_it_is_read(app: FastAPI, client: TestClient) -> None:
    read = {"bytes": 0}

    def body():
        for _ in range(100):
            read["bytes"] += 1 << 20
            yield b"x" * (1 << 20)

    response = client.post("/api/screening", content=body(), headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 401
    assert read["bytes"] <= 2 << 20, f"{read['bytes'] >> 20} MB were read before the 401"


def test_a_forged_token_is_refused_before_the_body_too(client: TestClient) -> None:
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiIsImlhdCI6MSwiZXhwIjo5OTk5OTk5OTk5fQ.c2lnbmF0dXJl"
    response = client.post("/api/screening", content=b"{}", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401 and response.json()["detail"] == "invalid token"


def test_an_oversized_body_gets_413_declared_or_streamed(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    paediatrician = add_user("paul", "paediatrician")
    limit = app.state.settings.max_request_mb << 20
    declared = client.post(
        "/api/screening", content=b"x" * (limit + 1), headers={**paediatrician, "Content-Type": "application/json"}
    )
    assert declared.status_code == 413

    def chunks():
        for _ in range(app.state.settings.max_request_mb + 2):
            yield b" " * (1 << 20)

    streamed = client.post("/api/screening", content=chunks(), headers={**paediatrician, "Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/api/auth/token", content=b"u" * (70 * 1024)).status_code == 413


@pytest.mark.parametrize("path", ["/screening", "/worklist", "/quality", "/docs", "/healthz", "/api/auth/me"])
def test_every_answer_carries_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_a_page_without_its_own_policy_gets_one_that_allows_only_its_own_inline_blocks() -> None:
    page = b"<html><style>p{color:red}</style><script>go()</script><p>x</p></html>"
    policy = html_policy(page)
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]+';", policy)
    assert re.search(r"style-src 'self' 'sha256-[A-Za-z0-9+/=]+';", policy)
    assert html_policy(page.replace(b"go()", b"evil()")) != policy


def test_phi_answers_are_not_cached(client: TestClient, add_user: AddUser) -> None:
    viewer = add_user("emma", "ml-engineer")
    assert client.get("/api/studies", headers=viewer).headers["Cache-Control"] == "no-store"


def test_docs_need_a_login_and_load_nothing_from_outside(client: TestClient, add_user: AddUser) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/docs/static/") for source in sources), sources
    for source in sources:
        assert client.get(source).status_code == 200, source
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/redoc").status_code == 404
    viewer = add_user("emma", "ml-engineer")
    assert "/dicomweb/studies" in client.get("/openapi.json", headers=viewer).json()["paths"]


def test_a_download_name_from_request_input_cannot_add_parameters_or_lines() -> None:
    assert attachment('quality-x"; filename="evil.exe-v1.html') == 'attachment; filename="quality-x_filename_evil.exe-v1.html"'
    assert "\r" not in attachment("a\r\nSet-Cookie: x=1") and "\n" not in attachment("a\r\nSet-Cookie: x=1")


def test_the_quality_report_download_is_named_safely(client: TestClient, add_user: AddUser) -> None:
    # The name is built from the task and the version: a task that is not an imaging task, and a
    # version that no result and no registry holds, are 'not found' before any name is built, so a
    # quote or CR/LF in either never reaches the header (attachment() above covers the name itself).
    quality = add_user("quinn", "quality")
    hostile_task = client.get(
        "/api/quality/report", params={"task": 'chest-xray"; filename="x.exe', "version": "1"}, headers=quality
    )
    assert hostile_task.status_code == 404 and "Content-Disposition" not in hostile_task.headers
    hostile_version = client.get(
        "/api/quality/report", params={"task": "chest-xray", "version": '1"\r\nX: y'}, headers=quality
    )
    assert hostile_version.status_code == 404 and "Content-Disposition" not in hostile_version.headers
    assert "\r" not in hostile_version.text and "X: y" not in str(hostile_version.headers)
