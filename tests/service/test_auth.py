"""Login, tokens and role checks against the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from sqlalchemy import select

from medscreen.app import create_app
from service.auth import (
    AuthenticatedUser,
    CurrentUser,
    create_access_token,
    load_or_create_secret_key,
    require_role,
)
from service.db import session_scope, utcnow
from service.errors import SecretKeyError, WeakPassword
from service.settings import Settings
from service.tables import ROLES, AuditEvent, RevokedToken, Role
from service.users import set_password, set_roles
from tests.service.conftest import AddUser, login


def _add_probe_routes(app: FastAPI) -> None:
    """Endpoints guarded the way the packages' routers guard theirs."""

    @app.get("/probe/worklist")
    def worklist(user: Annotated[AuthenticatedUser, Depends(require_role(Role.radiologist))]) -> dict[str, str]:
        return {"user": user.username}

    @app.get("/probe/screening", dependencies=[Depends(require_role(Role.paediatrician, Role.quality))])
    def screening() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/probe/anyone")
    def anyone(user: CurrentUser) -> dict[str, list[str]]:
        return {"roles": sorted(user.roles)}


def test_login_and_me(client: TestClient, add_user: AddUser) -> None:
    headers = add_user("rita", "radiologist", "quality")
    me = client.get("/api/auth/me", headers=headers)
    assert me.status_code == 200
    assert me.json() == {"username": "rita", "roles": ["quality", "radiologist"]}


def test_wrong_password_and_unknown_user_are_refused(client: TestClient, add_user: AddUser) -> None:
    add_user("rita", "radiologist")
    for username, password in [
        ("rita", "not-her-password"),
        ("nobody", "rita-password-long"),
        ("rita", "x" * 100),
    ]:
        response = client.post("/api/auth/token", data={"username": username, "password": password})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


def test_role_checks(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    _add_probe_routes(app)
    radiologist = add_user("rita", "radiologist")
    paediatrician = add_user("paul", "paediatrician")
    admin = add_user("ada", "admin")

    # No token, a malformed token, a token signed with another key: 401 with a Bearer challenge.
    foreign = create_access_token("ada", "another-installation-key-" + "x" * 32, timedelta(hours=1))
    for headers in [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": f"Bearer {foreign}"}]:
        response = client.get("/probe/worklist", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"

    assert client.get("/probe/worklist", headers=radiologist).json() == {"user": "rita"}
    assert client.get("/probe/worklist", headers=paediatrician).status_code == 403
    assert client.get("/probe/screening", headers=paediatrician).status_code == 200
    assert client.get("/probe/screening", headers=radiologist).status_code == 403
    assert client.get("/probe/anyone", headers=paediatrician).json() == {"roles": ["paediatrician"]}
    # admin passes every role check
    assert client.get("/probe/worklist", headers=admin).status_code == 200
    assert client.get("/probe/screening", headers=admin).status_code == 200


def test_roles_are_read_per_request(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    _add_probe_routes(app)
    headers = add_user("rita", "radiologist")
    assert client.get("/probe/worklist", headers=headers).status_code == 200
    with session_scope(app.state.session_factory) as session:
        set_roles(session, "rita", ["quality"], actor="test")
    # The same, unexpired token no longer opens the worklist.
    assert client.get("/probe/worklist", headers=headers).status_code == 403


def test_expired_token_is_refused(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    add_user("rita", "radiologist")
    key = app.state.secret_key
    lifetime = timedelta(minutes=app.state.settings.access_token_minutes)
    expired = create_access_token("rita", key, lifetime, now=utcnow() - lifetime - timedelta(seconds=5))
    fresh = create_access_token("rita", key, lifetime)
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert response.json()["detail"] == "token expired"
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_token_lifetime_follows_the_setting(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    import jwt

    token = add_user("rita", "radiologist")["Authorization"].split()[1]
    claims = jwt.decode(token, app.state.secret_key, algorithms=["HS256"])
    lifetime = app.state.settings.access_token_minutes * 60
    assert claims["exp"] - claims["iat"] == pytest.approx(lifetime, abs=1)
    assert claims["sub"] == "rita"


def test_password_change_signs_out_old_tokens(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    # A token issued before the change (a stolen one, say) stops working at once.
    old = add_user("rita", "radiologist")
    assert client.get("/api/auth/me", headers=old).status_code == 200
    with session_scope(app.state.session_factory) as session:
        set_password(session, "rita", "a-brand-new-password", actor="test")
    assert client.get("/api/auth/me", headers=old).status_code == 401
    assert (
        client.post("/api/auth/token", data={"username": "rita", "password": "rita-password-long"}).status_code == 401
    )
    assert client.get("/api/auth/me", headers=login(client, "rita", "a-brand-new-password")).status_code == 200


def test_logout_signs_out_that_token_on_the_server_and_no_other(app: FastAPI, client: TestClient, add_user: AddUser) -> None:
    # The pages had only dropped the token from the tab: a copy kept opening patients until it expired, a shift later.
    ward = add_user("rita", "radiologist")
    office = login(client, "rita", "rita-password-long")  # her other workstation
    with session_scope(app.state.session_factory) as session:  # a signed-out token already past its expiry
        session.add(RevokedToken(jti="old", username="rita", expires_at=utcnow() - timedelta(minutes=1)))
    assert client.post("/api/auth/logout", headers=ward).status_code == 204
    for path in ("/api/auth/me", "/api/worklist", "/api/worklist/filters"):
        refused = client.get(path, headers=ward)
        assert (refused.status_code, refused.json()["detail"]) == (401, "token signed out"), path
    assert client.post("/api/auth/logout", headers=ward).status_code == 401
    assert client.get("/api/worklist", headers=office).status_code == 200
    with session_scope(app.state.session_factory) as session:
        assert session.scalars(select(RevokedToken.username)).all() == ["rita"]  # the expired row went
        logout = session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.logout")).one()
        assert (logout.actor, logout.subject_id, logout.detail) == ("rita", "rita", {"signed_out": True})


def test_short_passwords_are_refused(app: FastAPI) -> None:
    from service.users import create_user

    with pytest.raises(WeakPassword), session_scope(app.state.session_factory) as session:
        create_user(session, "rita", "short", ["radiologist"], actor="test")


def test_require_role_refuses_unknown_roles() -> None:
    with pytest.raises(ValueError):
        require_role("radiolgist")  # type: ignore[arg-type]
    assert set(ROLES) == {"radiologist", "paediatrician", "ml-engineer", "quality", "sender", "admin"}


# --- the signing key ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "changethis",
        "changethis" * 4,
        "secret-secret-secret-secret-secret",
        "a" * 40,
        "0123456789abcdef",
        "0123456789" * 4,  # 10 different characters and 40 long: passed the old check
        "abcdefghijklmnopqrstuvwxyz0123456789",
    ],
)
def test_settings_refuse_default_secrets(secret: str) -> None:
    with pytest.raises(ValidationError, match="MEDSCREEN_SECRET_KEY"):
        Settings(secret_key=secret)


def test_configured_secret_is_used(settings: Settings) -> None:
    key = "Zq3-" + os.urandom(24).hex()
    configured = settings.model_copy(update={"secret_key": SecretStr(key)})
    assert load_or_create_secret_key(configured) == key
    assert not (settings.home / "secret_key").exists()


def test_generated_secret_is_private_and_kept(settings: Settings) -> None:
    first = load_or_create_secret_key(settings)
    path = settings.home / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    # The next start (or another worker process) signs with the same key, so tokens survive restarts.
    assert load_or_create_secret_key(settings) == first
    assert [p.name for p in settings.home.iterdir()] == ["secret_key"]


def test_readable_secret_file_is_refused(settings: Settings) -> None:
    load_or_create_secret_key(settings)
    (settings.home / "secret_key").chmod(0o644)
    with pytest.raises(SecretKeyError, match="chmod 600"):
        load_or_create_secret_key(settings)


def test_token_survives_restart(service_settings: Settings, add_user: AddUser, app: FastAPI) -> None:
    headers = add_user("rita", "radiologist")
    restarted = create_app(service_settings)
    with TestClient(restarted) as client:
        assert client.get("/api/auth/me", headers=headers).status_code == 200
    restarted.state.engine.dispose()


def test_a_token_from_a_node_whose_clock_runs_a_little_ahead_is_accepted(
    app: FastAPI, client: TestClient, add_user: AddUser
) -> None:
    """Two nodes on one database with ordinary clock skew: a login on the other node works here at once."""
    add_user("rita", "radiologist")
    key = app.state.secret_key
    lifetime = timedelta(minutes=app.state.settings.access_token_minutes)
    ahead = create_access_token("rita", key, lifetime, now=utcnow() + timedelta(seconds=5))
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {ahead}"}).status_code == 200
    far_ahead = create_access_token("rita", key, lifetime, now=utcnow() + timedelta(minutes=10))
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {far_ahead}"}).status_code == 401
