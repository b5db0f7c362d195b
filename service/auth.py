"""Login and role checks: OAuth2 password flow, bcrypt password hashes, signed JWT bearer tokens.

``POST /api/auth/token`` (``service/login.py``) trades a username and password for a token; every protected endpoint declares
``CurrentUser`` or ``Depends(require_role(...))``. Roles are read from the database on each request, so a
revoked role or a disabled account takes effect at once, not when the token expires; so does a token signed out with
``POST /api/auth/logout`` (its ``jti`` in ``revoked_tokens``).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import bcrypt
import jwt
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import utcnow
from service.deps import SessionDep, SettingsDep
from service.error_responses import error_responses
from service.errors import SecretKeyError, WeakPassword
from service.settings import Settings
from service.tables import ROLES, RevokedToken, Role, User

__all__ = [
    "AuthenticatedUser",
    "CurrentUser",
    "MIN_PASSWORD_LENGTH",
    "Role",
    "Token",
    "authenticate",
    "check_login",
    "create_access_token",
    "decode_access_token",
    "hash_password",
    "load_or_create_secret_key",
    "require_role",
    "router",
    "signing_key",
    "unauthorized",
    "verify_password",
]

logger = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
# bcrypt only reads the first 72 bytes; refuse longer passwords rather than silently ignore their tail.
MAX_PASSWORD_BYTES = 72
ALGORITHM = "HS256"
# How far another node's clock may run ahead of this one's for a token it issued (``iat``) to be accepted.
CLOCK_SKEW = timedelta(seconds=60)
SECRET_KEY_FILE = "secret_key"
# Checked when the user does not exist, so that a wrong username costs as long as a wrong password
# and response times do not reveal which accounts exist. A fixed hash of a discarded random password,
# with the same cost (12) as real ones, so that importing this module does no bcrypt work.
_DUMMY_HASH = "$2b$12$Rsvt3up78EqcYOjUOjO/tOqFSZOEhe4MTPafwngRzsQGQy7T4Ow1a"
BCRYPT_ROUNDS = 12


# --- passwords ---------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    encoded = password.encode()
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise WeakPassword(
            f"a password may have at most {MAX_PASSWORD_BYTES} bytes (bcrypt ignores the rest)"
        )
    return bcrypt.hashpw(encoded, bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def verify_password(password: str, password_hash: str) -> bool:
    encoded = password.encode()
    if len(encoded) > MAX_PASSWORD_BYTES:
        return False
    return bcrypt.checkpw(encoded, password_hash.encode())


def check_login(session: Session, username: str, password: str) -> tuple[User | None, str]:
    """The active user with this username and password (else None), and the outcome for the audit log: ``success``,
    ``wrong-password``, or ``refused-disabled`` for a disabled account's right password (a leaver who still knows it,
    which had been audited as a wrong password). One bcrypt check either way, so the time reveals nothing."""
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        verify_password(password, _DUMMY_HASH)
        return None, "wrong-password"
    if not verify_password(password, user.password_hash):
        return None, "wrong-password"
    return (user, "success") if user.is_active else (None, "refused-disabled")


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this username and password, else None (same cost either way)."""
    return check_login(session, username, password)[0]


# --- signing key -------------------------------------------------------------------------------


def load_or_create_secret_key(settings: Settings) -> str:
    """The token signing key: ``MEDSCREEN_SECRET_KEY`` if set, else ``$MEDSCREEN_HOME/secret_key``.

    The file is generated at first start (mode 0600) so that tokens survive a restart and every worker
    process of one installation signs with the same key.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = settings.home / SECRET_KEY_FILE
    if not path.exists():
        _create_secret_key_file(path)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretKeyError(f"{path} is readable by other users (mode {stat.filemode(mode)}): chmod 600 it")
    key = path.read_text().strip()
    if len(key) < 32:
        raise SecretKeyError(f"{path} holds fewer than 32 characters: delete it to generate a new key")
    return key


def _create_secret_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: a process starting at the same
    # moment either finds no file or the complete key, never a half-written one, and the first link wins.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
            logger.info("generated the token signing key at %s", path)
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)


# --- tokens ------------------------------------------------------------------------------------


def create_access_token(username: str, key: str, lifetime: timedelta, *, now: datetime | None = None) -> str:
    issued = now or utcnow()
    # iat keeps its fraction of a second (RFC 7519 allows it) so a password change a moment after a login
    # is still ordered correctly against that login's token.
    # jti names this one token, so that signing out (POST /api/auth/logout) can refuse it and only it.
    claims = {
        "sub": username, "iat": issued.timestamp(), "exp": int((issued + lifetime).timestamp()),
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def decode_access_token(token: str, key: str) -> dict[str, Any]:
    """The claims of a valid, unexpired token; raises ``jwt.InvalidTokenError`` otherwise.

    An ``iat`` up to ``CLOCK_SKEW`` ahead of this clock is accepted: PyJWT refuses any future ``iat``, so two nodes
    on one database with ordinary NTP skew answered "invalid token" to a login made a second ago on the other.
    Expiry stays exact."""
    claims = jwt.decode(
        token, key, algorithms=[ALGORITHM], options={"require": ["sub", "iat", "exp"], "verify_iat": False}
    )
    issued = claims["iat"]
    if not isinstance(issued, int | float) or isinstance(issued, bool):
        raise jwt.InvalidIssuedAtError("Issued At claim (iat) must be a number.")
    if issued > utcnow().timestamp() + CLOCK_SKEW.total_seconds():
        raise jwt.ImmatureSignatureError("The token is not yet valid (iat)")
    return claims


# --- dependencies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthenticatedUser:
    """The caller of a request, as the endpoints see it."""

    username: str
    roles: frozenset[str]

    def has_role(self, *roles: str) -> bool:
        """True when the user holds one of ``roles``; ``admin`` holds them all."""
        return Role.admin in self.roles or any(role in self.roles for role in roles)


_bearer = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def signing_key(request: Request, settings: Settings) -> str:
    key = getattr(request.app.state, "secret_key", None)
    if key is None:
        # An app assembled without create_app: resolve once and keep it with the app, not in a global.
        key = load_or_create_secret_key(settings)
        request.app.state.secret_key = key
    return str(key)


def get_current_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(_bearer)],
) -> AuthenticatedUser:
    if not token:
        raise unauthorized("not authenticated")
    try:
        claims = decode_access_token(token, signing_key(request, settings))
    except jwt.ExpiredSignatureError:
        raise unauthorized("token expired") from None
    except jwt.InvalidTokenError:
        raise unauthorized("invalid token") from None
    user = session.scalars(select(User).where(User.username == claims["sub"])).one_or_none()
    if user is None or not user.is_active:
        raise unauthorized("unknown or disabled user")
    if claims["iat"] < user.password_changed_at.timestamp():
        raise unauthorized("token issued before the last password change")
    # A token issued before tokens had a jti cannot be signed out; it runs to its expiry, at most one lifetime.
    jti = claims.get("jti")
    if jti is not None and (not isinstance(jti, str) or session.get(RevokedToken, jti) is not None):
        raise unauthorized("token signed out")
    request.state.token_claims = claims  # for POST /api/auth/logout: which token to sign out
    return AuthenticatedUser(username=user.username, roles=user.roles)


CurrentUser = Annotated[AuthenticatedUser, Depends(get_current_user)]


def require_role(*roles: Role) -> Callable[[AuthenticatedUser], AuthenticatedUser]:
    """A dependency that lets through users holding one of ``roles`` (or ``admin``): 401 without a valid
    token, 403 without the role. Use as ``Depends(require_role(Role.radiologist))``; it returns the user."""
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        raise ValueError(f"require_role needs roles among {ROLES}, got {roles}")
    wanted = tuple(str(role) for role in roles)

    def check_role(user: CurrentUser) -> AuthenticatedUser:
        if not user.has_role(*wanted):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"needs role {' or '.join(wanted)}")
        return user

    return check_role


# --- endpoints ---------------------------------------------------------------------------------


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


class Me(BaseModel):
    username: str
    roles: list[str]


router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.get("/me", response_model=Me, responses=error_responses(401))
def me(user: CurrentUser) -> Me:
    return Me(username=user.username, roles=sorted(user.roles))
