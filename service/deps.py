"""FastAPI dependencies as named types (``SessionDep``, ``SettingsDep``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.db import session_scope
from service.settings import Settings

__all__ = ["SessionDep", "SettingsDep", "get_session", "get_settings"]


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with session_scope(request.app.state.session_factory) as session:
        yield session


# scope="function": the commit runs when the endpoint returns, before the answer is sent. FastAPI's default
# for a yield dependency ("request") commits after the response has gone out, so a patient view whose audit
# row failed to commit, or a claim that was rolled back, had already been answered 200; now such a failure
# is a 500 and the body (patient data included) never leaves. A streamed body is produced after the commit
# and the session are gone: a streaming endpoint reads what it needs before it returns.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
