"""HTTP edge of screening: submit a FHIR Bundle, list flagged children (and the records that could not be fully
read), record the paediatrician's outcome, and the page that shows them. Every view and decision is audited; identifiers are logged only as digests.
"""

from __future__ import annotations

import logging
import threading
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from datasets.emr_records import ChildRecord, RecordError
from datasets.fhir_emr import records_from_bundle
from datasets.fhir_entry_rules import merged_record
from screening.errors import ScreeningError
from screening.fhir_feed import flag_statuses, screening_resources
from screening.fhir_output import operation_outcome, unassigned_care_team_outcome
from screening.findings import RETIRING_STATUSES
from screening.results_store import later_of_child, store_result
from screening.scope import Child, in_scope
from screening.screener import Screener
from screening.tables import ScreeningAssignment, ScreeningOutcome, ScreeningRun
from service.audit import record_audit
from service.auth import AuthenticatedUser, Role, require_role
from service.deps import SessionDep, SettingsDep
from service.error_responses import AUTHENTICATED, error_responses
from service.fhir_http import require_json_body
from service.pages import static_page_router
from service.request_params import Int32RowId, Offset, Page, StoredText

__all__ = ["router", "page_router", "get_screener"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/screening", tags=["screening"], responses=AUTHENTICATED)
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
                        settings.screening_alert_budget, settings.screening_max_age_years, settings.screening_model_path,
                        settings.screening_risk_threshold,
                    )
                except ScreeningError as exc:
                    raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from exc
                request.app.state.screener = screener
    return screener


ScreenerDep = Annotated[Screener, Depends(get_screener)]


@router.post(
    "", summary="Screen the children of a FHIR R4 Bundle; returns RiskAssessment + Flag per child",
    responses=error_responses(413, 415),
)
def submit_bundle(
    session: SessionDep,
    user: Paediatrician,
    json_body: Annotated[None, Depends(require_json_body)],  # FHIR XML: 415, before the screener's load
    screener: ScreenerDep,
    bundle: Annotated[dict[str, Any], Body()],
    as_of: Annotated[date | None, Query(description="screening date (default the site's today, in the server's time zone)")] = None,
) -> JSONResponse:
    """A record naming a practitioner or organisation the paediatrician is not assigned to is stored as their own
    patient (``screening.scope.child_of_record``): it cannot change a result of a scope they cannot read. The
    answer's warning ``OperationOutcome`` says which records and how an admin assigns the care team."""
    errors: list[RecordError] = []
    entries: list[dict[str, Any]] = []
    unassigned: dict[tuple[str, ...], list[str]] = {}
    admin = Role.admin in user.roles
    read: dict[str, list[ChildRecord]] = {}
    for record in records_from_bundle(bundle, "request"):
        if isinstance(record, RecordError):
            errors.append(record)
        else:
            read.setdefault(record.patient_id, []).append(record)
    for parts in read.values():
        # A child in two Bundles of a Bundle of Bundles is one child, as screen-emr reads it: screened once, on both.
        item = parts[0] if len(parts) == 1 else merged_record(parts)
        stored = store_result(
            session, screener, item, screener.screen(item, as_of), user.username, owner=user.username, admin=admin
        )
        # The stored result as /fhir serves it and the feed pushes it, ids included (RiskAssessment/medscreen-ra-<n>):
        # the answer's resources had had no id, so an EMR could not match them with either. A repeat (the same
        # evidence as the child's stored result) is answered with that stored result, which it was not stored again.
        row = session.get(ScreeningRun, stored["id"])
        assert row is not None  # store_result flushed it, or found it
        flag_status = flag_statuses(session, [row.id]).get(row.id) if row.flag else None
        entries += [{"resource": r.model_dump(mode="json", exclude_none=True)} for r in screening_resources(row, flag_status)]
        if stored["unassigned_care_team"]:
            unassigned.setdefault(tuple(stored["unassigned_care_team"]), []).append(item.patient_id)
    if not entries:
        reasons = "; ".join(f"{e.record}: {e.reason}" for e in errors[:5])
        detail = f"no readable Patient in the Bundle ({reasons})" if reasons else "no Patient resource in the Bundle"
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=detail)
    if errors:
        entries.append({"resource": operation_outcome(errors).model_dump(mode="json", exclude_none=True)})
    if unassigned:
        warning = unassigned_care_team_outcome(user.username, unassigned)
        entries.append({"resource": warning.model_dump(mode="json", exclude_none=True)})
    # No total: R4 allows it only in a searchset or history Bundle (bdl-1), and a validator refuses it here.
    return JSONResponse({"resourceType": "Bundle", "type": "collection", "entry": entries})


def _decisions(session: Session, result_ids: list[int]) -> dict[int, list[ScreeningOutcome]]:
    out: dict[int, list[ScreeningOutcome]] = {i: [] for i in result_ids}
    if result_ids:
        query = select(ScreeningOutcome).where(ScreeningOutcome.result_id.in_(result_ids)).order_by(ScreeningOutcome.id)
        for outcome in session.scalars(query):
            out[outcome.result_id].append(outcome)
    return out


def _superseded() -> ColumnElement[bool]:
    """A flag with a later flag of the same child (record id within its scope: another site's patient 123, or
    another clinician's patient 123 whose record names no care team, is another child): the later one, raised on new findings, is the one to decide. An undecided
    flag is also retired by a later result saying the child has died or the record is no longer in use (merged):
    nobody should be asked to contact that family; a decided flag stays in the history."""
    newer = aliased(ScreeningRun)
    later = later_of_child(newer)
    return or_(
        exists().where(later, newer.flagged.is_(True)),
        and_(_undecided(), exists().where(later, newer.status.in_(RETIRING_STATUSES))),
    )


def _undecided() -> ColumnElement[bool]:
    return ~exists().where(ScreeningOutcome.result_id == ScreeningRun.id)


_WITHDRAWN_BECAUSE = {"deceased": "the child has died", "inactive_record": "the record is no longer in use"}


def _withdrawn(session: Session, user: AuthenticatedUser, shown: int = 20) -> tuple[int, list[dict[str, Any]]]:
    """Undecided flags in the clinician's scope that a later result retired (the child has died, the record was
    merged), newest first, with that result's reason: a flag the paediatrician saw yesterday does not just vanish."""
    newer = aliased(ScreeningRun)
    retired = and_(ScreeningRun.flagged.is_(True), in_scope(user), _undecided())
    retiring = and_(later_of_child(newer), newer.status.in_(RETIRING_STATUSES))
    total = session.scalar(
        select(func.count()).select_from(ScreeningRun).where(retired, exists().where(retiring))
    ) or 0
    out: dict[int, dict[str, Any]] = {}
    query = select(ScreeningRun, newer).join(newer, retiring).where(retired).order_by(newer.screened_at.desc(), newer.id.desc())
    for flag, later in session.execute(query.limit(shown * 4)).tuples():
        out[flag.id] = {  # the earliest retiring result of each flag: the rows come newest first
            "id": flag.id,
            "patient_id": flag.patient_id,
            "patient_name": flag.patient_name,
            "mrn": flag.mrn,
            "flagged_at": flag.screened_at.isoformat(),
            "withdrawn_at": later.screened_at.isoformat(),
            "status": later.status,
            "because": _WITHDRAWN_BECAUSE.get(later.status, later.status),
            "reason": later.reason,
        }
    return total, sorted(out.values(), key=lambda w: (w["withdrawn_at"], w["id"]), reverse=True)[:shown]


def _incomplete(session: Session, user: AuthenticatedUser, shown: int = 20) -> tuple[int, list[dict[str, Any]]]:
    """Children in the clinician's scope whose latest result is of a record that could not be fully read and was
    not flagged on the part read, newest first. Listed apart from the flags: the unread entries may be the ones
    that would have raised a flag, so the risk is only a lower bound and must not pass for a negative. A flagged
    incomplete result is a flag (listed with its unread entries); a later result of the child replaces this one."""
    newer = aliased(ScreeningRun)
    where = [ScreeningRun.status == "incomplete", ScreeningRun.flagged.is_(False), in_scope(user),
             ~exists().where(later_of_child(newer))]
    total = session.scalar(select(func.count()).select_from(ScreeningRun).where(*where)) or 0
    rows = session.scalars(
        select(ScreeningRun).where(*where).order_by(ScreeningRun.screened_at.desc(), ScreeningRun.id.desc()).limit(shown)
    )
    return total, [
        {
            **_listed(row),
            "risk_is_lower_bound": True,
            "reason": row.reason,
            "not_read": row.explanation.get("dropped", []),
            "risk_assessment": row.risk_assessment,
        }
        for row in rows
    ]


def _listed(row: ScreeningRun) -> dict[str, Any]:
    """What the page lists of every stored result, flagged or incomplete: the child, the risk and the model."""
    return {
        "id": row.id,
        "patient_id": row.patient_id,
        "patient_name": row.patient_name,
        "mrn": row.mrn,
        "practitioner": row.practitioner,
        "organization": row.organization,
        "status": row.status,
        "age_years": row.age_days / 365.25,
        "risk": row.risk,
        "threshold": row.threshold,
        "model_version": row.model_version,
        "screened_at": row.screened_at.isoformat(),
    }


def _earlier_decisions(
    session: Session, user: AuthenticatedUser, rows: list[ScreeningRun]
) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Decisions on the earlier flags (in the clinician's scope) of the listed children, oldest first."""
    out: dict[tuple[str, ...], list[dict[str, Any]]] = {Child.of(row).identity(): [] for row in rows}
    if not rows:
        return out
    query = (
        select(ScreeningOutcome, ScreeningRun)
        .join(ScreeningRun, ScreeningRun.id == ScreeningOutcome.result_id)
        .where(ScreeningRun.patient_id.in_({row.patient_id for row in rows}), ScreeningRun.id.not_in([row.id for row in rows]), in_scope(user))
        .order_by(ScreeningOutcome.id)
    )
    for outcome, run in session.execute(query).tuples():
        if Child.of(run).identity() in out:
            out[Child.of(run).identity()].append({"outcome": outcome.outcome, "note": outcome.note, "decided_by": outcome.decided_by,
                                     "decided_at": outcome.decided_at.isoformat(), "screened_at": run.screened_at.isoformat()})
    return out


def _flag_page(session: Session, user: AuthenticatedUser, include_decided: bool, page: int, per_page: int) -> dict[str, Any]:
    where = [ScreeningRun.flagged.is_(True), in_scope(user), ~_superseded()]
    if not include_decided:
        where.append(~exists().where(ScreeningOutcome.result_id == ScreeningRun.id))
    total = session.scalar(select(func.count()).select_from(ScreeningRun).where(*where)) or 0
    rows = list(
        session.scalars(
            select(ScreeningRun)
            .where(*where)
            .order_by(ScreeningRun.risk.desc(), ScreeningRun.id)
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
    )
    decisions = _decisions(session, [row.id for row in rows])
    earlier = _earlier_decisions(session, user, rows)
    flags = []
    for row in rows:
        history = decisions[row.id]
        latest = history[-1] if history else None
        flags.append(
            {
                **_listed(row),
                "explanation": row.explanation,
                # Its status now, as the EMR is sent it (``fhir_feed``): a decided flag is no longer active.
                "flag": {**row.flag, "status": "inactive"} if row.flag and latest else row.flag,
                "risk_assessment": row.risk_assessment,
                "outcome": latest.outcome if latest else None,
                "decision_id": latest.id if latest else None,  # what the page's decision replaces (OutcomeIn)
                "decided_by": latest.decided_by if latest else None,
                "note": latest.note if latest else "",
                "decisions": [
                    {"outcome": o.outcome, "note": o.note, "decided_by": o.decided_by, "decided_at": o.decided_at.isoformat()}
                    for o in history
                ],
                "earlier_decisions": earlier[Child.of(row).identity()],
            }
        )
    pages = max(1, -(-total // per_page))
    # A paediatrician assigned to no practitioner or organisation sees only the children they submitted: their empty
    # list had read "No flagged children waiting for a decision", a negative, while their clinic's flags waited.
    unassigned = Role.admin not in user.roles and session.scalar(
        select(ScreeningAssignment.id).where(ScreeningAssignment.username == user.username).limit(1)
    ) is None
    withdrawn_total, withdrawn = _withdrawn(session, user)
    incomplete_total, incomplete = _incomplete(session, user)
    return {"flags": flags, "total": total, "page": page, "per_page": per_page, "pages": pages, "unassigned": unassigned,
            "withdrawn_total": withdrawn_total, "withdrawn": withdrawn,
            "incomplete_total": incomplete_total, "incomplete": incomplete}


@router.get("/flags", summary="Flagged children in the clinician's scope, a page at a time, and the records that could not be fully read", response_model=None)
def list_flags(
    session: SessionDep,
    user: Paediatrician,
    include_decided: bool = False,
    page: Page = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
    format: Literal["json", "html"] = "json",
) -> JSONResponse | HTMLResponse:
    listing = _flag_page(session, user, include_decided, page, per_page)
    if listing["page"] > listing["pages"]:
        # The list got shorter since that page was shown (a flag decided here or by a colleague, or withdrawn):
        # its last page, not an empty one that reads as "nothing waits".
        listing = _flag_page(session, user, include_decided, listing["pages"], per_page)
    for row in listing["flags"]:
        record_audit(session, user.username, "screening.flag.view", "patient", row["patient_id"], {"result_id": row["id"]})
    for row in listing["withdrawn"]:
        record_audit(session, user.username, "screening.flag.view", "patient", row["patient_id"],
                     {"result_id": row["id"], "withdrawn": row["status"]})
    for row in listing["incomplete"]:
        record_audit(session, user.username, "screening.flag.view", "patient", row["patient_id"],
                     {"result_id": row["id"], "incomplete": True})
    if format == "html":
        html = _templates.get_template("flags_fragment.html").render(include_decided=include_decided, **listing)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})
    return JSONResponse(listing, headers={"Cache-Control": "no-store"})


def _retired_because(session: Session, row: ScreeningRun) -> str:
    """Why the page no longer lists a flag (``_superseded``): a newer flag of the child, or a later record saying the
    child has died or the record is no longer in use; "" when it still does."""
    newer = aliased(ScreeningRun)
    later = session.scalars(
        select(newer).select_from(ScreeningRun).join(newer, later_of_child(newer))
        .where(ScreeningRun.id == row.id, or_(newer.flagged.is_(True), newer.status.in_(RETIRING_STATUSES)))
        .order_by(newer.screened_at, newer.id)
    ).all()
    flagged = next((r for r in later if r.flagged), None)
    if flagged is not None:
        return f"a newer flag of this child, raised {flagged.screened_at:%Y-%m-%d %H:%M} UTC, replaced this one: decide on that one"
    if later and not session.scalar(select(ScreeningOutcome.id).where(ScreeningOutcome.result_id == row.id).limit(1)):
        because = _WITHDRAWN_BECAUSE.get(later[0].status, later[0].status)
        reason = f" ({later[0].reason})" if later[0].reason else ""
        return f"this flag was withdrawn {later[0].screened_at:%Y-%m-%d %H:%M} UTC: {because}{reason}"
    return ""


class OutcomeIn(BaseModel):
    outcome: Literal["referred", "not_relevant"]
    # No NUL: the decision had failed as a 500 on PostgreSQL (SQLite stored it). A 422 says why.
    note: StoredText = Field("", max_length=2000)
    # The flag's latest decision as the decider saw it (its id; null: undecided), as the page sends it. Given, a
    # decision recorded since is a 409: a colleague's referral had been replaced, unseen, by a "not relevant"
    # clicked on a page loaded before it. Left out, the decision is added whatever came before (as it always was).
    replaces: int | None = None


@router.post("/flags/{result_id}/outcome", status_code=status.HTTP_201_CREATED, responses=error_responses(404, 409, 413))
def record_outcome(result_id: Int32RowId, body: OutcomeIn, session: SessionDep, user: Paediatrician) -> dict[str, Any]:
    """Record a decision on a flag; a changed decision is a new entry (the latest counts), never an edit."""
    row = session.scalars(select(ScreeningRun).where(ScreeningRun.id == result_id, in_scope(user))).first()
    if row is None or not row.flagged:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no flag with this id among your patients")
    retired = _retired_because(session, row)
    if retired:
        # The page no longer asks about it: a referral of a child who has died had been stored from a list loaded
        # before the record said so, with nothing said; a decision on old findings, with the newer flag unseen.
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"{retired}: nothing was saved. Reload the list.")
    previous = session.scalars(
        select(ScreeningOutcome).where(ScreeningOutcome.result_id == row.id).order_by(ScreeningOutcome.id.desc())
    ).first()
    if "replaces" in body.model_fields_set and body.replaces != (previous.id if previous else None):
        said = (f"{previous.decided_by} decided '{previous.outcome.replace('_', ' ')}' on this flag at "
                f"{previous.decided_at:%Y-%m-%d %H:%M} UTC") if previous else "the decision you saw was withdrawn"
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"{said}, after your list was loaded: nothing was saved. "
                            "Reload the list to see it, then decide again if you still disagree.")
    outcome = ScreeningOutcome(result_id=row.id, outcome=body.outcome, note=body.note, decided_by=user.username)
    session.add(outcome)
    session.flush()
    record_audit(
        session,
        user.username,
        "screening.outcome" if previous is None else "screening.outcome.change",
        "patient",
        row.patient_id,
        {"result_id": row.id, "outcome": body.outcome, "previous": previous.outcome if previous else None},
    )
    return {"id": outcome.id, "result_id": row.id, "outcome": outcome.outcome, "note": outcome.note, "decided_by": user.username}


QualityReviewer = Annotated[AuthenticatedUser, Depends(require_role(Role.quality, Role.admin))]


@router.get("/outcomes", summary="Paediatricians' latest decision on each flag, for quality review, a page at a time")
def list_outcomes(
    session: SessionDep,
    user: QualityReviewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Newest decision first; ``total``, ``referred`` and ``not_relevant`` count every flag decided, not the page
    (they had counted the page only, so past 200 decisions the referral rate was of the latest 200)."""
    # One decision per flag, the latest: a flag first referred and then judged not relevant counts once.
    latest = ScreeningOutcome.id.in_(
        select(func.max(ScreeningOutcome.id)).group_by(ScreeningOutcome.result_id).scalar_subquery()
    )
    by_outcome = dict(
        session.execute(select(ScreeningOutcome.outcome, func.count()).where(latest).group_by(ScreeningOutcome.outcome))
        .tuples()
        .all()
    )
    rows = session.execute(
        select(ScreeningOutcome, ScreeningRun)
        .join(ScreeningRun, ScreeningRun.id == ScreeningOutcome.result_id)
        .where(latest)
        .order_by(ScreeningOutcome.decided_at.desc(), ScreeningOutcome.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    changes = dict(
        session.execute(
            select(ScreeningOutcome.result_id, func.count())
            .where(ScreeningOutcome.result_id.in_([run.id for _, run in rows]))
            .group_by(ScreeningOutcome.result_id)
        ).tuples().all()
    )
    # Quality measures the flags (PPV per version), which needs the decision, not whose it is: the child's record id
    # and the paediatrician's free-text note (which names the child, the family, the clinic) are null for it, as
    # patient identity is for quality in GET /api/studies (README, "Users, roles and audit"). Only admin, who holds
    # every role, reads them here; both had gone to every quality account for every child.
    identity = user.has_role(Role.admin)
    out = []
    for outcome, run in rows:
        record_audit(session, user.username, "screening.outcome.view", "patient", run.patient_id, {"result_id": run.id})
        out.append(
            {
                "result_id": run.id,
                "patient_id": run.patient_id if identity else None,
                "model_version": run.model_version,
                "risk": run.risk,
                "threshold": run.threshold,
                "outcome": outcome.outcome,
                "note": outcome.note if identity else None,
                "decided_by": outcome.decided_by,
                "decided_at": outcome.decided_at.isoformat(),
                "decisions_made": changes.get(run.id, 1),
                "top_candidate": (run.explanation.get("candidates") or [{}])[0].get("name"),
            }
        )
    return {
        "outcomes": out,
        "total": sum(by_outcome.values()),
        "offset": offset,
        "limit": limit,
        "referred": by_outcome.get("referred", 0),
        "not_relevant": by_outcome.get("not_relevant", 0),
    }


# The page: one HTML file with its script and style sheet, under the same CSP and headers as /worklist.
page_router = static_page_router(
    path="/screening",
    package="screening",
    folder="static",
    html="screening.html",
    assets={"screening.js": "text/javascript", "screening.css": "text/css"},
    img_src="'self'",
    tag="screening",
)
