"""A result and its job stored as ``previous-champion`` (a rollback's replaced version, a job that ran on after its
study moved on): 17 characters in columns of 16, which PostgreSQL refused, so the job was retried to the dead
letter (SQLite never enforced the length)."""

from __future__ import annotations

from sqlalchemy import select

from inference.tables import ScoreResult, ScoringJob
from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory, session_scope
from service.lifecycle import ModelRole
from tests.worklist.conftest import add_result, make_study


def test_a_previous_champions_result_is_stored_on_either_database(database_url: str) -> None:
    migrate_all(database_url)
    engine = make_engine(database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            add_result(session, make_study(session), score=0.4, role=ModelRole.previous_champion.value)
        with session_scope(make_session_factory(engine)) as session:
            assert session.scalars(select(ScoreResult.role)).all() == ["previous-champion"]
            assert session.scalars(select(ScoringJob.role)).all() == ["previous-champion"]
    finally:
        engine.dispose()
