"""Tables of the worklist: one entry per study to read, its priority history, the change feed, final reads.

``worklist_entries`` carries a copy of what the list shows (modality, site, champion score and call) so that
listing 100,000 open studies is one indexed scan of one table, not a join over the study record and results.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, UTCDateTime

__all__ = ["WorklistEntry", "PriorityChange", "WorklistEvent", "FinalRead", "FinalReadFinding", "WorklistCursor"]

# SQLite only auto-increments an INTEGER primary key; PostgreSQL gets 64 bits for tables that only grow.
_BigId = BigInteger().with_variant(Integer, "sqlite")


class WorklistEntry(Base):
    """A study on the radiologists' worklist, from completion until its final read."""

    __tablename__ = "worklist_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), unique=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_description: Mapped[str] = mapped_column(String(256), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    site: Mapped[str] = mapped_column(String(128), default="")
    task: Mapped[str | None] = mapped_column(String(32), nullable=True)
    order_priority: Mapped[str] = mapped_column(String(16), default="")
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The scoring state the list shows: awaiting_score, not_applicable, scored, could_not_score, failed.
    state: Mapped[str] = mapped_column(String(20))
    study_status: Mapped[str] = mapped_column(String(32))
    # The policy's output: the list is ordered by due_at, then tie_break (minus the champion score), then id,
    # all ascending so that one index serves the order.
    tier: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    tie_break: Mapped[float] = mapped_column(Float, default=0.0)
    priority_reason: Mapped[str] = mapped_column(Text, default="")
    # The champion result that drives the priority (challengers never reach these columns).
    score_result_id: Mapped[int | None] = mapped_column(ForeignKey("score_results.id"), nullable=True)
    result_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    call: Mapped[str | None] = mapped_column(String(16), nullable=True)
    model_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    score_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The champion version's steering right (defer / raise-only / shadow), copied from its result.
    steering: Mapped[str | None] = mapped_column(String(16), nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    is_open: Mapped[bool] = mapped_column(Boolean, default=True)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        # The smallest index holding every open entry: counting the open list scans only this.
        Index("ix_worklist_open", "is_open"),
        # The list's order, with and without the commonest filters in front of it.
        Index("ix_worklist_open_order", "is_open", "due_at", "tie_break", "id"),
        Index("ix_worklist_modality_order", "is_open", "modality", "due_at", "tie_break", "id"),
        Index("ix_worklist_site_order", "is_open", "site", "due_at", "tie_break", "id"),
        Index("ix_worklist_state_order", "is_open", "state", "due_at", "tie_break", "id"),
        Index("ix_worklist_tier_due", "tier", "due_at"),
    )


class PriorityChange(Base):
    """One change of a study's place in the list, with its reason: the record a RIS push would send."""

    __tablename__ = "priority_changes"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    from_tier: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_tier: Mapped[str] = mapped_column(String(16))
    from_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    to_due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(Text)
    score_result_id: Mapped[int | None] = mapped_column(ForeignKey("score_results.id"), nullable=True)

    __table_args__ = (Index("ix_priority_changes_study", "study_id", "id"),)


class WorklistEvent(Base):
    """The live-update feed: every change a page must see (added, priority, claimed, released, read).

    Pages follow it through Server-Sent Events by id, so a reconnecting page resumes where it left off and
    any number of server processes can serve the stream; the recompute loop prunes old rows.
    """

    __tablename__ = "worklist_events"

    id: Mapped[int] = mapped_column(_BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class FinalRead(Base):
    """A radiologist's final read of a study: the ground truth the quality metrics compare the models with."""

    __tablename__ = "final_reads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    reader: Mapped[str] = mapped_column(String(64))
    read_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    note: Mapped[str] = mapped_column(Text, default="")
    # What the champion said when the study was read (None: no result then), so quality can pair them.
    score_result_id: Mapped[int | None] = mapped_column(ForeignKey("score_results.id"), nullable=True)
    # The wait the patient saw: arrival to final read, and the tier the study had when it was read.
    waited_s: Mapped[float] = mapped_column(Float)
    tier_at_read: Mapped[str] = mapped_column(String(16))


class FinalReadFinding(Base):
    """Finding present or absent for one task (chest-xray, mammography, ct-chest) in a final read."""

    __tablename__ = "final_read_findings"

    read_id: Mapped[int] = mapped_column(ForeignKey("final_reads.id"), primary_key=True)
    task: Mapped[str] = mapped_column(String(32), primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean)


class WorklistCursor(Base):
    """How far the recompute loop has followed an append-only table (``score_results``), by id."""

    __tablename__ = "worklist_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
