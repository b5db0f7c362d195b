"""``/api/outbox``: what waits for the RIS and the EMR, and what they refused, with the reasons.

Payloads are not shown (they carry patient identity); labels, attempts and the peer's last answer are.
A message set aside (``rejected``) can be offered again once the cause is fixed at the peer (audited).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import func, select

from service.audit import record_audit
from service.auth import AuthenticatedUser, Role, require_role
from service.db import utcnow
from service.deps import SessionDep
from service.error_responses import AUTHENTICATED, error_responses
from service.outbox import UNBUILT, OutboxMessage, OutboxState, newer_of_topic
from service.request_params import RowId

__all__ = ["router"]

router = APIRouter(prefix="/api/outbox", tags=["outbox"], responses=AUTHENTICATED)
Engineer = Annotated[AuthenticatedUser, Depends(require_role(Role.ml_engineer))]
# The producers' channels (worklist.ris_feed.CHANNEL, screening/inference fhir_feed.FHIR_CHANNEL; service may not
# import them): a mistyped channel is a 422 naming these, not an empty list.
Channel = Literal["hl7", "fhir"]


class OutboxMessageOut(BaseModel):
    id: int
    channel: str
    key: str
    label: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    response: str | None
    created_at: datetime
    sent_at: datetime | None


class OutboxPage(BaseModel):
    counts: dict[str, dict[str, int]]  # channel -> state -> messages
    items: list[OutboxMessageOut]


@router.get("", response_model=OutboxPage, summary="Messages for the RIS (hl7) and EMR (fhir), newest first")
def list_outbox(
    session: SessionDep, user: Engineer,
    channel: Annotated[Channel | None, Query()] = None,
    state: Annotated[OutboxState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> OutboxPage:
    counts: dict[str, dict[str, int]] = {}
    for ch, st, n in session.execute(
        select(OutboxMessage.channel, OutboxMessage.state, func.count()).group_by(OutboxMessage.channel, OutboxMessage.state)
    ):
        counts.setdefault(str(ch), {})[str(st)] = int(n)
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if channel:
        query = query.where(OutboxMessage.channel == channel)
    if state:
        query = query.where(OutboxMessage.state == state)
    items = [OutboxMessageOut.model_validate(m, from_attributes=True) for m in session.scalars(query)]
    return OutboxPage(counts=counts, items=items)


@router.post(
    "/{message_id}/replay", response_model=OutboxMessageOut, summary="Offer a set-aside message again",
    responses=error_responses(404, 409),
)
def replay_message(message_id: RowId, session: SessionDep, user: Engineer) -> OutboxMessageOut:
    message = session.get(OutboxMessage, message_id)
    if message is None:
        raise HTTPException(404, detail=f"no outbox message {message_id}")
    if message.state != OutboxState.rejected:
        raise HTTPException(409, detail=f"message {message_id} is {message.state}, not rejected")
    if not message.payload:
        raise HTTPException(409, detail=f"message {message_id} {message.last_error or UNBUILT}: there is nothing to "
                                        "send (the service log has the traceback)")
    newer = newer_of_topic(session, message)
    if newer is not None:
        raise HTTPException(409, detail=f"message {message_id} is superseded by message {newer.id} ({newer.label}, "
                                        f"{newer.state}): replaying it would send the peer an older state")
    message.state = OutboxState.pending
    message.attempts = 0
    message.next_attempt_at = utcnow()
    record_audit(session, user.username, "outbox.replay", "outbox", str(message_id),
                 {"channel": message.channel, "label": message.label})
    session.flush()
    return OutboxMessageOut.model_validate(message, from_attributes=True)
