"""Champion results into the outbox as FHIR transaction Bundles for the EMR (channel ``fhir``), built once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inference.fhir_results import facts_of, report_id, result_resources
from inference.tables import ScoreResult, Study
from service.db import utcnow
from service.fhir_push import transaction_bundle
from service.lifecycle import ModelRole
from service.outbox import add_message, existing_keys, start_cursor

__all__ = ["FHIR_CHANNEL", "take_in_fhir_results"]

FHIR_CHANNEL = "fhir"
_CURSOR = "fhir:score_results"
# Re-read behind the cursor: with several scoring workers on PostgreSQL a lower id can commit after a
# higher one; the outbox key keeps the re-read from adding anything twice.
_LOOKBACK = 500


def take_in_fhir_results(session: Session, now: datetime | None = None, *, batch: int = 500) -> int:
    now = now or utcnow()
    cursor, created = start_cursor(session, _CURSOR, session.scalar(select(func.max(ScoreResult.id))))
    if created:
        return 0
    rows = session.execute(
        select(ScoreResult, Study)
        .join(Study, Study.id == ScoreResult.study_id)
        .where(ScoreResult.id > cursor.last_id - _LOOKBACK, ScoreResult.role == ModelRole.champion)
        .order_by(ScoreResult.id)
        .limit(batch + _LOOKBACK)
    ).all()
    known = existing_keys(session, FHIR_CHANNEL, [f"DiagnosticReport/{report_id(r.id)}" for r, _ in rows])
    added = 0
    for result, study in rows:
        key = f"DiagnosticReport/{report_id(result.id)}"
        if key not in known:
            bundle = transaction_bundle(result_resources(facts_of(result, study)))
            added += add_message(
                session, FHIR_CHANNEL, key, f"DiagnosticReport result {result.id}",
                bundle.model_dump_json(exclude_none=True), "application/fhir+json", now,
            )
        cursor.last_id = max(cursor.last_id, result.id)
    return added
