"""Champion results into the outbox as FHIR transaction Bundles for the EMR (channel ``fhir``), built once."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from inference.fhir_results import ResultFacts, facts_of, report_id, result_resources
from inference.result_feed import champion_results_after
from inference.tables import ScoreResult, Study
from service.fhir_push import FHIR_JSON, transaction_bundle
from service.outbox import Candidate, OutboxCursor, existing_keys, read_from, start_cursor, take_in, unseen_behind

__all__ = ["FHIR_CHANNEL", "champion_results_to_read", "result_topic", "take_in_fhir_results"]

FHIR_CHANNEL = "fhir"
_CURSOR = "fhir:score_results"
# Re-read behind the cursor: with several scoring workers on PostgreSQL a lower id can commit after a
# higher one; the outbox key keeps the re-read from adding anything twice.
_LOOKBACK = 500


def result_topic(study_id: int) -> str:
    """The outbox topic of a study's result messages, on both channels (ORU to the RIS, DiagnosticReport to the
    EMR): a later result supersedes an earlier one at the peer, so a set-aside earlier one must not be replayed
    after it (``service.outbox.newer_of_topic``); it would make the superseded result current again."""
    return f"Result:study:{study_id}"


def champion_results_to_read(
    session: Session, cursor: OutboxCursor, lookback: int, batch: int, *, include_shadow: bool
) -> list[tuple[ScoreResult, Study]]:
    """The champion results a feed's pass reads: ``lookback`` behind its cursor, and those below its floor that
    were in flight when it started (``service.outbox.unseen_behind``)."""
    late = unseen_behind(cursor, lookback)
    rows = []
    if late:
        rows = [(result, study) for result, study in champion_results_after(
            session, late[0] - 1, late[-1] - late[0] + 1, include_shadow=include_shadow) if result.id in late]
    return rows + champion_results_after(session, read_from(cursor, lookback), batch + lookback,
                                         include_shadow=include_shadow)


def take_in_fhir_results(
    session_factory: sessionmaker[Session], now: datetime | None = None, *, batch: int = 200, include_shadow: bool = False
) -> int:
    def read(session: Session) -> list[Candidate]:
        cursor, created = start_cursor(session, _CURSOR, ScoreResult.id, _LOOKBACK)
        if created:
            return []
        rows = champion_results_to_read(session, cursor, _LOOKBACK, batch, include_shadow=include_shadow)
        known = existing_keys(session, FHIR_CHANNEL, [f"DiagnosticReport/{report_id(r.id)}" for r, _ in rows])
        found = []
        for result, study in rows:
            key = f"DiagnosticReport/{report_id(result.id)}"
            if key in known:
                found.append(Candidate(_CURSOR, result.id))
                continue
            facts = facts_of(result, study)
            found.append(Candidate(_CURSOR, result.id, key, f"DiagnosticReport result {result.id}", partial(_bundle, facts),
                                   topic=result_topic(study.id)))
        return found

    return take_in(session_factory, FHIR_CHANNEL, FHIR_JSON, read, now)


def _bundle(facts: ResultFacts) -> str:
    return transaction_bundle(result_resources(facts)).model_dump_json(exclude_none=True)
