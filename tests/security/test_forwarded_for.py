"""X-Forwarded-For is believed only from MEDSCREEN_TRUSTED_PROXIES: a client cannot choose the address its logins
are counted and audited under.

uvicorn's default believed it from 127.0.0.1, so a client on the server itself sent a new address with each wrong
password: the per-address lock never tripped and each audit row named a forged address."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from medscreen.app import create_app
from service.db import session_scope
from service.http_server import http_config
from service.settings import Settings
from service.tables import AuditEvent


@pytest.fixture
def served(settings: Settings, request: pytest.FixtureRequest) -> Iterator[tuple[str, object]]:
    settings = settings.model_copy(update={"login_address_max_failures": 3, "trusted_proxies": request.param})
    app = create_app(settings)
    server = uvicorn.Server(http_config(app, settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{settings.http_port}", app
    server.should_exit = True
    thread.join(timeout=10)
    app.state.engine.dispose()


def _wrong_logins(base: str, count: int) -> list[int]:
    return [
        httpx.post(f"{base}/api/auth/token", data={"username": f"u{i}", "password": "wrong-password-123"},
                   headers={"X-Forwarded-For": f"10.9.9.{i}"}).status_code
        for i in range(count)
    ]


def _audited_addresses(app) -> list[str]:  # type: ignore[no-untyped-def]
    with session_scope(app.state.session_factory) as session:
        details = session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "auth.login")).all()
    return [detail["address"] for detail in details]


@pytest.mark.parametrize("served", [[]], indirect=True)
def test_a_forged_forwarded_for_neither_escapes_the_address_lock_nor_reaches_the_audit_log(served) -> None:  # type: ignore[no-untyped-def]
    base, app = served
    assert _wrong_logins(base, 5) == [401, 401, 401, 429, 429], "a new X-Forwarded-For per guess escaped the address lock"
    assert set(_audited_addresses(app)) == {"127.0.0.1"}


@pytest.mark.parametrize("served", [["127.0.0.1"]], indirect=True)
def test_a_trusted_proxy_names_the_client(served) -> None:  # type: ignore[no-untyped-def]
    base, app = served
    assert _wrong_logins(base, 2) == [401, 401]
    assert _audited_addresses(app) == ["10.9.9.0", "10.9.9.1"]


def test_a_trusted_proxy_is_an_address() -> None:
    with pytest.raises(ValueError, match="MEDSCREEN_TRUSTED_PROXIES: 'proxy.local' is not an IP address"):
        Settings(trusted_proxies=["proxy.local"])
    assert Settings(trusted_proxies=[" 10.1.2.0/24 "]).trusted_proxies == ["10.1.2.0/24"]
