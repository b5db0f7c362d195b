"""The append-only audit log: who viewed or changed which subject (study, patient, user), and when.

Rows are only ever inserted: no code here updates or deletes them, and a database trigger refuses
UPDATE and DELETE (and TRUNCATE on PostgreSQL). ``GET /api/audit`` lets an admin query it.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.auth import require_role
from service.db import utcnow
from service.deps import SessionDep
from service.tables import AuditEvent, Role

__all__ = ["record_audit", "subject_digest", "router", "AuditEventOut", "AuditPage"]

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


router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("", response_model=AuditPage, dependencies=[Depends(require_role(Role.admin))])
def list_audit_events(
    session: SessionDep,
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
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AuditPage:
    """Audit events, newest first. Naive ``since``/``until`` values are taken as UTC."""
    conditions = []
    if actor is not None:
        conditions.append(AuditEvent.actor == actor)
    if action is not None:
        conditions.append(AuditEvent.action == action)
    if subject_type is not None:
        conditions.append(AuditEvent.subject_type == subject_type)
    if subject_id is not None:
        conditions.append(AuditEvent.subject_id == subject_id)
    if since is not None:
        conditions.append(AuditEvent.at >= _as_utc(since))
    if until is not None:
        conditions.append(AuditEvent.at < _as_utc(until))
    total = session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions)) or 0
    rows = session.scalars(
        select(AuditEvent).where(*conditions).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)
    )
    return AuditPage(
        items=[AuditEventOut.model_validate(row, from_attributes=True) for row in rows], total=total
    )


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
