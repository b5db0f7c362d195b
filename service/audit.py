"""The append-only audit log: who viewed or changed which subject (study, patient, user), and when.

Rows are only ever inserted: no code here updates or deletes them, and a database trigger refuses
UPDATE and DELETE (and TRUNCATE on PostgreSQL). ``GET /api/audit`` lets an admin query it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from service.auth import AuthenticatedUser, require_role
from service.db import utcnow
from service.deps import SessionDep
from service.error_responses import AUTHENTICATED
from service.request_params import Offset
from service.tables import AuditEvent, Role

__all__ = ["record_audit", "subject_digest", "query_audit", "events_about", "router", "AuditEventOut", "AuditPage"]

logger = logging.getLogger(__name__)


def subject_digest(subject_id: str) -> str:
    """A short stable digest that lets log lines be correlated without showing a patient or study id."""
    return hashlib.sha256(subject_id.encode()).hexdigest()[:12]


def record_audit(
    session: Session,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add one audit line to the caller's transaction: it commits or rolls back with the change it describes.

    ``action`` is a dotted verb such as ``study.view``, ``study.claim``, ``user.create``. The subject id is
    stored as given (the audit log must name the study) but only its digest goes to the log stream.
    """
    event = AuditEvent(
        at=utcnow(),
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        detail=detail,
    )
    session.add(event)
    logger.info(
        "audit actor=%s action=%s subject_type=%s subject=%s",
        actor,
        action,
        subject_type,
        subject_digest(subject_id),
    )
    return event


def query_audit(
    session: Session,
    *,
    actor: str | None = None,
    actions: Sequence[str] | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    offset: int = 0,
    newest_first: bool = True,
) -> tuple[list[AuditEvent], int]:
    """Audit events matching every given filter, and how many match in all: the one way to read the log.

    Naive ``since``/``until`` values are taken as UTC; ``until`` is exclusive.
    """
    conditions: list[ColumnElement[bool]] = []
    if actor is not None:
        conditions.append(AuditEvent.actor == actor)
    if actions is not None:
        conditions.append(AuditEvent.action.in_(list(actions)))
    if subject_type is not None:
        conditions.append(AuditEvent.subject_type == subject_type)
    if subject_id is not None:
        conditions.append(AuditEvent.subject_id == subject_id)
    if since is not None:
        conditions.append(AuditEvent.at >= _as_utc(since))
    if until is not None:
        conditions.append(AuditEvent.at < _as_utc(until))
    total = session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions)) or 0
    order = AuditEvent.id.desc() if newest_first else AuditEvent.id.asc()
    query = select(AuditEvent).where(*conditions).order_by(order).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query)), total


def events_about(session: Session, subject_type: str, subject_id: str, actions: Sequence[str]) -> list[AuditEvent]:
    """The given actions on one subject (a study's claims and reads, say), oldest first."""
    events, _ = query_audit(
        session, actions=actions, subject_type=subject_type, subject_id=subject_id, newest_first=False
    )
    return events


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    subject_type: str
    subject_id: str
    detail: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    total: int


router = APIRouter(prefix="/api/audit", tags=["audit"], responses=AUTHENTICATED)


@router.get("", response_model=AuditPage)
def list_audit_events(
    session: SessionDep,
    admin: Annotated[AuthenticatedUser, Depends(require_role(Role.admin))],
    actor: str | None = None,
    action: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    since: Annotated[
        datetime | None, Query(description="Only events at or after this instant (ISO 8601).")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Only events before this instant (ISO 8601).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> AuditPage:
    """Audit events, newest first. Naive ``since``/``until`` values are taken as UTC. Each query is itself a row
    (``audit.view``, with its filters), after the rows it answers."""
    rows, total = query_audit(
        session,
        actor=actor,
        actions=None if action is None else [action],
        subject_type=subject_type,
        subject_id=subject_id,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    # The log names patients and what was done to them: who read it, for whom, is recorded too (DICOM PS3.15's "Audit
    # Log Used"). An admin had looked up who saw a patient, or every view of a day, and left no trace.
    filters = {"actor": actor, "action": action, "subject_type": subject_type, "subject_id": subject_id,
               "since": since.isoformat() if since else None, "until": until.isoformat() if until else None}
    record_audit(session, admin.username, "audit.view", "audit", "audit_events",
                 {"filters": {name: value for name, value in filters.items() if value is not None},
                  "rows": len(rows), "offset": offset})
    return AuditPage(
        items=[AuditEventOut.model_validate(row, from_attributes=True) for row in rows], total=total
    )


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
