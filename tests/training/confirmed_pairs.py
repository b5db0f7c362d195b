"""Confirmed studies scored by a champion and a challenger version, stored as the worker and the worklist store them,
for the promotion tests that go through quality review's gate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory, session_scope
from tests.quality.quality_rows import add_final_read, add_result, add_study

__all__ = ["seed_confirmed_pairs"]

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def seed_confirmed_pairs(database_url: str, n: int, *, champion: str, challenger: str, task: str = "chest-xray") -> None:
    """``n`` studies read by a radiologist, half with the finding; both versions call every one right."""
    migrate_all(database_url)
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as session:
        for i in range(n):
            truth = i % 2 == 0
            study = add_study(session, arrived=T0 + timedelta(minutes=i), task=task)
            score = 0.9 if truth else 0.1
            add_result(session, study, score=score, model_version=champion)
            add_result(session, study, score=score, role="challenger", model_version=challenger)
            add_final_read(session, study, truth, read_at=T0 + timedelta(minutes=i, hours=2), task=task)
    engine.dispose()
