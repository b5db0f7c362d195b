"""The worklist's read model of one study: what the study view shows (patient, champion result, priority,
timeline, final read), assembled from the stages' records. No HTTP and no audit here; ``worklist/api.py``
audits the view and returns this.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.score_text import score_and_threshold
from inference.tables import ScoreResult, Study, StudyEvent
from service.audit import events_about
from service.lifecycle import ModelRole, StudyStatus, WorklistEventKind
from worklist.policy import tier_label
from worklist.schemas import FinalReadOut, TimelineItem, WorklistDetail, item_fields
from worklist.tables import FinalRead, FinalReadFinding, PriorityChange, WorklistEntry

__all__ = ["study_detail", "study_timeline", "final_read_out", "TIMELINE_AUDIT_ACTIONS"]

# What a reader did to the study, from the audit log (views are audited too, but would flood the timeline).
TIMELINE_AUDIT_ACTIONS = ("study.claim", "study.release", "study.read")


def final_read_out(session: Session, read: FinalRead) -> FinalReadOut:
    findings = session.scalars(select(FinalReadFinding).where(FinalReadFinding.read_id == read.id))
    return FinalReadOut(
        id=read.id,
        study_instance_uid=read.study_instance_uid,
        reader=read.reader,
        read_at=read.read_at,
        findings={f.task: "present" if f.present else "absent" for f in findings},
        note=read.note,
        score_result_id=read.score_result_id,
        waited_s=read.waited_s,
        tier_at_read=read.tier_at_read,
    )


def study_timeline(session: Session, entry: WorklistEntry) -> list[TimelineItem]:
    """Arrival and completeness events, the champion's results, priority changes and readers' actions, in time order."""
    items = [
        TimelineItem(at=event.at, kind=f"study.{event.kind}", text=event.kind.replace("_", " "))
        for event in session.scalars(select(StudyEvent).where(StudyEvent.study_id == entry.study_id))
    ]
    # Only the champion: shadow challengers are for the ML engineers, not for the person reading the study.
    for result in session.scalars(
        select(ScoreResult).where(ScoreResult.study_id == entry.study_id, ScoreResult.role == ModelRole.champion)
    ):
        if result.outcome == StudyStatus.scored and result.score is not None and result.threshold is not None:
            score, threshold = score_and_threshold(result.score, result.threshold, digits=2)
            said = (f"score {score} recorded for monitoring (shadow: not a finding)" if result.steering == "shadow"
                    else f"{result.call} (score {score}, threshold {threshold})")
        else:
            said = (f"{'not scored, outside its intended use' if result.outcome == 'out_of_scope' else 'could not score'}: "
                    f"{result.reason}")
        items.append(
            TimelineItem(
                at=result.created_at, kind="score",
                text=f"{result.model_name} v{result.model_version} ({result.steering}): {said}",
            )
        )
    for change in session.scalars(select(PriorityChange).where(PriorityChange.study_id == entry.study_id)):
        to_tier = tier_label(change.to_tier)
        moved = f"{tier_label(change.from_tier)} → {to_tier}" if change.from_tier else f"listed as {to_tier}"
        items.append(TimelineItem(at=change.at, kind=WorklistEventKind.priority, text=f"{moved}: {change.reason}"))
    for event in events_about(session, "study", entry.study_instance_uid, TIMELINE_AUDIT_ACTIONS):
        items.append(
            TimelineItem(at=event.at, kind=event.action, text=f"{event.action.split('.')[1]} by {event.actor}")
        )
    return sorted(items, key=lambda item: item.at)


def study_detail(session: Session, entry: WorklistEntry) -> WorklistDetail:
    """One study as the study view shows it: patient, champion result, priority and its reason, timeline, final read."""
    study = session.get(Study, entry.study_id)
    assert study is not None  # the foreign key guarantees it
    read = session.scalar(
        select(FinalRead).where(FinalRead.study_id == entry.study_id).order_by(FinalRead.id.desc()).limit(1)
    )
    heatmap_uid = (
        session.scalar(select(ScoreResult.heatmap_sop_instance_uid).where(ScoreResult.id == entry.score_result_id))
        if entry.score_result_id
        else None
    )
    return WorklistDetail(
        **item_fields(entry),
        accession_number=entry.accession_number,
        study_description=entry.study_description,
        patient_id=study.patient_id,
        patient_name=study.patient_name,
        patient_sex=study.patient_sex,
        patient_birth_date=study.patient_birth_date,
        study_date=study.study_date,
        study_status=study.status,
        heatmap_available=heatmap_uid is not None,
        timeline=study_timeline(session, entry),
        final_read=final_read_out(session, read) if read else None,
    )
