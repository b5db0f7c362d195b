"""Tables of the screening package: one row per screening of a child, the paediatricians' decisions on
flags (append-only: a changed decision is a new row, the latest one counts), and which clinician looks
after which practitioner's or organisation's children.

The child's identifier is stored (paediatricians must find the child) but never logged in clear;
the explanation and the FHIR resources are kept as JSON so that a later model cannot rewrite what
an earlier one said.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, UTCDateTime, utcnow

__all__ = ["ScreeningRun", "ScreeningOutcome", "ScreeningAssignment", "ScreeningBatchRun", "OUTCOMES", "BATCH_ACTOR_PREFIX"]

OUTCOMES = ("referred", "not_relevant")
# The actor of a batch run's stored results ("batch:<file>"); no username can hold a colon.
BATCH_ACTOR_PREFIX = "batch:"


class ScreeningRun(Base):
    __tablename__ = "screening_results"
    __table_args__ = (Index("ix_screening_results_flagged", "flagged", "screened_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(128), index=True)
    patient_digest: Mapped[str] = mapped_column(String(16))
    screened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    age_days: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    model_version: Mapped[str] = mapped_column(String(64))
    risk: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    explanation: Mapped[dict[str, Any]] = mapped_column(JSON)
    risk_assessment: Mapped[dict[str, Any]] = mapped_column(JSON)
    flag: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    submitted_by: Mapped[str] = mapped_column(String(64))
    # For the page only, never logged: the child's name and record number, and whose patient it is.
    patient_name: Mapped[str] = mapped_column(String(200), default="", server_default="")
    mrn: Mapped[str] = mapped_column(String(64), default="", server_default="")
    practitioner: Mapped[str] = mapped_column(String(128), default="", server_default="", index=True)
    organization: Mapped[str] = mapped_column(String(128), default="", server_default="", index=True)
    # Whose child a record naming neither a practitioner nor an organisation is: the clinician who submitted it
    # ("" when the record names one, and for a batch run's, which are no clinician's until given an organisation;
    # the submitter's too for a record naming an organisation of which they hold only the practitioner named).
    # Part of the child's identity: two clinicians' patient "1", each named by no care team, are two children.
    owner: Mapped[str] = mapped_column(String(64), default="", server_default="")


class ScreeningOutcome(Base):
    """What the paediatrician decided about a flag, kept for quality review (append-only by use)."""

    __tablename__ = "screening_outcomes"
    __table_args__ = (CheckConstraint("outcome IN ('referred', 'not_relevant')", name="ck_screening_outcome"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("screening_results.id", ondelete="CASCADE"), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScreeningAssignment(Base):
    """A clinician sees the flags of children whose record names this practitioner or organisation
    (FHIR ``Patient.generalPractitioner`` / ``managingOrganization``, or the CSV columns)."""

    __tablename__ = "screening_assignments"
    __table_args__ = (UniqueConstraint("username", "practitioner", "organization", name="uq_screening_assignment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    practitioner: Mapped[str] = mapped_column(String(128), default="")
    organization: Mapped[str] = mapped_column(String(128), default="")
    assigned_by: Mapped[str] = mapped_column(String(64))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScreeningBatchRun(Base):
    """What a ``screen-emr`` run screened and flagged, per run. The run stores only its flagged, incomplete and
    retiring children (a population of thousands would otherwise fill the table with "no concern" rows), so the
    stored rows cannot say how many children it screened; quality's flag rate takes these counts instead."""

    __tablename__ = "screening_batch_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    screened: Mapped[int] = mapped_column(Integer)  # screened or incomplete: the children a flag could be raised on
    flagged: Mapped[int] = mapped_column(Integer)
