"""The RIS push hook: priority changes offered in order, none lost while the RIS refuses them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import select

from service.db import session_scope, utcnow
from tests.worklist.conftest import add_result, make_study
from worklist.policy import policy_from_settings
from worklist.recompute import recompute_worklist
from worklist.ris import FHIR_TASK_PRIORITY, PriorityChanged, deliver_priority_changes
from worklist.tables import WorklistEntry


@dataclass
class FlakyRis:
    """A RIS that is down for its first ``refusals`` messages, then accepts."""

    refusals: int
    name: str = "test-ris"
    received: list[PriorityChanged] = field(default_factory=list)

    def priority_changed(self, change: PriorityChanged) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise ConnectionRefusedError("RIS down")
        self.received.append(change)


def test_changes_are_delivered_in_order_after_an_outage(app: FastAPI) -> None:
    factory = app.state.session_factory
    with session_scope(factory) as session:
        for score in (0.9, 0.1, 0.7):
            add_result(session, make_study(session), score=score)
        recompute_worklist(session, policy_from_settings(app.state.settings))

    ris = FlakyRis(refusals=1)
    with session_scope(factory) as session:
        assert deliver_priority_changes(session, ris) == 0  # refused: the cursor stays put
    with session_scope(factory) as session:
        assert deliver_priority_changes(session, ris) == 3
    with session_scope(factory) as session:
        assert deliver_priority_changes(session, ris) == 0  # nothing new, nothing sent twice
    assert [c.to_tier for c in ris.received] == ["positive", "negative", "positive"]
    assert [c.change_id for c in ris.received] == sorted(c.change_id for c in ris.received)
    assert all(c.accession_number.startswith("ACC") and c.reason for c in ris.received)
    assert {FHIR_TASK_PRIORITY[c.to_tier] for c in ris.received} == {"asap", "routine"}


def test_a_study_settling_in_its_place_is_offered_to_the_ris_as_asap(app: FastAPI) -> None:
    # A raise-only negative stays `unscored`; when its aging cap runs out it settles ahead of later positives. The
    # RIS had not been told (the tier is the same), so it kept the study routine behind them (review 3, triage 6).
    factory = app.state.session_factory
    policy = policy_from_settings(app.state.settings)
    with session_scope(factory) as session:
        add_result(session, make_study(session), score=0.1, steering="raise-only")
        recompute_worklist(session, policy)
    ris = FlakyRis(refusals=0)
    with session_scope(factory) as session:
        assert deliver_priority_changes(session, ris) == 1 and ris.received[0].reading_priority == "routine"
    with session_scope(factory) as session:
        later = utcnow() + policy.aging_cap + timedelta(minutes=1)
        settled = recompute_worklist(session, policy, later)
        assert [(c.from_tier, c.to_tier) for c in settled] == [("unscored", "unscored")]
    with session_scope(factory) as session:
        assert deliver_priority_changes(session, ris) == 1
    assert ris.received[1].reading_priority == "asap" and ris.received[1].start_at == ris.received[0].start_at


def test_the_ris_order_matches_the_worklist_after_settling(app: FastAPI) -> None:
    """Review 3, triage 6 (repro_7): a study with no model that arrived first (U) settles and is read first on the
    list; the RIS held it routine with TQ1-7 at arrival, behind a later positive (P) and a deferred negative that
    aged (N), both ASAP with TQ1-7 before their arrival. A RIS orders by priority, then start time (TQ1-7)."""
    factory = app.state.session_factory
    policy = policy_from_settings(app.state.settings)
    t0 = utcnow() - timedelta(minutes=200)
    ris = FlakyRis(refusals=0)
    with session_scope(factory) as session:
        u = make_study(session, arrived=t0, modality="DX", task=None, status="not_applicable")
        n = make_study(session, arrived=t0 + timedelta(minutes=10), modality="DX")
        add_result(session, n, score=0.1, steering="defer")
        p = make_study(session, arrived=t0 + timedelta(minutes=30), modality="DX")
        add_result(session, p, score=0.9, steering="raise-only")
        arrived = {s.accession_number: s.first_received_at for s in (u, n, p)}
        for minutes in (35, 120):
            recompute_worklist(session, policy, now=t0 + timedelta(minutes=minutes))
            deliver_priority_changes(session, ris)
        worklist = list(session.scalars(
            select(WorklistEntry.accession_number).order_by(WorklistEntry.due_at, WorklistEntry.tie_break)))
    held = {change.accession_number: change for change in ris.received}  # the last message per study
    rank = {"stat": 0, "urgent": 1, "asap": 1, "routine": 2}
    in_ris = sorted(held, key=lambda acc: (rank[held[acc].reading_priority], held[acc].start_at))
    assert in_ris == worklist == [u.accession_number, n.accession_number, p.accession_number]
    for accession, change in held.items():
        assert change.start_at is not None and change.start_at >= arrived[accession]
