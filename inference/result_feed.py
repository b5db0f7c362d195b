"""Champion results in id order after a feed's cursor: what the RIS and EMR feeds both take in."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from inference.tables import ScoreResult, Study
from service.lifecycle import ModelRole

__all__ = ["champion_results_after"]


def champion_results_after(session: Session, after_id: int, limit: int) -> list[tuple[ScoreResult, Study]]:
    """Champion results with id above ``after_id`` (oldest first, at most ``limit``), each with its study."""
    rows = session.execute(
        select(ScoreResult, Study)
        .join(Study, Study.id == ScoreResult.study_id)
        .where(ScoreResult.id > after_id, ScoreResult.role == ModelRole.champion)
        .order_by(ScoreResult.id)
        .limit(limit)
    ).all()
    return [(result, study) for result, study in rows]
