"""Store a screening result once, as it was made: the row the page lists, with its explanation and its
FHIR RiskAssessment and Flag, from the HTTP edge and from the batch runner alike."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from datasets.emr_records import ChildRecord
from screening.fhir_output import explanation, flag, risk_assessment
from screening.screener import Screener, ScreeningResult, patient_digest
from screening.tables import ScreeningRun
from service.audit import record_audit

__all__ = ["store_result", "store_output_lines", "BatchStore", "StoredLines"]

logger = logging.getLogger(__name__)


def store_result(session: Session, screener: Screener, record: ChildRecord, result: ScreeningResult, actor: str) -> dict[str, Any]:
    """Add the result's row (flushed, so it has an id) and its audit event; returns the FHIR resources."""
    assessment = risk_assessment(result, screener.ontology).model_dump(mode="json", exclude_none=True)
    fhir_flag = flag(result)
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
        patient_name=record.name[:200],
        mrn=record.mrn[:64],
        practitioner=record.practitioner[:128],
        organization=record.organization[:128],
    )
    session.add(row)
    session.flush()
    record_audit(session, actor, "screening.submit", "patient", result.patient_id, {"result_id": row.id, "flagged": result.flagged})
    logger.info(
        "screened child=%s status=%s flagged=%s model=%s", row.patient_digest, result.status, result.flagged, result.model_version
    )
    return {"id": row.id, "assessment": assessment, "flag": flag_json}


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
        store_result(self.session, self.screener, record, result, self.actor)
        self.stored += 1
        if self.stored % self.every == 0:
            self.session.commit()

    def close(self) -> None:
        self.session.commit()
        self.session.close()
        self.engine.dispose()


class StoredLines(NamedTuple):
    stored: int
    # Stored results whose record names no practitioner or organisation (and none was given for the extract):
    # no clinician's scope holds them, so only an admin sees them on the page.
    in_no_scope: int


def store_output_lines(database_url: str, output: Path, actor: str, every: int = 500, *, organization: str = "") -> StoredLines:
    """Store the flagged and incomplete children of a ``screen-emr`` output file (NDJSON lines as the
    population runner writes them), so that batch results reach the /screening page. ``organization``: the
    extract's organisation, given to each result whose record names neither a practitioner nor one."""
    from service.db import make_engine, make_session_factory

    engine = make_engine(database_url)
    session = make_session_factory(engine)()
    stored = in_no_scope = 0
    try:
        with output.open(encoding="utf-8") as lines:
            for text in lines:
                line = json.loads(text)
                if not (line["flagged"] or line["status"] == "incomplete"):
                    continue
                patient = line.get("patient") or {}
                practitioner = str(patient.get("practitioner", ""))[:128]
                own_organization = str(patient.get("organization", ""))[:128]
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
                    submitted_by=actor,
                    patient_name=str(patient.get("name", ""))[:200],
                    mrn=str(patient.get("mrn", ""))[:64],
                    practitioner=practitioner,
                    organization=own_organization or ("" if practitioner else organization[:128]),
                )
                session.add(row)
                session.flush()
                record_audit(
                    session, actor, "screening.submit", "patient", row.patient_id,
                    {"result_id": row.id, "flagged": row.flagged},
                )
                stored += 1
                if stored % every == 0:
                    session.commit()
        session.commit()
    finally:
        session.close()
        engine.dispose()
    return StoredLines(stored, in_no_scope)
