"""Typed records passed between the stages of a study's path: received, complete, routed, scored, sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["InstanceHeaders", "InstanceStored", "StudyComplete", "RoutedStudy", "ScoreRecorded", "ResultSent"]


@dataclass(frozen=True)
class InstanceHeaders:
    """The attributes ingest, completeness and routing need, read once from an instance's header."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    body_part_examined: str = ""
    study_description: str = ""
    series_description: str = ""
    protocol_name: str = ""
    view_position: str = ""
    laterality: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_sex: str = ""
    patient_birth_date: str = ""
    accession_number: str = ""
    study_date: str = ""
    manufacturer: str = ""
    station_name: str = ""
    institution_name: str = ""
    order_priority: str = ""
    has_pixel_data: bool = True

    def series_headers(self) -> dict[str, str]:
        """The series-level attributes routing rules may test."""
        return {
            "Modality": self.modality,
            "BodyPartExamined": self.body_part_examined,
            "StudyDescription": self.study_description,
            "SeriesDescription": self.series_description,
            "ProtocolName": self.protocol_name,
            "ViewPosition": self.view_position,
            "Laterality": self.laterality,
            "SOPClassUID": self.sop_class_uid,
            "Manufacturer": self.manufacturer,
            "StationName": self.station_name,
        }


@dataclass(frozen=True)
class InstanceStored:
    """An instance written durably to the spool and recorded in the database."""

    headers: InstanceHeaders
    path: Path
    size: int
    revision: int
    duplicate: bool
    source: str
    calling_ae: str
    # Set when the instance was acknowledged but not taken into a study: "derived" (medscreen's own output)
    # or "ignored" (valid DICOM medscreen does not score), with the reason.
    not_scored: str | None = None
    not_scored_reason: str | None = None


@dataclass(frozen=True)
class StudyComplete:
    """A study the completeness monitor has decided is complete."""

    study_instance_uid: str
    revision: int
    instance_count: int
    last_received_at: datetime
    reason: str  # "quiet-period" or "pacs-count"


@dataclass(frozen=True)
class RoutedStudy:
    """A complete study with its task, or ``task=None`` and the reason no rule applied."""

    study_instance_uid: str
    revision: int
    task: str | None
    rule: str | None
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ScoreRecorded:
    """One job's outcome as stored: the result row and, for a champion, the documents waiting to be sent."""

    study_instance_uid: str
    revision: int
    task: str
    model_name: str
    model_version: str
    role: str
    outcome: str  # StudyStatus.scored, could_not_score or out_of_scope
    score: float | None
    call: str | None
    reason: str | None
    result_id: int
    document_uids: tuple[str, ...] = ()
    outgoing_id: int | None = None


@dataclass(frozen=True)
class ResultSent:
    """Stored documents delivered to their destination (or given up on, with the reason)."""

    outgoing_id: int
    study_instance_uid: str
    sop_instance_uids: tuple[str, ...]
    sent: bool
    error: str | None = None
