"""Fixtures of the service tests: the real app over SQLite and over a real PostgreSQL, and logged-in users."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medscreen.app import create_app
from service.db import session_scope
from service.settings import Settings
from service.users import create_user

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend: a SQLite file, and a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'medscreen.db'}"
    return str(request.getfixturevalue("postgres_database_url"))


@pytest.fixture
def service_settings(settings: Settings, database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": database_url})


@pytest.fixture
def app(service_settings: Settings) -> Iterator[FastAPI]:
    app = create_app(service_settings)
    yield app
    app.state.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


AddUser = Callable[..., dict[str, str]]


@pytest.fixture
def add_user(app: FastAPI, client: TestClient) -> AddUser:
    """Create a user with the given roles through the real user code, log in, return the auth header."""

    def add(username: str, *roles: str, password: str | None = None) -> dict[str, str]:
        password = password or f"{username}-password-long"
        with session_scope(app.state.session_factory) as session:
            create_user(session, username, password, roles, actor="test")
        return login(client, username, password)

    return add


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    response = client.post("/api/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    return {"Authorization": f"Bearer {body['access_token']}"}
