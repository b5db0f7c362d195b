"""Screening flags for the EMR: the stored ``RiskAssessment`` and ``Flag`` of each flagged child, with stable
ids, into the outbox (channel ``fhir``) and readable at ``GET /fhir/RiskAssessment|Flag``.

Flagged children are pushed, and so are children whose record could not be fully read (a ``preliminary``
RiskAssessment naming the entries not read): not flagged on the part read is not a negative, and the EMR must not
take it for one. A RiskAssessment for every child screened would put a million "no concern" resources in the EMR
a year for no one to act on; those stay readable here.

A Flag's status is served and sent as it is now, not as stored: the page retires a flag (the child has died, the
record was merged, a paediatrician decided on it, a newer flag replaced it), and an EMR left with an active Flag
would keep asking someone to act on it. Each such change is sent again under the same Flag id (``flag_statuses``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.riskassessment import RiskAssessment
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased, sessionmaker

from datasets.fhir_emr import fhir_id
from screening.findings import RETIRING_STATUSES
from screening.results_store import later_of_child
from screening.scope import Child, in_scope
from screening.tables import ScreeningOutcome, ScreeningRun
from service.audit import record_audit
from service.auth import AuthenticatedUser, Role, require_role
from service.deps import SessionDep
from service.fhir_push import FHIR_JSON, searchset_bundle, transaction_bundle
from service.outbox import (
    Candidate,
    OutboxCursor,
    OutboxMessage,
    existing_keys,
    read_from,
    start_cursor,
    take_in,
    unseen_behind,
)
from service.request_params import MAX_INT32_ROW_ID

__all__ = ["FHIR_CHANNEL", "screening_resources", "flag_statuses", "take_in_screening_flags", "fhir_router"]

FHIR_CHANNEL = "fhir"
_ROW_ID = re.compile(r"[0-9]{1,19}")
_DIGESTED_ID = re.compile(r"(.{1,53})-[0-9a-f]{10}")  # fhir_id of a record id it had to change: start, digest
_CURSOR = "fhir:screening_results"
_OUTCOMES_CURSOR = "fhir:screening_outcomes"
# The reason a merged record's result gives (``datasets.fhir_entry_rules.patient_standing``): a flag on a record
# merged into another is on the wrong record, where one whose child has died (or whose record is just not in use)
# is no longer current.
_MERGED = "a merged record"
# Re-read behind the cursor: results are stored by concurrent requests and batch runs, and on PostgreSQL a lower id
# can commit after a higher one (it had been skipped for good, the flag never sent); the outbox key keeps the re-read
# from adding anything twice.
_LOOKBACK = 500
fhir_router = APIRouter(prefix="/fhir", tags=["fhir"])
Paediatrician = Annotated[AuthenticatedUser, Depends(require_role(Role.paediatrician, Role.admin))]


def screening_resources(row: ScreeningRun, flag_status: str | None = None) -> list[Resource]:
    """The RiskAssessment (and Flag, when flagged) as stored at screening time, with ids derived from the row;
    ``flag_status``: the Flag's status now (``flag_statuses``), in place of the stored one."""
    resources: list[Resource] = [RiskAssessment.model_validate({**row.risk_assessment, "id": f"medscreen-ra-{row.id}"})]
    if row.flag:
        resources.append(_flag(row.id, row.flag, flag_status))
    return resources


def _flag(row_id: int, stored: dict[str, Any], status: str | None) -> Flag:
    return Flag.model_validate({**stored, "id": f"medscreen-flag-{row_id}", "status": status or stored["status"]})


def flag_statuses(session: Session, flag_ids: Iterable[int]) -> dict[int, str]:
    """Each flagged result's Flag status now, as the page has it: ``entered-in-error`` once a later result of the
    child says its record was merged into another; ``inactive`` once a later one says the child has died or the
    record is not in use, once a newer flag of the child replaces it, or once a paediatrician decided on it;
    ``active`` otherwise. Each of these is for good (results and decisions are only added), so a status never
    goes back, and each change is sent to the EMR once."""
    ids = list(flag_ids)
    if not ids:
        return {}
    newer = aliased(ScreeningRun)
    later = session.execute(
        select(ScreeningRun.id, newer.status, newer.reason, newer.flagged).select_from(ScreeningRun)
        .join(newer, later_of_child(newer)).where(ScreeningRun.id.in_(ids))
    ).tuples()
    decided = set(session.scalars(select(ScreeningOutcome.result_id).where(ScreeningOutcome.result_id.in_(ids))))
    out = {flag_id: "inactive" if flag_id in decided else "active" for flag_id in ids}
    for flag_id, status, reason, flagged in later:
        if status == "inactive_record" and _MERGED in reason:
            out[flag_id] = "entered-in-error"
        elif (status in RETIRING_STATUSES or flagged) and out[flag_id] == "active":
            out[flag_id] = "inactive"
    return out


def take_in_screening_flags(session_factory: sessionmaker[Session], now: datetime | None = None, *, batch: int = 200) -> int:
    def read(session: Session) -> list[Candidate]:
        cursor, created = start_cursor(session, _CURSOR, ScreeningRun.id, _LOOKBACK)
        outcomes_cursor, outcomes_created = start_cursor(session, _OUTCOMES_CURSOR, ScreeningOutcome.id, _LOOKBACK)
        if created:
            return []
        rows = session.scalars(
            select(ScreeningRun).where(_to_read(ScreeningRun.id, cursor)).order_by(ScreeningRun.id)
            .limit(batch + 2 * _LOOKBACK)
        ).all()
        known = existing_keys(session, FHIR_CHANNEL, [f"RiskAssessment/medscreen-ra-{row.id}" for row in rows])
        # Messages already stored: the status changes below are of flags the EMR was sent before this pass (one
        # sent in this pass carries its status now).
        found = _status_changes(session, rows, _new_outcomes(session, outcomes_cursor, outcomes_created, batch))
        if outcomes_created:
            # The outcomes cursor is new while the results cursor is not: an upgrade from a release that sent no
            # status changes. Flags it pushed may have been decided on, or retired by a death or newer flag, long
            # before (beyond the look-back): each is checked once, or it stays active in the EMR for good.
            pushed = _pushed_flags(session)
            for start in range(0, len(pushed), _LOOKBACK):
                found += _status_changes(session, [], [], pushed[start:start + _LOOKBACK])
        new = [row for row in rows if (row.flagged or row.status == "incomplete")
               and f"RiskAssessment/medscreen-ra-{row.id}" not in known]
        statuses = flag_statuses(session, [row.id for row in new if row.flagged])
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
                                   partial(_bundle, copy, statuses.get(row.id)), topic=_topic(row.id) if row.flagged else ""))
        return found

    return take_in(session_factory, FHIR_CHANNEL, FHIR_JSON, read, now)


def _topic(row_id: int) -> str:
    """The outbox topic of a Flag's messages: a later status replaces an earlier one at the EMR, so an earlier
    message (the first push, active) must not be replayed after it (``service.outbox.newer_of_topic``)."""
    return f"Flag/medscreen-flag-{row_id}"


def _to_read(source_id: InstrumentedAttribute[int], cursor: OutboxCursor) -> ColumnElement[bool]:
    """The rows a pass reads: ``_LOOKBACK`` behind the cursor, and those below its floor that were in flight when it
    started (``service.outbox.unseen_behind``, at most ``_LOOKBACK`` of them)."""
    return or_(source_id > read_from(cursor, _LOOKBACK), source_id.in_(unseen_behind(cursor, _LOOKBACK)))


def _new_outcomes(session: Session, cursor: OutboxCursor, created: bool, batch: int) -> list[ScreeningOutcome]:
    """Decisions recorded since the last pass (re-read behind the cursor, as results are: see ``_LOOKBACK``)."""
    if created:
        return []
    return list(session.scalars(
        select(ScreeningOutcome).where(_to_read(ScreeningOutcome.id, cursor)).order_by(ScreeningOutcome.id)
        .limit(batch + 2 * _LOOKBACK)
    ))


def _pushed_flags(session: Session) -> list[int]:
    """The results whose Flag the EMR was sent (their RiskAssessment's message is in the outbox), ascending."""
    prefix = "RiskAssessment/medscreen-ra-"
    keys = session.scalars(select(OutboxMessage.key).where(OutboxMessage.channel == FHIR_CHANNEL,
                                                           OutboxMessage.key.like(f"{prefix}%")))
    ids = {int(key.removeprefix(prefix)) for key in keys}
    return sorted(ids & set(session.scalars(select(ScreeningRun.id).where(ScreeningRun.flagged.is_(True)))))


def _status_changes(
    session: Session, rows: Iterable[ScreeningRun], outcomes: list[ScreeningOutcome], flag_ids: Iterable[int] = ()
) -> list[Candidate]:
    """A message per Flag the EMR was sent whose status changed since: a retiring or newer flagged result of its
    child, or a decision on it, was stored (or it is one of ``flag_ids``). Keyed by Flag and status, so each change
    is added once."""
    found = [Candidate(_OUTCOMES_CURSOR, outcome.id) for outcome in outcomes]
    triggers = [row for row in rows if row.flagged or row.status in RETIRING_STATUSES]
    children = {Child.of(row).identity() for row in triggers}
    flags = {outcome.result_id for outcome in outcomes} | set(flag_ids)
    if children:
        of_children = session.scalars(
            select(ScreeningRun).where(ScreeningRun.flagged.is_(True), ScreeningRun.patient_id.in_({c[0] for c in children}))
        )
        flags |= {row.id for row in of_children if Child.of(row).identity() in children}
    sent = existing_keys(session, FHIR_CHANNEL, [f"RiskAssessment/medscreen-ra-{i}" for i in flags])
    changed = {i: status for i, status in flag_statuses(session, (i for i in flags if f"RiskAssessment/medscreen-ra-{i}" in sent)).items()
               if status != "active"}
    done = existing_keys(session, FHIR_CHANNEL, [f"{_topic(i)}/{status}" for i, status in changed.items()])
    for flag_id, status in sorted(changed.items()):
        key = f"{_topic(flag_id)}/{status}"
        if key in done or _last_sent_status(session, flag_id) == status:
            continue
        row = session.get(ScreeningRun, flag_id)
        assert row is not None and row.flag is not None
        found.append(Candidate(_CURSOR, flag_id, key, f"screening flag {flag_id} {status} (child {row.patient_digest})",
                               partial(_flag_bundle, flag_id, dict(row.flag), status), topic=_topic(flag_id)))
    return found


def _last_sent_status(session: Session, flag_id: int) -> str:
    """The Flag status of the newest message of the Flag's topic (a first push made while the flag was already
    retired carries that status); "active" for a first push made before messages had a topic."""
    latest = session.scalars(
        select(OutboxMessage.payload).where(OutboxMessage.channel == FHIR_CHANNEL, OutboxMessage.topic == _topic(flag_id))
        .order_by(OutboxMessage.id.desc()).limit(1)
    ).first()
    if not latest:
        return "active"
    flags = [e["resource"] for e in json.loads(latest).get("entry", []) if e["resource"]["resourceType"] == "Flag"]
    return str(flags[0]["status"]) if flags else "active"


def _bundle(row: ScreeningRun, flag_status: str | None = None) -> str:
    return transaction_bundle(screening_resources(row, flag_status)).model_dump_json(exclude_none=True)


def _flag_bundle(flag_id: int, stored: dict[str, Any], status: str) -> str:
    return transaction_bundle([_flag(flag_id, stored, status)]).model_dump_json(exclude_none=True)


def _fhir(body: object, status_code: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, media_type=FHIR_JSON)


def _not_found(what: str) -> JSONResponse:
    return _fhir({"resourceType": "OperationOutcome",
                  "issue": [{"severity": "error", "code": "not-found", "diagnostics": f"no {what}"}]}, 404)


def _read(session: SessionDep, user: AuthenticatedUser, resource_type: str, prefix: str, resource_id: str) -> JSONResponse:
    number = resource_id.removeprefix(prefix)
    row = None
    # Only ids we made: ASCII digits within the key's range (str.isdigit() takes '²', which int() refuses, and
    # screening_results.id is 32-bit on PostgreSQL, past which it had been a 500); anything else is "not found".
    if resource_id.startswith(prefix) and _ROW_ID.fullmatch(number) and int(number) <= MAX_INT32_ROW_ID:
        # Outside the clinician's scope is "not found", as on /api/screening/flags: a 403 would say the child exists.
        row = session.scalars(select(ScreeningRun).where(ScreeningRun.id == int(number), in_scope(user))).first()
    if row is None:
        return _not_found(f"{resource_type}/{resource_id}")
    record_audit(session, user.username, "fhir.read", "patient", row.patient_id, {"result_id": row.id})
    status = flag_statuses(session, [row.id]).get(row.id) if row.flag else None
    for resource in screening_resources(row, status):
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
    subject: Annotated[str | None, Query(description="Patient/<id> or the patient identifier")] = None,
    patient: Annotated[str | None, Query(description="the same, by R4's parameter for a Patient subject")] = None,
) -> JSONResponse:
    # R4 names both: a HAPI client's RiskAssessment.PATIENT.hasId(...) sends `patient`, which had been a 422 asking
    # for `subject`. Both given are both applied: two children match nothing.
    wanted = {value.removeprefix("Patient/") for value in (subject, patient) if value is not None}
    if not wanted:
        raise RequestValidationError([{"type": "missing", "loc": ("query", "subject"), "input": None,
                                       "msg": "Field required (subject or patient: Patient/<id> or the record id)"}])
    rows = _results_of(session, user, wanted.pop()) if len(wanted) == 1 else []
    for row in rows:  # each result read is audited, as each row the page shows is
        record_audit(session, user.username, "fhir.read", "patient", row.patient_id, {"result_id": row.id})
    statuses = flag_statuses(session, [row.id for row in rows if row.flag])
    resources = [resource for row in rows for resource in screening_resources(row, statuses.get(row.id))]
    searched = {name: value for name, value in (("subject", subject), ("patient", patient)) if value is not None}
    bundle = searchset_bundle(str(request.base_url) + "fhir", resources, searched=searched, match="RiskAssessment")
    return _fhir(bundle.model_dump(mode="json", exclude_none=True))
