"""Claims and final reads: one radiologist at a time per study, and the read that closes the study.

A claim is taken with one conditional UPDATE, so two radiologists clicking at the same moment cannot both
win on SQLite or PostgreSQL: the database decides, the loser gets :class:`ClaimConflict`. A claim that is
not closed by a read lapses after ``worklist_claim_minutes`` (a radiologist called away must not lock a
study for the rest of the day).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from inference.tables import Study
from service.lifecycle import WorklistEventKind
from worklist.errors import ClaimConflict, InvalidRead, NotClaimedByYou, StudyNotOnWorklist
from worklist.recompute import add_event
from worklist.tables import FinalRead, FinalReadFinding, WorklistEntry

__all__ = ["claim_study", "release_study", "record_final_read", "get_entry"]


def get_entry(session: Session, study_uid: str) -> WorklistEntry:
    entry = session.scalar(select(WorklistEntry).where(WorklistEntry.study_instance_uid == study_uid))
    if entry is None:
        raise StudyNotOnWorklist(f"study {study_uid} is not on the worklist")
    return entry


def claim_study(
    session: Session, study_uid: str, reader: str, now: datetime, claim_lifetime: timedelta
) -> WorklistEntry:
    """Claim an open study for ``reader`` (claiming one's own claim again renews it)."""
    entry = get_entry(session, study_uid)
    taken = session.execute(
        update(WorklistEntry)
        .where(
            WorklistEntry.id == entry.id,
            WorklistEntry.is_open.is_(True),
            or_(
                WorklistEntry.claimed_by.is_(None),
                WorklistEntry.claimed_by == reader,
                WorklistEntry.claimed_at < now - claim_lifetime,
            ),
        )
        .values(claimed_by=reader, claimed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(entry)
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        if not entry.is_open:
            raise ClaimConflict(f"study {study_uid} has already been read")
        raise ClaimConflict(f"study {study_uid} is claimed by {entry.claimed_by} since {entry.claimed_at:%H:%M} UTC")
    add_event(session, WorklistEventKind.claimed, study_uid, now, by=reader)
    return entry


def release_study(
    session: Session, study_uid: str, reader: str, now: datetime, *, force: bool = False
) -> WorklistEntry:
    """Give a claim back (``force``: an admin freeing someone else's claim)."""
    entry = get_entry(session, study_uid)
    condition = WorklistEntry.id == entry.id
    if not force:
        condition = and_(condition, WorklistEntry.claimed_by == reader)
    released = session.execute(
        update(WorklistEntry)
        .where(condition, WorklistEntry.claimed_by.is_not(None), WorklistEntry.is_open.is_(True))
        .values(claimed_by=None, claimed_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(entry)
    if released.rowcount != 1:  # type: ignore[attr-defined]
        raise NotClaimedByYou(f"study {study_uid} is not claimed by {reader}")
    add_event(session, WorklistEventKind.released, study_uid, now, by=reader)
    return entry


def record_final_read(
    session: Session,
    study_uid: str,
    reader: str,
    findings: dict[str, bool],
    note: str,
    now: datetime,
    claim_lifetime: timedelta,
) -> FinalRead:
    """Store the final read (finding present/absent per task) and close the study on the worklist.

    The reader must hold the claim: that is what stops two radiologists from reading one study.
    """
    if not findings:
        raise InvalidRead("a final read names at least one task with its finding present or absent")
    entry = get_entry(session, study_uid)
    if entry.task and entry.task not in findings:
        raise InvalidRead(f"the final read must say whether the {entry.task} finding is present or absent")
    closed = session.execute(
        update(WorklistEntry)
        .where(
            WorklistEntry.id == entry.id,
            WorklistEntry.is_open.is_(True),
            WorklistEntry.claimed_by == reader,
            WorklistEntry.claimed_at >= now - claim_lifetime,
        )
        .values(is_open=False, read_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(entry)
    if closed.rowcount != 1:  # type: ignore[attr-defined]
        if not entry.is_open:
            raise ClaimConflict(f"study {study_uid} has already been read")
        raise NotClaimedByYou(
            f"claim study {study_uid} before recording its read (claimed by: {entry.claimed_by or 'nobody'})"
        )
    revision = session.scalar(select(Study.revision).where(Study.id == entry.study_id)) or 1
    read = FinalRead(
        study_id=entry.study_id,
        study_instance_uid=study_uid,
        revision=revision,
        reader=reader,
        read_at=now,
        note=note,
        score_result_id=entry.score_result_id,
        waited_s=(now - entry.arrived_at).total_seconds(),
        tier_at_read=entry.tier,
    )
    session.add(read)
    session.flush()
    for task, present in sorted(findings.items()):
        session.add(FinalReadFinding(read_id=read.id, task=task, present=present))
    add_event(session, WorklistEventKind.read, study_uid, now, by=reader)
    return read
