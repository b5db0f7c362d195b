"""Store a screening result once, as it was made: the row the page lists, with its explanation and its
FHIR RiskAssessment and Flag, from the HTTP edge and from the batch runner alike."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, and_, exists, or_, select, true
from sqlalchemy.orm import Session, aliased

from datasets.emr_records import ChildRecord
from screening.fhir_output import explanation, flag, risk_assessment
from screening.findings import RETIRING_STATUSES
from screening.scope import Child, child_of_record, same_child
from screening.screener import Screener, ScreeningResult, patient_digest
from screening.tables import ScreeningBatchRun, ScreeningOutcome, ScreeningRun
from service.audit import record_audit

__all__ = [
    "store_result", "store_output_lines", "audit_output_lines", "BatchStore", "StoredLines", "RunCounts", "repeat_of",
    "later_of_child", "listed_unread", "unread_children",
]

logger = logging.getLogger(__name__)


def later_of_child(newer: type[ScreeningRun]) -> ColumnElement[bool]:
    """``newer`` (an alias) is a later result of the same child as the query's ``ScreeningRun`` row (record id
    within its scope, ``screening.scope``): what replaces or retires that row's flag on the page and in the EMR."""
    return and_(
        same_child(newer),
        or_(newer.screened_at > ScreeningRun.screened_at, and_(newer.screened_at == ScreeningRun.screened_at, newer.id > ScreeningRun.id)),
    )


def listed_unread() -> ColumnElement[bool]:
    """The query's ``ScreeningRun`` row is listed on the page as a record not fully read: incomplete, not flagged on
    the part read, and no later result of its child yet (``screening.api``)."""
    newer = aliased(ScreeningRun)
    return and_(ScreeningRun.status == "incomplete", ScreeningRun.flagged.is_(False), ~exists().where(later_of_child(newer)))


def unread_children(database_url: str) -> tuple[str, ...]:
    """The record ids of the results the page lists as not fully read (``listed_unread``), in any scope: a batch
    run writes and stores its result of these children whatever it is, so that a corrected record's complete
    result replaces the listing (the run stores only flagged, incomplete and retiring results otherwise)."""
    from service.db import make_engine, make_session_factory

    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return tuple(sorted(set(session.scalars(select(ScreeningRun.patient_id).where(listed_unread())))))
    finally:
        engine.dispose()


def _evidence(reasons: dict[str, Any]) -> tuple[Any, ...]:
    """What a result rests on: the record's status and its findings (code, and whether excluded)."""
    findings = sorted({(str(f["hpo"]), bool(f.get("excluded"))) for f in reasons.get("findings", [])})
    return reasons.get("status"), tuple(findings)


def repeat_of(
    session: Session, child: Child, flagged: bool, reasons: dict[str, Any], model_version: str = "", *,
    unowned_too: bool = False,
) -> ScreeningRun | None:
    """The child's latest stored result when a new flagged (or incomplete) result rests on the same evidence: a
    re-run of the same extract, or a later one with nothing new for this child. Such a result is not stored
    again, so a paediatrician who has decided on the flag is not asked again; new findings make a new flag,
    which then replaces the older one on the page (``screening.api``). The child is the record id within its
    scope (``screening.scope``: another site's patient 123, or another clinician's 123 named by no care team,
    is another child); ``unowned_too``: or a batch result that named no care team (no clinician's), which a
    batch re-run naming the extract's organisation takes over. A newer screener's result (another
    ``model_version``) on a flag nobody has decided yet is stored: it replaces the older flag on the page with
    the newer model's candidates and risk, and asks nothing that was not already waiting."""
    if not (flagged or reasons.get("status") == "incomplete" or reasons.get("status") in RETIRING_STATUSES):
        return None
    same = and_(
        ScreeningRun.organization == child.organization,
        ScreeningRun.owner == child.owner,
        # Within an organisation, whichever practitioner it named (``same_child``): ``follow_the_record`` moves it.
        true() if child.organization else ScreeningRun.practitioner == child.practitioner,
    )
    if unowned_too:
        same = or_(same, and_(ScreeningRun.practitioner == "", ScreeningRun.organization == "", ScreeningRun.owner == ""))
    latest = session.scalars(
        select(ScreeningRun)
        .where(ScreeningRun.patient_id == child.patient_id, same)
        .order_by(ScreeningRun.screened_at.desc(), ScreeningRun.id.desc())
        .limit(1)
    ).first()
    if latest is None or latest.flagged != flagged or _evidence(latest.explanation) != _evidence(reasons):
        return None
    if model_version and latest.model_version != model_version:
        decided = session.scalar(select(ScreeningOutcome.id).where(ScreeningOutcome.result_id == latest.id).limit(1))
        if decided is None:
            return None
    return latest


def follow_the_record(existing: ScreeningRun, practitioner: str) -> dict[str, str]:
    """A repeat's record naming another practitioner of the same organisation: the child's stored result moves to
    them with its decisions, so that their paediatrician sees it and the former one is no longer asked (it had
    been stored again under the new practitioner, beside the old one). The change, for the audit row."""
    if not existing.organization or existing.practitioner == practitioner:
        return {}
    moved = {"practitioner_before": existing.practitioner, "practitioner": practitioner}
    existing.practitioner = practitioner
    return moved


def _audit_repeat(
    session: Session, actor: str, patient_id: str, existing: ScreeningRun, moved: dict[str, str] | None = None
) -> None:
    record_audit(session, actor, "screening.repeat", "patient", patient_id,
                 {"result_id": existing.id, "flagged": existing.flagged, **(moved or {})})
    logger.info("screened child=%s again on the same evidence: result %d stands", existing.patient_digest, existing.id)


def store_result(
    session: Session, screener: Screener, record: ChildRecord, result: ScreeningResult, actor: str, *, owner: str,
    admin: bool = False,
) -> dict[str, Any]:
    """Add the result's row (flushed, so it has an id) and its audit event; returns the FHIR resources. A flagged
    result on the same evidence as the child's stored flag is not added again (``repeat_of``). ``owner``: the
    submitting clinician ("" for a batch run), whose child a record naming no care team is, and a record naming a
    care team they are not assigned to unless ``admin`` (``child_of_record``): ``unassigned_care_team`` in the
    answer then names the care team the record named."""
    assessment = risk_assessment(result, screener.ontology).model_dump(mode="json", exclude_none=True)
    fhir_flag = flag(result)
    flag_json = fhir_flag.model_dump(mode="json", exclude_none=True) if fhir_flag else None
    reasons = explanation(result, screener.ontology)
    practitioner, organization = record.practitioner[:128], record.organization[:128]
    child = child_of_record(session, result.patient_id, practitioner, organization, owner, admin=admin)
    unassigned = [team for team in (practitioner, organization) if team] if child.owner and not child.organization else []
    existing = repeat_of(session, child, result.flagged, reasons, result.model_version)
    if existing is not None:
        _audit_repeat(session, actor, result.patient_id, existing, follow_the_record(existing, child.practitioner))
        return {"id": existing.id, "assessment": assessment, "flag": flag_json, "repeat": True, "unassigned_care_team": unassigned}
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
        explanation=reasons,
        risk_assessment=assessment,
        flag=flag_json,
        submitted_by=actor,
        patient_name=record.name[:200],
        mrn=record.mrn[:64],
        practitioner=child.practitioner,
        organization=child.organization,
        owner=child.owner,
    )
    session.add(row)
    session.flush()
    detail: dict[str, Any] = {"result_id": row.id, "flagged": result.flagged}
    if unassigned:
        detail["unassigned_care_team"] = unassigned  # the care team the record named, which its row does not carry
    record_audit(session, actor, "screening.submit", "patient", result.patient_id, detail)
    logger.info(
        "screened child=%s status=%s flagged=%s model=%s", row.patient_digest, result.status, result.flagged, result.model_version
    )
    return {"id": row.id, "assessment": assessment, "flag": flag_json, "repeat": False, "unassigned_care_team": unassigned}


class BatchStore:
    """Stores the batch runner's flagged and incomplete results in the service database, committed every
    ``every`` rows, so that they reach the paediatricians' page like results posted over HTTP. The schema
    must be current (the ``medscreen`` root migrates before ``screen-emr`` runs)."""

    def __init__(self, database_url: str, screener: Screener, actor: str, every: int = 500) -> None:
        from service.db import make_engine, make_session_factory

        self.engine = make_engine(database_url)
        self.session = make_session_factory(self.engine)()
        self.screener = screener
        self.actor = actor
        self.every = every
        self.stored = 0

    def add(self, record: ChildRecord, result: ScreeningResult) -> None:
        if not store_result(self.session, self.screener, record, result, self.actor, owner="")["repeat"]:
            self.stored += 1
        if self.stored % self.every == 0:
            self.session.commit()

    def close(self) -> None:
        self.session.commit()
        self.session.close()
        self.engine.dispose()


def _replaces_unread(session: Session, child: Child) -> bool:
    """Whether the child's latest stored result (``same_child``; or one a batch run stored naming no care team) is
    listed as not fully read: a batch result that is neither flagged nor incomplete is stored only to replace it."""
    same = and_(ScreeningRun.patient_id == child.patient_id, ScreeningRun.organization == child.organization,
                ScreeningRun.owner == "", true() if child.organization else ScreeningRun.practitioner == child.practitioner)
    unowned = and_(ScreeningRun.patient_id == child.patient_id, ScreeningRun.practitioner == "",
                   ScreeningRun.organization == "", ScreeningRun.owner == "")
    return session.scalar(select(ScreeningRun.id).where(or_(same, unowned), listed_unread()).limit(1)) is not None


class StoredLines(NamedTuple):
    stored: int
    # Stored results whose record names no practitioner or organisation (and none was given for the extract):
    # no clinician's scope holds them, so only an admin sees them on the page.
    in_no_scope: int
    # Flagged children whose stored flag already rests on the same evidence (``repeat_of``): not stored again.
    repeats: int = 0


class RunCounts(NamedTuple):
    """What the whole run screened (screened or incomplete) and flagged, from its summary."""

    model_version: str
    screened: int
    flagged: int


def audit_output_lines(database_url: str, output: Path, actor: str, detail: dict[str, Any], every: int = 1000) -> int:
    """One ``screening.export`` audit row per child of a ``screen-emr`` output file (``detail`` and whether the child
    was flagged), all in one transaction; the number of children. The file names each child (record id, name,
    record number) beside its result, stored or not: a ``--no-store`` run had written them with no audit row."""
    from service.db import make_engine, make_session_factory

    engine = make_engine(database_url)
    session = make_session_factory(engine)()
    children = 0
    try:
        with output.open(encoding="utf-8") as lines:
            for text in lines:
                line = json.loads(text)
                record_audit(session, actor, "screening.export", "patient", line["patient_id"], {**detail, "flagged": line["flagged"]})
                children += 1
                if children % every == 0:
                    session.flush()
        session.commit()
    finally:
        session.close()
        engine.dispose()
    return children


def store_output_lines(
    database_url: str, output: Path, actor: str, every: int = 500, *, submitted_by: str, organization: str = "",
    run: RunCounts | None = None,
) -> StoredLines:
    """Store the flagged and incomplete children of a ``screen-emr`` output file (NDJSON lines as the
    population runner writes them), so that batch results reach the /screening page. ``actor``: who ran it, the
    audit rows' actor (``cli:<login>``); ``submitted_by``: the stored rows' origin, ``batch:<file>``, by which
    quality tells a run's rows from posted ones. ``organization``: the extract's organisation, given to each result
    whose record names neither a practitioner nor one. ``run``: the run's own counts, recorded beside the results
    (``ScreeningBatchRun``): the stored rows are only some of the children it screened."""
    from service.db import make_engine, make_session_factory

    engine = make_engine(database_url)
    session = make_session_factory(engine)()
    stored = in_no_scope = repeats = 0
    try:
        if run is not None:
            session.add(ScreeningBatchRun(actor=actor, model_version=run.model_version, screened=run.screened, flagged=run.flagged))
        unread = set(session.scalars(select(ScreeningRun.patient_id).where(listed_unread())))
        with output.open(encoding="utf-8") as lines:
            for text in lines:
                line = json.loads(text)
                kept = line["flagged"] or line["status"] == "incomplete" or line["status"] in RETIRING_STATUSES
                if not (kept or line["patient_id"] in unread):
                    continue
                patient = line.get("patient") or {}
                practitioner = str(patient.get("practitioner", ""))[:128]
                own_organization = str(patient.get("organization", ""))[:128]
                scope_organization = own_organization or ("" if practitioner else organization[:128])
                if not kept and not _replaces_unread(session, Child(line["patient_id"], practitioner, scope_organization, "")):
                    continue
                existing = repeat_of(
                    session, Child(line["patient_id"], practitioner, scope_organization, ""), line["flagged"],
                    line["explanation"], line["model_version"], unowned_too=True,
                )
                if existing is not None:
                    moved = follow_the_record(existing, practitioner)
                    if not (existing.practitioner or existing.organization):
                        # A re-run that names the extract's organisation gives a flag no clinician could see a scope.
                        existing.practitioner, existing.organization = practitioner, scope_organization
                    _audit_repeat(session, actor, line["patient_id"], existing, moved)
                    repeats += 1
                    continue
                if not (practitioner or own_organization or organization):
                    in_no_scope += 1
                row = ScreeningRun(
                    patient_id=line["patient_id"],
                    patient_digest=patient_digest(line["patient_id"]),
                    screened_at=datetime.fromisoformat(line["screened_at"]),
                    age_days=line["age_days"],
                    status=line["status"],
                    reason=line["reason"],
                    model_version=line["model_version"],
                    risk=line["risk"],
                    threshold=line["threshold"],
                    flagged=line["flagged"],
                    explanation=line["explanation"],
                    risk_assessment=line["RiskAssessment"],
                    flag=line["Flag"],
                    submitted_by=submitted_by,
                    patient_name=str(patient.get("name", ""))[:200],
                    mrn=str(patient.get("mrn", ""))[:64],
                    practitioner=practitioner,
                    organization=scope_organization,
                )
                session.add(row)
                session.flush()
                record_audit(
                    session, actor, "screening.submit", "patient", row.patient_id,
                    {"result_id": row.id, "flagged": row.flagged, "batch": submitted_by},
                )
                stored += 1
                if stored % every == 0:
                    session.commit()
        session.commit()
    finally:
        session.close()
        engine.dispose()
    return StoredLines(stored, in_no_scope, repeats)
