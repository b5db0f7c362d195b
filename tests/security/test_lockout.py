"""Login throttling and lockout per account and per address, lifted by an admin; every attempt audited."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.db import session_scope
from service.tables import AuditEvent, LoginThrottle
from service.users import set_active
from tests.service.conftest import AddUser


def _login(client: TestClient, username: str, password: str, address: str = "testclient"):
    return client.post("/api/auth/token", data={"username": username, "password": password})


def _logins(app: FastAPI) -> list[tuple[str, str, str]]:
    with session_scope(app.state.session_factory) as session:
        rows = session.execute(
            select(AuditEvent.actor, AuditEvent.subject_id, AuditEvent.detail).where(AuditEvent.action == "auth.login")
        ).all()
    return [(actor, subject, detail["outcome"]) for actor, subject, detail in rows]


def test_five_wrong_passwords_lock_the_account_even_against_the_right_one(
    app: FastAPI, client: TestClient, add_user: AddUser
) -> None:
    add_user("rita", "radiologist", password="rita-right-password")
    for _ in range(5):
        assert _login(client, "rita", "wrong-password-123").status_code == 401
    locked = _login(client, "rita", "rita-right-password")
    assert locked.status_code == 429, "200 wrong passwords, then the right one worked: no more"
    assert int(locked.headers["Retry-After"]) > 0 and "ask an admin" in locked.json()["detail"]

    outcomes = [outcome for actor, _, outcome in _logins(app) if actor == "rita"]
    assert outcomes == ["success"] + ["wrong-password"] * 5 + ["refused-account-locked"]


def test_an_admin_lifts_the_lock_over_the_api_and_it_is_audited(
    app: FastAPI, client: TestClient, add_user: AddUser
) -> None:
    admin = add_user("ada", "admin")
    radiologist = add_user("rita", "radiologist", password="rita-right-password")
    for _ in range(5):
        _login(client, "rita", "wrong-password-123")
    assert _login(client, "rita", "rita-right-password").status_code == 429
    assert client.post("/api/auth/unlock/rita", headers=radiologist).status_code == 403
    lifted = client.post("/api/auth/unlock/rita", headers=admin)
    assert lifted.status_code == 200 and lifted.json()["unlocked"] is True
    assert _login(client, "rita", "rita-right-password").status_code == 200
    with session_scope(app.state.session_factory) as session:
        unlock = session.scalars(select(AuditEvent).where(AuditEvent.action == "user.unlock")).one()
    assert (unlock.actor, unlock.subject_id, unlock.detail) == ("ada", "rita", {"was_locked": True})


def test_the_cli_lifts_the_lock(app: FastAPI, client: TestClient, add_user: AddUser, service_settings) -> None:
    from service.users_command import unlock_user

    add_user("rita", "radiologist", password="rita-right-password")
    for _ in range(5):
        _login(client, "rita", "wrong-password-123")
    assert _login(client, "rita", "rita-right-password").status_code == 429

    class Args:
        username = "rita"

    assert unlock_user(Args(), service_settings) == 0  # type: ignore[arg-type]
    assert _login(client, "rita", "rita-right-password").status_code == 200


def test_one_address_guessing_many_accounts_is_throttled_and_unknown_names_audited_by_digest(
    app: FastAPI, client: TestClient, add_user: AddUser, service_settings
) -> None:
    add_user("rita", "radiologist", password="rita-right-password")
    limit = service_settings.login_address_max_failures
    for n in range(limit):
        assert _login(client, f"guess{n}", "a-password-typed-as-name").status_code == 401
    refused = _login(client, "rita", "rita-right-password")
    assert refused.status_code == 429 and "address" in refused.json()["detail"]

    logins = _logins(app)
    unknown = [subject for actor, subject, _ in logins if actor == "anonymous"]
    assert len(unknown) == limit and all(subject.startswith("unknown:") for subject in unknown)
    assert not any("guess" in subject for _, subject, _ in logins), "unknown names are kept as digests only"


def test_a_right_password_resets_the_run(client: TestClient, add_user: AddUser) -> None:
    add_user("rita", "radiologist", password="rita-right-password")
    for _ in range(3):
        for _ in range(4):
            assert _login(client, "rita", "wrong-password-123").status_code == 401
        assert _login(client, "rita", "rita-right-password").status_code == 200


def _parallel(client: TestClient, logins: list[tuple[str, str]]) -> Counter[int]:
    with ThreadPoolExecutor(len(logins)) as pool:
        return Counter(pool.map(lambda login: _login(client, *login).status_code, logins))


def test_parallel_guesses_get_no_more_password_checks_than_the_limit(
    app: FastAPI, client: TestClient, add_user: AddUser, service_settings
) -> None:
    """The lock was checked before bcrypt and the failure counted after it, as a read-modify-write: 16 guesses
    sent at once were all checked against a limit of 5, and recorded as 5. Now each attempt is counted before
    its password is checked, so exactly the limit is checked and the rest are refused unchecked."""
    add_user("rita", "radiologist", password="rita-right-password")
    limit = service_settings.login_max_failures
    answers = _parallel(client, [("rita", f"wrong-guess-{n:03d}") for n in range(16)])
    assert answers == {401: limit, 429: 16 - limit}
    assert _parallel(client, [("rita", "rita-right-password")] * 4) == {429: 4}
    with session_scope(app.state.session_factory) as session:
        row = session.get(LoginThrottle, "user:rita")
        assert row is not None and row.failures == limit and row.locked_until is not None

    # One address guessing many names at once: no more than the address's limit is checked.
    address_limit = service_settings.login_address_max_failures
    address_checked = address_limit - limit  # the 5 wrong passwords above came from this address too
    answers = _parallel(client, [(f"guess{n}", "a-password-typed-as-name") for n in range(address_checked + 10)])
    assert answers == {401: address_checked, 429: 10}


def test_a_disabled_accounts_right_password_is_audited_as_such_and_answered_as_a_wrong_one(
    app: FastAPI, client: TestClient, add_user: AddUser
) -> None:
    """A leaver who still knows their password had been audited as a wrong password, like a typo."""
    add_user("rita", "radiologist", password="rita-right-password")
    with session_scope(app.state.session_factory) as session:
        set_active(session, "rita", False, actor="test")
    right, wrong = _login(client, "rita", "rita-right-password"), _login(client, "rita", "wrong-password-123")
    assert (right.status_code, right.json()) == (wrong.status_code, wrong.json()) == (
        401, {"detail": "wrong username or password"}
    )
    outcomes = [outcome for actor, _, outcome in _logins(app) if actor == "rita"]
    assert outcomes == ["success", "refused-disabled", "wrong-password"]
