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

from sqlalchemy import select
from sqlalchemy.orm import Session

from worklist.tables import PriorityChange, WorklistCursor, WorklistEntry

__all__ = [
    "PriorityChanged", "PriorityChangeConsumer", "deliver_priority_changes", "reading_priority", "start_at",
    "shows_change", "FHIR_TASK_PRIORITY",
]

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
    due_at: datetime  # the list's sort key (arrival - lead - raise for a raised study): never sent as a time
    reason: str
    # When the study arrived; None from a caller that does not know it.
    arrived_at: datetime | None = None

    @property
    def reading_priority(self) -> str:
        return reading_priority(self.to_tier, self.due_at, self.arrived_at)

    @property
    def start_at(self) -> datetime | None:
        return start_at(self.to_tier, self.due_at, self.arrived_at)


def reading_priority(tier: str | None, due_at: datetime | None, arrived_at: datetime | None) -> str:
    """The priority a RIS is told (FHIR request-priority; HL7 maps stat S, urgent and asap A, routine R).

    A RIS orders by priority, then by start time (arrival), so the priority alone must carry what the list's due
    time does: a study that has waited its aging cap (settled, or `aged`) goes back ahead of every positive that
    arrived after it, so it takes the positives' priority; a RIS that held it routine read it last, behind a later
    positive and a deferred negative that had aged (review 3, triage 6)."""
    if tier in ("stat", "urgent"):
        return tier
    settled = tier == "unscored" and due_at is not None and arrived_at is not None and due_at < arrived_at
    return "asap" if tier in ("positive", "aged") or settled else "routine"


def start_at(tier: str | None, due_at: datetime | None, arrived_at: datetime | None) -> datetime | None:
    """The time a RIS is told the reading is due from (HL7 TQ1-7): a real instant, never before the study arrived.
    The due time of a raised study is a sort key before its arrival (a STAT study had shown due the day before it
    existed); a deferred negative's (arrival + its aging cap) is a real time, and the later of the two is right
    for every tier. Without the arrival only the deferred negative's due time is known to be real."""
    if due_at is None:
        return None
    if arrived_at is None:
        return due_at if tier == "negative" else None
    return max(due_at, arrived_at)


class PriorityChangeConsumer(Protocol):
    """Receives priority changes in order; raising leaves the change to be offered again next pass."""

    name: str

    def priority_changed(self, change: PriorityChanged) -> None: ...


def shows_change(change: PriorityChange, arrived_at: datetime) -> bool:
    """Whether a recorded change moves what the RIS shows (priority and start time). A study settling in its tier
    does: it goes from routine to asap; a change the RIS cannot see is recorded on the worklist only."""
    if change.from_tier is None:
        return True
    before = reading_priority(change.from_tier, change.from_due_at, arrived_at)
    after = reading_priority(change.to_tier, change.to_due_at, arrived_at)
    return (before, start_at(change.from_tier, change.from_due_at, arrived_at)) != (
        after, start_at(change.to_tier, change.to_due_at, arrived_at))


def deliver_priority_changes(session: Session, consumer: PriorityChangeConsumer, *, batch: int = 500) -> int:
    """Offer the tier changes after the consumer's cursor, in order; the cursor moves past each one it accepts."""
    cursor_name = f"ris:{consumer.name}"[:32]
    cursor = session.get(WorklistCursor, cursor_name)
    if cursor is None:
        cursor = WorklistCursor(name=cursor_name, last_id=0)
        session.add(cursor)
    rows = session.execute(
        select(PriorityChange, WorklistEntry.accession_number, WorklistEntry.arrived_at)
        .join(WorklistEntry, WorklistEntry.study_id == PriorityChange.study_id)
        .where(PriorityChange.id > cursor.last_id)
        .order_by(PriorityChange.id)
        .limit(batch)
    ).all()
    delivered = 0
    for change, accession, arrived_at in rows:
        if not shows_change(change, arrived_at):
            cursor.last_id = change.id
            continue
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
                    arrived_at=arrived_at,
                )
            )
        except Exception:
            logger.exception("priority change %d not accepted by %s; offered again next pass", change.id, consumer.name)
            break
        cursor.last_id = change.id
        delivered += 1
    return delivered
