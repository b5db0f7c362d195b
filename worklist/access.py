"""Role checks for the worklist's two hot endpoints (the list and the live feed), done in one step.

The shared dependencies (``SessionDep`` then ``CurrentUser`` then ``require_role``) each hop to a worker
thread and the session stays open for the whole request; the list is asked for on every live update by
every open page, so it checks the token and role in the same thread and session as its own queries, and
the live feed in a session of its own that is closed before the stream starts.
"""

from __future__ import annotations

from fastapi import HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from service.auth import AuthenticatedUser, Role, get_current_user

__all__ = ["bearer_token", "authenticate_radiologist"]

bearer_token = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


def authenticate_radiologist(request: Request, session: Session, token: str | None) -> AuthenticatedUser:
    """The caller, if the token is valid and they hold ``radiologist`` (or ``admin``): else 401 / 403."""
    user = get_current_user(request, session, request.app.state.settings, token)
    if not user.has_role(Role.radiologist):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="needs role radiologist")
    return user
