"""HTTP API of the study record: ``/api/studies``, ``/api/quarantine``, ``/api/jobs`` and ``/api/outgoing``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import case, func, select

from inference.errors import CouldNotScore, IngestError
from inference.jobs import replay, request_rescore
from inference.schemas import (
    JobOut,
    JobPage,
    NotScoredOut,
    OutgoingNode,
    OutgoingOut,
    OutgoingPage,
    QuarantineOut,
    QuarantinePage,
    RescoreOut,
    ResultOut,
    SeriesOut,
    StudyDetail,
    StudyPage,
    StudySummary,
    TimelineEvent,
)
from inference.study_record import add_event
from inference.tables import NotScoredInstance, OutgoingResult, QuarantinedItem, ScoreResult, ScoringJob, Study
from service.audit import record_audit
from service.auth import AuthenticatedUser, Role, require_role
from service.db import UTCDateTime, utcnow
from service.deps import SessionDep
from service.error_responses import AUTHENTICATED, error_responses
from service.lifecycle import JobState, StudyStatus, Task, WritebackState
from service.request_params import Int32RowId, Offset

__all__ = ["router", "sees_patient_identity"]

router = APIRouter(tags=["studies"], responses=AUTHENTICATED)
Engineer = Annotated[AuthenticatedUser, Depends(require_role(Role.ml_engineer))]
StudyReader = Annotated[AuthenticatedUser, Depends(require_role(Role.radiologist, Role.ml_engineer, Role.quality))]


def _ingest_error_kinds(error: type[IngestError] = IngestError) -> set[str]:
    return {error.kind}.union(*(_ingest_error_kinds(sub) for sub in error.__subclasses__()))


# A quarantined item's kind is the ``kind`` of the IngestError that refused it.
QUARANTINE_KINDS = tuple(sorted(_ingest_error_kinds()))


def _summary(study: Study) -> dict[str, Any]:
    return {name: getattr(study, name) for name in StudySummary.model_fields}


def sees_patient_identity(user: AuthenticatedUser) -> bool:
    """Whether ``user`` may see whose study it is (name, patient ID, birth date, accession): the clinical roles only.

    ml-engineer and quality read studies for the models and their performance; the minimum they need is the
    series, counts, status and timeline (README, "Users, roles and audit").
    """
    return user.has_role(Role.radiologist)


@router.get("/api/studies", response_model=StudyPage)
def list_studies(
    session: SessionDep,
    user: StudyReader,
    # Typed as the lifecycle's enums: a mistyped status or task is a 422 listing the values (it had been an empty
    # page, which reads as "no such studies").
    status: Annotated[StudyStatus | None, Query()] = None,
    modality: Annotated[str | None, Query(description="CT, MG, CR, DX, ...")] = None,
    task: Annotated[Task | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> StudyPage:
    query = select(Study)
    if status:
        query = query.where(Study.status == status.value)
    if modality:
        query = query.where(Study.modality == modality.upper())
    if task:
        query = query.where(Study.task == task.value)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    studies = session.scalars(query.order_by(Study.last_received_at.desc(), Study.id.desc()).limit(limit).offset(offset))
    return StudyPage(items=[StudySummary.model_validate(_summary(s)) for s in studies], total=total)


@router.get("/api/studies/{study_uid}", response_model=StudyDetail, responses=error_responses(404))
def get_study(study_uid: str, session: SessionDep, user: StudyReader) -> StudyDetail:
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
    if study is None:
        raise HTTPException(404, detail=f"no study {study_uid}")
    record_audit(session, user.username, "study.view", "study", study_uid)
    identity = sees_patient_identity(user)
    return StudyDetail(
        **_summary(study),
        status_reason=study.status_reason,
        study_description=study.study_description,
        accession_number=study.accession_number if identity else None,
        study_date=study.study_date,
        patient_id=study.patient_id if identity else None,
        patient_name=study.patient_name if identity else None,
        patient_sex=study.patient_sex,
        patient_birth_date=study.patient_birth_date if identity else None,
        institution_name=study.institution_name,
        series=[
            SeriesOut(
                series_instance_uid=s.series_instance_uid,
                modality=s.modality,
                instance_count=s.instance_count,
                headers=s.headers,
            )
            for s in study.series
        ],
        timeline=[TimelineEvent(kind=e.kind, at=e.at, revision=e.revision, detail=e.detail) for e in study.events],
        not_scored=[
            NotScoredOut.model_validate(item, from_attributes=True)
            for item in session.scalars(
                select(NotScoredInstance).where(NotScoredInstance.study_instance_uid == study_uid).order_by(NotScoredInstance.id)
            )
        ],
        results=[
            ResultOut.model_validate(r, from_attributes=True)
            for r in session.scalars(
                select(ScoreResult).where(ScoreResult.study_id == study.id).order_by(ScoreResult.id.desc())
            )
        ],
    )


@router.get("/api/quarantine", response_model=QuarantinePage, tags=["quarantine"])
def list_quarantine(
    session: SessionDep,
    user: Annotated[AuthenticatedUser, Depends(require_role(Role.ml_engineer))],
    kind: Annotated[Literal[QUARANTINE_KINDS] | None, Query()] = None,  # type: ignore[valid-type]
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> QuarantinePage:
    query = select(QuarantinedItem)
    if kind:
        query = query.where(QuarantinedItem.kind == kind)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(QuarantinedItem.id.desc()).limit(limit).offset(offset))
    return QuarantinePage(items=[QuarantineOut.model_validate(i, from_attributes=True) for i in items], total=total)


def _job_out(job: ScoringJob, study_uid: str) -> JobOut:
    return JobOut(
        id=job.id, study_instance_uid=study_uid, revision=job.revision, task=job.task, model_name=job.model_name,
        model_version=job.model_version, role=job.role, state=job.state, attempts=job.attempts,
        last_error=job.last_error, next_attempt_at=job.next_attempt_at, updated_at=job.updated_at,
    )


@router.get("/api/jobs", response_model=JobPage, tags=["scoring"])
def list_jobs(
    session: SessionDep,
    user: Engineer,
    state: Annotated[JobState | None, Query(description="`dead` is the dead letter")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> JobPage:
    query = select(ScoringJob, Study.study_instance_uid).join(Study, Study.id == ScoringJob.study_id)
    if state:
        query = query.where(ScoringJob.state == state.value)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(ScoringJob.id.desc()).limit(limit).offset(offset))
    return JobPage(items=[_job_out(job, uid) for job, uid in rows], total=total)


_WAITING = (JobState.queued, JobState.running, JobState.retry)


def _outgoing_out(row: OutgoingResult, study_uid: str, now: datetime) -> OutgoingOut:
    return OutgoingOut(
        id=row.id, study_instance_uid=study_uid, node=row.node, state=row.state, attempts=row.attempts,
        last_error=row.last_error, destination=str(row.destination.get("kind", "")), created_at=row.created_at,
        age_s=round((now - row.created_at).total_seconds(), 1), next_attempt_at=row.next_attempt_at,
        sent_at=row.sent_at,
    )


@router.get("/api/outgoing", response_model=OutgoingPage, tags=["scoring"])
def list_outgoing(
    session: SessionDep,
    user: Engineer,
    state: Annotated[JobState | None, Query(description="`done` is sent, `dead` the dead letter")] = None,
    node: Annotated[str | None, Query(description="only the results whose files this node holds")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> OutgoingPage:
    """Stored results and their sends, newest first, with each node's waiting count and oldest waiting age."""
    now = utcnow()
    query = select(OutgoingResult, Study.study_instance_uid).join(Study, Study.id == OutgoingResult.study_id)
    if state:
        query = query.where(OutgoingResult.state == state.value)
    if node:
        query = query.where(OutgoingResult.node == node)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(OutgoingResult.id.desc()).limit(limit).offset(offset))
    items = [_outgoing_out(row, uid, now) for row, uid in rows]
    waiting = OutgoingResult.state.in_(_WAITING)
    per_node = session.execute(
        select(
            OutgoingResult.node,
            func.sum(case((waiting, 1), else_=0)),
            func.min(case((waiting, OutgoingResult.created_at), else_=None), type_=UTCDateTime()),
            func.sum(case((OutgoingResult.state == JobState.dead, 1), else_=0)),
            func.max(OutgoingResult.sent_at),
        ).group_by(OutgoingResult.node).order_by(OutgoingResult.node)
    )
    nodes = []
    for name, n_waiting, oldest, dead, last_sent in per_node:
        nodes.append(OutgoingNode(
            node=name, waiting=int(n_waiting or 0), dead=int(dead or 0), last_sent_at=last_sent,
            oldest_waiting_age_s=None if oldest is None else round((now - oldest).total_seconds(), 1),
        ))
    return OutgoingPage(items=items, total=total, nodes=nodes)


@router.post(
    "/api/outgoing/{outgoing_id}/abandon", response_model=OutgoingOut, tags=["scoring"], responses=error_responses(404, 409)
)
def abandon_outgoing(outgoing_id: Int32RowId, session: SessionDep, user: Engineer) -> OutgoingOut:
    """Give up sending a result whose node is gone for good with its files: the row goes to the dead letter
    and the result's write-back is ``failed``; the score stays. Refused (409) for a row sent, dead or being sent."""
    now = utcnow()
    # Locked, so that a node coming back cannot claim the row while it is abandoned.
    row = session.get(OutgoingResult, outgoing_id, with_for_update=True)
    if row is None:
        raise HTTPException(404, detail=f"no outgoing result {outgoing_id}")
    being_sent = row.state == JobState.running and row.lease_until is not None and row.lease_until >= now
    if row.state in (JobState.done, JobState.dead) or being_sent:
        raise HTTPException(409, detail=f"outgoing result {outgoing_id} is {row.state}; only waiting ones are abandoned")
    row.state = JobState.dead.value
    row.lease_owner = row.lease_until = None
    row.last_error = f"abandoned by {user.username}: node {row.node or '(ingest spool)'} gone with the files"
    result = session.get(ScoreResult, row.score_result_id) if row.score_result_id else None
    if result is not None:
        result.writeback_state = WritebackState.failed.value
    study = session.get(Study, row.study_id)
    assert study is not None
    add_event(session, study.id, result.revision if result is not None else 0, "write-back-abandoned", now,
              node=row.node, by=user.username, outgoing_id=row.id)
    record_audit(session, user.username, "outgoing.abandon", "study", study.study_instance_uid,
                 {"outgoing_id": row.id, "node": row.node})
    return _outgoing_out(row, study.study_instance_uid, now)


@router.post("/api/jobs/{job_id}/replay", response_model=JobOut, tags=["scoring"], responses=error_responses(404, 409))
def replay_job(job_id: Int32RowId, session: SessionDep, user: Engineer) -> JobOut:
    job = session.get(ScoringJob, job_id)
    if job is None:
        raise HTTPException(404, detail=f"no job {job_id}")
    if job.state != JobState.dead:
        raise HTTPException(409, detail=f"job {job_id} is {job.state}; only dead jobs are replayed")
    study = session.get(Study, job.study_id)
    assert study is not None
    replay(session, job, user.username, utcnow())
    record_audit(session, user.username, "job.replay", "study", study.study_instance_uid, {"job_id": job_id})
    return _job_out(job, study.study_instance_uid)


@router.post(
    "/api/studies/{study_uid}/rescore", response_model=RescoreOut, status_code=202, tags=["scoring"],
    responses=error_responses(404, 409),
)
def rescore_study(study_uid: str, session: SessionDep, user: Engineer) -> RescoreOut:
    """Ask for the current champion to score the study's current revision (each revision and version once).

    Only the request is recorded here; the scoring worker picks the champion version when it queues the job.
    """
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
    if study is None:
        raise HTTPException(404, detail=f"no study {study_uid}")
    try:
        request_rescore(session, study, user.username, utcnow())
    except CouldNotScore as exc:
        raise HTTPException(409, detail=exc.reason) from exc
    record_audit(session, user.username, "study.rescore", "study", study_uid, {"revision": study.revision})
    return RescoreOut(study_instance_uid=study_uid, revision=study.revision, status=study.status)
