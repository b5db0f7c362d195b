"""Database tables of the study record: studies, series, instances, the study timeline, quarantine."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db import Base, UTCDateTime
from service.lifecycle import WritebackState

__all__ = [
    "Study",
    "Series",
    "Instance",
    "StudyEvent",
    "QuarantinedItem",
    "ScoringJob",
    "ScoreResult",
    "OutgoingResult",
    "NotScoredInstance",
]

# Statuses, job states, roles and write-back states are the enums of service/lifecycle.py; the columns hold
# their plain string values.


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    modality: Mapped[str] = mapped_column(String(16), index=True, default="")
    task: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    study_description: Mapped[str] = mapped_column(String(256), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(16), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(256), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(16), default="")
    institution_name: Mapped[str] = mapped_column(String(128), default="")
    # The order's clinical priority from the DICOM header (RequestedProcedurePriority: STAT, HIGH, ROUTINE,
    # MEDIUM, LOW); empty when the modality did not send it. The worklist never lowers it.
    order_priority: Mapped[str] = mapped_column(String(16), default="", server_default="")
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pacs_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")
    events: Mapped[list[StudyEvent]] = relationship(back_populates="study", order_by="StudyEvent.id")


class Series(Base):
    __tablename__ = "series"
    # Keyed within its study: another study's series may reuse the UID (colliding modality or anonymiser UIDs).
    __table_args__ = (UniqueConstraint("study_id", "series_instance_uid", name="uq_series_study_series"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16), default="")
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    study: Mapped[Study] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    revision: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StudyEvent(Base):
    """One line of a study's timeline."""

    __tablename__ = "study_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    revision: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    study: Mapped[Study] = relationship(back_populates="events")

    __table_args__ = (Index("ix_study_events_study", "study_id", "id"),)


class QuarantinedItem(Base):
    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    # The kept copy of the refused bytes; None when none is kept (empty, repeated, over quota, or removed
    # by the retention cleaner). The row itself, with its reason, is never removed.
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # The same bytes refused again the same day from the same sender count here instead of a new row and file.
    repeats: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def file_kept(self) -> bool:
        return self.path is not None


class ScoringJob(Base):
    """One unit of the durable scoring queue: a study revision scored by one model version."""

    __tablename__ = "scoring_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(32))  # ModelRole: champion (drives priority), challenger, previous-champion
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("study_id", "revision", "model_name", "model_version", name="uq_scoring_job_key"),
        Index("ix_scoring_jobs_ready", "state", "next_attempt_at"),
    )


class ScoreResult(Base):
    """What one model version said about one study revision, or why it could not score it."""

    __tablename__ = "score_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("scoring_jobs.id"), unique=True)
    revision: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(32), index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32), index=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    role: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))  # StudyStatus.scored, could_not_score or out_of_scope
    score: Mapped[float | None] = mapped_column(Float, nullable=True)  # probability, 0..1
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)  # the version's operating point
    call: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "positive" / "negative" at the threshold
    localisation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it could not score / is out of scope
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    writeback_state: Mapped[str] = mapped_column(String(16), default=WritebackState.pending.value)
    # The version's SteeringRight when it scored (defer / raise-only / shadow): what the worklist may do with it.
    steering: Mapped[str] = mapped_column(String(16), default="raise-only", server_default="raise-only")
    # Indexed: ingest looks every received SOP Instance UID up here to recognise medscreen's own output.
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # Names the SR as a later SR's predecessor without its file, which may be on another node's spool.
    sr_series_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heatmap_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("score_results.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class OutgoingResult(Base):
    """Result documents built once and stored under ``spool/outgoing/<folder>``, waiting for the dispatcher.

    The row says what is stored (the SOP Instance UIDs, one ``<uid>.dcm`` each) and where it goes
    (``destination``: ``{"kind": "c-store", "ae_title", "host", "port"}`` or ``{"kind": "stow-rs", "url"}``); a send retries with the same
    files, so the PACS never gets two versions of one result.
    """

    __tablename__ = "outgoing_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    score_result_id: Mapped[int | None] = mapped_column(ForeignKey("score_results.id"), nullable=True, index=True)
    folder: Mapped[str] = mapped_column(Text)  # relative to spool/outgoing
    # The node whose spool holds the files (inference/spool_node.py); only its dispatcher can send them.
    # None: made before nodes were recorded, in the ingest node's spool.
    node: Mapped[str | None] = mapped_column(Text, nullable=True, index=True)
    sop_instance_uids: Mapped[list[str]] = mapped_column(JSON, default=list)
    destination: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), index=True)  # JobState
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (Index("ix_outgoing_results_ready", "state", "next_attempt_at"),)


class NotScoredInstance(Base):
    """Valid DICOM acknowledged with success but not taken into a study: medscreen's own output coming back
    (``derived``) or an object it does not score, such as SR, PR, KO, SEG or an image without pixels (``ignored``).

    Kept so a PACS batch never aborts on a refusal, while the record says what arrived and why it was left.
    """

    __tablename__ = "not_scored_instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "derived" or "ignored"
    reason: Mapped[str] = mapped_column(Text)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16), default="")
    source: Mapped[str] = mapped_column(String(16))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    times_received: Mapped[int] = mapped_column(Integer, default=1)
