"""The recompute loop settles a study in its arrival place when its modality's aging cap runs out (SQLite and
PostgreSQL), once, and a raise-only positive that came later is then behind it."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import select

from service.db import session_scope, utcnow
from tests.worklist.conftest import add_result, make_study
from worklist.policy import PriorityPolicy
from worklist.recompute import recompute_worklist
from worklist.tables import WorklistEntry

POLICY = PriorityPolicy(aging_cap=timedelta(minutes=90), aging_cap_by_modality={"MG": timedelta(minutes=240)})


def test_each_modality_settles_at_its_own_cap_and_only_once(app: FastAPI) -> None:
    now = utcnow()
    with session_scope(app.state.session_factory) as session:
        cr = make_study(session, arrived=now - timedelta(minutes=100), modality="CR")
        mg = make_study(session, arrived=now - timedelta(minutes=95), modality="MG", task="mammography")
        add_result(session, cr, score=0.1, steering="raise-only")
        add_result(session, mg, score=0.1, steering="raise-only")
        positive = make_study(session, arrived=now - timedelta(minutes=30), modality="CR")
        add_result(session, positive, score=0.9, steering="raise-only")
        recompute_worklist(session, POLICY, now - timedelta(minutes=20))  # listed before the CR cap ran out
        uids = {"cr": cr.study_instance_uid, "mg": mg.study_instance_uid, "pos": positive.study_instance_uid}

    def order() -> list[str]:
        with session_scope(app.state.session_factory) as session:
            rows = session.scalars(select(WorklistEntry).order_by(WorklistEntry.due_at, WorklistEntry.tie_break)).all()
            names = {uid: name for name, uid in uids.items()}
            return [names[row.study_instance_uid] for row in rows]

    assert order() == ["pos", "cr", "mg"]  # the positive is raised above both earlier studies
    with session_scope(app.state.session_factory) as session:
        changes = recompute_worklist(session, POLICY, now)
        assert [c.study_instance_uid for c in changes] == [uids["cr"]]  # CR waited its 90 min; MG has 240
    assert order() == ["cr", "pos", "mg"]
    with session_scope(app.state.session_factory) as session:
        assert recompute_worklist(session, POLICY, now + timedelta(minutes=1)) == []  # settled once
        assert [c.study_instance_uid for c in recompute_worklist(session, POLICY, now + timedelta(minutes=146))] == [uids["mg"]]
    assert order() == ["cr", "mg", "pos"]
