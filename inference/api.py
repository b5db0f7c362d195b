"""HTTP API of the study record: ``/api/studies`` and ``/api/quarantine``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import func, select

from inference.schemas import (
    QuarantineOut,
    QuarantinePage,
    SeriesOut,
    StudyDetail,
    StudyPage,
    StudySummary,
    TimelineEvent,
)
from inference.tables import QuarantinedItem, Study
from service.audit import record_audit
from service.auth import AuthenticatedUser, require_role
from service.deps import SessionDep

__all__ = ["router"]

router = APIRouter(tags=["studies"])
StudyReader = Annotated[AuthenticatedUser, Depends(require_role("radiologist", "ml-engineer", "quality"))]


def _summary(study: Study) -> dict[str, object]:
    return {name: getattr(study, name) for name in StudySummary.model_fields}


@router.get("/api/studies", response_model=StudyPage)
def list_studies(
    session: SessionDep,
    user: StudyReader,
    status: Annotated[str | None, Query(description="receiving, complete, routed, not_applicable, ...")] = None,
    modality: Annotated[str | None, Query(description="CT, MG, CR, DX, ...")] = None,
    task: Annotated[str | None, Query(description="ct-chest, mammography, chest-xray")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> StudyPage:
    query = select(Study)
    if status:
        query = query.where(Study.status == status)
    if modality:
        query = query.where(Study.modality == modality.upper())
    if task:
        query = query.where(Study.task == task)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    studies = session.scalars(query.order_by(Study.last_received_at.desc(), Study.id.desc()).limit(limit).offset(offset))
    return StudyPage(items=[StudySummary.model_validate(_summary(s)) for s in studies], total=total)


@router.get("/api/studies/{study_uid}", response_model=StudyDetail)
def get_study(study_uid: str, session: SessionDep, user: StudyReader) -> StudyDetail:
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
    if study is None:
        raise HTTPException(404, detail=f"no study {study_uid}")
    record_audit(session, user.username, "study.view", "study", study_uid)
    return StudyDetail(
        **_summary(study),
        status_reason=study.status_reason,
        study_description=study.study_description,
        accession_number=study.accession_number,
        study_date=study.study_date,
        patient_id=study.patient_id,
        patient_name=study.patient_name,
        patient_sex=study.patient_sex,
        patient_birth_date=study.patient_birth_date,
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
    )


@router.get("/api/quarantine", response_model=QuarantinePage, tags=["quarantine"])
def list_quarantine(
    session: SessionDep,
    user: Annotated[AuthenticatedUser, Depends(require_role("ml-engineer"))],
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> QuarantinePage:
    query = select(QuarantinedItem)
    if kind:
        query = query.where(QuarantinedItem.kind == kind)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(QuarantinedItem.id.desc()).limit(limit).offset(offset))
    return QuarantinePage(items=[QuarantineOut.model_validate(i, from_attributes=True) for i in items], total=total)
