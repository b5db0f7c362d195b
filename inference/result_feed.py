"""Champion results in id order after a feed's cursor: what the RIS and EMR feeds both take in.

Results of a `shadow` version are left out unless the site asks for them (``MEDSCREEN_WRITEBACK_SHADOW``): they
are kept for monitoring, and a RIS or EMR shows what it receives as a result, so the feeds treat them as the
PACS write-back does. The FHIR reads (``inference/fhir_api.py``) use the same rule, ``served_as_finding``."""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.orm import Session

from inference.tables import ScoreResult, Study
from service.lifecycle import ModelRole, SteeringRight

__all__ = ["champion_results_after", "served_as_finding"]


def served_as_finding(*, include_shadow: bool) -> ColumnElement[bool]:
    """Which champion results a peer (RIS, EMR, a FHIR reader) gets as findings: not a `shadow` version's, unless
    ``include_shadow`` (``MEDSCREEN_WRITEBACK_SHADOW``)."""
    if include_shadow:
        return true()
    return or_(ScoreResult.steering.is_(None), ScoreResult.steering != SteeringRight.shadow.value)


def champion_results_after(
    session: Session, after_id: int, limit: int, *, include_shadow: bool = False
) -> list[tuple[ScoreResult, Study]]:
    """Champion results with id above ``after_id`` (oldest first, at most ``limit``), each with its study."""
    query = (
        select(ScoreResult, Study)
        .join(Study, Study.id == ScoreResult.study_id)
        .where(ScoreResult.id > after_id, ScoreResult.role == ModelRole.champion)
        .where(served_as_finding(include_shadow=include_shadow))
    )
    rows = session.execute(query.order_by(ScoreResult.id).limit(limit)).all()
    return [(result, study) for result, study in rows]
