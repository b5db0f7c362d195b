"""API schemas of the worklist (one set per resource)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from service.lifecycle import Task
from service.request_params import StoredText
from worklist.policy import tier_label

__all__ = [
    "WorklistItem",
    "WorklistPage",
    "TimelineItem",
    "FinalReadIn",
    "FinalReadOut",
    "WorklistDetail",
    "PriorityChangeOut",
    "PriorityChangePage",
    "WorklistFilters",
    "item_fields",
]


class WorklistItem(BaseModel):
    """A study as the list shows it: no patient identity, so a list page is not audited (it reloads on every live
    event). The accession number and the free-text study description (which can name the patient) are on the
    audited study view only: the list had shown both on every page, with no audit row."""

    study_instance_uid: str
    modality: str
    site: str
    task: str | None
    order_priority: str = Field(description="the order's clinical priority (STAT, HIGH, ROUTINE, ...) or empty")
    arrived_at: datetime
    state: str = Field(description="awaiting_score, not_applicable, scored, could_not_score, out_of_scope, failed")
    tier: str = Field(description="stat, urgent, positive, unscored, aged, negative")

    @computed_field(description="the tier as readers see it and the RIS is told (``unscored`` reads as routine)")  # type: ignore[prop-decorator]
    @property
    def tier_label(self) -> str:
        return tier_label(self.tier)

    due_at: datetime = Field(description="the list is ordered by this, earliest first")
    priority_reason: str
    score: float | None = Field(
        description="the champion's probability of the finding (decision support, not a diagnosis)"
    )
    threshold: float | None = Field(description="the model version's operating point")
    call: str | None = Field(description="positive / negative at the threshold")
    model_name: str | None
    model_version: str | None
    score_reason: str | None = Field(
        description="why the model could not score the study, or why it is outside the version's intended use"
    )
    steering: str | None = Field(
        None,
        description="the champion version's steering right: defer (negatives may wait up to the aging cap), "
        "raise-only (positives move up, negatives keep their place), shadow (shown, never moves a study)",
    )
    claimed_by: str | None
    claimed_at: datetime | None
    is_open: bool
    read_at: datetime | None


class WorklistPage(BaseModel):
    items: list[WorklistItem]
    total: int
    now: datetime = Field(description="server time, so a page shows waiting times without trusting its own clock")


class TimelineItem(BaseModel):
    at: datetime
    kind: str
    text: str


class FinalReadIn(BaseModel):
    # Keys are the known tasks: any other name was stored on SQLite as a finding of no task, and on
    # PostgreSQL overflowed final_read_findings.task (32 characters) into a 500.
    findings: dict[Task, Literal["present", "absent"]] = Field(
        description='finding per task, e.g. `{"chest-xray": "present"}`', min_length=1
    )
    note: StoredText = Field("", max_length=10000)  # no NUL: a 500 on PostgreSQL


class FinalReadOut(BaseModel):
    id: int
    study_instance_uid: str
    reader: str
    read_at: datetime
    findings: dict[str, Literal["present", "absent"]]
    note: str
    score_result_id: int | None
    waited_s: float
    tier_at_read: str


class WorklistDetail(WorklistItem):
    accession_number: str
    study_description: str
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str
    study_date: str
    study_status: str
    heatmap_available: bool
    timeline: list[TimelineItem]
    final_read: FinalReadOut | None


class PriorityChangeOut(BaseModel):
    id: int
    study_instance_uid: str
    at: datetime
    from_tier: str | None
    to_tier: str
    from_due_at: datetime | None
    to_due_at: datetime
    reason: str
    score_result_id: int | None


class PriorityChangePage(BaseModel):
    items: list[PriorityChangeOut]
    total: int


class WorklistFilters(BaseModel):
    modalities: list[str]
    sites: list[str]
    states: list[str]


def item_fields(entry: Any) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in WorklistItem.model_fields}
