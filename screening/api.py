"""HTTP edge of screening: submit a FHIR Bundle, list flagged children, record the paediatrician's outcome,
and the page that shows them. Every view and decision is audited; identifiers are logged only as digests.
"""

from __future__ import annotations

import logging
import threading
from datetime import date
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, Field
from sqlalchemy import select

from datasets.emr_records import ChildRecord, RecordError
from datasets.fhir_emr import records_from_bundle
from screening.errors import ScreeningError
from screening.fhir_output import explanation, flag, operation_outcome, risk_assessment
from screening.screener import Screener, patient_digest
from screening.tables import ScreeningOutcome, ScreeningRun
from service.audit import record_audit
from service.auth import AuthenticatedUser, Role, require_role
from service.deps import SessionDep, SettingsDep

__all__ = ["router", "page_router", "get_screener"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/screening", tags=["screening"])
page_router = APIRouter(tags=["screening"])
Paediatrician = Annotated[AuthenticatedUser, Depends(require_role(Role.paediatrician, Role.admin))]

_templates = Environment(loader=PackageLoader("screening", "templates"), autoescape=select_autoescape(["html"]))
_load_lock = threading.Lock()


def get_screener(request: Request, settings: SettingsDep) -> Screener:
    """The app's screener, loaded on first use (about 6 s) and kept with the app, not in a global."""
    screener = getattr(request.app.state, "screener", None)
    if screener is None:
        with _load_lock:
            screener = getattr(request.app.state, "screener", None)
            if screener is None:
                try:
                    screener = Screener.load(
                        settings.screening_alert_budget, settings.screening_max_age_years, settings.screening_model_path
                    )
                except ScreeningError as exc:
                    raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc
                request.app.state.screener = screener
    return screener


ScreenerDep = Annotated[Screener, Depends(get_screener)]


def _store(session: SessionDep, screener: Screener, record: ChildRecord, as_of: date | None, actor: str) -> dict[str, Any]:
    result = screener.screen(record, as_of)
    assessment = risk_assessment(result, screener.ontology).model_dump(mode="json", exclude_none=True)
    fhir_flag = flag(result, screener.ontology)
    flag_json = fhir_flag.model_dump(mode="json", exclude_none=True) if fhir_flag else None
    row = ScreeningRun(
        patient_id=result.patient_id,
        patient_digest=patient_digest(result.patient_id),
        screened_at=result.screened_at,
        age_days=result.age_days,
        status=result.status,
        reason=result.reason,
        model_version=result.model_version,
        risk=result.risk,
        threshold=result.threshold,
        flagged=result.flagged,
        explanation=explanation(result, screener.ontology),
        risk_assessment=assessment,
        flag=flag_json,
        submitted_by=actor,
    )
    session.add(row)
    session.flush()
    record_audit(session, actor, "screening.submit", "patient", result.patient_id, {"result_id": row.id, "flagged": result.flagged})
    logger.info(
        "screened child=%s status=%s flagged=%s model=%s",
        row.patient_digest,
        result.status,
        result.flagged,
        result.model_version,
    )
    return {"assessment": assessment, "flag": flag_json}


@router.post("", summary="Screen the children of a FHIR R4 Bundle; returns RiskAssessment + Flag per child")
def submit_bundle(
    session: SessionDep,
    user: Paediatrician,
    screener: ScreenerDep,
    bundle: Annotated[dict[str, Any], Body()],
    as_of: Annotated[date | None, Query(description="screening date (default today, UTC)")] = None,
) -> JSONResponse:
    errors: list[RecordError] = []
    entries: list[dict[str, Any]] = []
    for item in records_from_bundle(bundle, "request"):
        if isinstance(item, RecordError):
            errors.append(item)
            continue
        stored = _store(session, screener, item, as_of, user.username)
        entries.append({"resource": stored["assessment"]})
        if stored["flag"]:
            entries.append({"resource": stored["flag"]})
    if not entries:
        reasons = "; ".join(f"{e.record}: {e.reason}" for e in errors[:5])
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=f"no readable Patient in the Bundle ({reasons})")
    if errors:
        entries.append({"resource": operation_outcome(errors).model_dump(mode="json", exclude_none=True)})
    return JSONResponse({"resourceType": "Bundle", "type": "collection", "total": len(entries), "entry": entries})


def _flag_rows(session: SessionDep, include_decided: bool, limit: int) -> list[dict[str, Any]]:
    outcomes = {o.result_id: o for o in session.scalars(select(ScreeningOutcome))}
    rows = session.scalars(
        select(ScreeningRun).where(ScreeningRun.flagged.is_(True)).order_by(ScreeningRun.risk.desc()).limit(limit)
    )
    out = []
    for row in rows:
        decided = outcomes.get(row.id)
        if decided is not None and not include_decided:
            continue
        out.append(
            {
                "id": row.id,
                "patient_id": row.patient_id,
                "age_years": row.age_days / 365.25,
                "risk": row.risk,
                "threshold": row.threshold,
                "model_version": row.model_version,
                "screened_at": row.screened_at.isoformat(),
                "explanation": row.explanation,
                "flag": row.flag,
                "risk_assessment": row.risk_assessment,
                "outcome": decided.outcome if decided else None,
                "decided_by": decided.decided_by if decided else None,
            }
        )
    return out


@router.get("/flags", summary="Flagged children with their explanation (paediatricians)", response_model=None)
def list_flags(
    session: SessionDep,
    user: Paediatrician,
    include_decided: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    format: Literal["json", "html"] = "json",
) -> JSONResponse | HTMLResponse:
    rows = _flag_rows(session, include_decided, limit)
    for row in rows:
        record_audit(session, user.username, "screening.flag.view", "patient", row["patient_id"], {"result_id": row["id"]})
    if format == "html":
        return HTMLResponse(_templates.get_template("flags_fragment.html").render(rows=rows))
    return JSONResponse({"flags": rows})


class OutcomeIn(BaseModel):
    outcome: Literal["referred", "not_relevant"]
    note: str = Field("", max_length=2000)


@router.post("/flags/{result_id}/outcome", status_code=status.HTTP_201_CREATED)
def record_outcome(result_id: int, body: OutcomeIn, session: SessionDep, user: Paediatrician) -> dict[str, Any]:
    row = session.get(ScreeningRun, result_id)
    if row is None or not row.flagged:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no flag with this id")
    outcome = ScreeningOutcome(result_id=row.id, outcome=body.outcome, note=body.note, decided_by=user.username)
    session.add(outcome)
    session.flush()
    record_audit(session, user.username, "screening.outcome", "patient", row.patient_id, {"result_id": row.id, "outcome": body.outcome})
    return {"id": outcome.id, "result_id": row.id, "outcome": outcome.outcome, "decided_by": user.username}


QualityReviewer = Annotated[AuthenticatedUser, Depends(require_role(Role.quality, Role.admin))]


@router.get("/outcomes", summary="Paediatricians' decisions on flags, for quality review")
def list_outcomes(
    session: SessionDep, user: QualityReviewer, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> dict[str, Any]:
    rows = session.execute(
        select(ScreeningOutcome, ScreeningRun)
        .join(ScreeningRun, ScreeningRun.id == ScreeningOutcome.result_id)
        .order_by(ScreeningOutcome.decided_at.desc())
        .limit(limit)
    ).all()
    out = []
    for outcome, run in rows:
        record_audit(session, user.username, "screening.outcome.view", "patient", run.patient_id, {"result_id": run.id})
        out.append(
            {
                "result_id": run.id,
                "patient_id": run.patient_id,
                "model_version": run.model_version,
                "risk": run.risk,
                "threshold": run.threshold,
                "outcome": outcome.outcome,
                "note": outcome.note,
                "decided_by": outcome.decided_by,
                "decided_at": outcome.decided_at.isoformat(),
                "top_candidate": (run.explanation.get("candidates") or [{}])[0].get("name"),
            }
        )
    referred = sum(o["outcome"] == "referred" for o in out)
    return {"outcomes": out, "referred": referred, "not_relevant": len(out) - referred}


@page_router.get("/screening", response_class=HTMLResponse, include_in_schema=False)
def screening_page() -> HTMLResponse:
    """The page shell holds no patient data: the list is rendered by the server after sign-in."""
    return HTMLResponse((resources.files("screening") / "templates" / "screening.html").read_text(encoding="utf-8"))

