"""Recompute follows a study's newest revision: a re-opened study whose new revision ended without a result (its
scoring job dead-lettered) leaves the older revision's call, about fewer images, and goes back to arrival order."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory, utcnow
from service.settings import Settings
from tests.worklist.conftest import add_result, make_study
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist
from worklist.tables import WorklistEntry


def test_a_reopened_study_whose_new_revision_failed_loses_the_old_deferral(settings: Settings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate_all(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    policy = policy_from_settings(settings)
    arrived = utcnow() - timedelta(minutes=20)
    with factory() as session:
        study = make_study(session, arrived=arrived, modality="DX")
        add_result(session, study, score=0.1, steering="defer")  # revision 1: a negative from a defer version
        recompute_worklist(session, policy, now=arrived + timedelta(minutes=5))
        entry = session.scalars(select(WorklistEntry)).one()
        assert (entry.tier, entry.due_at - arrived) == ("negative", timedelta(minutes=90))

        # A late image re-opens the study (revision 2); its champion job is dead-lettered (mark_failed).
        study.revision, study.status, study.status_reason = 2, "failed", "attempt 5 of 5 ended without a result"
        session.flush()
        changes = recompute_worklist(session, policy, now=arrived + timedelta(minutes=10))
        entry = session.scalars(select(WorklistEntry)).one()
        assert (entry.state, entry.tier, entry.due_at) == ("failed", "unscored", arrived)
        assert entry.priority_reason == "scoring failed: arrival order"
        assert [(c.from_tier, c.to_tier) for c in changes] == [("negative", "unscored")]
