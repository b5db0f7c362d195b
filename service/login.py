"""``POST /api/auth/token``: login with throttling and lockout, every attempt audited; an admin lifts a lock;
``POST /api/auth/logout`` signs the caller's token out on the server.

Each attempt (success, wrong password, a disabled account's right password, refused by a lock) is one audit row in
the ``auth`` actions, committed even when the answer is an error. A name that is not an account is audited by digest only: people
type passwords into the username field, and the audit log must not keep them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.audit import record_audit, subject_digest
from service.auth import (
    AuthenticatedUser,
    CurrentUser,
    Token,
    check_login,
    create_access_token,
    require_role,
    signing_key,
    unauthorized,
)
from service.db import utcnow
from service.deps import SessionDep, SettingsDep
from service.error_responses import AUTHENTICATED, error_responses
from service.login_throttle import LoginRefused, record_login_success, reserve_login_attempt, unlock_account
from service.tables import RevokedToken, Role, User

__all__ = ["router", "audit_login"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def audit_login(session: Session, username: str, outcome: str, address: str, **detail: object) -> None:
    known = session.scalar(select(User.id).where(User.username == username)) is not None
    actor = username if known else "anonymous"
    subject = username if known else f"unknown:{subject_digest(username)}"
    record_audit(session, actor, "auth.login", "user", subject, {"outcome": outcome, "address": address, **detail})


@router.post(
    "/token",
    response_model=Token,
    responses=error_responses(
        401, 413, 429, described={401: "Wrong username or password.", 413: "The form is over 64 kB."}
    ),
)
def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
) -> Token:
    address = _client_address(request)
    now = utcnow()
    attempt = reserve_login_attempt(session, form.username, address, settings, now)
    if isinstance(attempt, LoginRefused):
        audit_login(session, form.username, f"refused-{attempt.scope}-locked", address)
        session.commit()  # the refusal is audited even though the answer is an error
        logger.warning("login refused: %s locked (user digest %s)", attempt.scope, subject_digest(form.username))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"too many failed logins for this {attempt.scope}; try again in {attempt.retry_after_s} s"
            + (" or ask an admin to unlock the account" if attempt.scope == "account" else ""),
            headers={"Retry-After": str(attempt.retry_after_s)},
        )
    # The attempt is counted and committed before bcrypt runs, so parallel guesses see each other's count.
    session.commit()
    user, outcome = check_login(session, form.username, form.password)
    if user is None:
        # The answer stays "wrong username or password": only the audit log tells a disabled account's right password.
        audit_login(session, form.username, outcome, address, locked=attempt.locked)
        session.commit()
        logger.warning("login refused for user digest %s", subject_digest(form.username))
        raise unauthorized("wrong username or password")
    record_login_success(session, attempt)
    audit_login(session, user.username, "success", address)
    token = create_access_token(
        user.username, signing_key(request, settings), timedelta(minutes=settings.access_token_minutes)
    )
    logger.info("login user=%s", user.username)
    return Token(access_token=token)


@router.post("/unlock/{username}", responses=AUTHENTICATED)
def unlock(
    # At most a username's 64 characters: a longer name is no account, and on PostgreSQL it had overflowed the
    # audit row's subject_id (128) into a 500.
    username: Annotated[str, Path(max_length=64, description="the account's username")],
    session: SessionDep,
    admin: Annotated[AuthenticatedUser, Depends(require_role(Role.admin))],
) -> dict[str, object]:
    """Lift an account's login lock before it expires (admin; also ``medscreen users unlock NAME``)."""
    lifted = unlock_account(session, username)
    record_audit(session, admin.username, "user.unlock", "user", username, {"was_locked": lifted})
    return {"username": username, "unlocked": lifted}


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(401))
def logout(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """Sign this token out: it is refused from now on, on every node (the user's other sessions stay signed in).

    The pages had only dropped the token from the tab, so a copy of it (a proxy's log, a browser extension, a shared
    workstation's memory) kept opening patients' records until it expired, up to a shift later."""
    claims = request.state.token_claims
    now = utcnow()
    jti = claims.get("jti")
    if isinstance(jti, str):
        session.merge(
            RevokedToken(jti=jti, username=user.username, expires_at=datetime.fromtimestamp(claims["exp"], UTC))
        )
    # A signed-out token past its expiry is refused by its signature alone: its row is no longer needed.
    session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))
    record_audit(session, user.username, "auth.logout", "user", user.username, {"signed_out": isinstance(jti, str)})
    return Response(status_code=status.HTTP_204_NO_CONTENT)
