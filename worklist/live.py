"""Live updates: ``GET /api/worklist/events`` streams worklist changes as Server-Sent Events.

The stream follows the ``worklist_events`` table by id, so it works the same whichever process made the
change, and a page that reconnects with ``Last-Event-ID`` misses nothing. A stream ends after
``STREAM_SECONDS`` (the page reconnects at once) so that a server shutting down is never held open by pages.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service.auth import AuthenticatedUser
from service.request_params import MAX_ROW_ID
from worklist.access import authenticate_radiologist, bearer_token
from worklist.tables import WorklistEvent

__all__ = ["router", "POLL_SECONDS", "STREAM_SECONDS"]

router = APIRouter()
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 60.0
_EVENT_ID = re.compile(r"[0-9]{1,19}")


def _events_after(factory: sessionmaker[Session], after: int | None) -> tuple[int, list[WorklistEvent]]:
    with factory() as session:
        if after is None:
            # A new subscriber starts from now: it has just loaded the list.
            return int(session.scalar(select(func.max(WorklistEvent.id))) or 0), []
        events = list(
            session.scalars(select(WorklistEvent).where(WorklistEvent.id > after).order_by(WorklistEvent.id).limit(500))
        )
        return (events[-1].id if events else after), events


def _authenticate(request: Request, token: str | None) -> AuthenticatedUser:
    # Its own short session, not the request's: that one would hold a database connection for the whole
    # life of the stream, and fifty open pages would then take fifty pooled connections.
    with request.app.state.session_factory() as session:
        return authenticate_radiologist(request, session, token)


def _resume_after(last_event_id: str | None) -> int | None:
    """The event id a reconnecting page saw last; any other value starts from now, as a new subscriber. Only ASCII
    digits up to 2^63 - 1: '²' (str.isdigit) had failed int() as a 500, as had 5,000 digits (int() refuses more than
    4,300), and 2^63 failed the stream when bound, so the page reconnected with it every second."""
    if last_event_id and _EVENT_ID.fullmatch(last_event_id) and int(last_event_id) <= MAX_ROW_ID:
        return int(last_event_id)
    return None


async def _stream(request: Request, after: int | None) -> AsyncIterator[str]:
    factory = request.app.state.session_factory
    if after is None:
        after, _ = await run_in_threadpool(_events_after, factory, None)
    yield f"retry: 1000\nid: {after}\nevent: hello\ndata: {{}}\n\n"
    started = last_sent = time.monotonic()
    while time.monotonic() - started < STREAM_SECONDS and not await request.is_disconnected():
        after, events = await run_in_threadpool(_events_after, factory, after)
        for event in events:
            data = {"kind": event.kind, "study_instance_uid": event.study_instance_uid, **event.detail}
            yield f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(data)}\n\n"
            last_sent = time.monotonic()
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keepalive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_SECONDS)


@router.get("/events", response_class=StreamingResponse)
async def worklist_events(
    request: Request,
    token: Annotated[str | None, Depends(bearer_token)],
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events: ``added``, ``priority``, ``claimed``, ``released``, ``read``, each with the study UID.

    Pages send the token as a bearer header (the page reads the stream with ``fetch``), so it never
    appears in a URL or an access log.
    """
    await run_in_threadpool(_authenticate, request, token)
    after = _resume_after(last_event_id)
    return StreamingResponse(
        _stream(request, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
