"""The hook for pushing priority changes to a RIS: a consumer interface and a durable, resumable delivery.

Not wired to a RIS in this first cut. A RIS integration implements :class:`PriorityChangeConsumer` (for
example an HL7 v2 ORU^R01 over MLLP whose OBX carries the tier and reason, or a FHIR ``Task`` whose
``priority`` is ``stat``/``asap``/``urgent``/``routine`` and whose ``reasonCode`` is the reason) and is
handed to :func:`worklist.recompute.run_worklist_recompute`. Delivery follows the append-only
``priority_changes`` table by id with the consumer's own cursor, so a RIS that is down delays messages
but loses none, and a restart resumes after the last one the RIS acknowledged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from worklist.tables import PriorityChange, WorklistCursor, WorklistEntry

__all__ = ["PriorityChanged", "PriorityChangeConsumer", "deliver_priority_changes", "FHIR_TASK_PRIORITY"]

logger = logging.getLogger(__name__)

# Worklist tier -> FHIR Task.priority (request-priority value set), for a FHIR Task consumer.
FHIR_TASK_PRIORITY = {
    "stat": "stat",
    "urgent": "urgent",
    "positive": "asap",
    "aged": "asap",
    "unscored": "routine",
    "negative": "routine",
}


@dataclass(frozen=True)
class PriorityChanged:
    """One priority change as a RIS consumer receives it."""

    change_id: int
    study_instance_uid: str
    accession_number: str
    at: datetime
    from_tier: str | None
    to_tier: str
    due_at: datetime
    reason: str


class PriorityChangeConsumer(Protocol):
    """Receives priority changes in order; raising leaves the change to be offered again next pass."""

    name: str

    def priority_changed(self, change: PriorityChanged) -> None: ...


def deliver_priority_changes(session: Session, consumer: PriorityChangeConsumer, *, batch: int = 500) -> int:
    """Offer the tier changes after the consumer's cursor, in order; the cursor moves past each one it accepts."""
    cursor_name = f"ris:{consumer.name}"[:32]
    cursor = session.get(WorklistCursor, cursor_name)
    if cursor is None:
        cursor = WorklistCursor(name=cursor_name, last_id=0)
        session.add(cursor)
    # A change of due time within one tier (a study settling in its arrival place when its aging cap runs out)
    # moves nothing the RIS shows: it gets a study when listed and whenever its tier changes.
    tier_changed = or_(PriorityChange.from_tier.is_(None), PriorityChange.from_tier != PriorityChange.to_tier)
    rows = session.execute(
        select(PriorityChange, WorklistEntry.accession_number)
        .join(WorklistEntry, WorklistEntry.study_id == PriorityChange.study_id)
        .where(PriorityChange.id > cursor.last_id, tier_changed)
        .order_by(PriorityChange.id)
        .limit(batch)
    ).all()
    delivered = 0
    for change, accession in rows:
        try:
            consumer.priority_changed(
                PriorityChanged(
                    change_id=change.id,
                    study_instance_uid=change.study_instance_uid,
                    accession_number=accession,
                    at=change.at,
                    from_tier=change.from_tier,
                    to_tier=change.to_tier,
                    due_at=change.to_due_at,
                    reason=change.reason,
                )
            )
        except Exception:
            logger.exception("priority change %d not accepted by %s; offered again next pass", change.id, consumer.name)
            break
        cursor.last_id = change.id
        delivered += 1
    return delivered
