"""Screening flags for the EMR: the stored ``RiskAssessment`` and ``Flag`` of each flagged child, with stable
ids, into the outbox (channel ``fhir``) and readable at ``GET /fhir/RiskAssessment|Flag``.

Flagged children are pushed, and so are children whose record could not be fully read (a ``preliminary``
RiskAssessment naming the entries not read): not flagged on the part read is not a negative, and the EMR must not
take it for one. A RiskAssessment for every child screened would put a million "no concern" resources in the EMR
a year for no one to act on; those stay readable here.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.riskassessment import RiskAssessment
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from datasets.fhir_emr import fhir_id
from screening.scope import in_scope
from screening.tables import ScreeningRun
from service.audit import record_audit
from service.auth import AuthenticatedUser, Role, require_role
from service.deps import SessionDep
from service.fhir_push import FHIR_JSON, searchset_bundle, transaction_bundle
from service.outbox import Candidate, existing_keys, start_cursor, take_in

__all__ = ["FHIR_CHANNEL", "screening_resources", "take_in_screening_flags", "fhir_router"]

FHIR_CHANNEL = "fhir"
_ROW_ID = re.compile(r"[0-9]{1,19}")
_MAX_ROW_ID = 2**63 - 1
_DIGESTED_ID = re.compile(r"(.{1,53})-[0-9a-f]{10}")  # fhir_id of a record id it had to change: start, digest
_CURSOR = "fhir:screening_results"
# Re-read behind the cursor: results are stored by concurrent requests and batch runs, and on PostgreSQL a lower id
# can commit after a higher one (it had been skipped for good, the flag never sent); the outbox key keeps the re-read
# from adding anything twice.
_LOOKBACK = 500
fhir_router = APIRouter(prefix="/fhir", tags=["fhir"])
Paediatrician = Annotated[AuthenticatedUser, Depends(require_role(Role.paediatrician, Role.admin))]


def screening_resources(row: ScreeningRun) -> list[Resource]:
    """The RiskAssessment (and Flag, when flagged) as stored at screening time, with ids derived from the row."""
    resources: list[Resource] = [RiskAssessment.model_validate({**row.risk_assessment, "id": f"medscreen-ra-{row.id}"})]
    if row.flag:
        resources.append(Flag.model_validate({**row.flag, "id": f"medscreen-flag-{row.id}"}))
    return resources


def take_in_screening_flags(session_factory: sessionmaker[Session], now: datetime | None = None, *, batch: int = 200) -> int:
    def read(session: Session) -> list[Candidate]:
        cursor, created = start_cursor(session, _CURSOR, session.scalar(select(func.max(ScreeningRun.id))))
        if created:
            return []
        rows = session.scalars(
            select(ScreeningRun).where(ScreeningRun.id > cursor.last_id - _LOOKBACK).order_by(ScreeningRun.id)
            .limit(batch + _LOOKBACK)
        ).all()
        known = existing_keys(session, FHIR_CHANNEL, [f"RiskAssessment/medscreen-ra-{row.id}" for row in rows])
        found = []
        for row in rows:
            key = f"RiskAssessment/medscreen-ra-{row.id}"
            if not (row.flagged or row.status == "incomplete") or key in known:
                found.append(Candidate(_CURSOR, row.id))
                continue
            # The stored JSON is copied now: the build (validation included) runs after this session is gone.
            copy = ScreeningRun(id=row.id, risk_assessment=dict(row.risk_assessment),
                                flag=dict(row.flag) if row.flag else None)
            what = "flag" if row.flagged else "incomplete"
            found.append(Candidate(_CURSOR, row.id, key, f"screening {what} {row.id} (child {row.patient_digest})",
                                   partial(_bundle, copy)))
        return found

    return take_in(session_factory, FHIR_CHANNEL, FHIR_JSON, read, now)


def _bundle(row: ScreeningRun) -> str:
    return transaction_bundle(screening_resources(row)).model_dump_json(exclude_none=True)


def _fhir(body: object, status_code: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, media_type=FHIR_JSON)


def _not_found(what: str) -> JSONResponse:
    return _fhir({"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": "not-found", "diagnostics": f"no {what}"}]}, 404)


def _read(session: SessionDep, user: AuthenticatedUser, resource_type: str, prefix: str, resource_id: str) -> JSONResponse:
    number = resource_id.removeprefix(prefix)
    row = None
    # Only ids we made: ASCII digits within the database's integer range (str.isdigit() takes '²', which int()
    # refuses, and SQLite overflows past 2**63 - 1); anything else is "not found", never a 500.
    if resource_id.startswith(prefix) and _ROW_ID.fullmatch(number) and int(number) <= _MAX_ROW_ID:
        # Outside the clinician's scope is "not found", as on /api/screening/flags: a 403 would say the child exists.
        row = session.scalars(select(ScreeningRun).where(ScreeningRun.id == int(number), in_scope(user))).first()
    if row is None:
        return _not_found(f"{resource_type}/{resource_id}")
    record_audit(session, user.username, "fhir.read", "patient", row.patient_id, {"result_id": row.id})
    for resource in screening_resources(row):
        if resource.get_resource_type() == resource_type:
            return _fhir(resource.model_dump(mode="json", exclude_none=True))
    return _not_found(f"{resource_type}/{resource_id}")


@fhir_router.get("/RiskAssessment/{resource_id}", summary="One screening result as a RiskAssessment")
def read_risk_assessment(resource_id: str, session: SessionDep, user: Paediatrician) -> JSONResponse:
    return _read(session, user, "RiskAssessment", "medscreen-ra-", resource_id)


@fhir_router.get("/Flag/{resource_id}", summary="One screening flag")
def read_flag(resource_id: str, session: SessionDep, user: Paediatrician) -> JSONResponse:
    return _read(session, user, "Flag", "medscreen-flag-", resource_id)


def _results_of(session: Session, user: AuthenticatedUser, wanted: str) -> list[ScreeningRun]:
    """The in-scope results whose subject is ``wanted``: the record id itself, or the reference's id
    (``fhir_id`` of the record id). That one replaced each character a FHIR id does not allow with '-' and
    cut a long id to its start and a digest, so candidates are found by pattern and confirmed here."""
    digested = _DIGESTED_ID.fullmatch(wanted)
    start = digested.group(1) if digested else wanted
    pattern = start.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("-", "_")
    pattern += "%" if digested else ""
    candidates = session.scalars(
        select(ScreeningRun)
        .where(or_(ScreeningRun.patient_id == wanted, ScreeningRun.patient_id.like(pattern, escape="\\")), in_scope(user))
        .order_by(ScreeningRun.id)
    )
    return [row for row in candidates if wanted in (row.patient_id, fhir_id(row.patient_id))]


@fhir_router.get("/RiskAssessment", summary="A child's screening results (RiskAssessment, and Flag when flagged)")
def search_risk_assessments(
    request: Request, session: SessionDep, user: Paediatrician,
    subject: Annotated[str, Query(description="Patient/<id> or the patient identifier")],
) -> JSONResponse:
    rows = _results_of(session, user, subject.removeprefix("Patient/"))
    for row in rows:  # each result read is audited, as each row the page shows is
        record_audit(session, user.username, "fhir.read", "patient", row.patient_id, {"result_id": row.id})
    resources = [resource for row in rows for resource in screening_resources(row)]
    bundle = searchset_bundle(str(request.base_url) + "fhir", resources, match="RiskAssessment")
    return _fhir(bundle.model_dump(mode="json", exclude_none=True))
