"""Login throttling: failed passwords counted per account and per address, locks an admin can lift.

After ``MEDSCREEN_LOGIN_MAX_FAILURES`` failures in a row an account is locked for
``MEDSCREEN_LOGIN_LOCKOUT_MINUTES`` (names that are not accounts are counted and locked alike, so a lock
does not tell which accounts exist); after ``MEDSCREEN_LOGIN_ADDRESS_MAX_FAILURES`` failures from one
address within that time the address is refused. Refusals are decided before any bcrypt work, so a
guesser cannot load the server with password checks. State is in the database: it holds across
restarts and across HTTP processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.settings import Settings
from service.tables import LoginThrottle

__all__ = ["LoginRefused", "check_login_allowed", "record_login_failure", "record_login_success", "unlock_account"]


@dataclass(frozen=True)
class LoginRefused:
    """Why a login is refused before its password is checked, and for how long."""

    scope: str  # "account" or "address"
    retry_after_s: int


def _user_key(username: str) -> str:
    return f"user:{username[:150]}"


def _address_key(address: str) -> str:
    return f"addr:{address[:150]}"


def _row(session: Session, key: str) -> LoginThrottle | None:
    return session.get(LoginThrottle, key)


def check_login_allowed(session: Session, username: str, address: str, now: datetime) -> LoginRefused | None:
    for scope, key in (("address", _address_key(address)), ("account", _user_key(username))):
        row = _row(session, key)
        if row is not None and row.locked_until is not None and row.locked_until > now:
            return LoginRefused(scope, max(1, math.ceil((row.locked_until - now).total_seconds())))
    return None


def _count(session: Session, key: str, limit: int, window: timedelta, now: datetime) -> bool:
    """Count one failure under ``key``; True when it reaches ``limit`` and the key is now locked."""
    row = _row(session, key)
    if row is None:
        row = LoginThrottle(key=key, failures=0, first_failure_at=now)
        session.add(row)
    elif now - row.first_failure_at > window or (row.locked_until is not None and row.locked_until <= now):
        row.failures, row.first_failure_at, row.locked_until = 0, now, None
    row.failures += 1
    if row.failures >= limit:
        row.locked_until = now + window
        return True
    return False


def record_login_failure(session: Session, username: str, address: str, settings: Settings, now: datetime) -> list[str]:
    """Count a wrong password for the account and the address; returns the scopes that became locked."""
    window = timedelta(minutes=settings.login_lockout_minutes)
    locked = []
    if _count(session, _user_key(username), settings.login_max_failures, window, now):
        locked.append("account")
    if _count(session, _address_key(address), settings.login_address_max_failures, window, now):
        locked.append("address")
    return locked


def record_login_success(session: Session, username: str) -> None:
    """A right password ends the account's run of failures (the address keeps its count: one good
    account must not reset a guesser's budget against the others)."""
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == _user_key(username)))


def unlock_account(session: Session, username: str) -> bool:
    """Lift an account's lock and forget its failures (an admin's action, audited by the caller)."""
    existed = session.scalar(select(LoginThrottle.key).where(LoginThrottle.key == _user_key(username)))
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == _user_key(username)))
    return existed is not None
