"""API schemas of the study record (one set per resource)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["StudySummary", "StudyPage", "SeriesOut", "TimelineEvent", "StudyDetail", "QuarantineOut", "QuarantinePage"]


class StudySummary(BaseModel):
    study_instance_uid: str
    modality: str
    status: str = Field(description="receiving, complete, routed, not_applicable, then the later stages' own")
    task: str | None
    instance_count: int
    revision: int
    order_priority: str = Field(description="RequestedProcedurePriority from the order (STAT, HIGH, ROUTINE, ...), or empty")
    first_received_at: datetime
    last_received_at: datetime
    completed_at: datetime | None
    routed_at: datetime | None


class StudyPage(BaseModel):
    items: list[StudySummary]
    total: int


class SeriesOut(BaseModel):
    series_instance_uid: str
    modality: str
    instance_count: int
    headers: dict[str, Any]


class TimelineEvent(BaseModel):
    kind: str
    at: datetime
    revision: int
    detail: dict[str, Any]


class StudyDetail(StudySummary):
    status_reason: str | None
    study_description: str
    accession_number: str
    study_date: str
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str
    institution_name: str
    series: list[SeriesOut]
    timeline: list[TimelineEvent]


class QuarantineOut(BaseModel):
    id: int
    at: datetime
    kind: str
    reason: str
    source: str
    calling_ae: str
    sop_instance_uid: str | None
    study_instance_uid: str | None


class QuarantinePage(BaseModel):
    items: list[QuarantineOut]
    total: int
