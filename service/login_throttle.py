"""Login throttling: failed passwords counted per account and per address, locks an admin can lift.

After ``MEDSCREEN_LOGIN_MAX_FAILURES`` failures in a row an account is locked for
``MEDSCREEN_LOGIN_LOCKOUT_MINUTES`` (names that are not accounts are counted and locked alike, so a lock
does not tell which accounts exist); after ``MEDSCREEN_LOGIN_ADDRESS_MAX_FAILURES`` failures from one
address within that time the address is refused. Refusals are decided before any bcrypt work, so a
guesser cannot load the server with password checks. State is in the database: it holds across
restarts and across HTTP processes.

An attempt is counted *before* its password is checked, in one atomic statement that also refuses a locked
key (an upsert with ``RETURNING``; PostgreSQL locks the row, SQLite serialises the write), and the count is
committed before bcrypt runs. Checking the lock first and counting the failure afterwards, as a
read-modify-write, had let 16 parallel guesses all be checked against a limit of 5 and be recorded as 5.
A right password then gives its attempt back: the account's run ends, the address's count drops by one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BindParameter, and_, case, delete, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.db import UTCDateTime
from service.settings import Settings
from service.tables import LoginThrottle

__all__ = ["LoginRefused", "LoginAttempt", "reserve_login_attempt", "record_login_success", "unlock_account"]


@dataclass(frozen=True)
class LoginRefused:
    """Why a login is refused before its password is checked, and for how long."""

    scope: str  # "account" or "address"
    retry_after_s: int


@dataclass(frozen=True)
class _Reservation:
    key: str
    locked_it: bool  # this attempt was the one that reached the limit and set the lock


@dataclass(frozen=True)
class LoginAttempt:
    """An attempt counted against its account and its address, its password not yet checked."""

    account: _Reservation
    address: _Reservation

    @property
    def locked(self) -> list[str]:
        """The scopes this attempt locked, should its password be wrong."""
        return [scope for scope, held in (("account", self.account), ("address", self.address)) if held.locked_it]


def _user_key(username: str) -> str:
    return f"user:{username[:150]}"


def _address_key(address: str) -> str:
    return f"addr:{address[:150]}"


def _at(value: datetime) -> BindParameter[datetime]:
    # Typed, so that SQLite gets the same UTC text as the column holds and the comparisons are right.
    return literal(value, UTCDateTime())


def _reserve(session: Session, key: str, limit: int, window: timedelta, now: datetime) -> int | None:
    """Count one attempt under ``key`` unless it is locked: the count including this one, or None if locked."""
    row = LoginThrottle
    lock_until = now + window
    run_over = or_(
        row.first_failure_at < _at(now - window),
        and_(row.locked_until.is_not(None), row.locked_until <= _at(now)),
    )
    count = case((run_over, 1), else_=row.failures + 1)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(row)
        .values(key=key, failures=1, first_failure_at=now, locked_until=lock_until if limit <= 1 else None)
        .on_conflict_do_update(
            index_elements=[row.key],
            set_={
                "failures": count,
                "first_failure_at": case((run_over, _at(now)), else_=row.first_failure_at),
                "locked_until": case((count >= limit, _at(lock_until)), (run_over, None), else_=row.locked_until),
            },
            # A locked key is not counted: no row comes back and the attempt is refused.
            where=or_(row.locked_until.is_(None), row.locked_until <= _at(now)),
        )
        .returning(row.failures)
    )
    return session.execute(statement).scalar_one_or_none()


def _give_back(session: Session, reservation: _Reservation) -> None:
    """Undo one counted attempt that was no failure (a right password, or refused by the other scope)."""
    values: dict[str, object] = {"failures": LoginThrottle.failures - 1}
    if reservation.locked_it:
        values["locked_until"] = None
    session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == reservation.key, LoginThrottle.failures > 0)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _refusal(session: Session, scope: str, key: str, now: datetime) -> LoginRefused:
    until = session.scalar(select(LoginThrottle.locked_until).where(LoginThrottle.key == key))
    seconds = (until - now).total_seconds() if until is not None else 1.0
    return LoginRefused(scope, max(1, math.ceil(seconds)))


def reserve_login_attempt(
    session: Session, username: str, address: str, settings: Settings, now: datetime
) -> LoginAttempt | LoginRefused:
    """Count an attempt against the address and the account before its password is checked, or refuse it.

    The caller commits at once, so that parallel attempts see the count before any of them runs bcrypt: with
    the limit at N, at most N passwords are checked before the lock.
    """
    window = timedelta(minutes=settings.login_lockout_minutes)
    address_key, user_key = _address_key(address), _user_key(username)
    address_count = _reserve(session, address_key, settings.login_address_max_failures, window, now)
    if address_count is None:
        return _refusal(session, "address", address_key, now)
    from_address = _Reservation(address_key, address_count >= settings.login_address_max_failures)
    account_count = _reserve(session, user_key, settings.login_max_failures, window, now)
    if account_count is None:
        # A locked account's refusals do not count against the address (they check no password).
        _give_back(session, from_address)
        return _refusal(session, "account", user_key, now)
    account = _Reservation(user_key, account_count >= settings.login_max_failures)
    return LoginAttempt(account=account, address=from_address)


def record_login_success(session: Session, attempt: LoginAttempt) -> None:
    """A right password ends the account's run of failures and gives the address its attempt back (the address
    keeps its failures: one good account must not reset a guesser's budget against the others)."""
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == attempt.account.key))
    _give_back(session, attempt.address)


def unlock_account(session: Session, username: str) -> bool:
    """Lift an account's lock and forget its failures (an admin's action, audited by the caller)."""
    existed = session.scalar(select(LoginThrottle.key).where(LoginThrottle.key == _user_key(username)))
    session.execute(delete(LoginThrottle).where(LoginThrottle.key == _user_key(username)))
    return existed is not None
