"""The quality report and drift over the API refuse a version this site has no results of that the registry
does not hold, and a task that is not an imaging task (404), as ``quality report`` and ``/api/quality/metrics`` do:
``GET /api/quality/report?version=v1`` had been a 200 report of "0 confirmed studies". A real MLflow registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.db import session_scope
from service.tables import AuditEvent
from tests.quality.test_quality_api import register_versions, seed_pairs
from tests.service.conftest import AddUser, add_user, app, client, service_settings  # noqa: F401


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'medscreen.db'}"


def test_a_report_or_drift_of_a_version_or_task_not_known_here_is_refused(
    app: FastAPI, client: TestClient, add_user: AddUser  # noqa: F811
) -> None:  # fmt: skip
    register_versions(app.state.settings.resolved_mlflow_tracking_uri, "chest-xray", 2)
    seed_pairs(app, 4)  # results of versions 3 and 4, which the registry does not hold
    quality = add_user("quinn", "quality")
    engineer = add_user("emma", "ml-engineer")
    unknown = [
        ("chest-xray", "v1", "chest-xray version v1 is not registered"),
        ("chest-xray", "99", "chest-xray version 99 is not registered"),
        ("chest_xray", "3", "chest_xray is not a task (one of ct-chest, mammography, chest-xray)"),
    ]
    for task, version, detail in unknown:
        for fragment in ("true", "false"):
            params = {"task": task, "version": version, "fragment": fragment}
            answer = client.get("/api/quality/report", params=params, headers=quality)
            assert answer.status_code == 404 and answer.json()["detail"] == detail, answer.text
            assert "Content-Disposition" not in answer.headers
        answer = client.get("/api/quality/drift", params={"task": task, "version": version}, headers=quality)
        assert answer.status_code == 404 and answer.json()["detail"] == detail
        answer = client.post("/api/quality/report/mlflow", params={"task": task, "version": version}, headers=engineer)
        assert answer.status_code == 404 and answer.json()["detail"] == detail
    # Logged to MLflow, the version must be registered, results here or not (as `quality report --mlflow`).
    answer = client.post("/api/quality/report/mlflow", params={"task": "chest-xray", "version": "3"}, headers=engineer)
    assert answer.status_code == 404 and answer.json()["detail"] == "chest-xray version 3 is not registered"
    with session_scope(app.state.session_factory) as session:
        assert list(session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("quality.report%")))) == []

    # A version with results here, or a registered one with none yet, is reported.
    for version in ("3", "2"):
        params = {"task": "chest-xray", "version": version}
        answer = client.get("/api/quality/report", params=params, headers=quality)
        assert answer.status_code == 200 and answer.text.startswith("<!doctype html>")
        assert client.get("/api/quality/drift", params=params, headers=quality).status_code == 200
