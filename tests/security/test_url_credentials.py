"""A password written into MEDSCREEN_MLFLOW_TRACKING_URI (http://user:password@mlflow-host/) stays out of the answers
when the registry cannot be read: MLflow's error quotes the URI whole, and /healthz, which needs no login, had shown
it, as had the 503 of every route that reads the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference.champions import ChampionWatch, ModelSelector
from medscreen.app import create_app
from service.db import session_scope
from service.settings import Settings
from service.url_credentials import hide_url_credentials
from service.users import create_user
from tests.ports import free_port
from tests.service.conftest import login

PASSWORD = "S3cretRegistryPass"


@pytest.fixture
def registry_down(monkeypatch: pytest.MonkeyPatch) -> str:
    """A tracking server URI with a password in it, where nothing listens; MLflow asked once, briefly."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    return f"http://medscreen:{PASSWORD}@127.0.0.1:{free_port()}/"


def test_healthz_names_the_registry_problem_without_its_password(registry_down: str, settings: Settings, tmp_path: Path) -> None:
    watch = ChampionWatch(ModelSelector(registry_down, tmp_path / "cache", intra_op_threads=1, refresh_s=0))
    watch.check_once()
    app = create_app(settings.model_copy(update={"mlflow_tracking_uri": registry_down}), champion_problems=watch.problems)
    try:
        with TestClient(app) as client:
            health = client.get("/healthz")  # no login
            assert health.status_code == 503
            assert "the model registry cannot be read" in health.text and "http://***@127.0.0.1" in health.text
            assert PASSWORD not in health.text

            with session_scope(app.state.session_factory) as session:
                create_user(session, "quinn", "quinn-password-long", ["quality"], actor="test")
            quinn = login(client, "quinn", "quinn-password-long")
            refused = client.get("/api/quality/metrics", params={"task": "chest-xray", "version": "9"}, headers=quinn)
            assert refused.status_code == 503 and "the model registry cannot be read" in refused.json()["detail"]
            assert PASSWORD not in refused.text
    finally:
        app.state.engine.dispose()


def test_only_the_userinfo_of_a_url_is_hidden() -> None:
    assert hide_url_credentials("to http://svc:pw@mlflow:5000/api and postgresql+psycopg://u:p%40ss@db/x failed") == (
        "to http://***@mlflow:5000/api and postgresql+psycopg://***@db/x failed"
    )
    for plain in ("sqlite:////var/lib/medscreen/mlflow.db", "http://mlflow:5000/a@b", "mail rita@hospital.org"):
        assert hide_url_credentials(plain) == plain
