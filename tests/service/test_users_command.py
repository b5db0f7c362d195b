"""The first admin, and ``medscreen users add|list|set-password|set-roles|disable|enable``."""

from __future__ import annotations

import argparse
import io

import pytest
from fastapi.testclient import TestClient

from medscreen.app import create_app
from medscreen.cli import run_command
from medscreen.schema import migrate_all
from service import users_command
from service.db import make_engine, make_session_factory, session_scope
from service.settings import Settings
from service.users import ensure_admin, list_users
from tests.service.conftest import login

# Passwords that installers ship and attackers try first; the generated one must never be among them.
KNOWN_DEFAULTS = {"admin", "password", "changeme", "changethis", "medscreen", "admin123", "123456"}


def run_users(settings: Settings, *argv: str) -> int:
    """Run a ``medscreen users ...`` command through its real parser and handler."""
    parser = argparse.ArgumentParser(prog="medscreen")
    users_command.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    settings.home.mkdir(parents=True, exist_ok=True)  # an installation: `medscreen serve` made its home
    return run_command(args, settings)


def test_first_admin_is_created_once(service_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    url = service_settings.resolved_database_url
    migrate_all(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    password = ensure_admin(factory)
    assert password is not None
    assert ensure_admin(factory) is None  # every later start: nothing to show
    engine.dispose()

    assert password.lower() not in KNOWN_DEFAULTS and len(password) >= 20
    assert password not in caplog.text  # the serve command shows it to the operator; it never reaches the log

    app = create_app(service_settings)
    with TestClient(app) as client:
        me = client.get("/api/auth/me", headers=login(client, "admin", password)).json()
    app.state.engine.dispose()
    assert me == {"username": "admin", "roles": ["admin"]}


def test_two_installs_get_different_passwords(tmp_path_factory: pytest.TempPathFactory) -> None:
    passwords = []
    for _ in range(2):
        url = f"sqlite:///{tmp_path_factory.mktemp('install') / 'medscreen.db'}"
        migrate_all(url)
        engine = make_engine(url)
        passwords.append(ensure_admin(make_session_factory(engine)))
        engine.dispose()
    assert None not in passwords and passwords[0] != passwords[1]


def test_users_add_list_set_password(
    service_settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_users(service_settings, "users", "add", "rita", "--role", "radiologist", "--role", "quality") == 0
    generated = capsys.readouterr().out.split("password: ")[1].strip()

    monkeypatch.setattr("sys.stdin", io.StringIO("paul-chose-this-one\n"))
    assert run_users(service_settings, "users", "add", "paul", "--role", "paediatrician", "--password-stdin") == 0
    assert "password" not in capsys.readouterr().out

    assert run_users(service_settings, "users", "add", "rita", "--role", "quality") == 1
    assert "exists" in capsys.readouterr().err
    # 'Rita' beside 'rita' had been a second account: the audit log split over names that read the same.
    assert run_users(service_settings, "users", "add", "Rita", "--role", "admin") == 1
    assert "user 'rita' exists (user names differ by more than case)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_users(service_settings, "users", "add", "eve", "--role", "superuser")
    capsys.readouterr()

    assert run_users(service_settings, "users", "list") == 0
    listing = [line.split("\t")[:3] for line in capsys.readouterr().out.splitlines()]
    assert listing == [["paul", "paediatrician", "active"], ["rita", "quality,radiologist", "active"]]

    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert run_users(service_settings, "users", "set-password", "rita", "--password-stdin") == 1
    assert "at least 12" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("rita-has-a-new-one\n"))
    assert run_users(service_settings, "users", "set-password", "rita", "--password-stdin") == 0

    app = create_app(service_settings)
    with TestClient(app) as client:
        assert client.post("/api/auth/token", data={"username": "rita", "password": generated}).status_code == 401
        login(client, "rita", "rita-has-a-new-one")
        login(client, "paul", "paul-chose-this-one")
        admin_audit = app.state.session_factory
    with session_scope(admin_audit) as session:
        assert [user.username for user in list_users(session)] == ["paul", "rita"]
        from sqlalchemy import select

        from service.tables import AuditEvent

        # Logins are audited too (auth.login); this test is about the account changes the CLI made.
        actions = session.execute(
            select(AuditEvent.action, AuditEvent.subject_id, AuditEvent.actor).where(AuditEvent.action != "auth.login")
        ).all()
    app.state.engine.dispose()
    assert [(action, subject) for action, subject, _ in actions] == [
        ("user.create", "rita"),
        ("user.create", "paul"),
        ("user.set_password", "rita"),
    ]
    assert all(actor.startswith("cli:") for _, _, actor in actions)


def test_users_set_roles_disable_enable(
    service_settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("rita-password-long\n"))
    assert run_users(service_settings, "users", "add", "rita", "--role", "radiologist", "--password-stdin") == 0
    app = create_app(service_settings)
    with TestClient(app) as client:
        headers = login(client, "rita", "rita-password-long")
        assert run_users(service_settings, "users", "set-roles", "rita", "--role", "quality") == 0
        assert client.get("/api/auth/me", headers=headers).json()["roles"] == ["quality"]
        assert run_users(service_settings, "users", "disable", "rita") == 0
        assert client.get("/api/auth/me", headers=headers).status_code == 401
        refused = client.post("/api/auth/token", data={"username": "rita", "password": "rita-password-long"})
        assert refused.status_code == 401
        assert run_users(service_settings, "users", "enable", "rita") == 0
        assert client.get("/api/auth/me", headers=headers).status_code == 200
        assert run_users(service_settings, "users", "disable", "nobody") == 1
    app.state.engine.dispose()
    assert "no user 'nobody'" in capsys.readouterr().err


class _Terminal(io.StringIO):
    """A stdin that says it is a terminal (getpass itself is replaced: no real tty in the test)."""

    def isatty(self) -> bool:
        return True


def test_set_password_without_terminal_or_cancelled_is_one_line(
    service_settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each case had been an EOFError or KeyboardInterrupt traceback, and an unknown user was prompted for first.
    monkeypatch.setattr("sys.stdin", io.StringIO("rita-password-long\n"))
    assert run_users(service_settings, "users", "add", "rita", "--role", "radiologist", "--password-stdin") == 0
    capsys.readouterr()
    prompts: list[str] = []

    def error_line() -> str:
        lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("medscreen: home ")]
        assert len(lines) == 1, lines
        return lines[0]

    def typed(*answers: str | type[BaseException]) -> None:
        queue = list(answers)

        def getpass(prompt: str = "") -> str:
            prompts.append(prompt)
            answer = queue.pop(0)
            if isinstance(answer, str):
                return answer
            raise answer

        monkeypatch.setattr("getpass.getpass", getpass)

    typed("never-asked-for-this")
    monkeypatch.setattr("sys.stdin", _Terminal(""))
    assert run_users(service_settings, "users", "set-password", "nobody") == 1
    assert error_line() == "medscreen users set-password: no user 'nobody'"
    assert prompts == []

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # a script, ssh without -t: no terminal
    assert run_users(service_settings, "users", "set-password", "rita") == 1
    assert error_line() == (
        "medscreen users set-password: no terminal to prompt on; pipe the password with --password-stdin"
    )
    assert run_users(service_settings, "users", "set-password", "rita", "--password-stdin") == 1
    assert "no password on stdin" in error_line()

    monkeypatch.setattr("sys.stdin", _Terminal(""))
    typed(EOFError)  # Ctrl-D at the prompt
    assert run_users(service_settings, "users", "set-password", "rita") == 1
    assert error_line() == "medscreen users set-password: cancelled (end of input)"
    typed("rita-new-password", KeyboardInterrupt)  # Ctrl-C at the second prompt
    assert run_users(service_settings, "users", "set-password", "rita") == 130
    assert error_line() == "medscreen users set-password: cancelled"
    typed("rita-new-password", "rita-new-password")  # the interactive path still sets it
    assert run_users(service_settings, "users", "set-password", "rita") == 0
    assert capsys.readouterr().out == "password of rita set\n"

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # `users add --password-stdin` reads the same way
    assert run_users(service_settings, "users", "add", "paul", "--role", "paediatrician", "--password-stdin") == 1
    assert "no password on stdin" in error_line()

    app = create_app(service_settings)
    with TestClient(app) as client:
        login(client, "rita", "rita-new-password")
    app.state.engine.dispose()
