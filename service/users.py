"""User accounts: bcrypt-hashed passwords, roles, and the first admin created at first start."""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.audit import record_audit
from service.auth import hash_password
from service.db import session_scope, utcnow
from service.errors import InvalidUsername, UnknownRole, UnknownUser, UserExists
from service.tables import ROLES, Role, User, UserRole

__all__ = [
    "ADMIN_USERNAME",
    "create_user",
    "ensure_admin",
    "generate_password",
    "get_user",
    "list_users",
    "set_active",
    "set_password",
    "set_roles",
    "write_initial_admin_password",
    "INITIAL_ADMIN_PASSWORD_FILE",
]

logger = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def _check_roles(roles: Iterable[str]) -> list[str]:
    checked = sorted(set(roles))
    unknown = [role for role in checked if role not in ROLES]
    if unknown:
        raise UnknownRole(f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(ROLES)}")
    return checked


def get_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def create_user(session: Session, username: str, password: str, roles: Iterable[str], *, actor: str) -> User:
    """Add an account (flushed, not committed: the caller's transaction also holds its audit line)."""
    if not _USERNAME.match(username):
        raise InvalidUsername(
            f"username {username!r}: 1-64 letters, digits or . _ @ -, starting with a letter or digit"
        )
    checked_roles = _check_roles(roles)
    # A name that differs from an account's only in case is that person again, or a look-alike of them: 'Rita' beside
    # 'rita' had been a second account, which split the audit log over names that read the same.
    existing = session.scalars(select(User.username).where(func.lower(User.username) == username.lower())).first()
    if existing is not None:
        raise UserExists(f"user {existing!r} exists" + (" (user names differ by more than case)" if existing != username else ""))
    user = User(username=username, password_hash=hash_password(password), is_active=True)
    user.role_rows = [UserRole(role=role) for role in checked_roles]
    session.add(user)
    session.flush()
    record_audit(session, actor, "user.create", "user", username, {"roles": checked_roles})
    return user


def set_password(session: Session, username: str, password: str, *, actor: str) -> None:
    user = get_user(session, username)
    if user is None:
        raise UnknownUser(f"no user {username!r}")
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    record_audit(session, actor, "user.set_password", "user", username)


def set_roles(session: Session, username: str, roles: Iterable[str], *, actor: str) -> None:
    user = get_user(session, username)
    if user is None:
        raise UnknownUser(f"no user {username!r}")
    checked_roles = _check_roles(roles)
    user.role_rows = [UserRole(role=role) for role in checked_roles]
    record_audit(session, actor, "user.set_roles", "user", username, {"roles": checked_roles})


def set_active(session: Session, username: str, active: bool, *, actor: str) -> None:
    """Disable (or re-enable) an account: its tokens stop working at once; its audit history stays."""
    user = get_user(session, username)
    if user is None:
        raise UnknownUser(f"no user {username!r}")
    user.is_active = active
    record_audit(session, actor, "user.enable" if active else "user.disable", "user", username)


INITIAL_ADMIN_PASSWORD_FILE = "initial-admin-password"


def write_initial_admin_password(home: Path, password: str) -> Path:
    """Keep the first admin's password in an owner-only file under the home (never in the log stream)."""
    path = home / INITIAL_ADMIN_PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    path.chmod(0o600)
    return path


def ensure_admin(session_factory: sessionmaker[Session]) -> str | None:
    """Create user ``admin`` with a random password when there is no user yet, and return that password.

    Returns None when any user exists (every later start), so the password is shown once only.
    The caller (the ``serve`` command) prints it; it is never logged.
    """
    password = generate_password()
    try:
        with session_scope(session_factory) as session:
            if session.scalar(select(func.count()).select_from(User)):
                return None
            create_user(session, ADMIN_USERNAME, password, [Role.admin], actor="system")
    except (IntegrityError, UserExists):
        # Another process of the same start created it first; that one shows the password.
        return None
    logger.info("created the first user %r with role admin", ADMIN_USERNAME)
    return password
