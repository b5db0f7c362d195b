"""API schemas of the study record (one set per resource)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "StudySummary",
    "StudyPage",
    "SeriesOut",
    "TimelineEvent",
    "ResultOut",
    "StudyDetail",
    "NotScoredOut",
    "QuarantineOut",
    "QuarantinePage",
    "JobOut",
    "JobPage",
    "RescoreOut",
]

DECISION_SUPPORT = (
    "Scores are probabilities from a named, versioned model: decision support for prioritising reading, not a diagnosis."
)


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


class ResultOut(BaseModel):
    task: str
    revision: int
    model_name: str
    model_version: str
    mlflow_run_id: str | None
    role: str = Field(description="champion (drives priority) or challenger (shadow, never used for priority)")
    outcome: str = Field(
        description="scored; could_not_score (unusable input) or out_of_scope (outside the version's intended use), "
        "each with the reason"
    )
    score: float | None = Field(description="probability of the finding, 0..1")
    threshold: float | None = Field(description="the model version's operating point")
    call: str | None = Field(description="positive/negative at the operating point")
    localisation: dict[str, Any]
    reason: str | None
    timings: dict[str, Any]
    writeback_state: str
    steering: str = Field(
        description="the version's steering right: defer (negatives may wait up to the aging cap), raise-only "
        "(positives move up, negatives keep their place) or shadow (recorded, never moves a study)"
    )
    sr_sop_instance_uid: str | None
    heatmap_sop_instance_uid: str | None
    created_at: datetime


class NotScoredOut(BaseModel):
    """An instance of this study acknowledged but left out of it: medscreen's own output or an object it does not score."""

    kind: str = Field(description="derived (medscreen's own result coming back) or ignored")
    reason: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    times_received: int
    at: datetime


# Identity is for clinical roles (radiologist, admin); ml-engineer and quality read a study's series, counts, status
# and timeline without learning whose it is (README, "Users, roles and audit").
_CLINICAL_ONLY = " Only for radiologist and admin; null for every other role."


class StudyDetail(StudySummary):
    status_reason: str | None
    study_description: str
    accession_number: str | None = Field(description="AccessionNumber (0008,0050)." + _CLINICAL_ONLY)
    study_date: str
    patient_id: str | None = Field(description="PatientID (0010,0020)." + _CLINICAL_ONLY)
    patient_name: str | None = Field(description="PatientName (0010,0010)." + _CLINICAL_ONLY)
    patient_sex: str
    patient_birth_date: str | None = Field(description="PatientBirthDate (0010,0030)." + _CLINICAL_ONLY)
    institution_name: str
    series: list[SeriesOut]
    timeline: list[TimelineEvent]
    results: list[ResultOut]
    not_scored: list[NotScoredOut] = Field(default_factory=list)
    notice: str = DECISION_SUPPORT


class QuarantineOut(BaseModel):
    id: int
    at: datetime
    kind: str
    reason: str
    source: str
    calling_ae: str
    sop_instance_uid: str | None
    study_instance_uid: str | None
    size: int | None = None
    repeats: int = 1
    last_at: datetime | None = None
    file_kept: bool = False


class QuarantinePage(BaseModel):
    items: list[QuarantineOut]
    total: int


class JobOut(BaseModel):
    id: int
    study_instance_uid: str
    revision: int
    task: str
    model_name: str
    model_version: str
    role: str
    state: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    updated_at: datetime


class JobPage(BaseModel):
    items: list[JobOut]
    total: int


class RescoreOut(BaseModel):
    """A re-score request: the study is back in ``routed`` until the worker queues the current champion."""

    study_instance_uid: str
    revision: int
    status: str


class OutgoingOut(BaseModel):
    """A result's stored SR + heat-map and where they stand with the PACS."""

    id: int
    study_instance_uid: str
    node: str | None = Field(
        description="the node whose spool holds the files; only its dispatcher sends them (none: the ingest node's "
        "spool, from before nodes were recorded)"
    )
    state: str = Field(description="queued, running (being sent), retry, done (sent) or dead (out of attempts)")
    attempts: int
    last_error: str | None
    destination: str = Field(description="c-store or stow-rs")
    created_at: datetime
    age_s: float = Field(description="seconds since the documents were stored")
    next_attempt_at: datetime
    sent_at: datetime | None


class OutgoingNode(BaseModel):
    """One node's share of the outgoing results: a node gone for good shows as results waiting, growing older."""

    node: str | None
    waiting: int = Field(description="results stored and not yet sent (queued, running, retry)")
    oldest_waiting_age_s: float | None
    dead: int
    last_sent_at: datetime | None


class OutgoingPage(BaseModel):
    items: list[OutgoingOut]
    total: int
    nodes: list[OutgoingNode]
