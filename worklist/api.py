"""HTTP edge of the worklist: ``/api/worklist`` (list, study view, claim, release, final read, heat-map,
priority history, live events). Radiologists use it (admin passes every check); every study view, heat-map
view, claim, release and read is written to the audit log in the same transaction. Worklist errors become
HTTP statuses here only.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from sqlalchemy import ColumnElement, func, select
from starlette.concurrency import run_in_threadpool

from service.audit import record_audit
from service.auth import AuthenticatedUser, Role, require_role
from service.db import session_scope, utcnow
from service.deps import SessionDep, SettingsDep
from service.error_responses import AUTHENTICATED, error_responses
from service.lifecycle import WorklistState
from service.request_params import Offset
from service.settings import Settings
from worklist.access import authenticate_radiologist, bearer_token
from worklist.claims import claim_study, get_entry, record_final_read, release_study
from worklist.errors import ClaimConflict, InvalidRead, NotClaimedByYou, StudyNotOnWorklist, WorklistError
from worklist.live import router as live_router
from worklist.schemas import (
    FinalReadIn,
    FinalReadOut,
    PriorityChangeOut,
    PriorityChangePage,
    WorklistDetail,
    WorklistFilters,
    WorklistItem,
    WorklistPage,
    item_fields,
)
from worklist.study_view import final_read_out, study_detail
from worklist.tables import PriorityChange, WorklistEntry

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/worklist", tags=["worklist"], responses=AUTHENTICATED)
router.include_router(live_router)
Radiologist = Annotated[AuthenticatedUser, Depends(require_role(Role.radiologist))]
PriorityReader = Annotated[AuthenticatedUser, Depends(require_role(Role.radiologist, Role.quality))]

_ITEM_COLUMNS = [WorklistEntry.__table__.c[name] for name in WorklistItem.model_fields]
STATES = tuple(state.value for state in WorklistState)
_HTTP_STATUS: dict[type[WorklistError], int] = {
    StudyNotOnWorklist: status.HTTP_404_NOT_FOUND,
    ClaimConflict: status.HTTP_409_CONFLICT,
    NotClaimedByYou: status.HTTP_409_CONFLICT,
    InvalidRead: status.HTTP_422_UNPROCESSABLE_CONTENT,
}


def _http_error(error: WorklistError) -> HTTPException:
    return HTTPException(_HTTP_STATUS.get(type(error), status.HTTP_400_BAD_REQUEST), detail=str(error))


def _claim_lifetime(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.worklist_claim_minutes)


@router.get("", response_model=WorklistPage)
async def list_worklist(
    request: Request,
    token: Annotated[str | None, Depends(bearer_token)],
    modality: Annotated[str | None, Query(description="CR, DX, CT, MG, ...")] = None,
    site: Annotated[str | None, Query(description="institution (or station) name")] = None,
    state: Annotated[Literal[STATES] | None, Query(description="scoring state, or `read` for read studies")] = None,  # type: ignore[valid-type]
    claimed: Annotated[Literal["any", "unclaimed", "mine"], Query()] = "any",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> Response:
    """Open studies in priority order (read studies, newest first, with ``state=read``)."""
    body = await run_in_threadpool(_list_page, request, token, modality, site, state, claimed, limit, offset)
    return Response(body, media_type="application/json")


def _list_page(
    request: Request,
    token: str | None,
    modality: str | None,
    site: str | None,
    state: str | None,
    claimed: str,
    limit: int,
    offset: int,
) -> bytes:
    # One thread, one session for the token check and the queries (see worklist/access.py).
    with session_scope(request.app.state.session_factory) as session:
        user = authenticate_radiologist(request, session, token)
        conditions: list[ColumnElement[bool]] = [WorklistEntry.is_open.is_(state != WorklistState.read)]
        if state and state != WorklistState.read:
            conditions.append(WorklistEntry.state == state)
        if modality:
            conditions.append(WorklistEntry.modality == modality.upper())
        if site:
            conditions.append(WorklistEntry.site == site)
        if claimed == "unclaimed":
            conditions.append(WorklistEntry.claimed_by.is_(None))
        elif claimed == "mine":
            conditions.append(WorklistEntry.claimed_by == user.username)
        order = (
            (WorklistEntry.read_at.desc(), WorklistEntry.id.desc())
            if state == WorklistState.read
            else (WorklistEntry.due_at, WorklistEntry.tie_break, WorklistEntry.id)
        )
        total = session.scalar(select(func.count()).select_from(WorklistEntry).where(*conditions)) or 0
        # Plain rows, not ORM objects: building 50 mapped instances was most of this endpoint's time.
        rows = session.execute(select(*_ITEM_COLUMNS).where(*conditions).order_by(*order).limit(limit).offset(offset))
        # Not audited per page: the list carries no patient identity (name, patient ID, birth date, accession number,
        # the free-text description) and pages reload on every live update, which would bury the audit log. Opening a
        # study is audited (study.view).
        page = WorklistPage(items=[WorklistItem(**row._mapping) for row in rows], total=total, now=utcnow())
    # Serialised here, once: handing the model back would have FastAPI validate all of it a second time.
    return page.model_dump_json().encode()


@router.get("/filters", response_model=WorklistFilters)
def worklist_filters(session: SessionDep, user: Radiologist) -> WorklistFilters:
    """The modalities and sites present among open studies, for the page's filter menus."""
    open_ = WorklistEntry.is_open.is_(True)
    modalities = session.scalars(
        select(WorklistEntry.modality).where(open_).distinct().order_by(WorklistEntry.modality)
    )
    sites = session.scalars(select(WorklistEntry.site).where(open_).distinct().order_by(WorklistEntry.site))
    return WorklistFilters(modalities=[m for m in modalities if m], sites=[s for s in sites if s], states=list(STATES))


@router.get("/priority-changes", response_model=PriorityChangePage)
def list_priority_changes(
    session: SessionDep,
    user: PriorityReader,
    study_uid: Annotated[str | None, Query(max_length=64, description="a Study Instance UID (64 characters)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> PriorityChangePage:
    """Every priority change with its reason, newest first (radiologists, quality)."""
    conditions = [PriorityChange.study_instance_uid == study_uid] if study_uid else []
    total = session.scalar(select(func.count()).select_from(PriorityChange).where(*conditions)) or 0
    rows = session.scalars(
        select(PriorityChange).where(*conditions).order_by(PriorityChange.id.desc()).limit(limit).offset(offset)
    )
    record_audit(
        session, user.username, "worklist.priority_changes", "study" if study_uid else "worklist", study_uid or "all"
    )
    return PriorityChangePage(
        items=[PriorityChangeOut.model_validate(row, from_attributes=True) for row in rows], total=total
    )


@router.get("/{study_uid}", response_model=WorklistDetail, responses=error_responses(404))
def get_worklist_study(study_uid: str, session: SessionDep, user: Radiologist) -> WorklistDetail:
    """One study: patient, champion result, priority and its reason, timeline, final read."""
    try:
        entry = get_entry(session, study_uid)
    except WorklistError as error:
        raise _http_error(error) from error
    detail = study_detail(session, entry)
    record_audit(session, user.username, "study.view", "study", study_uid, {"via": "worklist"})
    return detail


@router.post("/{study_uid}/claim", response_model=WorklistItem, responses=error_responses(404, 409))
def claim(study_uid: str, session: SessionDep, settings: SettingsDep, user: Radiologist) -> WorklistItem:
    """Claim a study to read it; 409 when another radiologist holds it or it has been read."""
    try:
        entry = claim_study(session, study_uid, user.username, utcnow(), _claim_lifetime(settings))
    except WorklistError as error:
        raise _http_error(error) from error
    record_audit(session, user.username, "study.claim", "study", study_uid)
    return WorklistItem(**item_fields(entry))


@router.post("/{study_uid}/release", response_model=WorklistItem, responses=error_responses(404, 409))
def release(study_uid: str, session: SessionDep, user: Radiologist) -> WorklistItem:
    """Give a claim back (an admin may free anyone's claim)."""
    try:
        entry = release_study(session, study_uid, user.username, utcnow(), force=Role.admin in user.roles)
    except WorklistError as error:
        raise _http_error(error) from error
    record_audit(session, user.username, "study.release", "study", study_uid)
    return WorklistItem(**item_fields(entry))


@router.post(
    "/{study_uid}/read", response_model=FinalReadOut, status_code=status.HTTP_201_CREATED,
    responses=error_responses(404, 409, 413),
)
def read(
    study_uid: str, body: FinalReadIn, session: SessionDep, settings: SettingsDep, user: Radiologist
) -> FinalReadOut:
    """Record the final read (finding present/absent per task, note) of a study you have claimed; closes it."""
    said = {task.value: value for task, value in body.findings.items()}
    findings = {task: value == "present" for task, value in said.items()}
    try:
        final = record_final_read(
            session, study_uid, user.username, findings, body.note, utcnow(), _claim_lifetime(settings)
        )
    except WorklistError as error:
        raise _http_error(error) from error
    record_audit(session, user.username, "study.read", "study", study_uid, {"findings": said})
    return final_read_out(session, final)


@router.get("/{study_uid}/heatmap", responses={200: {"content": {"image/png": {}}}, **error_responses(404)})
def heatmap(study_uid: str, session: SessionDep, settings: SettingsDep, user: Radiologist) -> Response:
    """The champion's heat-map as PNG, when scoring made one; 404 otherwise."""
    try:
        entry = get_entry(session, study_uid)
    except WorklistError as error:
        raise _http_error(error) from error
    if entry.score_result_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no champion result for this study")
    # Scoring owns the heat-map (the DICOM secondary capture it keeps and writes back); it renders the PNG.
    from inference.heatmap import heatmap_png

    png = heatmap_png(session, settings, entry.score_result_id)
    if png is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no heat-map for this result")
    record_audit(session, user.username, "study.view", "study", study_uid, {"via": "worklist", "part": "heatmap"})
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
